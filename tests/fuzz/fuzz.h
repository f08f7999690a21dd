/*
 * fuzz: what the libFuzzer harnesses of tests/fuzz share. A harness feeds
 * one parser arbitrary bytes and, where the parser says "valid", checks a
 * property that must then hold (re-encoding gives the same bytes, a
 * response parses as JSON, ...). A broken property aborts through
 * FUZZ_CHECK, which libFuzzer reports as a crash like any sanitizer
 * finding.
 */
#ifndef TALLY_FUZZ_H
#define TALLY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A fixed "now" (2023-11-14T22:13:20Z) so every run of an input takes the
 * same path; the seed corpora use event times near it. */
#define FUZZ_NOW_US (1700000000LL * 1000000LL)

#define FUZZ_CHECK(cond, what)                                             \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__,      \
                    __LINE__, (what));                                     \
            abort();                                                       \
        }                                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
