/*
 * cache: tally's memcached client (libmemcached, with its connection pool).
 * Every call borrows one connection from the pool, addresses each metric's
 * server through the metric's hex hash as group key, and gives the
 * connection back. Calls about many metrics sort their keys by server
 * (memcached_generate_hash of the group key, which is how every *_by_key
 * call picks the server) and make one multi-get per server.
 *
 *   cache_put_many (forward-only, schema/cache-value.md), per server:
 *
 *     gets of every open write (one multi-get)
 *      │ per write: stored value + CAS, or nothing
 *      ▼
 *     may the stored header be replaced? ──no──> settled: 1 if the stored
 *      │ yes, or nothing or undecodable stored        value is the one we
 *      ▼                                              sent, else 0
 *     add (nothing stored) or cas, noreply: no waiting for the answers
 *      └──> again from gets, which shows whether each write took; one that
 *           lost a race to another writer is still open. Writes still open
 *           after CACHE_PUT_ATTEMPTS rounds fail.
 *
 * A cas only replaces the value it read, and an add only a missing one, so
 * a value that lost its race never lands on a newer one.
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
#define CACHE_PUT_ATTEMPTS 8          /* write rounds lost to races */
#define CACHE_POOL_WAIT_S 2           /* waiting for a free connection */
#define CACHE_US_PER_MS 1000
#define CACHE_PORT_MAX 65535
#define CACHE_VALUE_FLAGS 0           /* memcached item flags: unused */

struct cache {
    memcached_st *master;     /* owned: servers and behaviours, cloned by */
    memcached_pool_st *pool;  /* owned: up to CACHE_POOL_MAX connections */
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
        /* noreply writes followed by a multi-get: without it, Nagle holds
         * the multi-get until memcached acks, which it delays as it has
         * nothing to answer */
        { MEMCACHED_BEHAVIOR_TCP_NODELAY, 1 },
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

/* One answer of a multi-get, with the index of its key in the request. */
typedef void (*cache_got_fn)(void *ctx, size_t index,
                             const memcached_result_st *got);

/* Reads every answer of the multi-get of the N keys KEYS[i] (KEY_LENS[i]
 * bytes) just sent on MC, to the end, and hands each to GOT. One server
 * answers in the order of the request, so the search for each answer's key
 * starts after the last one found; a key asked twice gets its answers at
 * its indexes in turn. MEMCACHED_END when all went well. */
static memcached_return_t
cache_fetch(memcached_st *mc, const char *const *keys, const size_t *key_lens,
            size_t n, cache_got_fn got, void *ctx)
{
    memcached_result_st result;
    const memcached_result_st *answer;
    memcached_return_t rc;
    bool *reported = xcalloc(n, sizeof(*reported));
    size_t next = 0;

    memcached_result_create(mc, &result);
    while ((answer = memcached_fetch_result(mc, &result, &rc)) != NULL) {
        const char *key = memcached_result_key_value(answer);
        size_t key_len = memcached_result_key_length(answer);

        for (size_t tried = 0; tried < n; tried++) {
            size_t i = (next + tried) % n;

            if (!reported[i] && key_lens[i] == key_len
                && memcmp(keys[i], key, key_len) == 0) {
                reported[i] = true;
                next = (i + 1) % n;
                got(ctx, i, answer);
                break;
            }
        }
    }
    memcached_result_free(&result);
    free(reported);
    return rc == MEMCACHED_NOTFOUND ? MEMCACHED_END : rc;
}

/* Multi-gets the N keys, which all sit on the server of GROUP, in one
 * round trip and hands each answer to GOT. 0, or -1 with a reason in ERR
 * (then some answers may have been handed over). */
static int
cache_get_run(memcached_st *mc, const char *group, const char *const *keys,
              const size_t *key_lens, size_t n, cache_got_fn got, void *ctx,
              char *err, size_t errlen)
{
    memcached_return_t rc;

    rc = memcached_mget_by_key(mc, group, CACHE_GROUP_KEY_LEN, keys, key_lens,
                               n);
    if (rc == MEMCACHED_SUCCESS)
        rc = cache_fetch(mc, keys, key_lens, n, got, ctx);
    if (rc == MEMCACHED_END)
        return 0;
    cache_say_failure(mc, group, rc, err, errlen);
    return -1;
}

/* Passes answers on to a cache_found_fn, at the caller's index of each key:
 * INDEXES[i] for the run's key i (or i itself when INDEXES is NULL). */
struct cache_found_ctx {
    const size_t *indexes;
    cache_found_fn found;
    void *ctx;
};

static void
cache_pass_found(void *ctx, size_t index, const memcached_result_st *got)
{
    struct cache_found_ctx *f = ctx;

    f->found(f->ctx, f->indexes != NULL ? f->indexes[index] : index,
             (const uint8_t *)memcached_result_value(got),
             memcached_result_length(got));
}

int
cache_mget(struct cache *c, const char *name, size_t name_len,
           const char *const *keys, const size_t *key_lens, size_t n,
           cache_found_fn found, void *ctx, char *err, size_t errlen)
{
    char group[CACHE_GROUP_KEY_LEN + 1];
    struct cache_found_ctx f = { .indexes = NULL, .found = found, .ctx = ctx };
    memcached_st *mc;
    int status;

    if (n == 0)
        return 0;
    cache_group_key(group, name, name_len);
    mc = cache_borrow(c, err, errlen);
    if (mc == NULL)
        return -1;
    status = cache_get_run(mc, group, keys, key_lens, n, cache_pass_found, &f,
                           err, errlen);
    memcached_pool_release(c->pool, mc);
    return status;
}

/* ---- many metrics at once ------------------------------------------- */

/* The group keys and servers of the items of a *_many call. */
struct cache_groups {
    char (*keys)[CACHE_GROUP_KEY_LEN + 1];   /* per item */
    uint32_t *servers;                       /* per item */
    size_t *order;        /* the items asked for, sorted by server */
    size_t count;         /* of ORDER */
};

/* Fills G for the COUNT items ITEMS[] of the N in all, metric i being
 * NAMES[i] (NAME_LENS[i] bytes): each item's group key and the server
 * libmemcached picks for it (the same as every *_by_key call does), and
 * ORDER, the items sorted by server (stably). */
static void
cache_groups_create(struct cache_groups *g, memcached_st *mc,
                    const char *const *names, const size_t *name_lens,
                    size_t n, const size_t *items, size_t count)
{
    uint32_t server_count = memcached_server_count(mc);
    size_t *start = xcalloc((size_t)server_count + 1, sizeof(*start));

    g->keys = xcalloc(n, sizeof(*g->keys));
    g->servers = xcalloc(n, sizeof(*g->servers));
    g->order = xcalloc(count, sizeof(*g->order));
    g->count = count;
    for (size_t k = 0; k < count; k++) {
        size_t i = items[k];

        cache_group_key(g->keys[i], names[i], name_lens[i]);
        g->servers[i] = memcached_generate_hash(mc, g->keys[i],
                                                CACHE_GROUP_KEY_LEN);
        start[g->servers[i] + 1]++;
    }
    for (uint32_t s = 0; s < server_count; s++)
        start[s + 1] += start[s];
    for (size_t k = 0; k < count; k++)
        g->order[start[g->servers[items[k]]]++] = items[k];
    free(start);
}

static void
cache_groups_destroy(struct cache_groups *g)
{
    free(g->keys);
    free(g->servers);
    free(g->order);
}

/* Length of the run of G->order from FIRST on that one multi-get can ask
 * for: items of one server, CACHE_MGET_KEYS_MAX at most. */
static size_t
cache_groups_run(const struct cache_groups *g, size_t first)
{
    uint32_t server = g->servers[g->order[first]];
    size_t end = first + 1;

    while (end < g->count && end - first < CACHE_MGET_KEYS_MAX
           && g->servers[g->order[end]] == server)
        end++;
    return end - first;
}

int
cache_mget_many(struct cache *c, const char *const *names,
                const size_t *name_lens, const char *const *keys,
                const size_t *key_lens, size_t n, cache_found_fn found,
                void *ctx, char *err, size_t errlen)
{
    struct cache_found_ctx f = { .indexes = NULL, .found = found, .ctx = ctx };
    struct cache_groups g;
    const char **run_keys;
    size_t *items, *run_lens, len;
    memcached_st *mc;
    int status = 0;

    if (n == 0)
        return 0;
    mc = cache_borrow(c, err, errlen);
    if (mc == NULL)
        return -1;
    items = xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++)
        items[i] = i;
    cache_groups_create(&g, mc, names, name_lens, n, items, n);
    run_keys = xcalloc(n, sizeof(*run_keys));
    run_lens = xcalloc(n, sizeof(*run_lens));
    for (size_t first = 0; first < n; first += len) {
        len = cache_groups_run(&g, first);
        f.indexes = &g.order[first];
        for (size_t k = 0; k < len; k++) {
            run_keys[k] = keys[f.indexes[k]];
            run_lens[k] = key_lens[f.indexes[k]];
        }
        /* A server that fails keeps the first reason; the others still
         * answer. */
        if (cache_get_run(mc, g.keys[f.indexes[0]], run_keys, run_lens, len,
                          cache_pass_found, &f, status == 0 ? err : NULL,
                          errlen) != 0)
            status = -1;
    }
    free(run_keys);
    free(run_lens);
    cache_groups_destroy(&g);
    free(items);
    memcached_pool_release(c->pool, mc);
    return status;
}

/* ---- forward-only writes -------------------------------------------- */

/* What cache_put_many knows about one write. */
struct cache_put_state {
    struct codec_cache_header next;   /* of the value to write */
    struct codec_cache_header cur;    /* of the stored value, if DECODED */
    uint64_t cas;                     /* of the stored value */
    bool present, decoded;            /* at the last multi-get */
    bool sent;                        /* an add or cas of it went out */
};

struct cache_put_batch {
    struct cache_write *writes;
    struct cache_put_state *states;
    const struct cache_groups *groups;
    const size_t *run;                /* write of each key of a multi-get */
};

static void
cache_put_got(void *ctx, size_t index, const memcached_result_st *got)
{
    struct cache_put_batch *b = ctx;
    struct cache_put_state *s = &b->states[b->run[index]];
    struct buf_reader r;

    s->present = true;
    s->cas = memcached_result_cas(got);
    buf_reader_init(&r, memcached_result_value(got),
                    memcached_result_length(got));
    s->decoded = codec_cache_header_decode(&r, &s->cur, NULL, 0) == 0;
}

/* 1 if the value of S must (still) be written: nothing is stored, or what
 * is stored is undecodable or older. */
static int
cache_put_pending(const struct cache_put_state *s)
{
    return !s->present || !s->decoded
           || codec_cache_header_may_replace(&s->cur, &s->next);
}

/* Sends the `add` or `cas` of each of the N writes RUN[] without waiting
 * for answers: whether they took shows at the next multi-get. Drops from
 * RUN those that could not be sent (status -1, the first reason in ERR)
 * and returns how many are left. */
static size_t
cache_put_send(memcached_st *mc, struct cache_put_batch *b, size_t *run,
               size_t n, char *err, size_t errlen)
{
    size_t left = 0;

    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    for (size_t k = 0; k < n; k++) {
        struct cache_write *w = &b->writes[run[k]];
        struct cache_put_state *s = &b->states[run[k]];
        const char *group = b->groups->keys[run[k]];
        memcached_return_t rc;

        if (!s->present)
            rc = memcached_add_by_key(mc, group, CACHE_GROUP_KEY_LEN, w->key,
                                      w->key_len, (const char *)w->value,
                                      w->len, (time_t)w->expire_s,
                                      CACHE_VALUE_FLAGS);
        else if (s->cas != 0)
            rc = memcached_cas_by_key(mc, group, CACHE_GROUP_KEY_LEN, w->key,
                                      w->key_len, (const char *)w->value,
                                      w->len, (time_t)w->expire_s,
                                      CACHE_VALUE_FLAGS, s->cas);
        else
            rc = MEMCACHED_NOT_SUPPORTED;   /* memcached -C: no CAS */
        if (rc != MEMCACHED_SUCCESS) {
            w->status = -1;
            cache_say_failure(mc, group, rc, err, errlen);
            err = NULL;
            continue;
        }
        s->sent = true;
        run[left++] = run[k];
    }
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NOREPLY, 0);
    return left;
}

/* The rounds of cache_put_many for the N writes RUN[], which sit on one
 * server: multi-get, settle what the stored values allow, send the rest,
 * again until all are settled or CACHE_PUT_ATTEMPTS rounds have been sent.
 * Sets every status; 0, or -1 with the first reason in ERR. RUN is
 * scratch. */
static int
cache_put_run(memcached_st *mc, struct cache_put_batch *b, size_t *run,
              size_t n, char *err, size_t errlen)
{
    const char *group = b->groups->keys[run[0]];
    const char **keys = xcalloc(n, sizeof(*keys));
    size_t *key_lens = xcalloc(n, sizeof(*key_lens));
    int status = 0;

    b->run = run;
    for (int round = 0; n > 0; round++) {
        size_t left = 0;

        for (size_t k = 0; k < n; k++) {
            keys[k] = b->writes[run[k]].key;
            key_lens[k] = b->writes[run[k]].key_len;
            b->states[run[k]].present = false;
            b->states[run[k]].decoded = false;
        }
        if (cache_get_run(mc, group, keys, key_lens, n, cache_put_got, b,
                          status == 0 ? err : NULL, errlen) != 0) {
            for (size_t k = 0; k < n; k++)
                b->writes[run[k]].status = -1;
            status = -1;
            break;
        }
        for (size_t k = 0; k < n; k++) {
            struct cache_write *w = &b->writes[run[k]];
            struct cache_put_state *s = &b->states[run[k]];

            if (!cache_put_pending(s)) {
                /* Ours, if it went out and is what is stored now. */
                w->status = s->sent && s->cur.generation == s->next.generation
                            && s->cur.sequence == s->next.sequence;
            } else if (round == CACHE_PUT_ATTEMPTS) {
                w->status = -1;
                if (status == 0)
                    cache_say_server(mc, group, err, errlen,
                                     "%.*s kept changing under other writers; "
                                     "gave up after %d attempts",
                                     (int)w->key_len, w->key,
                                     CACHE_PUT_ATTEMPTS);
                status = -1;
            } else {
                run[left++] = run[k];
            }
        }
        n = cache_put_send(mc, b, run, left, status == 0 ? err : NULL,
                           errlen);
        if (n < left)
            status = -1;
    }
    free(keys);
    free(key_lens);
    return status;
}

int
cache_put_many(struct cache *c, struct cache_write *w, size_t n, char *err,
               size_t errlen)
{
    struct cache_put_batch b = { .writes = w };
    struct cache_groups g;
    const char **names;
    size_t *name_lens, *items, count = 0, len;
    memcached_st *mc;
    int status = 0, failed = 0;

    if (n == 0)
        return 0;
    b.states = xcalloc(n, sizeof(*b.states));
    names = xcalloc(n, sizeof(*names));
    name_lens = xcalloc(n, sizeof(*name_lens));
    items = xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        char why[CACHE_ERR_MAX];
        struct buf_reader r;

        w[i].status = -1;
        names[i] = w[i].name;
        name_lens[i] = w[i].name_len;
        buf_reader_init(&r, w[i].value, w[i].len);
        if (codec_cache_header_decode(&r, &b.states[i].next, why,
                                      sizeof(why)) == 0) {
            items[count++] = i;
        } else if (status == 0) {
            errmsg_say(err, errlen, "cache value for %.*s: %s",
                      (int)w[i].key_len, w[i].key, why);
            status = -1;
        }
    }
    if (count == 0)
        goto done;
    mc = cache_borrow(c, status == 0 ? err : NULL, errlen);
    if (mc == NULL) {
        status = -1;
        goto done;
    }
    cache_groups_create(&g, mc, names, name_lens, n, items, count);
    b.groups = &g;
    for (size_t first = 0; first < count; first += len) {
        len = cache_groups_run(&g, first);
        if (cache_put_run(mc, &b, &g.order[first], len,
                          status == 0 ? err : NULL, errlen) != 0) {
            status = -1;
            failed = 1;
        }
    }
    /* After a failure the connection may hold answers nobody reads (even
     * noreply writes get one for out of memory): start afresh. */
    if (failed)
        memcached_quit(mc);
    cache_groups_destroy(&g);
    memcached_pool_release(c->pool, mc);

done:
    free(b.states);
    free(names);
    free(name_lens);
    free(items);
    return status;
}

int
cache_put(struct cache *c, const char *name, size_t name_len,
          const char *key, size_t key_len, const uint8_t *value,
          size_t len, uint32_t expire_s, char *err, size_t errlen)
{
    struct cache_write w = {
        .name = name, .name_len = name_len, .key = key, .key_len = key_len,
        .value = value, .len = len, .expire_s = expire_s,
    };

    cache_put_many(c, &w, 1, err, errlen);
    return w.status;
}
