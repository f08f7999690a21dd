/*
 * bus: tally's use of RabbitMQ through rabbitmq-c 0.11. One struct bus is
 * one AMQP connection with one channel, used by exactly one thread (a
 * rabbitmq-c connection is not thread-safe). The daemons give each
 * connection an I/O thread and hand it work through queues.
 *
 *   bus_open ---> declare topology / queues ---> publish (confirm mode)
 *                                           \--> consume (manual ack)
 *   loop: poll(bus_fd, ...) / bus_has_buffered -> bus_wait -> event:
 *         ACK / NACK (delivery tag, multiple)  publisher confirms
 *         RETURN (message_id of the returned message)  mandatory misses
 *         DELIVERY (body, properties, delivery tag)    consumers
 *
 * rabbitmq-c 0.11 has no confirm wait: bus_wait reads basic.ack,
 * basic.nack and basic.return frames itself. Heartbeats are serviced only
 * inside library calls, so an I/O thread calls bus_wait at least every
 * heartbeat/2 even when idle. Any channel or connection error leaves the
 * bus broken: every later call fails and the owner reconnects with a new
 * bus (a broken stream is never closed gracefully).
 *
 * The topology (schema/amqp.md):
 *   exchange tally.events   direct, durable; queue tally.agg.<i> key "<i>"
 *   exchange tally.ingest   direct, durable; queue tally.ingest key "events"
 *   queue tally.rejected    durable, published to through the default
 *                           exchange
 *   exchange tally.control  fanout, durable; one private queue per process
 *   exchange tally.rpc      direct, durable; queue tally.rpc.<i> key "<i>"
 */
#ifndef TALLY_BUS_H
#define TALLY_BUS_H

#include <stddef.h>
#include <stdint.h>

#define BUS_ERR_MAX 256
#define BUS_NAME_MAX 256

#define BUS_EXCHANGE_EVENTS "tally.events"
#define BUS_EXCHANGE_INGEST "tally.ingest"
#define BUS_EXCHANGE_CONTROL "tally.control"
#define BUS_EXCHANGE_RPC "tally.rpc"
#define BUS_QUEUE_INGEST "tally.ingest"
#define BUS_QUEUE_REJECTED "tally.rejected"
#define BUS_INGEST_KEY "events"
#define BUS_HEADER_REASON "x-tally-reason"

struct bus_config {
    const char *host;         /* borrowed */
    int port;
    const char *vhost;
    const char *user;
    const char *password;
    int heartbeat_s;          /* 0 = off */
    int timeout_ms;           /* connect, login and declare calls */
    const char *queue_type;   /* x-queue-type of durable queues:
                                 "classic" or "quorum" */
    int tls;                  /* TLS (OpenSSL inside rabbitmq-c); the
                                 broker's certificate is always verified */
    const char *tls_cacert;   /* PEM CA file that signs the broker's
                                 certificate; needed with tls */
    const char *tls_cert;     /* PEM client certificate, or NULL / "" */
    const char *tls_key;      /* its PEM private key */
    int tls_verify_hostname;  /* host must match the certificate */
};

/* Message properties; NULL fields are left out. */
struct bus_props {
    const char *content_type;
    const char *message_id;
    const char *correlation_id;
    const char *reply_to;
    const char *reason;       /* header x-tally-reason */
    int persistent;           /* delivery mode 2 */
};

enum bus_event_kind {
    BUS_EVENT_ACK = 1,
    BUS_EVENT_NACK = 2,
    BUS_EVENT_RETURN = 3,
    BUS_EVENT_DELIVERY = 4,
    BUS_EVENT_BLOCKED = 5,     /* connection.blocked: resource alarm */
    BUS_EVENT_UNBLOCKED = 6,
};

/* An event read by bus_wait. Strings are NUL-terminated copies (cut at
 * BUS_NAME_MAX - 1 bytes; "" when absent); BODY points into the message
 * and lives until bus_event_release. */
struct bus_event {
    enum bus_event_kind kind;
    uint64_t delivery_tag;     /* ACK, NACK, DELIVERY */
    int multiple;              /* ACK, NACK */
    int redelivered;           /* DELIVERY */
    int reply_code;            /* RETURN */
    char reason[BUS_NAME_MAX]; /* BLOCKED */
    char consumer_tag[BUS_NAME_MAX];   /* DELIVERY: the queue consumed */
    char routing_key[BUS_NAME_MAX];
    char message_id[BUS_NAME_MAX];
    char correlation_id[BUS_NAME_MAX];
    char reply_to[BUS_NAME_MAX];
    char content_type[BUS_NAME_MAX];
    const void *body;
    size_t len;
    void *message;             /* private */
};

struct bus;

/* Connects (with TLS when CONFIG says so), logs in and opens channel 1.
 * NAME is shown in the broker's connection list. Returns a new bus owned
 * by the caller (bus_close), or NULL with a reason in ERR; a TLS failure
 * reads "connect HOST:PORT (TLS): <what failed>". */
struct bus *bus_open(const struct bus_config *config, const char *name,
                     char *err, size_t errlen);
/* Closes gracefully when the connection is healthy, else just drops it;
 * frees B. */
void bus_close(struct bus *b);
/* Marks B broken (e.g. the broker went silent), so bus_close drops the
 * connection without a graceful close that could block. */
void bus_abandon(struct bus *b);
/* 1 once any call failed: the caller must reconnect. */
int bus_broken(const struct bus *b);

/* Declares the exchanges and shared queues above. */
int bus_declare_topology(struct bus *b, char *err, size_t errlen);
/* Declares the durable queue tally.agg.<I> bound to tally.events with key
 * "<I>". */
int bus_declare_instance_queue(struct bus *b, uint32_t instance, char *err,
                               size_t errlen);
/* Declares the exclusive queue tally.rpc.<I> bound to tally.rpc "<I>". */
int bus_declare_rpc_queue(struct bus *b, uint32_t instance, char *err,
                          size_t errlen);
/* Declares a server-named exclusive auto-delete queue, binds it to
 * EXCHANGE with KEY (NULL to skip binding) and writes its name into NAME
 * (BUS_NAME_MAX bytes). */
int bus_declare_private_queue(struct bus *b, const char *exchange,
                              const char *key, char *name, char *err,
                              size_t errlen);

/* Passive declare of QUEUE: its ready message and consumer counts. */
int bus_queue_depth(struct bus *b, const char *queue, uint32_t *messages,
                    uint32_t *consumers, char *err, size_t errlen);

/* Puts the channel in confirm mode; publishes then get delivery tags
 * 1, 2, 3... */
int bus_confirm_select(struct bus *b, char *err, size_t errlen);
/* The delivery tag the next publish will get in confirm mode (0 before
 * bus_confirm_select). */
uint64_t bus_next_tag(const struct bus *b);
/* Publishes BODY (LEN bytes, borrowed). With MANDATORY an unroutable
 * message comes back as a RETURN event. *TAG (may be NULL) receives the
 * delivery tag in confirm mode. */
int bus_publish(struct bus *b, const char *exchange, const char *routing_key,
                const void *body, size_t len, const struct bus_props *props,
                int mandatory, uint64_t *tag, char *err, size_t errlen);

/* Starts consuming QUEUE with manual acks, at most PREFETCH unacked
 * deliveries on the channel; the consumer tag is the queue name. */
int bus_consume(struct bus *b, const char *queue, uint16_t prefetch,
                char *err, size_t errlen);
int bus_ack(struct bus *b, uint64_t delivery_tag, char *err, size_t errlen);
/* Rejects one delivery, requeued or dropped. */
int bus_reject(struct bus *b, uint64_t delivery_tag, int requeue, char *err,
               size_t errlen);

/* The socket, for poll(2). */
int bus_fd(const struct bus *b);
/* 1 if frames or bytes are already buffered (poll would not wake). */
int bus_has_buffered(const struct bus *b);
/* Reads the next event, waiting at most TIMEOUT_MS (0: only what is
 * already readable). 1 with EV filled (release it), 0 on timeout, -1 with
 * a reason in ERR when the connection or channel failed. Services
 * heartbeats. */
int bus_wait(struct bus *b, int timeout_ms, struct bus_event *ev, char *err,
             size_t errlen);
void bus_event_release(struct bus *b, struct bus_event *ev);

#endif
