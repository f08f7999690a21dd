/*
 * bus: rabbitmq-c 0.11 wrapper, see bus.h and schema/amqp.md. With TLS
 * the socket is rabbitmq-c's OpenSSL one (schema/tls.md); everything
 * after the socket is the same.
 */
#include "bus.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "xalloc.h"

#define BUS_CHANNEL 1
#define BUS_FRAME_MAX 131072
#define BUS_DELIVERY_PERSISTENT 2
#define BUS_INSTANCE_KEY_MAX 16
#define BUS_MS_PER_S 1000
#define BUS_US_PER_MS 1000

struct bus {
    amqp_connection_state_t conn;
    int broken;
    int channel_open;
    uint64_t next_tag;        /* next delivery tag in confirm mode, or 0 */
    const char *queue_type;   /* static string */
};

static int
bus_fail(struct bus *b, char *err, size_t errlen, const char *what,
         const char *reason)
{
    if (b != NULL)
        b->broken = 1;
    snprintf(err, errlen, "%s: %s", what, reason);
    return -1;
}

/* Turns a synchronous call's reply into 0, or -1 with a reason. */
static int
bus_check_reply(struct bus *b, amqp_rpc_reply_t r, const char *what,
                char *err, size_t errlen)
{
    char reason[BUS_ERR_MAX];

    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(reason, sizeof(reason), "%s",
                 amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *c = r.reply.decoded;

            snprintf(reason, sizeof(reason), "channel closed: %u %.*s",
                     c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
            b->channel_open = 0;
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *c = r.reply.decoded;

            snprintf(reason, sizeof(reason), "connection closed: %u %.*s",
                     c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
        } else {
            snprintf(reason, sizeof(reason), "server method 0x%08x",
                     r.reply.id);
        }
        break;
    default:
        snprintf(reason, sizeof(reason), "no reply");
        break;
    }
    return bus_fail(b, err, errlen, what, reason);
}

static struct timeval
bus_timeval(int ms)
{
    struct timeval tv;

    tv.tv_sec = ms / BUS_MS_PER_S;
    tv.tv_usec = (ms % BUS_MS_PER_S) * BUS_US_PER_MS;
    return tv;
}

/* A TLS socket on CONN that verifies the broker against CONFIG's CA (and
 * its name unless turned off), with CONFIG's client certificate if any.
 * NULL with the reason in REASON. The socket belongs to CONN. */
static amqp_socket_t *
bus_tls_socket(amqp_connection_state_t conn, const struct bus_config *config,
               char *reason, size_t reasonlen)
{
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    int rc;

    if (sock == NULL) {
        snprintf(reason, reasonlen, "cannot create a TLS socket");
        return NULL;
    }
    if (config->tls_cacert == NULL || config->tls_cacert[0] == '\0') {
        snprintf(reason, reasonlen, "no CA file to verify the broker with");
        return NULL;
    }
    rc = amqp_ssl_socket_set_cacert(sock, config->tls_cacert);
    if (rc != AMQP_STATUS_OK) {
        snprintf(reason, reasonlen, "CA file %s: %s", config->tls_cacert,
                 amqp_error_string2(rc));
        return NULL;
    }
    if (config->tls_cert != NULL && config->tls_cert[0] != '\0') {
        rc = amqp_ssl_socket_set_key(sock, config->tls_cert, config->tls_key);
        if (rc != AMQP_STATUS_OK) {
            snprintf(reason, reasonlen, "client certificate %s / key %s: %s",
                     config->tls_cert, config->tls_key,
                     amqp_error_string2(rc));
            return NULL;
        }
    }
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, config->tls_verify_hostname != 0);
    return sock;
}

struct bus *
bus_open(const struct bus_config *config, const char *name, char *err,
         size_t errlen)
{
    struct bus *b = xcalloc(1, sizeof(*b));
    struct timeval tv = bus_timeval(config->timeout_ms);
    amqp_socket_t *sock;
    amqp_table_entry_t entry[2], capability;
    amqp_table_t props, capabilities;
    char what[BUS_ERR_MAX], reason[BUS_ERR_MAX];
    int rc;

    b->queue_type = strcmp(config->queue_type, "quorum") == 0 ? "quorum"
                                                               : "classic";
    b->conn = amqp_new_connection();
    snprintf(what, sizeof(what), "connect %s:%d%s", config->host,
             config->port, config->tls ? " (TLS)" : "");
    if (config->tls) {
        sock = bus_tls_socket(b->conn, config, reason, sizeof(reason));
        if (sock == NULL) {
            bus_fail(b, err, errlen, what, reason);
            goto fail;
        }
    } else {
        sock = amqp_tcp_socket_new(b->conn);
        if (sock == NULL) {
            bus_fail(b, err, errlen, what, "cannot create a socket");
            goto fail;
        }
    }
    rc = amqp_socket_open_noblock(sock, config->host, config->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        bus_fail(b, err, errlen, what, amqp_error_string2(rc));
        goto fail;
    }
    amqp_set_handshake_timeout(b->conn, &tv);
    amqp_set_rpc_timeout(b->conn, &tv);
    /* Ask for connection.blocked notices, so a resource alarm is seen
     * instead of a publish that blocks. */
    capability.key = amqp_cstring_bytes("connection.blocked");
    capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capability.value.value.boolean = 1;
    capabilities.num_entries = 1;
    capabilities.entries = &capability;
    entry[0].key = amqp_cstring_bytes("connection_name");
    entry[0].value.kind = AMQP_FIELD_KIND_UTF8;
    entry[0].value.value.bytes = amqp_cstring_bytes(name);
    entry[1].key = amqp_cstring_bytes("capabilities");
    entry[1].value.kind = AMQP_FIELD_KIND_TABLE;
    entry[1].value.value.table = capabilities;
    props.num_entries = 2;
    props.entries = entry;
    if (bus_check_reply(b, amqp_login_with_properties(
                               b->conn, config->vhost, 0, BUS_FRAME_MAX,
                               config->heartbeat_s, &props,
                               AMQP_SASL_METHOD_PLAIN, config->user,
                               config->password),
                        "login", err, errlen) != 0)
        goto fail;
    amqp_channel_open(b->conn, BUS_CHANNEL);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), "channel.open", err,
                        errlen) != 0)
        goto fail;
    b->channel_open = 1;
    return b;

fail:
    amqp_destroy_connection(b->conn);
    free(b);
    return NULL;
}

void
bus_close(struct bus *b)
{
    if (b == NULL)
        return;
    if (!b->broken) {
        if (b->channel_open)
            amqp_channel_close(b->conn, BUS_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(b->conn);
    free(b);
}

void
bus_abandon(struct bus *b)
{
    b->broken = 1;
}

int
bus_broken(const struct bus *b)
{
    return b->broken;
}

/* ---------------------------------------------------------------------- */
/* Topology                                                                */
/* ---------------------------------------------------------------------- */

static int
bus_exchange(struct bus *b, const char *name, const char *type, char *err,
             size_t errlen)
{
    amqp_exchange_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(name),
                          amqp_cstring_bytes(type), 0, 1, 0, 0,
                          amqp_empty_table);
    return bus_check_reply(b, amqp_get_rpc_reply(b->conn), name, err, errlen);
}

/* Declares a durable shared queue with the configured queue type. */
static int
bus_durable_queue(struct bus *b, const char *name, char *err, size_t errlen)
{
    amqp_table_entry_t entry;
    amqp_table_t args;

    entry.key = amqp_cstring_bytes("x-queue-type");
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = amqp_cstring_bytes(b->queue_type);
    args.num_entries = 1;
    args.entries = &entry;
    amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(name), 0, 1,
                       0, 0, args);
    return bus_check_reply(b, amqp_get_rpc_reply(b->conn), name, err, errlen);
}

static int
bus_bind(struct bus *b, const char *queue, const char *exchange,
         const char *key, char *err, size_t errlen)
{
    amqp_queue_bind(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue),
                    amqp_cstring_bytes(exchange), amqp_cstring_bytes(key),
                    amqp_empty_table);
    return bus_check_reply(b, amqp_get_rpc_reply(b->conn), "queue.bind", err,
                           errlen);
}

int
bus_declare_topology(struct bus *b, char *err, size_t errlen)
{
    if (bus_exchange(b, BUS_EXCHANGE_EVENTS, "direct", err, errlen) != 0
        || bus_exchange(b, BUS_EXCHANGE_INGEST, "direct", err, errlen) != 0
        || bus_exchange(b, BUS_EXCHANGE_CONTROL, "fanout", err, errlen) != 0
        || bus_exchange(b, BUS_EXCHANGE_RPC, "direct", err, errlen) != 0
        || bus_durable_queue(b, BUS_QUEUE_INGEST, err, errlen) != 0
        || bus_bind(b, BUS_QUEUE_INGEST, BUS_EXCHANGE_INGEST, BUS_INGEST_KEY,
                    err, errlen) != 0
        || bus_durable_queue(b, BUS_QUEUE_REJECTED, err, errlen) != 0)
        return -1;
    return 0;
}

int
bus_declare_instance_queue(struct bus *b, uint32_t instance, char *err,
                           size_t errlen)
{
    char queue[BUS_NAME_MAX], key[BUS_INSTANCE_KEY_MAX];

    snprintf(queue, sizeof(queue), "tally.agg.%" PRIu32, instance);
    snprintf(key, sizeof(key), "%" PRIu32, instance);
    if (bus_durable_queue(b, queue, err, errlen) != 0)
        return -1;
    return bus_bind(b, queue, BUS_EXCHANGE_EVENTS, key, err, errlen);
}

int
bus_declare_rpc_queue(struct bus *b, uint32_t instance, char *err,
                      size_t errlen)
{
    char queue[BUS_NAME_MAX], key[BUS_INSTANCE_KEY_MAX];

    snprintf(queue, sizeof(queue), "tally.rpc.%" PRIu32, instance);
    snprintf(key, sizeof(key), "%" PRIu32, instance);
    amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue), 0, 0,
                       1, 1, amqp_empty_table);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), queue, err,
                        errlen) != 0)
        return -1;
    return bus_bind(b, queue, BUS_EXCHANGE_RPC, key, err, errlen);
}

int
bus_declare_private_queue(struct bus *b, const char *exchange,
                          const char *key, char *name, char *err,
                          size_t errlen)
{
    amqp_queue_declare_ok_t *ok;

    ok = amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_empty_bytes, 0, 0, 1,
                            1, amqp_empty_table);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), "private queue",
                        err, errlen) != 0)
        return -1;
    snprintf(name, BUS_NAME_MAX, "%.*s", (int)ok->queue.len,
             (const char *)ok->queue.bytes);
    if (key == NULL)
        return 0;
    return bus_bind(b, name, exchange, key, err, errlen);
}

int
bus_queue_depth(struct bus *b, const char *queue, uint32_t *messages,
                uint32_t *consumers, char *err, size_t errlen)
{
    amqp_queue_declare_ok_t *ok;

    ok = amqp_queue_declare(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue),
                            1, 0, 0, 0, amqp_empty_table);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), queue, err,
                        errlen) != 0)
        return -1;
    *messages = ok->message_count;
    *consumers = ok->consumer_count;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Publishing and consuming                                                */
/* ---------------------------------------------------------------------- */

int
bus_confirm_select(struct bus *b, char *err, size_t errlen)
{
    amqp_confirm_select(b->conn, BUS_CHANNEL);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), "confirm.select",
                        err, errlen) != 0)
        return -1;
    b->next_tag = 1;
    return 0;
}

uint64_t
bus_next_tag(const struct bus *b)
{
    return b->next_tag;
}

int
bus_publish(struct bus *b, const char *exchange, const char *routing_key,
            const void *body, size_t len, const struct bus_props *props,
            int mandatory, uint64_t *tag, char *err, size_t errlen)
{
    amqp_basic_properties_t p;
    amqp_table_entry_t header;
    amqp_bytes_t bytes;
    int rc;

    if (b->broken)
        return bus_fail(b, err, errlen, "publish", "connection is broken");
    memset(&p, 0, sizeof(p));
    if (props->content_type != NULL) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(props->content_type);
    }
    if (props->message_id != NULL) {
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p.message_id = amqp_cstring_bytes(props->message_id);
    }
    if (props->correlation_id != NULL) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = amqp_cstring_bytes(props->correlation_id);
    }
    if (props->reply_to != NULL) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        p.reply_to = amqp_cstring_bytes(props->reply_to);
    }
    if (props->reason != NULL) {
        header.key = amqp_cstring_bytes(BUS_HEADER_REASON);
        header.value.kind = AMQP_FIELD_KIND_UTF8;
        header.value.value.bytes = amqp_cstring_bytes(props->reason);
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = 1;
        p.headers.entries = &header;
    }
    if (props->persistent) {
        p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        p.delivery_mode = BUS_DELIVERY_PERSISTENT;
    }
    bytes.bytes = (void *)(uintptr_t)body;
    bytes.len = len;
    rc = amqp_basic_publish(b->conn, BUS_CHANNEL, amqp_cstring_bytes(exchange),
                            amqp_cstring_bytes(routing_key), mandatory != 0, 0,
                            &p, bytes);
    if (rc != AMQP_STATUS_OK)
        return bus_fail(b, err, errlen, "publish", amqp_error_string2(rc));
    if (tag != NULL)
        *tag = b->next_tag;
    if (b->next_tag > 0)
        b->next_tag++;
    return 0;
}

int
bus_consume(struct bus *b, const char *queue, uint16_t prefetch, char *err,
            size_t errlen)
{
    amqp_basic_qos(b->conn, BUS_CHANNEL, 0, prefetch, 0);
    if (bus_check_reply(b, amqp_get_rpc_reply(b->conn), "basic.qos", err,
                        errlen) != 0)
        return -1;
    amqp_basic_consume(b->conn, BUS_CHANNEL, amqp_cstring_bytes(queue),
                       amqp_cstring_bytes(queue), 0, 0, 0, amqp_empty_table);
    return bus_check_reply(b, amqp_get_rpc_reply(b->conn), queue, err,
                           errlen);
}

int
bus_ack(struct bus *b, uint64_t delivery_tag, char *err, size_t errlen)
{
    int rc = amqp_basic_ack(b->conn, BUS_CHANNEL, delivery_tag, 0);

    return rc == AMQP_STATUS_OK
               ? 0 : bus_fail(b, err, errlen, "ack", amqp_error_string2(rc));
}

int
bus_reject(struct bus *b, uint64_t delivery_tag, int requeue, char *err,
           size_t errlen)
{
    int rc = amqp_basic_reject(b->conn, BUS_CHANNEL, delivery_tag,
                               requeue != 0);

    return rc == AMQP_STATUS_OK
               ? 0 : bus_fail(b, err, errlen, "reject",
                              amqp_error_string2(rc));
}

/* ---------------------------------------------------------------------- */
/* Reading frames                                                          */
/* ---------------------------------------------------------------------- */

int
bus_fd(const struct bus *b)
{
    return amqp_get_sockfd(b->conn);
}

int
bus_has_buffered(const struct bus *b)
{
    return amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn);
}

static void
bus_copy(char *dst, amqp_bytes_t src)
{
    size_t n = src.len < BUS_NAME_MAX - 1 ? src.len : BUS_NAME_MAX - 1;

    if (n > 0)
        memcpy(dst, src.bytes, n);
    dst[n] = '\0';
}

/* Reads the content of a deliver or return into EV. */
static int
bus_read_content(struct bus *b, struct bus_event *ev, char *err,
                 size_t errlen)
{
    amqp_message_t *msg = xcalloc(1, sizeof(*msg));
    amqp_basic_properties_t *p;

    if (bus_check_reply(b, amqp_read_message(b->conn, BUS_CHANNEL, msg, 0),
                        "read message", err, errlen) != 0) {
        free(msg);
        return -1;
    }
    p = &msg->properties;
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        bus_copy(ev->message_id, p->message_id);
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        bus_copy(ev->correlation_id, p->correlation_id);
    if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)
        bus_copy(ev->reply_to, p->reply_to);
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        bus_copy(ev->content_type, p->content_type);
    ev->body = msg->body.bytes;
    ev->len = msg->body.len;
    ev->message = msg;
    return 0;
}

int
bus_wait(struct bus *b, int timeout_ms, struct bus_event *ev, char *err,
         size_t errlen)
{
    struct timeval tv = bus_timeval(timeout_ms);
    amqp_frame_t frame;
    int rc;

    memset(ev, 0, sizeof(*ev));
    if (b->broken)
        return bus_fail(b, err, errlen, "wait", "connection is broken");
    for (;;) {
        rc = amqp_simple_wait_frame_noblock(b->conn, &frame, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            return 0;
        if (rc != AMQP_STATUS_OK)
            return bus_fail(b, err, errlen, "wait", amqp_error_string2(rc));
        if (frame.frame_type == AMQP_FRAME_METHOD)
            break;
    }
    switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = frame.payload.method.decoded;

        ev->kind = BUS_EVENT_ACK;
        ev->delivery_tag = a->delivery_tag;
        ev->multiple = a->multiple;
        return 1;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *n = frame.payload.method.decoded;

        ev->kind = BUS_EVENT_NACK;
        ev->delivery_tag = n->delivery_tag;
        ev->multiple = n->multiple;
        return 1;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_basic_return_t *r = frame.payload.method.decoded;

        ev->kind = BUS_EVENT_RETURN;
        ev->reply_code = r->reply_code;
        bus_copy(ev->routing_key, r->routing_key);
        return bus_read_content(b, ev, err, errlen) == 0 ? 1 : -1;
    }
    case AMQP_BASIC_DELIVER_METHOD: {
        amqp_basic_deliver_t *d = frame.payload.method.decoded;

        ev->kind = BUS_EVENT_DELIVERY;
        ev->delivery_tag = d->delivery_tag;
        ev->redelivered = d->redelivered;
        bus_copy(ev->consumer_tag, d->consumer_tag);
        bus_copy(ev->routing_key, d->routing_key);
        return bus_read_content(b, ev, err, errlen) == 0 ? 1 : -1;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = frame.payload.method.decoded;
        char reason[BUS_ERR_MAX];

        snprintf(reason, sizeof(reason), "channel closed: %u %.*s",
                 c->reply_code, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        return bus_fail(b, err, errlen, "wait", reason);
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        amqp_connection_blocked_t *bl = frame.payload.method.decoded;

        ev->kind = BUS_EVENT_BLOCKED;
        bus_copy(ev->reason, bl->reason);
        return 1;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        ev->kind = BUS_EVENT_UNBLOCKED;
        return 1;
    case AMQP_CONNECTION_CLOSE_METHOD:
        return bus_fail(b, err, errlen, "wait", "connection closed by broker");
    case AMQP_BASIC_CANCEL_METHOD:
        return bus_fail(b, err, errlen, "wait", "consumer cancelled");
    default:
        return bus_fail(b, err, errlen, "wait", "unexpected method");
    }
}

void
bus_event_release(struct bus *b, struct bus_event *ev)
{
    if (ev->message != NULL) {
        amqp_destroy_message(ev->message);
        free(ev->message);
        ev->message = NULL;
    }
    ev->body = NULL;
    amqp_maybe_release_buffers(b->conn);
}
