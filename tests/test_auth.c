/*
 * test_auth: the token file and the bearer check (auth.c).
 *
 *   a file with comments, blank lines and CRLF: names, scopes, hashes
 *   every kind of bad line, with its exact reason and line number
 *   Authorization headers: granted, missing, malformed, unknown
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* sha256("test") and sha256("other"). */
#define HASH_TEST \
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define HASH_OTHER \
    "D9298A10D1B0735837DC4BD85DAC641B0F3CEF27A47E5D53A54F2F3F5B2FCFFA"

static const char good_file[] =
    "# tokens\n"
    "\n"
    "web   write   " HASH_TEST "\r\n"
    "  ops\tread,write,admin\t" HASH_OTHER "   \n"
    "   # indented comment";

static struct auth *
parse(const char *text, char *err, size_t errlen)
{
    return auth_parse(text, strlen(text), err, errlen);
}

static void
test_parse_good(void **state)
{
    char err[AUTH_ERR_MAX] = "";
    struct auth *a = parse(good_file, err, sizeof(err));
    uint8_t h[AUTH_HASH_LEN];

    (void)state;
    assert_non_null(a);
    assert_int_equal(a->count, 2);
    assert_string_equal(a->tokens[0].name, "web");
    assert_int_equal(a->tokens[0].scopes, AUTH_WRITE);
    assert_string_equal(a->tokens[1].name, "ops");
    assert_int_equal(a->tokens[1].scopes, AUTH_ALL);
    auth_hash("test", 4, h);
    assert_memory_equal(a->tokens[0].hash, h, AUTH_HASH_LEN);
    auth_hash("other", 5, h);
    assert_memory_equal(a->tokens[1].hash, h, AUTH_HASH_LEN);
    auth_free(a);
}

static void
test_parse_bad(void **state)
{
    static const struct {
        const char *text;
        const char *reason;
    } cases[] = {
        {"", "no token in the file"},
        {"# only a comment\n", "no token in the file"},
        {"web write\n", "line 1: expected <name> <scopes> <sha256 hex>"},
        {"\nweb write " HASH_TEST " extra\n",
         "line 2: expected <name> <scopes> <sha256 hex>"},
        {"w@b write " HASH_TEST, "line 1: a name is made of [A-Za-z0-9._-]"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         " write " HASH_TEST, "line 1: a name is at most 63 characters"},
        {"web root " HASH_TEST, "line 1: scopes are a comma-separated list "
         "of read, write, admin"},
        {"web read, " HASH_TEST, "line 1: scopes are a comma-separated "
         "list of read, write, admin"},
        {"web read,,write " HASH_TEST, "line 1: scopes are a comma-separated "
         "list of read, write, admin"},
        {"web read, " HASH_TEST " x", "line 1: expected <name> <scopes> "
         "<sha256 hex>"},
        {"web read,write, " HASH_TEST, "line 1: scopes are a "
         "comma-separated list of read, write, admin"},
        {"web read abc", "line 1: the hash must be 64 hex digits (the "
         "SHA-256 of the token, e.g. from sha256sum)"},
        {"web read "
         "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g",
         "line 1: the hash must be 64 hex digits"},
        {"web read " HASH_TEST "\nweb write " HASH_OTHER,
         "line 2: the name \"web\" is used twice"},
        {"web read " HASH_TEST "\nops write " HASH_TEST,
         "line 2: the same token as \"web\""},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char err[AUTH_ERR_MAX] = "";

        assert_null(parse(cases[i].text, err, sizeof(err)));
        assert_string_equal(err, cases[i].reason);
    }
}

static void
test_parse_trailing_comma(void **state)
{
    char err[AUTH_ERR_MAX] = "";

    (void)state;
    assert_null(parse("web read,write,x " HASH_TEST, err, sizeof(err)));
    assert_string_equal(err, "line 1: scopes are a comma-separated list of "
                        "read, write, admin");
    assert_null(parse("web read,write," HASH_TEST " " HASH_TEST, err,
                      sizeof(err)));
    assert_string_equal(err, "line 1: scopes are a comma-separated list of "
                        "read, write, admin");
}

static void
test_load_missing_file(void **state)
{
    char err[AUTH_ERR_MAX] = "";

    (void)state;
    assert_null(auth_load("/nonexistent/tokens", err, sizeof(err)));
    assert_string_equal(err, "cannot open the token file /nonexistent/tokens");
}

static void
test_check(void **state)
{
    char err[AUTH_ERR_MAX] = "";
    struct auth *a = parse(good_file, err, sizeof(err));
    const struct auth_token *who = NULL;

    (void)state;
    assert_non_null(a);
    assert_int_equal(auth_check(a, "Bearer test", &who), AUTH_GRANTED);
    assert_string_equal(who->name, "web");
    assert_int_equal(auth_check(a, "bearer   other", &who), AUTH_GRANTED);
    assert_string_equal(who->name, "ops");
    who = NULL;
    assert_int_equal(auth_check(a, NULL, &who), AUTH_MISSING);
    assert_int_equal(auth_check(a, "Bearer", &who), AUTH_MALFORMED);
    assert_int_equal(auth_check(a, "Bearer ", &who), AUTH_MALFORMED);
    assert_int_equal(auth_check(a, "Basic dGVzdA==", &who), AUTH_MALFORMED);
    assert_int_equal(auth_check(a, "Bearertest", &who), AUTH_MALFORMED);
    assert_int_equal(auth_check(a, "Bearer tes", &who), AUTH_UNKNOWN);
    assert_int_equal(auth_check(a, "Bearer test ", &who), AUTH_UNKNOWN);
    assert_int_equal(auth_check(a, "Bearer TEST", &who), AUTH_UNKNOWN);
    assert_null(who);
    auth_free(a);
}

static void
test_scope_names(void **state)
{
    (void)state;
    assert_string_equal(auth_scope_name(AUTH_READ), "read");
    assert_string_equal(auth_scope_name(AUTH_WRITE), "write");
    assert_string_equal(auth_scope_name(AUTH_ADMIN), "admin");
    assert_string_equal(auth_scope_name(0), "none");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_trailing_comma),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_scope_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
