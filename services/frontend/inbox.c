/*
 * inbox: the frontend's consuming connection and its I/O thread.
 *
 *   tally.ingest   JSON event batches from other services: recorded like
 *                  events.record; rejected events, and whole messages that
 *                  cannot be parsed, go to tally.rejected with the reason;
 *                  the delivery is acked once all of it is confirmed
 *   control queue  (private, bound to tally.control): "deleted" drops the
 *                  metric from the local meta cache and wakes
 *                  metrics.delete callers
 *   reply queue    (private): replies to tally.rpc requests, matched to
 *                  waiting callers by correlation id
 *
 * Other threads talk to this one through a locked list of acks to send
 * and an eventfd that wakes it.
 */
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "log.h"
#include "xalloc.h"

#define INBOX_POLL_MS 100
#define INBOX_PREFETCH 16
#define INBOX_CORRELATION_MAX 40
#define INBOX_DELETED_KEEP 256
#define INBOX_NS_PER_MS 1000000L
#define INBOX_NS_PER_S 1000000000L
#define INBOX_REASON_MAX 400
#define INBOX_US_PER_MS 1000

struct inbox_waiter {
    struct inbox_waiter *next;
    char correlation_id[INBOX_CORRELATION_MAX];
    int done;
    char *body;
    size_t len;
    int binary;
};

struct inbox_ack {
    struct inbox_ack *next;
    uint64_t tag;
    int ok;
};

struct inbox_deleted {
    char name[EVENT_NAME_MAX + 1];
    uint64_t generation;
};

/* A metrics.delete waiting for its announcement. */
struct inbox_watch {
    struct inbox_watch *next;
    char name[EVENT_NAME_MAX + 1];
    uint64_t generation;
    int64_t deadline_us;
    void (*done)(void *ctx, int seen);
    void *ctx;
};

struct inbox {
    struct frontend *fe;
    pthread_t thread;
    int wake_fd;
    pthread_mutex_t lock;          /* everything below but bus */
    pthread_cond_t changed;
    int stopping;
    int connected;
    uint64_t connection;           /* bumped on every reconnect */
    char reply_queue[BUS_NAME_MAX];
    char control_queue[BUS_NAME_MAX];
    struct inbox_waiter *waiters;
    struct inbox_ack *acks;
    struct inbox_deleted deleted[INBOX_DELETED_KEEP];
    size_t deleted_next;
    struct inbox_watch *watches;
    struct bus *bus;               /* thread-owned */
};

static void
inbox_wake(struct inbox *in)
{
    uint64_t one = 1;

    if (write(in->wake_fd, &one, sizeof(one)) < 0)
        log_debug("inbox wake: eventfd full");
}

/* ---------------------------------------------------------------------- */
/* Ingest                                                                  */
/* ---------------------------------------------------------------------- */

struct ingest_job {
    struct record record;
    struct inbox *in;
    uint64_t tag;
    uint64_t connection;
    json_object *body;             /* the parsed message */
    pthread_mutex_t lock;
    size_t pending;                /* rejected-event publishes */
    int failed;
};

static void
inbox_post_ack(struct inbox *in, uint64_t tag, uint64_t connection, int ok)
{
    struct inbox_ack *a;

    pthread_mutex_lock(&in->lock);
    if (connection != in->connection) {      /* that delivery is gone */
        pthread_mutex_unlock(&in->lock);
        return;
    }
    a = xcalloc(1, sizeof(*a));
    a->tag = tag;
    a->ok = ok;
    a->next = in->acks;
    in->acks = a;
    pthread_mutex_unlock(&in->lock);
    inbox_wake(in);
}

static void
ingest_job_free(struct ingest_job *job)
{
    record_destroy(&job->record);
    json_object_put(job->body);
    pthread_mutex_destroy(&job->lock);
    free(job);
}

static void
ingest_rejected_done(void *ctx, int ok, const char *reason)
{
    struct ingest_job *job = ctx;
    int last;

    (void)reason;
    pthread_mutex_lock(&job->lock);
    job->failed |= !ok;
    last = --job->pending == 0;
    pthread_mutex_unlock(&job->lock);
    if (!last)
        return;
    inbox_post_ack(job->in, job->tag, job->connection, !job->failed);
    ingest_job_free(job);
}

/* Publishes BODY whole to tally.rejected with REASON. */
static struct publisher_item *
inbox_rejected_item(const void *body, size_t len, const char *content_type,
                    const char *reason, publisher_done_fn done, void *ctx)
{
    struct bus_props p = {0};

    p.content_type = content_type;
    p.reason = reason;
    p.persistent = 1;
    return publisher_item_raw("", BUS_QUEUE_REJECTED, body, len, &p, 0, done,
                              ctx);
}

static void
ingest_recorded(struct record *r)
{
    struct ingest_job *job = r->ctx;
    json_object *events;
    size_t n = json_object_array_length(r->rejected);

    if (r->failed) {
        log_warn("ingest: %s", r->reason);
        inbox_post_ack(job->in, job->tag, job->connection, 0);
        ingest_job_free(job);
        return;
    }
    json_object_object_get_ex(job->body, "events", &events);
    job->pending = n + 1;
    for (size_t i = 0; i < n; i++) {
        json_object *rej = json_object_array_get_idx(r->rejected, i);
        json_object *idx, *code, *msg;
        const char *text;
        char reason[INBOX_REASON_MAX];

        json_object_object_get_ex(rej, "index", &idx);
        json_object_object_get_ex(rej, "code", &code);
        json_object_object_get_ex(rej, "message", &msg);
        snprintf(reason, sizeof(reason), "event %d: %d %s",
                 json_object_get_int(idx), json_object_get_int(code),
                 json_object_get_string(msg));
        text = json_object_to_json_string_ext(
            json_object_array_get_idx(events, (size_t)json_object_get_int(idx)),
            JSON_C_TO_STRING_PLAIN);
        publisher_submit(job->in->fe->publisher,
                         inbox_rejected_item(text, strlen(text),
                                             "application/json", reason,
                                             ingest_rejected_done, job));
    }
    ingest_rejected_done(job, 1, NULL);
}

static void
inbox_whole_rejected(void *ctx, int ok, const char *reason)
{
    struct ingest_job *job = ctx;

    (void)reason;
    inbox_post_ack(job->in, job->tag, job->connection, ok);
    ingest_job_free(job);
}

static void
inbox_on_ingest(struct inbox *in, const struct bus_event *ev)
{
    struct ingest_job *job = xcalloc(1, sizeof(*job));
    json_object *events = NULL;
    const char *why = NULL;
    char reason[INBOX_REASON_MAX];

    job->in = in;
    job->tag = ev->delivery_tag;
    job->connection = in->connection;
    pthread_mutex_init(&job->lock, NULL);
    record_init(&job->record, in->fe, ingest_recorded, job);
    if (ev->content_type[0] != '\0'
        && strncasecmp(ev->content_type, "application/json",
                       strlen("application/json")) != 0)
        why = "content type must be application/json";
    else if ((job->body = daemon_parse_json(ev->body, ev->len)) == NULL)
        why = "body is not valid JSON";
    else if (!json_object_is_type(job->body, json_type_object)
             || !json_object_object_get_ex(job->body, "events", &events)
             || !json_object_is_type(events, json_type_array)
             || json_object_array_length(events) == 0)
        why = "body must be an object with a non-empty \"events\" array";
    else if (json_object_array_length(events) > (size_t)in->fe->opts.events_max)
        why = "too many events in one message";
    if (why != NULL) {
        snprintf(reason, sizeof(reason), "message %s: %s",
                 ev->message_id[0] ? ev->message_id : "(no id)", why);
        log_warn("ingest: %s", reason);
        publisher_submit(in->fe->publisher,
                         inbox_rejected_item(ev->body, ev->len,
                                             ev->content_type[0]
                                                 ? ev->content_type : NULL,
                                             reason, inbox_whole_rejected, job));
        return;
    }
    record_events(&job->record, events);
}

/* ---------------------------------------------------------------------- */
/* Control and replies                                                     */
/* ---------------------------------------------------------------------- */

/* 1 if the announcement that NAME was deleted at GENERATION or later has
 * come; the lock is held. */
static int
inbox_deleted_seen(struct inbox *in, const char *name, uint64_t generation)
{
    for (size_t i = 0; i < INBOX_DELETED_KEEP; i++)
        if (in->deleted[i].generation >= generation
            && strcmp(in->deleted[i].name, name) == 0)
            return 1;
    return 0;
}

/* Calls back the watches whose announcement came or whose time is up (all
 * of them when STOPPING). */
static void
inbox_settle_watches(struct inbox *in, int stopping)
{
    struct inbox_watch *ready = NULL, **p;
    int64_t now = daemon_now_us();

    pthread_mutex_lock(&in->lock);
    for (p = &in->watches; *p != NULL;) {
        struct inbox_watch *w = *p;
        int seen = inbox_deleted_seen(in, w->name, w->generation);

        if (!seen && !stopping && now < w->deadline_us) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        w->generation = (uint64_t)seen;   /* reused: the outcome */
        w->next = ready;
        ready = w;
    }
    pthread_mutex_unlock(&in->lock);
    while (ready != NULL) {
        struct inbox_watch *w = ready;

        ready = w->next;
        w->done(w->ctx, (int)w->generation);
        free(w);
    }
}

static void
inbox_on_control(struct inbox *in, const struct bus_event *ev)
{
    json_object *msg = daemon_parse_json(ev->body, ev->len), *op, *name, *gen;

    if (msg == NULL || !json_object_object_get_ex(msg, "op", &op)
        || !json_object_object_get_ex(msg, "name", &name)) {
        json_object_put(msg);
        return;
    }
    meta_forget(in->fe->meta, json_object_get_string(name),
                (size_t)json_object_get_string_len(name));
    if (strcmp(json_object_get_string(op), "deleted") == 0
        && json_object_object_get_ex(msg, "generation", &gen)) {
        pthread_mutex_lock(&in->lock);
        snprintf(in->deleted[in->deleted_next].name,
                 sizeof(in->deleted[0].name), "%s",
                 json_object_get_string(name));
        in->deleted[in->deleted_next].generation =
            (uint64_t)json_object_get_int64(gen);
        in->deleted_next = (in->deleted_next + 1) % INBOX_DELETED_KEEP;
        pthread_cond_broadcast(&in->changed);
        pthread_mutex_unlock(&in->lock);
    }
    json_object_put(msg);
    inbox_settle_watches(in, 0);
}

static void
inbox_on_reply(struct inbox *in, const struct bus_event *ev)
{
    struct inbox_waiter *w;

    pthread_mutex_lock(&in->lock);
    for (w = in->waiters; w != NULL; w = w->next) {
        if (w->done || strcmp(w->correlation_id, ev->correlation_id) != 0)
            continue;
        w->body = xmalloc(ev->len + 1);
        memcpy(w->body, ev->body, ev->len);
        w->body[ev->len] = '\0';
        w->len = ev->len;
        w->binary = strcmp(ev->content_type, "application/json") != 0;
        w->done = 1;
        pthread_cond_broadcast(&in->changed);
        break;
    }
    pthread_mutex_unlock(&in->lock);
}

/* ---------------------------------------------------------------------- */
/* The thread                                                              */
/* ---------------------------------------------------------------------- */

static int
inbox_connect(struct inbox *in, char *err, size_t errlen)
{
    char reply[BUS_NAME_MAX], control[BUS_NAME_MAX];

    in->bus = bus_open(&in->fe->bus_config, "tally-frontend inbox", err,
                       errlen);
    if (in->bus == NULL)
        return -1;
    if (bus_declare_topology(in->bus, err, errlen) != 0
        || bus_declare_private_queue(in->bus, BUS_EXCHANGE_CONTROL, "",
                                     control, err, errlen) != 0
        || bus_declare_private_queue(in->bus, NULL, NULL, reply, err,
                                     errlen) != 0
        || bus_consume(in->bus, control, INBOX_PREFETCH, err, errlen) != 0
        || bus_consume(in->bus, reply, INBOX_PREFETCH, err, errlen) != 0
        || bus_consume(in->bus, BUS_QUEUE_INGEST, INBOX_PREFETCH, err,
                       errlen) != 0) {
        bus_close(in->bus);
        in->bus = NULL;
        return -1;
    }
    pthread_mutex_lock(&in->lock);
    snprintf(in->reply_queue, sizeof(in->reply_queue), "%s", reply);
    snprintf(in->control_queue, sizeof(in->control_queue), "%s", control);
    in->connected = 1;
    pthread_mutex_unlock(&in->lock);
    return 0;
}

static void
inbox_disconnect(struct inbox *in)
{
    struct inbox_ack *acks;

    pthread_mutex_lock(&in->lock);
    in->connected = 0;
    in->connection++;
    acks = in->acks;
    in->acks = NULL;
    pthread_mutex_unlock(&in->lock);
    while (acks != NULL) {
        struct inbox_ack *next = acks->next;

        free(acks);
        acks = next;
    }
    bus_close(in->bus);
    in->bus = NULL;
}

static void
inbox_send_acks(struct inbox *in)
{
    struct inbox_ack *acks;
    char err[BUS_ERR_MAX];

    pthread_mutex_lock(&in->lock);
    acks = in->acks;
    in->acks = NULL;
    pthread_mutex_unlock(&in->lock);
    while (acks != NULL) {
        struct inbox_ack *next = acks->next;
        int rc = acks->ok ? bus_ack(in->bus, acks->tag, err, sizeof(err))
                          : bus_reject(in->bus, acks->tag, 1, err, sizeof(err));

        if (rc != 0)
            log_error("inbox: %s", err);
        free(acks);
        acks = next;
    }
}

static void *
inbox_run(void *arg)
{
    struct inbox *in = arg;
    long backoff = DAEMON_RECONNECT_MIN_MS;
    char err[BUS_ERR_MAX];

    for (;;) {
        struct pollfd pfd[2];
        struct bus_event ev;
        uint64_t drained;
        int rc;

        pthread_mutex_lock(&in->lock);
        rc = in->stopping;
        pthread_mutex_unlock(&in->lock);
        if (rc)
            break;
        inbox_settle_watches(in, 0);
        if (in->bus == NULL) {
            if (inbox_connect(in, err, sizeof(err)) != 0) {
                log_warn("inbox: %s (retrying in %ld ms)", err, backoff);
                pfd[0].fd = in->wake_fd;
                pfd[0].events = POLLIN;
                poll(pfd, 1, (int)backoff);
                backoff = backoff * 2 > DAEMON_RECONNECT_MAX_MS
                              ? DAEMON_RECONNECT_MAX_MS : backoff * 2;
                continue;
            }
            backoff = DAEMON_RECONNECT_MIN_MS;
            log_info("inbox connected; consuming %s", BUS_QUEUE_INGEST);
        }
        inbox_send_acks(in);
        while ((rc = bus_wait(in->bus, 0, &ev, err, sizeof(err))) == 1) {
            if (ev.kind == BUS_EVENT_DELIVERY) {
                if (strcmp(ev.consumer_tag, BUS_QUEUE_INGEST) == 0) {
                    inbox_on_ingest(in, &ev);   /* acked when settled */
                } else {
                    if (strcmp(ev.consumer_tag, in->reply_queue) == 0)
                        inbox_on_reply(in, &ev);
                    else
                        inbox_on_control(in, &ev);
                    bus_ack(in->bus, ev.delivery_tag, err, sizeof(err));
                }
            }
            bus_event_release(in->bus, &ev);
        }
        if (rc < 0 || bus_broken(in->bus)) {
            log_error("inbox: %s", err);
            inbox_disconnect(in);
            continue;
        }
        pfd[0].fd = in->wake_fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = bus_fd(in->bus);
        pfd[1].events = POLLIN;
        if (!bus_has_buffered(in->bus) && poll(pfd, 2, INBOX_POLL_MS) > 0
            && (pfd[0].revents & POLLIN))
            if (read(in->wake_fd, &drained, sizeof(drained)) < 0)
                log_debug("inbox: eventfd read failed");
    }
    if (in->bus != NULL)
        inbox_disconnect(in);
    inbox_settle_watches(in, 1);
    return NULL;
}

struct inbox *
inbox_create(struct frontend *fe)
{
    struct inbox *in = xcalloc(1, sizeof(*in));

    in->fe = fe;
    in->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->changed, NULL);
    pthread_create(&in->thread, NULL, inbox_run, in);
    return in;
}

void
inbox_destroy(struct inbox *in)
{
    if (in == NULL)
        return;
    pthread_mutex_lock(&in->lock);
    in->stopping = 1;
    pthread_mutex_unlock(&in->lock);
    inbox_wake(in);
    pthread_join(in->thread, NULL);
    close(in->wake_fd);
    pthread_cond_destroy(&in->changed);
    pthread_mutex_destroy(&in->lock);
    free(in);
}

int
inbox_ready(struct inbox *in)
{
    int ready;

    pthread_mutex_lock(&in->lock);
    ready = in->connected;
    pthread_mutex_unlock(&in->lock);
    return ready;
}

/* ---------------------------------------------------------------------- */
/* Requests to aggregators                                                 */
/* ---------------------------------------------------------------------- */

/* The fate of one request's publish; looked up by correlation id, since
 * the caller may have stopped waiting. */
struct inbox_sent {
    struct inbox *in;
    char correlation_id[INBOX_CORRELATION_MAX];
};

static void
inbox_call_sent(void *ctx, int ok, const char *reason)
{
    struct inbox_sent *sent = ctx;
    struct inbox *in = sent->in;

    (void)reason;
    if (!ok) {
        pthread_mutex_lock(&in->lock);
        for (struct inbox_waiter *w = in->waiters; w != NULL; w = w->next)
            if (strcmp(w->correlation_id, sent->correlation_id) == 0)
                w->binary = -1;     /* unroutable or unconfirmed */
        pthread_cond_broadcast(&in->changed);
        pthread_mutex_unlock(&in->lock);
    }
    free(sent);
}

static struct timespec
inbox_deadline(long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * INBOX_NS_PER_MS;
    if (ts.tv_nsec >= INBOX_NS_PER_S) {
        ts.tv_sec++;
        ts.tv_nsec -= INBOX_NS_PER_S;
    }
    return ts;
}

void
inbox_call(struct inbox *in, const uint32_t *instances, size_t n,
           const char *request, char **replies, size_t *lens, int *binary)
{
    struct inbox_waiter *w = xcalloc(n > 0 ? n : 1, sizeof(*w));
    struct timespec deadline = inbox_deadline(in->fe->opts.rpc_timeout_ms);
    char reply_to[BUS_NAME_MAX];
    int connected;

    for (size_t i = 0; i < n; i++) {
        replies[i] = NULL;
        lens[i] = 0;
        binary[i] = 0;
    }
    pthread_mutex_lock(&in->lock);
    connected = in->connected;
    snprintf(reply_to, sizeof(reply_to), "%s", in->reply_queue);
    for (size_t i = 0; i < n && connected; i++) {
        uint8_t id[8];

        if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
            memset(id, (int)i, sizeof(id));
        snprintf(w[i].correlation_id, sizeof(w[i].correlation_id),
                 "%02x%02x%02x%02x%02x%02x%02x%02x-%zu", id[0], id[1], id[2],
                 id[3], id[4], id[5], id[6], id[7], i);
        w[i].next = in->waiters;
        in->waiters = &w[i];
    }
    pthread_mutex_unlock(&in->lock);
    if (!connected) {
        free(w);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct bus_props p = {0};
        struct inbox_sent *sent = xcalloc(1, sizeof(*sent));
        char key[INBOX_CORRELATION_MAX];

        sent->in = in;
        memcpy(sent->correlation_id, w[i].correlation_id,
               sizeof(sent->correlation_id));
        snprintf(key, sizeof(key), "%" PRIu32, instances[i]);
        p.content_type = "application/json";
        p.correlation_id = w[i].correlation_id;
        p.reply_to = reply_to;
        publisher_submit(in->fe->publisher,
                         publisher_item_raw(BUS_EXCHANGE_RPC, key, request,
                                            strlen(request), &p, 1,
                                            inbox_call_sent, sent));
    }
    pthread_mutex_lock(&in->lock);
    for (;;) {
        size_t done = 0;

        for (size_t i = 0; i < n; i++)
            done += w[i].done || w[i].binary == -1;
        if (done == n || pthread_cond_timedwait(&in->changed, &in->lock,
                                                &deadline) != 0)
            break;
    }
    /* Unregister, keeping whatever arrived. */
    for (struct inbox_waiter **p = &in->waiters; *p != NULL;) {
        if (*p >= w && *p < w + n)
            *p = (*p)->next;
        else
            p = &(*p)->next;
    }
    pthread_mutex_unlock(&in->lock);
    for (size_t i = 0; i < n; i++) {
        replies[i] = w[i].done ? w[i].body : NULL;
        lens[i] = w[i].len;
        binary[i] = w[i].binary == 1;
        if (!w[i].done)
            free(w[i].body);
    }
    free(w);
}

void
inbox_watch_deleted(struct inbox *in, const char *name, uint64_t generation,
                    long timeout_ms, void (*done)(void *ctx, int seen),
                    void *ctx)
{
    struct inbox_watch *w;

    pthread_mutex_lock(&in->lock);
    if (inbox_deleted_seen(in, name, generation)) {
        pthread_mutex_unlock(&in->lock);
        done(ctx, 1);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    snprintf(w->name, sizeof(w->name), "%s", name);
    w->generation = generation;
    w->deadline_us = daemon_now_us() + timeout_ms * INBOX_US_PER_MS;
    w->done = done;
    w->ctx = ctx;
    w->next = in->watches;
    in->watches = w;
    pthread_mutex_unlock(&in->lock);
}
