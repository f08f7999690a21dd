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
#define INBOX_NS_PER_MS 1000000L
#define INBOX_NS_PER_S 1000000000L
#define INBOX_REASON_MAX 400
#define INBOX_US_PER_MS 1000
#define INBOX_JSON "application/json"
#define INBOX_INGEST_KIND "ingest"
#define INBOX_RETRY_MAX_MS 4000     /* backoff of an ingest part's retries */

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

/* A metrics.delete waiting for its announcement; owned by the caller. */
struct inbox_watch {
    struct inbox_watch *next;
    char name[EVENT_NAME_MAX + 1];
    uint64_t generation;
    int64_t deadline_us;           /* monotonic; INT64_MAX: not started */
    int seen;
    int settled;                   /* done has been called */
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
    struct inbox_watch *watches;
    struct ingest_job *retries;    /* waiting out a backoff */
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

/* One part of an ingest message to publish: events for an instance, or a
 * rejected event (or the whole message) for tally.rejected. */
struct ingest_part {
    int64_t instance;              /* -1: to tally.rejected */
    uint8_t *data;                 /* owned */
    size_t len;
    char *reason;                  /* rejected only; owned */
    char *content_type;            /* rejected only; owned; may be NULL */
    int confirmed;
};

/* One ingest delivery until every part is confirmed. Parts that fail are
 * published again after a backoff, never the confirmed ones; the delivery
 * is acked when all are in. */
struct ingest_job {
    struct ingest_job *next;       /* in inbox.retries */
    struct inbox *in;
    uint64_t tag;
    uint64_t connection;
    struct ingest_part *parts;
    size_t part_count;
    pthread_mutex_t lock;
    size_t outstanding;            /* parts of this round not settled */
    int round_failed;
    char reason[PUBLISHER_REASON_MAX];
    long backoff_ms;
    int64_t retry_at_us;           /* monotonic */
};

struct ingest_settle {
    struct ingest_job *job;
    size_t part;
};

static void
inbox_post_ack(struct inbox *in, uint64_t tag, uint64_t connection, int ok)
{
    struct inbox_ack *a;

    pthread_mutex_lock(&in->lock);
    if (connection != in->connection || in->stopping) {
        pthread_mutex_unlock(&in->lock);      /* that delivery is gone */
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
    for (size_t i = 0; i < job->part_count; i++) {
        free(job->parts[i].data);
        free(job->parts[i].reason);
        free(job->parts[i].content_type);
    }
    free(job->parts);
    pthread_mutex_destroy(&job->lock);
    free(job);
}

static struct ingest_part *
ingest_add_part(struct ingest_job *job, int64_t instance, const void *data,
                size_t len, const char *reason, const char *content_type)
{
    struct ingest_part *part;

    job->parts = xrealloc(job->parts,
                          (job->part_count + 1) * sizeof(*job->parts));
    part = &job->parts[job->part_count++];
    memset(part, 0, sizeof(*part));
    part->instance = instance;
    part->data = xmalloc(len > 0 ? len : 1);
    memcpy(part->data, data, len);
    part->len = len;
    if (reason != NULL)
        part->reason = xstrndup(reason, strlen(reason));
    if (content_type != NULL && content_type[0] != '\0')
        part->content_type = xstrndup(content_type, strlen(content_type));
    return part;
}

/* Adds the event a rejection REJ ({"index","code","message"}) names, with
 * the reason "event <index>: <code> <message>". */
static void
ingest_add_rejected(struct ingest_job *job, json_object *events,
                    json_object *rej)
{
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
    ingest_add_part(job, -1, text, strlen(text), reason, "application/json");
}

/* 1 if CONTENT_TYPE is application/json, parameters allowed. */
static int
inbox_json_media_type(const char *content_type)
{
    size_t n = strlen(INBOX_JSON);

    return strncasecmp(content_type, INBOX_JSON, n) == 0
           && (content_type[n] == '\0' || content_type[n] == ';'
               || content_type[n] == ' ');
}

/* One part (or, for PART == SIZE_MAX, the submitter's hold) of JOB's
 * round is settled; the last one acks the delivery or schedules a retry. */
static void
ingest_settle(struct ingest_job *job, size_t part, int ok, const char *reason)
{
    struct inbox *in = job->in;
    int last, all_in = 1;

    pthread_mutex_lock(&job->lock);
    if (ok && part != SIZE_MAX) {
        job->parts[part].confirmed = 1;
    } else if (!ok && !job->round_failed) {
        job->round_failed = 1;
        snprintf(job->reason, sizeof(job->reason), "%s", reason);
    }
    last = --job->outstanding == 0;
    pthread_mutex_unlock(&job->lock);
    if (!last)
        return;
    for (size_t i = 0; i < job->part_count; i++)
        all_in &= job->parts[i].confirmed;
    if (all_in) {
        inbox_post_ack(in, job->tag, job->connection, 1);
        ingest_job_free(job);
        return;
    }
    log_warn("ingest: delivery %" PRIu64 " not fully queued (%s); retrying "
             "the rest in %ld ms", job->tag, job->reason, job->backoff_ms);
    job->retry_at_us = daemon_monotonic_us()
                       + job->backoff_ms * INBOX_US_PER_MS;
    job->backoff_ms = daemon_backoff_next(job->backoff_ms,
                                          INBOX_RETRY_MAX_MS);
    pthread_mutex_lock(&in->lock);
    if (in->stopping || job->connection != in->connection) {
        pthread_mutex_unlock(&in->lock);      /* redelivered anyway */
        ingest_job_free(job);
        return;
    }
    job->next = in->retries;
    in->retries = job;
    pthread_mutex_unlock(&in->lock);
}

static void
ingest_settled(void *ctx, int ok, const char *reason)
{
    struct ingest_settle *settle = ctx;
    struct ingest_job *job = settle->job;
    size_t part = settle->part;

    free(settle);
    ingest_settle(job, part, ok, reason);
}

/* Publishes every part of JOB not yet confirmed. */
static void
ingest_submit(struct ingest_job *job)
{
    struct publisher *pub = job->in->fe->publisher;
    size_t n = 0;

    job->round_failed = 0;
    for (size_t i = 0; i < job->part_count; i++)
        n += !job->parts[i].confirmed;
    job->outstanding = n + 1;      /* held until every part is out */
    for (size_t i = 0; i < job->part_count; i++) {
        struct ingest_part *part = &job->parts[i];
        struct ingest_settle *settle;
        struct publisher_item *item;
        uint8_t *copy;

        if (part->confirmed)
            continue;
        settle = xcalloc(1, sizeof(*settle));
        settle->job = job;
        settle->part = i;
        if (part->instance < 0) {
            struct bus_props p = {0};

            p.content_type = part->content_type;
            p.reason = part->reason;
            p.persistent = 1;
            item = publisher_item_raw("", BUS_QUEUE_REJECTED, part->data,
                                      part->len, &p, 0, ingest_settled,
                                      settle);
        } else {
            copy = xmalloc(part->len);
            memcpy(copy, part->data, part->len);
            item = publisher_item_events((uint32_t)part->instance, copy,
                                         part->len, ingest_settled, settle);
        }
        publisher_submit(pub, item);
    }
    ingest_settle(job, SIZE_MAX, 1, NULL);
}

/* Resubmits the jobs whose backoff is over. */
static void
inbox_retry_due(struct inbox *in)
{
    struct ingest_job *due = NULL, **p;
    int64_t now = daemon_monotonic_us();

    pthread_mutex_lock(&in->lock);
    for (p = &in->retries; *p != NULL;) {
        struct ingest_job *job = *p;

        if (job->retry_at_us > now) {
            p = &job->next;
            continue;
        }
        *p = job->next;
        job->next = due;
        due = job;
    }
    pthread_mutex_unlock(&in->lock);
    while (due != NULL) {
        struct ingest_job *job = due;

        due = job->next;
        ingest_submit(job);
    }
}

static void
inbox_on_ingest(struct inbox *in, const struct bus_event *ev)
{
    struct ingest_job *job = xcalloc(1, sizeof(*job));
    struct frontend *fe = in->fe;
    json_object *body = NULL, *events = NULL;
    const char *why = NULL;
    char reason[INBOX_REASON_MAX];

    job->in = in;
    job->tag = ev->delivery_tag;
    job->connection = in->connection;
    job->backoff_ms = DAEMON_RECONNECT_MIN_MS;
    pthread_mutex_init(&job->lock, NULL);
    if (ev->content_type[0] != '\0'
        && !inbox_json_media_type(ev->content_type))
        why = "content type must be application/json";
    else if (ev->len > (size_t)fe->opts.body_max)
        why = "message larger than --body-max";
    else if ((body = daemon_parse_json(ev->body, ev->len)) == NULL)
        why = "body is not valid JSON";
    else if (!json_object_is_type(body, json_type_object)
             || !json_object_object_get_ex(body, "events", &events)
             || !json_object_is_type(events, json_type_array)
             || json_object_array_length(events) == 0)
        why = "body must be an object with a non-empty \"events\" array";
    else if (json_object_array_length(events) > (size_t)fe->opts.events_max)
        why = "too many events in one message";
    if (why == NULL) {
        struct record r;

        record_init(&r, fe);
        if (ev->message_id[0] != '\0')
            record_set_batch(&r, INBOX_INGEST_KIND, ev->message_id,
                             strlen(ev->message_id));
        record_events(&r, events);
        if (r.failed) {
            why = "events could not be encoded";
        } else {
            for (size_t i = 0; i < r.part_count; i++)
                ingest_add_part(job, r.parts[i].instance, r.parts[i].data,
                                r.parts[i].len, NULL, NULL);
            for (size_t i = 0; i < json_object_array_length(r.rejected); i++)
                ingest_add_rejected(job, events,
                                    json_object_array_get_idx(r.rejected, i));
        }
        record_destroy(&r);
    }
    json_object_put(body);
    if (why != NULL) {
        snprintf(reason, sizeof(reason), "message %s: %s",
                 ev->message_id[0] ? ev->message_id : "(no id)", why);
        log_warn("ingest: %s", reason);
        ingest_add_part(job, -1, ev->body, ev->len, reason, ev->content_type);
    }
    ingest_submit(job);
}

/* ---------------------------------------------------------------------- */
/* Control and replies                                                     */
/* ---------------------------------------------------------------------- */

/* Calls back, once each, the started watches that saw their announcement
 * or whose time is up (every watch when STOPPING). Their owners free them.
 */
static void
inbox_settle_watches(struct inbox *in, int stopping)
{
    struct inbox_watch *ready = NULL, **p;
    int64_t now = daemon_monotonic_us();

    pthread_mutex_lock(&in->lock);
    for (p = &in->watches; *p != NULL;) {
        struct inbox_watch *w = *p;
        int started = w->deadline_us != INT64_MAX;

        if (!stopping && !(started && (w->seen || now >= w->deadline_us))) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        w->settled = 1;
        w->next = ready;
        ready = w;
    }
    pthread_mutex_unlock(&in->lock);
    while (ready != NULL) {
        struct inbox_watch *w = ready;

        ready = w->next;
        w->done(w->ctx, w->seen);
    }
}

static void
inbox_on_control(struct inbox *in, const struct bus_event *ev)
{
    json_object *msg = daemon_parse_json(ev->body, ev->len), *gen;
    const char *op, *name;

    op = daemon_json_string(msg, "op");
    if (op != NULL && strcmp(op, "map") == 0
        && json_object_object_get_ex(msg, "version", &gen)
        && json_object_is_type(gen, json_type_int)) {
        /* a reshard: the main thread fetches the map */
        uint64_t v = (uint64_t)json_object_get_int64(gen);

        if (v > __atomic_load_n(&in->fe->map_hint, __ATOMIC_RELAXED))
            __atomic_store_n(&in->fe->map_hint, v, __ATOMIC_RELAXED);
        json_object_put(msg);
        return;
    }
    if (msg == NULL || op == NULL
        || (name = daemon_json_string(msg, "name")) == NULL) {
        log_warn("control: ignored a message that is not "
                 "{\"op\":...,\"name\":...}");
        json_object_put(msg);
        return;
    }
    meta_forget(in->fe->meta, name, strlen(name));
    if (strcmp(op, "deleted") == 0
        && json_object_object_get_ex(msg, "generation", &gen)
        && json_object_is_type(gen, json_type_int)) {
        uint64_t g = (uint64_t)json_object_get_int64(gen);

        pthread_mutex_lock(&in->lock);
        for (struct inbox_watch *w = in->watches; w != NULL; w = w->next)
            if (w->generation <= g && strcmp(w->name, name) == 0)
                w->seen = 1;
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
        inbox_retry_due(in);
        if (in->bus == NULL) {
            if (inbox_connect(in, err, sizeof(err)) != 0) {
                log_warn("inbox: %s (retrying in %ld ms)", err, backoff);
                pfd[0].fd = in->wake_fd;
                pfd[0].events = POLLIN;
                poll(pfd, 1, (int)backoff);
                backoff = daemon_backoff_next(backoff,
                                              DAEMON_RECONNECT_MAX_MS);
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
inbox_stop(struct inbox *in)
{
    struct ingest_job *retries;

    pthread_mutex_lock(&in->lock);
    if (in->stopping) {
        pthread_mutex_unlock(&in->lock);
        return;
    }
    in->stopping = 1;
    pthread_cond_broadcast(&in->changed);     /* callers of inbox_call */
    pthread_mutex_unlock(&in->lock);
    inbox_wake(in);
    pthread_join(in->thread, NULL);
    pthread_mutex_lock(&in->lock);
    retries = in->retries;
    in->retries = NULL;
    pthread_mutex_unlock(&in->lock);
    while (retries != NULL) {         /* their deliveries are redelivered */
        struct ingest_job *job = retries;

        retries = job->next;
        ingest_job_free(job);
    }
}

void
inbox_destroy(struct inbox *in)
{
    struct inbox_ack *acks;

    if (in == NULL)
        return;
    inbox_stop(in);
    inbox_settle_watches(in, 1);
    for (acks = in->acks; acks != NULL;) {
        struct inbox_ack *next = acks->next;

        free(acks);
        acks = next;
    }
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
            if (!w->done
                && strcmp(w->correlation_id, sent->correlation_id) == 0)
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
    connected = in->connected && !in->stopping;
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
        if (done == n || in->stopping
            || pthread_cond_timedwait(&in->changed, &in->lock,
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

struct inbox_watch *
inbox_watch_deleted(struct inbox *in, const char *name, uint64_t generation,
                    void (*done)(void *ctx, int seen), void *ctx)
{
    struct inbox_watch *w = xcalloc(1, sizeof(*w));

    snprintf(w->name, sizeof(w->name), "%s", name);
    w->generation = generation;
    w->deadline_us = INT64_MAX;            /* not started */
    w->done = done;
    w->ctx = ctx;
    pthread_mutex_lock(&in->lock);
    if (in->stopping) {
        pthread_mutex_unlock(&in->lock);
        w->settled = 1;
        done(ctx, 0);
        return w;
    }
    w->next = in->watches;
    in->watches = w;
    pthread_mutex_unlock(&in->lock);
    return w;
}

void
inbox_watch_start(struct inbox *in, struct inbox_watch *w, long timeout_ms)
{
    pthread_mutex_lock(&in->lock);
    if (!w->settled)
        w->deadline_us = daemon_monotonic_us() + timeout_ms * INBOX_US_PER_MS;
    pthread_mutex_unlock(&in->lock);
    inbox_wake(in);
}

void
inbox_watch_free(struct inbox_watch *w)
{
    free(w);
}
