/*
 * auth: bearer tokens with scopes; see auth.h and schema/auth.md. Hashing
 * and the constant-time compare come from OpenSSL's libcrypto, which
 * rabbitmq-c already brings in.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"
#include "errmsg.h"
#include "xalloc.h"

#define AUTH_FILE_MAX (1024 * 1024)
#define AUTH_SCHEME "Bearer"
#define AUTH_SCHEME_LEN (sizeof(AUTH_SCHEME) - 1)
#define AUTH_FIELDS 3

static const struct {
    const char *name;
    unsigned bit;
} auth_scopes[] = {
    {"read", AUTH_READ},
    {"write", AUTH_WRITE},
    {"admin", AUTH_ADMIN},
};
#define AUTH_SCOPE_COUNT (sizeof(auth_scopes) / sizeof(auth_scopes[0]))

void
auth_hash(const char *text, size_t len, uint8_t out[AUTH_HASH_LEN])
{
    unsigned outlen = AUTH_HASH_LEN;

    if (EVP_Digest(text, len, out, &outlen, EVP_sha256(), NULL) != 1
        || outlen != AUTH_HASH_LEN)
        abort();                /* libcrypto without SHA-256: unusable */
}

const char *
auth_scope_name(unsigned scope)
{
    for (size_t i = 0; i < AUTH_SCOPE_COUNT; i++)
        if (auth_scopes[i].bit == scope)
            return auth_scopes[i].name;
    return "none";
}

static int
auth_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parses "read,write" (LEN bytes) into scope bits; 0 on an unknown name. */
static unsigned
auth_parse_scopes(const char *s, size_t len)
{
    unsigned bits = 0;

    while (len > 0) {
        const char *comma = memchr(s, ',', len);
        size_t n = comma != NULL ? (size_t)(comma - s) : len;
        unsigned bit = 0;

        for (size_t i = 0; i < AUTH_SCOPE_COUNT; i++)
            if (strlen(auth_scopes[i].name) == n
                && memcmp(auth_scopes[i].name, s, n) == 0)
                bit = auth_scopes[i].bit;
        if (bit == 0)
            return 0;
        bits |= bit;
        if (comma == NULL)
            break;
        s = comma + 1;
        len -= n + 1;
        if (len == 0)
            return 0;           /* a trailing comma */
    }
    return bits;
}

/* Splits LINE (LEN bytes) at blanks into at most MAX fields; returns the
 * number of fields found (MAX + 1 when there are more). */
static size_t
auth_fields(const char *line, size_t len, const char **field, size_t *flen,
            size_t max)
{
    size_t n = 0, i = 0;

    while (i < len) {
        size_t start;

        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == len)
            break;
        if (n == max)
            return max + 1;
        start = i;
        while (i < len && line[i] != ' ' && line[i] != '\t')
            i++;
        field[n] = line + start;
        flen[n] = i - start;
        n++;
    }
    return n;
}

static int
auth_parse_line(struct auth_token *t, const char *line, size_t len,
                char *err, size_t errlen)
{
    const char *field[AUTH_FIELDS];
    size_t flen[AUTH_FIELDS];

    if (auth_fields(line, len, field, flen, AUTH_FIELDS) != AUTH_FIELDS) {
        errmsg_say(err, errlen, "expected <name> <scopes> <sha256 hex>");
        return -1;
    }
    if (flen[0] >= AUTH_NAME_MAX) {
        errmsg_say(err, errlen, "a name is at most %d characters",
                   AUTH_NAME_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < flen[0]; i++) {
        int c = (unsigned char)field[0][i];

        if (!isalnum(c) && c != '.' && c != '_' && c != '-') {
            errmsg_say(err, errlen, "a name is made of [A-Za-z0-9._-]");
            return -1;
        }
    }
    memcpy(t->name, field[0], flen[0]);
    t->name[flen[0]] = '\0';
    t->scopes = auth_parse_scopes(field[1], flen[1]);
    if (t->scopes == 0) {
        errmsg_say(err, errlen, "scopes are a comma-separated list of "
                   "read, write, admin");
        return -1;
    }
    if (flen[2] != 2 * AUTH_HASH_LEN) {
        errmsg_say(err, errlen, "the hash must be 64 hex digits (the "
                   "SHA-256 of the token, e.g. from sha256sum)");
        return -1;
    }
    for (size_t i = 0; i < AUTH_HASH_LEN; i++) {
        int hi = auth_hex((unsigned char)field[2][2 * i]);
        int lo = auth_hex((unsigned char)field[2][2 * i + 1]);

        if (hi < 0 || lo < 0) {
            errmsg_say(err, errlen, "the hash must be 64 hex digits");
            return -1;
        }
        t->hash[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int
auth_add(struct auth *a, const struct auth_token *t, char *err,
         size_t errlen)
{
    for (size_t i = 0; i < a->count; i++) {
        if (strcmp(a->tokens[i].name, t->name) == 0) {
            errmsg_say(err, errlen, "the name \"%s\" is used twice", t->name);
            return -1;
        }
        if (memcmp(a->tokens[i].hash, t->hash, AUTH_HASH_LEN) == 0) {
            errmsg_say(err, errlen, "the same token as \"%s\"",
                       a->tokens[i].name);
            return -1;
        }
    }
    a->tokens = xrealloc(a->tokens, (a->count + 1) * sizeof(*a->tokens));
    a->tokens[a->count++] = *t;
    return 0;
}

struct auth *
auth_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct auth *a = xcalloc(1, sizeof(*a));
    size_t pos = 0, lineno = 0;

    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - line) : len - pos;
        size_t skip = 0;
        struct auth_token t;
        char why[AUTH_ERR_MAX];

        pos += n + (nl != NULL);
        lineno++;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        while (skip < n && (line[skip] == ' ' || line[skip] == '\t'))
            skip++;
        if (skip == n || line[skip] == '#')
            continue;
        memset(&t, 0, sizeof(t));
        if (auth_parse_line(&t, line, n, why, sizeof(why)) != 0
            || auth_add(a, &t, why, sizeof(why)) != 0) {
            errmsg_say(err, errlen, "line %zu: %s", lineno, why);
            auth_free(a);
            return NULL;
        }
    }
    if (a->count == 0) {
        errmsg_say(err, errlen, "no token in the file");
        auth_free(a);
        return NULL;
    }
    return a;
}

struct auth *
auth_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text, why[AUTH_ERR_MAX];
    size_t len;
    struct auth *a;

    if (f == NULL) {
        errmsg_say(err, errlen, "cannot open the token file %s", path);
        return NULL;
    }
    text = xmalloc(AUTH_FILE_MAX + 1);
    len = fread(text, 1, AUTH_FILE_MAX + 1, f);
    fclose(f);
    if (len > AUTH_FILE_MAX) {
        errmsg_say(err, errlen, "the token file %s is over %d bytes", path,
                   AUTH_FILE_MAX);
        free(text);
        return NULL;
    }
    a = auth_parse(text, len, why, sizeof(why));
    free(text);
    if (a == NULL)
        errmsg_say(err, errlen, "token file %s: %s", path, why);
    return a;
}

void
auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    OPENSSL_cleanse(a->tokens, a->count * sizeof(*a->tokens));
    free(a->tokens);
    free(a);
}

enum auth_verdict
auth_check(const struct auth *a, const char *header,
           const struct auth_token **who)
{
    uint8_t h[AUTH_HASH_LEN];
    size_t match = 0, found = 0;
    const char *token;

    if (header == NULL)
        return AUTH_MISSING;
    if (strncasecmp(header, AUTH_SCHEME, AUTH_SCHEME_LEN) != 0
        || header[AUTH_SCHEME_LEN] != ' ')
        return AUTH_MALFORMED;
    token = header + AUTH_SCHEME_LEN;
    while (*token == ' ')
        token++;
    if (*token == '\0')
        return AUTH_MALFORMED;
    auth_hash(token, strlen(token), h);
    /* Every line is compared, each in constant time, and the match is
     * picked by masks rather than by a branch. */
    for (size_t i = 0; i < a->count; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(h, a->tokens[i].hash,
                                           AUTH_HASH_LEN) == 0);
        size_t mask = (size_t)0 - eq;

        match = (match & ~mask) | (i & mask);
        found |= eq;
    }
    OPENSSL_cleanse(h, sizeof(h));
    if (!found)
        return AUTH_UNKNOWN;
    *who = &a->tokens[match];
    return AUTH_GRANTED;
}
