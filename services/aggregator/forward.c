/*
 * forward: pending forwards of an envelope's entries, see forward.h.
 */
#include "forward.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "daemon.h"
#include "log.h"
#include "xalloc.h"

#define FORWARD_RETRY_US 1000000        /* a failed forward, sent again */

struct forward_entry {
    struct forward_entry *next;
    struct forward *owner;
    int notice;                         /* 1: a raw notice, not a forward */
    char *exchange, *routing_key, *content_type, *reason;
    uint32_t instance;
    uint8_t key[FORWARD_KEY_SIZE];
    uint8_t *data;
    size_t len;
    int tag;                            /* forward_create's TAG of data */
    int in_flight;
    int64_t retry_at_us;                /* monotonic */
};

struct forward {
    struct publisher *pub;
    int (*tag)(const uint8_t *data, size_t len);
    pthread_mutex_t lock;
    struct forward_entry *pending;
    size_t count;
    int hold;                           /* replaying: add, do not send */
    uint8_t *confirmed;                 /* keys of confirmed forwards */
    size_t confirmed_count, confirmed_cap;
};

static void
forward_entry_free(struct forward_entry *e)
{
    free(e->exchange);
    free(e->routing_key);
    free(e->content_type);
    free(e->reason);
    free(e->data);
    free(e);
}

struct forward *
forward_create(struct publisher *pub,
               int (*tag)(const uint8_t *data, size_t len))
{
    struct forward *f = xcalloc(1, sizeof(*f));

    f->pub = pub;
    f->tag = tag;
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

void
forward_destroy(struct forward *f)
{
    if (f == NULL)
        return;
    while (f->pending != NULL) {
        struct forward_entry *e = f->pending;

        f->pending = e->next;
        forward_entry_free(e);
    }
    free(f->confirmed);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static void
forward_settled(void *ctx, int ok, const char *reason)
{
    struct forward_entry *e = ctx;
    struct forward *f = e->owner;
    struct forward_entry **p;

    pthread_mutex_lock(&f->lock);
    if (!ok) {
        e->in_flight = 0;
        e->retry_at_us = daemon_monotonic_us() + FORWARD_RETRY_US;
        pthread_mutex_unlock(&f->lock);
        if (e->notice)
            log_warn("notice to %s: %s (sent again later)",
                     e->exchange[0] ? e->exchange : e->routing_key, reason);
        else
            log_warn("forward to instance %u: %s (sent again later)",
                     e->instance, reason);
        return;
    }
    for (p = &f->pending; *p != e; p = &(*p)->next)
        ;
    *p = e->next;
    f->count -= !e->notice;
    if (!e->notice) {
        if (f->confirmed_count == f->confirmed_cap) {
            f->confirmed_cap = f->confirmed_cap ? f->confirmed_cap * 2 : 64;
            f->confirmed = xrealloc(f->confirmed,
                                    f->confirmed_cap * FORWARD_KEY_SIZE);
        }
        memcpy(f->confirmed + f->confirmed_count++ * FORWARD_KEY_SIZE,
               e->key, FORWARD_KEY_SIZE);
    }
    pthread_mutex_unlock(&f->lock);
    forward_entry_free(e);
}

size_t
forward_take_confirmed(struct forward *f, uint8_t **keys)
{
    size_t n;

    pthread_mutex_lock(&f->lock);
    *keys = f->confirmed;
    n = f->confirmed_count;
    f->confirmed = NULL;
    f->confirmed_count = 0;
    f->confirmed_cap = 0;
    pthread_mutex_unlock(&f->lock);
    return n;
}

void
forward_remove(struct forward *f, const uint8_t key[FORWARD_KEY_SIZE])
{
    struct forward_entry **p, *e = NULL;

    pthread_mutex_lock(&f->lock);
    for (p = &f->pending; *p != NULL; p = &(*p)->next) {
        if (!(*p)->notice && !(*p)->in_flight
            && memcmp((*p)->key, key, FORWARD_KEY_SIZE) == 0) {
            e = *p;
            *p = e->next;
            f->count--;
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (e != NULL)
        forward_entry_free(e);
}

/* Hands E to the publisher; the lock is not held. */
static void
forward_send(struct forward *f, struct forward_entry *e)
{
    uint8_t *copy;

    if (e->notice) {
        struct bus_props p = {0};

        p.content_type = e->content_type;
        p.reason = e->reason;
        p.persistent = 1;
        publisher_submit(f->pub, publisher_item_raw(e->exchange,
                                                    e->routing_key, e->data,
                                                    e->len, &p, 0,
                                                    forward_settled, e));
        return;
    }
    copy = xmalloc(e->len);
    memcpy(copy, e->data, e->len);
    /* A forward made under a map with more instances than the current
     * one (a restart after a shrink) still has its queue. */
    publisher_set_instances(f->pub, e->instance + 1);
    publisher_submit(f->pub, publisher_item_events(e->instance, copy, e->len,
                                                   forward_settled, e));
}

static char *
forward_strdup(const char *s)
{
    return s != NULL ? xstrndup(s, strlen(s)) : NULL;
}

void
forward_add_notice(struct forward *f, const char *exchange,
                   const char *routing_key, const char *content_type,
                   const char *reason, const void *body, size_t len)
{
    struct forward_entry *e = xcalloc(1, sizeof(*e));

    e->owner = f;
    e->notice = 1;
    e->exchange = forward_strdup(exchange);
    e->routing_key = forward_strdup(routing_key);
    e->content_type = forward_strdup(content_type);
    e->reason = forward_strdup(reason);
    e->data = xmalloc(len > 0 ? len : 1);
    memcpy(e->data, body, len);
    e->len = len;
    e->in_flight = 1;
    pthread_mutex_lock(&f->lock);
    e->next = f->pending;
    f->pending = e;
    pthread_mutex_unlock(&f->lock);
    forward_send(f, e);
}

void
forward_add(struct forward *f, uint32_t instance,
            const uint8_t key[FORWARD_KEY_SIZE], uint8_t *data, size_t len)
{
    struct forward_entry *e = xcalloc(1, sizeof(*e));

    e->owner = f;
    e->instance = instance;
    memcpy(e->key, key, FORWARD_KEY_SIZE);
    e->data = data;
    e->len = len;
    e->tag = f->tag(data, len);
    pthread_mutex_lock(&f->lock);
    e->in_flight = !f->hold;
    e->next = f->pending;
    f->pending = e;
    f->count++;
    pthread_mutex_unlock(&f->lock);
    if (e->in_flight)
        forward_send(f, e);
}

void
forward_hold(struct forward *f, int hold)
{
    pthread_mutex_lock(&f->lock);
    f->hold = hold;
    pthread_mutex_unlock(&f->lock);
}

void
forward_poll(struct forward *f)
{
    int64_t now = daemon_monotonic_us();

    for (;;) {
        struct forward_entry *e;

        pthread_mutex_lock(&f->lock);
        for (e = f->hold ? NULL : f->pending; e != NULL; e = e->next)
            if (!e->in_flight && now >= e->retry_at_us)
                break;
        if (e != NULL)
            e->in_flight = 1;
        pthread_mutex_unlock(&f->lock);
        if (e == NULL)
            return;
        forward_send(f, e);
    }
}

size_t
forward_pending_tagged(struct forward *f, int tag)
{
    size_t n = 0;

    pthread_mutex_lock(&f->lock);
    for (const struct forward_entry *e = f->pending; e != NULL; e = e->next)
        n += !e->notice && e->tag == tag;
    pthread_mutex_unlock(&f->lock);
    return n;
}

size_t
forward_pending(struct forward *f)
{
    size_t n;

    pthread_mutex_lock(&f->lock);
    n = f->count;
    pthread_mutex_unlock(&f->lock);
    return n;
}

void
forward_encode(struct forward *f, struct buf_writer *out)
{
    pthread_mutex_lock(&f->lock);
    buf_put_varint(out, f->count);
    for (struct forward_entry *e = f->pending; e != NULL; e = e->next) {
        if (e->notice)
            continue;
        buf_put_varint(out, e->instance);
        buf_put_bytes(out, e->key, FORWARD_KEY_SIZE);
        buf_put_string(out, e->data, e->len);
    }
    pthread_mutex_unlock(&f->lock);
}

int
forward_decode(struct forward *f, struct buf_reader *in, char *err,
               size_t errlen)
{
    uint64_t count, instance;

    if (buf_get_varint(in, &count) != 0 || count > buf_remaining(in)) {
        snprintf(err, errlen, "snapshot: bad forward count");
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *data, *key;
        size_t len;
        uint8_t *copy;

        if (buf_get_varint(in, &instance) != 0 || instance > UINT32_MAX
            || buf_get_bytes(in, &key, FORWARD_KEY_SIZE) != 0
            || buf_get_string(in, &data, &len, CODEC_MESSAGE_MAX) != 0
            || len == 0) {
            snprintf(err, errlen, "snapshot: forward %llu is malformed",
                     (unsigned long long)i);
            return -1;
        }
        copy = xmalloc(len);
        memcpy(copy, data, len);
        {
            struct forward_entry *e = xcalloc(1, sizeof(*e));

            e->owner = f;
            e->instance = (uint32_t)instance;
            memcpy(e->key, key, FORWARD_KEY_SIZE);
            e->data = copy;
            e->len = len;
            e->tag = f->tag(copy, len);
            pthread_mutex_lock(&f->lock);
            e->next = f->pending;
            f->pending = e;
            f->count++;
            pthread_mutex_unlock(&f->lock);
        }
    }
    return 0;
}
