/*
 * number: checked parsing of decimal numbers. The C library parsers accept
 * leading spaces, signs where we want none, partial input and "nan"; these
 * wrappers insist on the whole input being one finite number.
 */
#include "number.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest text we accept as a number: digits, sign, point and exponent of
 * any double written out in full fit in well under this. */
#define NUMBER_TEXT_MAX 400

/* Copies S into BUF as a C string if it is non-empty, fits, and holds only
 * characters that may appear in a decimal number. */
static int
number_copy(const char *s, size_t len, char *buf, size_t buflen)
{
    if (len == 0 || len >= buflen)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.'
              || c == 'e' || c == 'E'))
            return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

int64_t
number_order_key(double v)
{
    int64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits < 0 ? INT64_MIN - bits - 1 : bits;   /* flip negatives */
}

int
number_parse_double(const char *s, size_t len, double *out)
{
    char buf[NUMBER_TEXT_MAX];
    char *end;
    double v;

    /* The character check keeps out "nan", "inf", hex floats and spaces;
     * like JSON, a number may not start with '+'. */
    if (number_copy(s, len, buf, sizeof(buf)) != 0 || buf[0] == '+')
        return -1;
    errno = 0;
    v = strtod(buf, &end);
    if (end != buf + len || !isfinite(v))
        return -1;
    /* ERANGE on underflow gives a tiny or zero value; only overflow is an
     * error, and isfinite() caught it. */
    *out = v;
    return 0;
}

int
number_parse_int64(const char *s, size_t len, int64_t *out)
{
    char buf[NUMBER_TEXT_MAX];
    char *end;
    long long v;

    if (number_copy(s, len, buf, sizeof(buf)) != 0)
        return -1;
    if (!(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
        return -1;
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (errno != 0 || end != buf + len)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int
number_parse_uint64(const char *s, size_t len, uint64_t *out)
{
    char buf[NUMBER_TEXT_MAX];
    char *end;
    unsigned long long v;

    if (number_copy(s, len, buf, sizeof(buf)) != 0)
        return -1;
    if (!(buf[0] >= '0' && buf[0] <= '9'))   /* strtoull accepts "-1" */
        return -1;
    errno = 0;
    v = strtoull(buf, &end, 10);
    if (errno != 0 || end != buf + len)
        return -1;
    *out = (uint64_t)v;
    return 0;
}
