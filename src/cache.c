/*
 * cache: tally's memcached client (libmemcached, with its connection pool).
 * Every call borrows one connection from the pool, addresses one metric's
 * server through the metric's hex hash as group key, and gives the
 * connection back.
 *
 *   cache_put (forward-only, schema/cache-value.md):
 *
 *     add ──stored──> 1
 *      │ NOT STORED
 *      ▼
 *     gets ──gone meanwhile──────────────────> again from add
 *      │ stored value + CAS
 *      ▼
 *     header may be replaced? ──no──> 0     (undecodable counts as yes)
 *      │ yes
 *      ▼
 *     cas ──stored──> 1
 *      └──EXISTS / NOT FOUND (another writer)──> again from add,
 *                                               CACHE_PUT_ATTEMPTS in all
 */
#include "cache.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmemcached-1.0/memcached.h>
#include <libmemcachedutil-1.0/pool.h>

#include "buf.h"
#include "codec.h"
#include "errmsg.h"
#include "hash.h"
#include "number.h"
#include "xalloc.h"

#define CACHE_KEY_PREFIX "tly1"
#define CACHE_GROUP_KEY_LEN 32        /* hex digits of hash_128(name) */
#define CACHE_PUT_ATTEMPTS 8          /* add/gets/cas rounds lost to races */
#define CACHE_POOL_WAIT_S 2           /* waiting for a free connection */
#define CACHE_US_PER_MS 1000
#define CACHE_PORT_MAX 65535
#define CACHE_VALUE_FLAGS 0           /* memcached item flags: unused */

struct cache {
    memcached_st *master;     /* owned: servers and behaviours, cloned by */
    memcached_pool_st *pool;  /* owned: up to CACHE_POOL_MAX connections */
};

/* Outcome of one gets/cas round of cache_put. */
enum cache_round {
    CACHE_ROUND_FAILED = -1,
    CACHE_ROUND_STALE = 0,
    CACHE_ROUND_WRITTEN = 1,
    CACHE_ROUND_RACED = 2,
};

/* "memcached HOST:PORT: " and the formatted text, HOST:PORT being the
 * server that holds GROUP. */
static void cache_say_server(memcached_st *mc, const char *group, char *err,
                             size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
cache_say_server(memcached_st *mc, const char *group, char *err,
                 size_t errlen, const char *fmt, ...)
{
    const memcached_instance_st *server;
    memcached_return_t unused;
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    server = memcached_server_by_key(mc, group, CACHE_GROUP_KEY_LEN, &unused);
    if (server == NULL)
        n = snprintf(err, errlen, "memcached: ");
    else
        n = snprintf(err, errlen, "memcached %s:%u: ",
                     memcached_server_name(server),
                     (unsigned)memcached_server_port(server));
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* libmemcached's name for RC ("CONNECTION FAILURE"), and the errno text
 * after it when libmemcached recorded one with RC. (glibc's strerror is
 * safe across threads: unknown numbers go to a thread-local buffer.) */
static void
cache_say_failure(memcached_st *mc, const char *group, memcached_return_t rc,
                  char *err, size_t errlen)
{
    int errnum = 0;

    if (memcached_last_error(mc) == rc)
        errnum = memcached_last_error_errno(mc);
    if (errnum != 0)
        cache_say_server(mc, group, err, errlen, "%s (%s)",
                         memcached_strerror(mc, rc), strerror(errnum));
    else
        cache_say_server(mc, group, err, errlen, "%s",
                         memcached_strerror(mc, rc));
}

/* ---- keys ----------------------------------------------------------- */

/* Writes the 32 hex digits of hash_128(NAME) and a NUL into OUT. */
static void
cache_group_key(char out[CACHE_GROUP_KEY_LEN + 1], const char *name,
                size_t name_len)
{
    struct hash128 h = hash_128(name, name_len);

    snprintf(out, CACHE_GROUP_KEY_LEN + 1, "%016" PRIx64 "%016" PRIx64, h.hi,
             h.lo);
}

size_t
cache_key_open(char *out, const char *name, size_t name_len)
{
    char group[CACHE_GROUP_KEY_LEN + 1];

    cache_group_key(group, name, name_len);
    return (size_t)snprintf(out, CACHE_KEY_MAX, CACHE_KEY_PREFIX ":o:%s",
                            group);
}

size_t
cache_key_bucket(char *out, const char *name, size_t name_len,
                 uint64_t generation, enum ring ring, int64_t start_s)
{
    char group[CACHE_GROUP_KEY_LEN + 1];

    cache_group_key(group, name, name_len);
    return (size_t)snprintf(out, CACHE_KEY_MAX,
                            CACHE_KEY_PREFIX ":b:%s:%" PRIx64 ":%d:%" PRId64,
                            group, generation, (int)ring, start_s);
}

/* ---- lifecycle ------------------------------------------------------ */

/* 1 if HOST (LEN bytes) is non-empty and has no spaces or controls. */
static int
cache_host_ok(const char *host, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isgraph((unsigned char)host[i]))
            return 0;
    }
    return 1;
}

/* Adds each "host:port" of the comma-separated SERVERS to MC. */
static int
cache_add_servers(memcached_st *mc, const char *servers, char *err,
                  size_t errlen)
{
    const char *entry = servers;

    for (;;) {
        const char *end = strchr(entry, ',');
        const char *colon;
        uint64_t port;
        char *host;
        memcached_return_t rc;

        if (end == NULL)
            end = entry + strlen(entry);
        for (colon = end; colon > entry && colon[-1] != ':'; colon--)
            ;
        if (colon == entry ||
            !cache_host_ok(entry, (size_t)(colon - 1 - entry)) ||
            number_parse_uint64(colon, (size_t)(end - colon), &port) != 0 ||
            port < 1 || port > CACHE_PORT_MAX) {
            errmsg_say(err, errlen, "memcached server \"%.*s\" is not host:port",
                      (int)(end - entry), entry);
            return -1;
        }
        host = xstrndup(entry, (size_t)(colon - 1 - entry));
        rc = memcached_server_add(mc, host, (in_port_t)port);
        free(host);
        if (rc != MEMCACHED_SUCCESS) {
            errmsg_say(err, errlen, "memcached server \"%.*s\": %s",
                      (int)(end - entry), entry, memcached_strerror(mc, rc));
            return -1;
        }
        if (*end == '\0')
            return 0;
        entry = end + 1;
    }
}

struct cache *
cache_create(const char *servers, int timeout_ms, char *err, size_t errlen)
{
    const struct {
        memcached_behavior_t behavior;
        uint64_t value;
    } behaviors[] = {
        /* libketama's continuum: MD5 key hash, points by weight */
        { MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1 },
        { MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 0 },
        { MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1 },
        { MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, (uint64_t)timeout_ms },
        { MEMCACHED_BEHAVIOR_POLL_TIMEOUT, (uint64_t)timeout_ms },
        { MEMCACHED_BEHAVIOR_SND_TIMEOUT,
          (uint64_t)timeout_ms * CACHE_US_PER_MS },
        { MEMCACHED_BEHAVIOR_RCV_TIMEOUT,
          (uint64_t)timeout_ms * CACHE_US_PER_MS },
    };
    struct cache *c = NULL;
    memcached_st *master;
    memcached_return_t rc;

    if (timeout_ms < 1 || timeout_ms > CACHE_TIMEOUT_MS_MAX) {
        errmsg_say(err, errlen, "memcached timeout %d ms out of range 1..%d",
                  timeout_ms, CACHE_TIMEOUT_MS_MAX);
        return NULL;
    }
    master = memcached_create(NULL);
    if (master == NULL) {
        errmsg_say(err, errlen, "memcached: cannot create a client");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++) {
        rc = memcached_behavior_set(master, behaviors[i].behavior,
                                    behaviors[i].value);
        if (rc != MEMCACHED_SUCCESS) {
            errmsg_say(err, errlen, "memcached behavior %d: %s",
                      (int)behaviors[i].behavior, memcached_strerror(master, rc));
            goto fail;
        }
    }
    if (cache_add_servers(master, servers, err, errlen) != 0)
        goto fail;
    c = xcalloc(1, sizeof(*c));
    c->master = master;
    c->pool = memcached_pool_create(master, 1, CACHE_POOL_MAX);
    if (c->pool == NULL) {
        errmsg_say(err, errlen, "memcached: cannot create a connection pool");
        goto fail;
    }
    return c;

fail:
    free(c);
    memcached_free(master);
    return NULL;
}

void
cache_destroy(struct cache *c)
{
    if (c == NULL)
        return;
    memcached_pool_destroy(c->pool);
    memcached_free(c->master);
    free(c);
}

/* A connection from the pool, waiting up to CACHE_POOL_WAIT_S for one;
 * NULL with a reason in ERR. Give it back with memcached_pool_release. */
static memcached_st *
cache_borrow(struct cache *c, char *err, size_t errlen)
{
    struct timespec wait = { .tv_sec = CACHE_POOL_WAIT_S, .tv_nsec = 0 };
    memcached_return_t rc = MEMCACHED_SUCCESS;
    memcached_st *mc;

    mc = memcached_pool_fetch(c->pool, &wait, &rc);
    if (mc == NULL && rc == MEMCACHED_TIMEOUT)
        errmsg_say(err, errlen, "memcached: no free connection in the pool "
                  "within %d s", CACHE_POOL_WAIT_S);
    else if (mc == NULL)
        errmsg_say(err, errlen, "memcached: cannot take a connection from the "
                  "pool: %s", memcached_strerror(NULL, rc));
    return mc;
}

/* ---- reads ---------------------------------------------------------- */

int
cache_mget(struct cache *c, const char *name, size_t name_len,
           const char *const *keys, const size_t *key_lens, size_t n,
           cache_found_fn found, void *ctx, char *err, size_t errlen)
{
    char group[CACHE_GROUP_KEY_LEN + 1];
    memcached_result_st result;
    const memcached_result_st *got;
    memcached_return_t rc;
    memcached_st *mc;
    bool *reported = NULL;
    int status = -1;

    if (n == 0)
        return 0;
    cache_group_key(group, name, name_len);
    mc = cache_borrow(c, err, errlen);
    if (mc == NULL)
        return -1;
    memcached_result_create(mc, &result);
    rc = memcached_mget_by_key(mc, group, CACHE_GROUP_KEY_LEN, keys, key_lens,
                               n);
    if (rc != MEMCACHED_SUCCESS) {
        cache_say_failure(mc, group, rc, err, errlen);
        goto done;
    }
    /* A key asked twice comes back twice: each answer goes to the first
     * index of that key not reported yet. */
    reported = xcalloc(n, sizeof(*reported));
    while ((got = memcached_fetch_result(mc, &result, &rc)) != NULL) {
        const char *key = memcached_result_key_value(got);
        size_t key_len = memcached_result_key_length(got);

        for (size_t i = 0; i < n; i++) {
            if (!reported[i] && key_lens[i] == key_len &&
                memcmp(keys[i], key, key_len) == 0) {
                reported[i] = true;
                found(ctx, i, (const uint8_t *)memcached_result_value(got),
                      memcached_result_length(got));
                break;
            }
        }
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND) {
        cache_say_failure(mc, group, rc, err, errlen);
        goto done;
    }
    status = 0;

done:
    free(reported);
    memcached_result_free(&result);
    memcached_pool_release(c->pool, mc);
    return status;
}

/* ---- forward-only writes -------------------------------------------- */

/* One gets/cas round for KEY, which `add` found taken: replaces the stored
 * value with VALUE (header NEXT) when the forward-only rule allows. */
static enum cache_round
cache_replace(memcached_st *mc, const char *group, const char *key,
              size_t key_len, const uint8_t *value, size_t len,
              const struct codec_cache_header *next, uint32_t expire_s,
              char *err, size_t errlen)
{
    memcached_result_st result;
    const memcached_result_st *got;
    struct codec_cache_header cur;
    struct buf_reader r;
    memcached_return_t rc;
    bool present = false, decoded = false;
    uint64_t cas = 0;
    enum cache_round round = CACHE_ROUND_FAILED;

    memcached_result_create(mc, &result);
    rc = memcached_mget_by_key(mc, group, CACHE_GROUP_KEY_LEN, &key, &key_len,
                               1);
    if (rc != MEMCACHED_SUCCESS) {
        cache_say_failure(mc, group, rc, err, errlen);
        goto done;
    }
    /* Read to the end of the answer, so the connection is ready for cas. */
    while ((got = memcached_fetch_result(mc, &result, &rc)) != NULL) {
        if (present)
            continue;
        present = true;
        cas = memcached_result_cas(got);
        buf_reader_init(&r, memcached_result_value(got),
                        memcached_result_length(got));
        decoded = codec_cache_header_decode(&r, &cur, NULL, 0) == 0;
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND) {
        cache_say_failure(mc, group, rc, err, errlen);
        goto done;
    }
    if (!present) {
        round = CACHE_ROUND_RACED;   /* deleted or expired since the add */
        goto done;
    }
    if (decoded && !codec_cache_header_may_replace(&cur, next)) {
        round = CACHE_ROUND_STALE;
        goto done;
    }
    rc = memcached_cas_by_key(mc, group, CACHE_GROUP_KEY_LEN, key, key_len,
                              (const char *)value, len, (time_t)expire_s,
                              CACHE_VALUE_FLAGS, cas);
    if (rc == MEMCACHED_SUCCESS)
        round = CACHE_ROUND_WRITTEN;
    else if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND)
        round = CACHE_ROUND_RACED;
    else
        cache_say_failure(mc, group, rc, err, errlen);

done:
    memcached_result_free(&result);
    return round;
}

int
cache_put(struct cache *c, const char *name, size_t name_len,
          const char *key, size_t key_len, const uint8_t *value,
          size_t len, uint32_t expire_s, char *err, size_t errlen)
{
    char group[CACHE_GROUP_KEY_LEN + 1];
    char why[CACHE_ERR_MAX];
    struct codec_cache_header next;
    struct buf_reader r;
    memcached_return_t rc;
    memcached_st *mc;
    int status = -1;

    buf_reader_init(&r, value, len);
    if (codec_cache_header_decode(&r, &next, why, sizeof(why)) != 0) {
        errmsg_say(err, errlen, "cache value for %.*s: %s", (int)key_len, key,
                  why);
        return -1;
    }
    cache_group_key(group, name, name_len);
    mc = cache_borrow(c, err, errlen);
    if (mc == NULL)
        return -1;
    for (int attempt = 0; attempt < CACHE_PUT_ATTEMPTS; attempt++) {
        enum cache_round round;

        rc = memcached_add_by_key(mc, group, CACHE_GROUP_KEY_LEN, key, key_len,
                                  (const char *)value, len, (time_t)expire_s,
                                  CACHE_VALUE_FLAGS);
        if (rc == MEMCACHED_SUCCESS) {
            status = 1;
            goto done;
        }
        if (rc != MEMCACHED_NOTSTORED) {
            cache_say_failure(mc, group, rc, err, errlen);
            goto done;
        }
        round = cache_replace(mc, group, key, key_len, value, len, &next,
                              expire_s, err, errlen);
        if (round != CACHE_ROUND_RACED) {
            status = (int)round;
            goto done;
        }
    }
    cache_say_server(mc, group, err, errlen,
                     "%.*s kept changing under other writers; gave up after "
                     "%d attempts", (int)key_len, key, CACHE_PUT_ATTEMPTS);

done:
    memcached_pool_release(c->pool, mc);
    return status;
}
