/*
 * xalloc: allocation with a single out-of-memory policy: say so and abort.
 * A daemon that cannot allocate cannot keep its durability promises, so
 * stopping loudly (and letting the supervisor restart it) is the safe answer.
 */
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
xalloc_fail(size_t size)
{
    fprintf(stderr, "tally: out of memory allocating %zu bytes\n", size);
    abort();
}

void *
xmalloc(size_t size)
{
    void *p = malloc(size == 0 ? 1 : size);

    if (p == NULL)
        xalloc_fail(size);
    return p;
}

void *
xcalloc(size_t count, size_t size)
{
    void *p = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);

    if (p == NULL)
        xalloc_fail(count * size);
    return p;
}

void *
xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size == 0 ? 1 : size);

    if (p == NULL)
        xalloc_fail(size);
    return p;
}

char *
xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);

    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
