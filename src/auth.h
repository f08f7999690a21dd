/*
 * auth: bearer tokens with scopes (schema/auth.md). The token file holds
 * one line per token: a name, its scopes and the SHA-256 of the token in
 * hex, so the file never holds a token itself:
 *
 *   # name   scopes            sha256(token), 64 hex digits
 *   web      write             9f86d081884c7d659a2feaa0c55ad015...
 *   ops      read,write,admin  60303ae22b998861bce3b28f33eec1be...
 *
 * A request's "Authorization: Bearer <token>" is hashed and compared with
 * every line, always all of them and in constant time per line, so the
 * time taken says nothing about which token or how much of it matched.
 * Scopes are independent: admin does not imply read or write.
 */
#ifndef TALLY_AUTH_H
#define TALLY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_READ  1u
#define AUTH_WRITE 2u
#define AUTH_ADMIN 4u
#define AUTH_ALL   (AUTH_READ | AUTH_WRITE | AUTH_ADMIN)

#define AUTH_NAME_MAX 64
#define AUTH_HASH_LEN 32
#define AUTH_ERR_MAX 256

/* JSON-RPC error codes of schema/errors.md. */
#define AUTH_ERR_MISSING   1301
#define AUTH_ERR_INVALID   1302
#define AUTH_ERR_FORBIDDEN 1303

struct auth_token {
    char name[AUTH_NAME_MAX];
    unsigned scopes;
    uint8_t hash[AUTH_HASH_LEN];
};

struct auth {
    struct auth_token *tokens;
    size_t count;
};

enum auth_verdict {
    AUTH_GRANTED,     /* a known token */
    AUTH_MISSING,     /* no Authorization header */
    AUTH_MALFORMED,   /* a header that is not "Bearer <token>" */
    AUTH_UNKNOWN      /* a token that is on no line */
};

/* Parses the token file text (LEN bytes). Returns a new table owned by the
 * caller, or NULL with the line and reason in ERR. A file with no token
 * is an error: auth on with nobody allowed in is a mistake. */
struct auth *auth_parse(const char *text, size_t len, char *err,
                        size_t errlen);
/* auth_parse of the file at PATH. */
struct auth *auth_load(const char *path, char *err, size_t errlen);
void auth_free(struct auth *a);

/* Checks the value of an Authorization header (NULL when absent). When
 * the verdict is AUTH_GRANTED, *WHO is the matching line. */
enum auth_verdict auth_check(const struct auth *a, const char *header,
                             const struct auth_token **who);

/* SHA-256 of TEXT (LEN bytes) into OUT. */
void auth_hash(const char *text, size_t len, uint8_t out[AUTH_HASH_LEN]);

/* "read", "write", "admin" for one scope bit; "none" for 0. */
const char *auth_scope_name(unsigned scope);

#endif
