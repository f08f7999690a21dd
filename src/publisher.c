/*
 * publisher: group commit onto tally.events with publisher confirms, see
 * publisher.h.
 */
#include "publisher.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "codec.h"
#include "daemon.h"
#include "log.h"
#include "xalloc.h"

#define PUBLISHER_POLL_MS 50
#define PUBLISHER_MESSAGE_TARGET (1024u * 1024u)   /* close a message here */
#define PUBLISHER_TAG_MAX 24
#define PUBLISHER_CONTENT_TYPE "application/x-tally-batch"
#define PUBLISHER_QUEUE_BYTES_MAX (256u * 1024u * 1024u)
#define PUBLISHER_US_PER_MS 1000
/* Unconfirmed messages at most; while that many are out, items wait and
 * go together in the next ones. Busy frontends then send fewer, larger
 * messages (RabbitMQ's cost is per message), and an idle one still sends
 * each item at once. */
#define PUBLISHER_FLIGHTS_MAX 4

struct publisher_item {
    struct publisher_item *next;
    int64_t instance;              /* -1 for a raw item */
    uint8_t *data;
    size_t len;
    char *exchange, *routing_key;
    char *content_type, *message_id, *correlation_id, *reply_to, *reason;
    int persistent;
    int mandatory;
    publisher_done_fn done;
    void *ctx;
    int64_t deadline_us;           /* monotonic: fail if not confirmed */
};

/* One published, unconfirmed message. */
struct publisher_flight {
    uint64_t tag;
    struct publisher_item *items;
    int returned;
    int64_t sent_us;
};

struct publisher {
    const struct bus_config *config;
    char name[BUS_NAME_MAX];       /* shown in the broker's connections */
    int confirm_timeout_ms;
    pthread_t thread;
    int wake_fd;
    pthread_mutex_t lock;          /* guards queue, connected, last_error,
                                      instances */
    uint32_t instances;            /* instance queues to declare */
    struct publisher_item *queue, **queue_tail;
    size_t queued_bytes;           /* of the items in queue */
    uint64_t republished;          /* items sent again after a drop */
    int connected;
    int blocked;                   /* connection.blocked: resource alarm */
    int stopping;
    char last_error[BUS_ERR_MAX];
    /* thread-owned */
    struct bus *bus;
    uint32_t declared;             /* instance queues declared on bus */
    struct publisher_flight *flights;   /* in publish (tag) order */
    size_t flight_count, flight_cap;
};

/* ---------------------------------------------------------------------- */
/* Items                                                                   */
/* ---------------------------------------------------------------------- */

static char *
publisher_strdup(const char *s)
{
    return s != NULL ? xstrndup(s, strlen(s)) : NULL;
}

struct publisher_item *
publisher_item_events(uint32_t instance, uint8_t *data, size_t len,
                      publisher_done_fn done, void *ctx)
{
    struct publisher_item *it = xcalloc(1, sizeof(*it));

    it->instance = instance;
    it->data = data;
    it->len = len;
    it->done = done;
    it->ctx = ctx;
    return it;
}

struct publisher_item *
publisher_item_raw(const char *exchange, const char *routing_key,
                   const void *body, size_t len, const struct bus_props *props,
                   int mandatory, publisher_done_fn done, void *ctx)
{
    struct publisher_item *it = xcalloc(1, sizeof(*it));

    it->instance = -1;
    it->data = xmalloc(len > 0 ? len : 1);
    memcpy(it->data, body, len);
    it->len = len;
    it->exchange = publisher_strdup(exchange);
    it->routing_key = publisher_strdup(routing_key);
    it->content_type = publisher_strdup(props->content_type);
    it->message_id = publisher_strdup(props->message_id);
    it->correlation_id = publisher_strdup(props->correlation_id);
    it->reply_to = publisher_strdup(props->reply_to);
    it->reason = publisher_strdup(props->reason);
    it->persistent = props->persistent;
    it->mandatory = mandatory;
    it->done = done;
    it->ctx = ctx;
    return it;
}

/* Reports ITEM's fate and frees it. */
static void
publisher_finish(struct publisher_item *it, int ok, const char *reason)
{
    if (it->done != NULL)
        it->done(it->ctx, ok, reason);
    free(it->data);
    free(it->exchange);
    free(it->routing_key);
    free(it->content_type);
    free(it->message_id);
    free(it->correlation_id);
    free(it->reply_to);
    free(it->reason);
    free(it);
}

static void
publisher_finish_list(struct publisher_item *it, int ok, const char *reason)
{
    while (it != NULL) {
        struct publisher_item *next = it->next;

        publisher_finish(it, ok, reason);
        it = next;
    }
}

static void
publisher_wake(struct publisher *p)
{
    uint64_t one = 1;

    if (write(p->wake_fd, &one, sizeof(one)) < 0)
        log_debug("publisher wake: eventfd full");
}

void
publisher_submit(struct publisher *p, struct publisher_item *item)
{
    char reason[PUBLISHER_REASON_MAX];

    item->next = NULL;
    item->deadline_us = daemon_monotonic_us()
                        + (int64_t)p->confirm_timeout_ms * PUBLISHER_US_PER_MS;
    pthread_mutex_lock(&p->lock);
    if (!p->connected || p->stopping) {
        snprintf(reason, sizeof(reason), "RabbitMQ is unreachable: %s",
                 p->last_error[0] ? p->last_error : "not connected yet");
        pthread_mutex_unlock(&p->lock);
        publisher_finish(item, 0, reason);
        return;
    }
    if (p->blocked) {
        snprintf(reason, sizeof(reason), "RabbitMQ is blocked by a resource "
                 "alarm (%s); retry", p->last_error);
        pthread_mutex_unlock(&p->lock);
        publisher_finish(item, 0, reason);
        return;
    }
    if (p->queued_bytes + item->len > PUBLISHER_QUEUE_BYTES_MAX) {
        pthread_mutex_unlock(&p->lock);
        publisher_finish(item, 0, "overloaded: the frontend's publish queue "
                                  "is full; retry");
        return;
    }
    p->queued_bytes += item->len;
    *p->queue_tail = item;
    p->queue_tail = &item->next;
    pthread_mutex_unlock(&p->lock);
    publisher_wake(p);
}

void
publisher_set_instances(struct publisher *p, uint32_t instances)
{
    pthread_mutex_lock(&p->lock);
    if (instances > p->instances)
        p->instances = instances;
    pthread_mutex_unlock(&p->lock);
}

uint64_t
publisher_republished(struct publisher *p)
{
    uint64_t n;

    pthread_mutex_lock(&p->lock);
    n = p->republished;
    pthread_mutex_unlock(&p->lock);
    return n;
}

int
publisher_ready(struct publisher *p)
{
    int ready;

    pthread_mutex_lock(&p->lock);
    ready = p->connected;
    pthread_mutex_unlock(&p->lock);
    return ready;
}

void
publisher_last_error(struct publisher *p, char *why, size_t whylen)
{
    pthread_mutex_lock(&p->lock);
    snprintf(why, whylen, "%s", p->last_error);
    pthread_mutex_unlock(&p->lock);
}

/* ---------------------------------------------------------------------- */
/* The thread                                                              */
/* ---------------------------------------------------------------------- */

static int
publisher_stopping(struct publisher *p)
{
    int stopping;

    pthread_mutex_lock(&p->lock);
    stopping = p->stopping;
    pthread_mutex_unlock(&p->lock);
    return stopping;
}

static int
publisher_blocked(struct publisher *p)
{
    int blocked;

    pthread_mutex_lock(&p->lock);
    blocked = p->blocked;
    pthread_mutex_unlock(&p->lock);
    return blocked;
}

static struct publisher_item *
publisher_take_queue(struct publisher *p)
{
    struct publisher_item *items;

    pthread_mutex_lock(&p->lock);
    items = p->queue;
    p->queue = NULL;
    p->queue_tail = &p->queue;
    p->queued_bytes = 0;
    pthread_mutex_unlock(&p->lock);
    return items;
}

static void
publisher_set_connected(struct publisher *p, int connected, const char *error)
{
    pthread_mutex_lock(&p->lock);
    p->connected = connected;
    p->blocked = 0;
    if (error != NULL)
        snprintf(p->last_error, sizeof(p->last_error), "%s", error);
    pthread_mutex_unlock(&p->lock);
}

uint32_t
publisher_instances(struct publisher *p)
{
    uint32_t n;

    pthread_mutex_lock(&p->lock);
    n = p->instances;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* Declares the instance queues not declared yet on this connection. */
static int
publisher_declare(struct publisher *p, char *err, size_t errlen)
{
    uint32_t n = publisher_instances(p);

    for (; p->declared < n; p->declared++)
        if (bus_declare_instance_queue(p->bus, p->declared, err, errlen) != 0)
            return -1;
    return 0;
}

static int
publisher_connect(struct publisher *p, char *err, size_t errlen)
{
    p->bus = bus_open(p->config, p->name, err, errlen);
    if (p->bus == NULL)
        return -1;
    p->declared = 0;
    if (bus_declare_topology(p->bus, err, errlen) != 0
        || publisher_declare(p, err, errlen) != 0)
        goto fail;
    if (bus_confirm_select(p->bus, err, errlen) != 0)
        goto fail;
    return 0;
fail:
    bus_close(p->bus);
    p->bus = NULL;
    return -1;
}

/* Drops the connection. The items of unconfirmed messages go back to the
 * head of the queue, to be published again on the next connection (the
 * aggregators drop what they already have by its sub-batch keys), unless
 * their deadline has passed or the publisher is stopping: those fail. */
static void
publisher_drop(struct publisher *p, const char *reason)
{
    struct publisher_item *again = NULL, **tail = &again;
    uint64_t republished = 0;
    size_t requeued_bytes = 0;
    int64_t now = daemon_monotonic_us();
    int stopping = publisher_stopping(p);
    char why[PUBLISHER_REASON_MAX];

    snprintf(why, sizeof(why), "RabbitMQ connection lost before confirm: %s",
             reason);
    if (stopping)
        log_info("publisher: %s", reason);
    else
        log_error("publisher: %s", reason);
    publisher_set_connected(p, 0, reason);
    for (size_t i = 0; i < p->flight_count; i++) {
        struct publisher_item *it = p->flights[i].items;

        while (it != NULL) {
            struct publisher_item *next = it->next;

            it->next = NULL;
            if (stopping || now >= it->deadline_us) {
                publisher_finish(it, 0, why);
            } else {
                *tail = it;
                tail = &it->next;
                republished++;
                requeued_bytes += it->len;
            }
            it = next;
        }
    }
    p->flight_count = 0;
    pthread_mutex_lock(&p->lock);
    p->republished += republished;
    p->queued_bytes += requeued_bytes;
    pthread_mutex_unlock(&p->lock);
    if (again != NULL) {
        pthread_mutex_lock(&p->lock);
        *tail = p->queue;
        if (p->queue == NULL)
            p->queue_tail = tail;
        p->queue = again;
        pthread_mutex_unlock(&p->lock);
    }
    bus_abandon(p->bus);     /* no graceful close on a failed stream */
    bus_close(p->bus);
    p->bus = NULL;
}

/* While the broker blocks publishing the connection is kept (a new one
 * would be blocked too), and the messages waiting past their confirm
 * timeout fail; a confirm that comes after the alarm finds no flight. */
static void
publisher_expire(struct publisher *p)
{
    int64_t limit = daemon_monotonic_us()
                    - (int64_t)p->confirm_timeout_ms * PUBLISHER_US_PER_MS;
    size_t kept = 0;

    for (size_t i = 0; i < p->flight_count; i++) {
        if (p->flights[i].sent_us > limit) {
            p->flights[kept++] = p->flights[i];
            continue;
        }
        publisher_finish_list(p->flights[i].items, 0,
                              "RabbitMQ is blocked by a resource alarm; "
                              "retry");
    }
    p->flight_count = kept;
}

static void
publisher_track(struct publisher *p, uint64_t tag, struct publisher_item *items)
{
    struct publisher_flight *f;

    if (p->flight_count == p->flight_cap) {
        p->flight_cap = p->flight_cap ? p->flight_cap * 2 : 64;
        p->flights = xrealloc(p->flights, p->flight_cap * sizeof(*p->flights));
    }
    f = &p->flights[p->flight_count++];
    f->tag = tag;
    f->items = items;
    f->returned = 0;
    f->sent_us = daemon_monotonic_us();
}

/* Publishes BODY carrying ITEMS (a list); on failure the items fail. */
static int
publisher_send(struct publisher *p, const char *exchange, const char *key,
               const void *body, size_t len, struct bus_props *props,
               int mandatory, struct publisher_item *items)
{
    char tag_text[PUBLISHER_TAG_MAX], err[BUS_ERR_MAX];
    uint64_t tag;

    if (p->bus == NULL) {
        publisher_finish_list(items, 0, "RabbitMQ connection lost");
        return -1;
    }
    /* The message id names the delivery tag the publish is about to get,
     * so a basic.return can be matched to its message. */
    if (props->message_id == NULL) {
        snprintf(tag_text, sizeof(tag_text), "%" PRIu64,
                 bus_next_tag(p->bus));
        props->message_id = tag_text;
    }
    if (bus_publish(p->bus, exchange, key, body, len, props, mandatory, &tag,
                    err, sizeof(err)) != 0) {
        publisher_finish_list(items, 0, err);
        publisher_drop(p, err);
        return -1;
    }
    publisher_track(p, tag, items);
    return 0;
}

/* Publishes the message ENC holds with the items CARRIED, then starts a
 * new one in OUT. */
static void
publisher_flush_message(struct publisher *p, const char *key,
                        struct codec_encoder *enc, struct buf_writer *out,
                        struct publisher_item *carried)
{
    struct bus_props props = {0};

    props.content_type = PUBLISHER_CONTENT_TYPE;
    props.persistent = 1;
    if (carried != NULL) {
        if (codec_message_end(enc) != 0)
            publisher_finish_list(carried, 0, enc->err);
        else
            publisher_send(p, BUS_EXCHANGE_EVENTS, key,
                           out->data + enc->message_start,
                           out->len - enc->message_start, &props, 1, carried);
    }
    buf_writer_reset(out);
    codec_message_begin(enc, out);
}

/* Copies the sub-batches of IT (one encoded message) into ENC; on failure
 * ENC and OUT are rolled back to where they were and a reason is in
 * ENC->err. */
static int
publisher_pack(struct codec_encoder *enc, struct buf_writer *out,
               const struct publisher_item *it)
{
    struct codec_encoder saved = *enc;
    size_t saved_len = out->len;
    struct codec_message msg;
    char err[CODEC_ERR_MAX];
    int ok = 1;

    if (codec_decode(it->data, it->len, &msg, err, sizeof(err)) != 0) {
        snprintf(enc->err, sizeof(enc->err), "%s", err);
        return -1;
    }
    for (size_t s = 0; s < msg.subbatch_count && ok; s++) {
        const struct codec_subbatch *sb = &msg.subbatches[s];

        ok = codec_subbatch_begin(enc, sb) == 0;
        for (size_t e = 0; e < sb->entry_count && ok; e++)
            ok = codec_put_entry(enc, &sb->entries[e]) == 0;
        if (ok)
            ok = codec_subbatch_end(enc) == 0;
    }
    codec_message_destroy(&msg);
    if (ok)
        return 0;
    memcpy(err, enc->err, sizeof(err));
    *enc = saved;
    out->len = saved_len;
    memcpy(enc->err, err, sizeof(err));
    return -1;
}

/* Packs the event items of one instance (a list, in submission order)
 * into as few messages as the size target allows. */
static void
publisher_send_events(struct publisher *p, uint32_t instance,
                      struct publisher_item *items)
{
    struct buf_writer out;
    struct codec_encoder enc;
    struct publisher_item *carried = NULL, **tail = &carried;
    char key[PUBLISHER_TAG_MAX];

    snprintf(key, sizeof(key), "%" PRIu32, instance);
    buf_writer_create(&out, PUBLISHER_MESSAGE_TARGET / 4);
    codec_message_begin(&enc, &out);
    while (items != NULL) {
        struct publisher_item *it = items;

        items = it->next;
        it->next = NULL;
        if (carried != NULL
            && codec_message_size(&enc) + it->len > PUBLISHER_MESSAGE_TARGET) {
            publisher_flush_message(p, key, &enc, &out, carried);
            carried = NULL;
            tail = &carried;
        }
        if (publisher_pack(&enc, &out, it) != 0) {
            publisher_finish(it, 0, enc.err);
            continue;
        }
        *tail = it;
        tail = &it->next;
    }
    publisher_flush_message(p, key, &enc, &out, carried);
    buf_writer_destroy(&out);
}

static void
publisher_send_all(struct publisher *p, struct publisher_item *items)
{
    struct publisher_item **by_instance;
    uint32_t m = publisher_instances(p);
    char err[BUS_ERR_MAX];

    if (p->declared < m && publisher_declare(p, err, sizeof(err)) != 0)
        log_warn("%s: %s", p->name, err);   /* a publish there is returned */

    by_instance = xcalloc(m, sizeof(*by_instance));
    /* Keep submission order within an instance. */
    {
        struct publisher_item **tails = xcalloc(m, sizeof(*tails));

        while (items != NULL) {
            struct publisher_item *it = items;

            items = it->next;
            it->next = NULL;
            if (it->instance < 0) {
                struct bus_props props = {0};

                props.content_type = it->content_type;
                props.message_id = it->message_id;
                props.correlation_id = it->correlation_id;
                props.reply_to = it->reply_to;
                props.reason = it->reason;
                props.persistent = it->persistent;
                publisher_send(p, it->exchange, it->routing_key, it->data,
                               it->len, &props, it->mandatory, it);
                continue;
            }
            if ((uint32_t)it->instance >= m) {
                publisher_finish(it, 0, "instance outside the slot map");
                continue;
            }
            if (tails[it->instance] == NULL)
                by_instance[it->instance] = it;
            else
                tails[it->instance]->next = it;
            tails[it->instance] = it;
        }
        free(tails);
    }
    for (uint32_t i = 0; i < m; i++)
        if (by_instance[i] != NULL)
            publisher_send_events(p, i, by_instance[i]);
    free(by_instance);
}

static struct publisher_flight *
publisher_flight_by_tag(struct publisher *p, uint64_t tag)
{
    for (size_t i = 0; i < p->flight_count; i++)
        if (p->flights[i].tag == tag)
            return &p->flights[i];
    return NULL;
}

/* Settles the flight TAG, or with MULTIPLE every flight up to TAG, in
 * whatever order the broker confirms them. */
static void
publisher_settle(struct publisher *p, uint64_t tag, int multiple, int acked)
{
    size_t kept = 0;

    for (size_t i = 0; i < p->flight_count; i++) {
        struct publisher_flight f = p->flights[i];

        if (multiple ? f.tag > tag : f.tag != tag) {
            p->flights[kept++] = f;
            continue;
        }
        if (!acked)
            publisher_finish_list(f.items, 0,
                                  "overloaded: the broker refused the "
                                  "message (queue full); retry");
        else if (f.returned)
            publisher_finish_list(f.items, 0,
                                  "unroutable: no queue for that instance");
        else
            publisher_finish_list(f.items, 1, NULL);
    }
    p->flight_count = kept;
}

static void
publisher_handle(struct publisher *p, const struct bus_event *ev)
{
    switch (ev->kind) {
    case BUS_EVENT_BLOCKED:
    case BUS_EVENT_UNBLOCKED:
        pthread_mutex_lock(&p->lock);
        p->blocked = ev->kind == BUS_EVENT_BLOCKED;
        if (p->blocked)
            snprintf(p->last_error, sizeof(p->last_error), "%s", ev->reason);
        pthread_mutex_unlock(&p->lock);
        if (ev->kind == BUS_EVENT_BLOCKED)
            log_warn("publisher: RabbitMQ blocks publishing: %s", ev->reason);
        else
            log_info("publisher: RabbitMQ publishes again");
        break;
    case BUS_EVENT_ACK:
    case BUS_EVENT_NACK:
        publisher_settle(p, ev->delivery_tag, ev->multiple,
                         ev->kind == BUS_EVENT_ACK);
        break;
    case BUS_EVENT_RETURN: {
        char *end;
        uint64_t tag = strtoull(ev->message_id, &end, 10);
        struct publisher_flight *f = publisher_flight_by_tag(p, tag);

        if (f != NULL)
            f->returned = 1;
        else
            log_warn("publisher: returned message %s not in flight",
                     ev->message_id);
        break;
    }
    default:
        break;
    }
}

static void *
publisher_run(void *arg)
{
    struct publisher *p = arg;
    long backoff = DAEMON_RECONNECT_MIN_MS;
    char err[BUS_ERR_MAX];

    while (!publisher_stopping(p)) {
        struct pollfd pfd[2];
        struct bus_event ev;
        uint64_t drained;
        int rc, n = 1;

        if (p->bus == NULL) {
            if (publisher_connect(p, err, sizeof(err)) != 0) {
                publisher_set_connected(p, 0, err);
                log_warn("publisher: %s (retrying in %ld ms)", err, backoff);
                publisher_finish_list(publisher_take_queue(p), 0, err);
                pfd[0].fd = p->wake_fd;
                pfd[0].events = POLLIN;
                poll(pfd, 1, (int)backoff);
                backoff = daemon_backoff_next(backoff,
                                              DAEMON_RECONNECT_MAX_MS);
                continue;
            }
            backoff = DAEMON_RECONNECT_MIN_MS;
            publisher_set_connected(p, 1, NULL);
            log_info("publisher connected");
        }
        if (publisher_blocked(p))
            publisher_finish_list(publisher_take_queue(p), 0,
                                  "RabbitMQ is blocked by a resource alarm; "
                                  "retry");
        else if (p->flight_count < PUBLISHER_FLIGHTS_MAX)
            publisher_send_all(p, publisher_take_queue(p));
        while (p->bus != NULL
               && (rc = bus_wait(p->bus, 0, &ev, err, sizeof(err))) != 0) {
            if (rc < 0) {
                publisher_drop(p, err);
                break;
            }
            publisher_handle(p, &ev);
            bus_event_release(p->bus, &ev);
        }
        if (p->bus != NULL && p->flight_count > 0
            && daemon_monotonic_us() - p->flights[0].sent_us
                   > (int64_t)p->confirm_timeout_ms * PUBLISHER_US_PER_MS) {
            if (publisher_blocked(p))
                publisher_expire(p);
            else
                publisher_drop(p, "no confirm from the broker in time");
        }
        if (p->bus == NULL)
            continue;
        pfd[0].fd = p->wake_fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = bus_fd(p->bus);
        pfd[1].events = POLLIN;
        n = 2;
        if (!bus_has_buffered(p->bus) && poll(pfd, (nfds_t)n,
                                              PUBLISHER_POLL_MS) > 0
            && (pfd[0].revents & POLLIN))
            if (read(p->wake_fd, &drained, sizeof(drained)) < 0)
                log_debug("publisher: eventfd read failed");
    }
    if (p->bus != NULL)
        publisher_drop(p, "shutting down");
    publisher_finish_list(publisher_take_queue(p), 0, "shutting down");
    return NULL;
}

struct publisher *
publisher_create(const struct bus_config *config, uint32_t instances,
                 int confirm_timeout_ms, const char *name)
{
    struct publisher *p = xcalloc(1, sizeof(*p));

    snprintf(p->name, sizeof(p->name), "%s", name);
    p->config = config;
    p->instances = instances;
    p->confirm_timeout_ms = confirm_timeout_ms;
    p->queue_tail = &p->queue;
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&p->lock, NULL);
    pthread_create(&p->thread, NULL, publisher_run, p);
    return p;
}

void
publisher_stop(struct publisher *p)
{
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    p->stopping = 1;
    pthread_mutex_unlock(&p->lock);
    publisher_wake(p);
    pthread_join(p->thread, NULL);
}

void
publisher_destroy(struct publisher *p)
{
    if (p == NULL)
        return;
    publisher_stop(p);
    close(p->wake_fd);
    free(p->flights);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
