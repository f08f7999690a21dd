/*
 * daemon: what both daemons share: the common options (bus, cache, slot
 * map, HTTP, logging) as rows of their option tables, signal handling,
 * the clock, and the map and bus setup.
 */
#ifndef TALLY_DAEMON_H
#define TALLY_DAEMON_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "slotmap.h"

#define DAEMON_ERR_MAX 256
#define DAEMON_BUS_TIMEOUT_MS 1000
#define DAEMON_RECONNECT_MIN_MS 100
#define DAEMON_RECONNECT_MAX_MS 2000

struct daemon_options {
    char *log_level;
    char *amqp_host;
    long amqp_port;
    char *amqp_vhost;
    char *amqp_user;
    char *amqp_password;
    long amqp_heartbeat;
    int amqp_tls;
    char *amqp_cacert;
    char *amqp_cert;
    char *amqp_key;
    int amqp_tls_verify_hostname;
    char *queue_type;
    char *memcached;
    long instances;
    char *slot_map;
    char *http_address;
};

/* The option rows of struct daemon_options, for a table describing TYPE
 * whose member FIELD is a struct daemon_options. */
#define DAEMON_OPTION(type, field, name, kind, member, dflt, lo, hi, help) \
    {name, kind, offsetof(type, field.member), dflt, lo, hi, help}
#define DAEMON_OPTIONS(type, f)                                            \
    DAEMON_OPTION(type, f, "log-level", CONFIG_STRING, log_level, "info",  \
                  0, 0, "debug, info, warn or error"),                     \
    DAEMON_OPTION(type, f, "amqp-host", CONFIG_STRING, amqp_host,          \
                  "127.0.0.1", 0, 0, "RabbitMQ host"),                     \
    DAEMON_OPTION(type, f, "amqp-port", CONFIG_INT, amqp_port, "5672", 1,  \
                  65535, "RabbitMQ port"),                                 \
    DAEMON_OPTION(type, f, "amqp-vhost", CONFIG_STRING, amqp_vhost, "/",   \
                  0, 0, "RabbitMQ virtual host"),                          \
    DAEMON_OPTION(type, f, "amqp-user", CONFIG_STRING, amqp_user, "guest", \
                  0, 0, "RabbitMQ user"),                                  \
    DAEMON_OPTION(type, f, "amqp-password", CONFIG_STRING, amqp_password,  \
                  "guest", 0, 0, "RabbitMQ password"),                     \
    DAEMON_OPTION(type, f, "amqp-heartbeat", CONFIG_INT, amqp_heartbeat,   \
                  "10", 0, 600, "AMQP heartbeat in seconds (0 = off)"),    \
    DAEMON_OPTION(type, f, "amqp-tls", CONFIG_BOOL, amqp_tls, "0", 0, 0,   \
                  "connect to RabbitMQ with TLS (needs --amqp-cacert)"),   \
    DAEMON_OPTION(type, f, "amqp-cacert", CONFIG_STRING, amqp_cacert,      \
                  NULL, 0, 0, "PEM CA file that verifies the broker"),     \
    DAEMON_OPTION(type, f, "amqp-cert", CONFIG_STRING, amqp_cert, NULL, 0, \
                  0, "PEM client certificate for the broker (optional)"),  \
    DAEMON_OPTION(type, f, "amqp-key", CONFIG_STRING, amqp_key, NULL, 0,   \
                  0, "PEM private key of --amqp-cert"),                    \
    DAEMON_OPTION(type, f, "amqp-tls-verify-hostname", CONFIG_BOOL,        \
                  amqp_tls_verify_hostname, "1", 0, 0,                     \
                  "match --amqp-host to the broker's certificate"),        \
    DAEMON_OPTION(type, f, "queue-type", CONFIG_STRING, queue_type,        \
                  "classic", 0, 0,                                         \
                  "x-queue-type of durable queues: classic or quorum"),    \
    DAEMON_OPTION(type, f, "memcached", CONFIG_STRING, memcached,          \
                  "127.0.0.1:11211", 0, 0, "memcached servers, host:port,..."), \
    DAEMON_OPTION(type, f, "instances", CONFIG_INT, instances, "2", 1,     \
                  SLOTMAP_INSTANCES_MAX,                                   \
                  "aggregator instances of the default slot map"),         \
    DAEMON_OPTION(type, f, "slot-map", CONFIG_STRING, slot_map, NULL, 0,   \
                  0, "slot map file (default: --instances, version 1)"),   \
    DAEMON_OPTION(type, f, "http-address", CONFIG_STRING, http_address,    \
                  "127.0.0.1", 0, 0, "HTTP listen address")

/* Set by SIGTERM and SIGINT. */
extern volatile sig_atomic_t daemon_stopping;

/* Installs the SIGTERM/SIGINT handlers and ignores SIGPIPE. */
void daemon_catch_signals(void);
/* Wall clock in microseconds since the epoch. */
int64_t daemon_now_us(void);
/* A clock for timeouts (never steps), in microseconds. */
int64_t daemon_monotonic_us(void);
/* The next backoff after MS: doubled, at most MAX_MS. */
long daemon_backoff_next(long ms, long max_ms);
/* Sleeps MS milliseconds, waking early when a stop was asked for. */
void daemon_sleep_ms(long ms);

/* Applies the log level, checks the queue type and the AMQP TLS files, and
 * loads the slot map
 * (the --slot-map file, or the default map of --instances at version 1).
 * Returns the map (owned by the caller), or NULL with a reason in ERR. */
struct slotmap *daemon_setup(const struct daemon_options *o, const char *tag,
                             char *err, size_t errlen);
/* Parses LEN bytes at TEXT as exactly one JSON value (strict JSON, valid
 * UTF-8). Returns a new
 * object owned by the caller, or NULL for anything else. */
struct json_object *daemon_parse_json(const void *text, size_t len);

/* The string member KEY of OBJ (borrowed from OBJ), or NULL when OBJ is
 * not an object or KEY is absent or not a string. */
const char *daemon_json_string(struct json_object *obj, const char *key);

/* Crash hook for fault tests: with TALLY_CRASH_AT=NAME:N in the
 * environment, the Nth call of daemon_crash_point(NAME) kills the process
 * with SIGKILL (no cleanup, like a power cut for the process). Without the
 * variable it costs one comparison. */
void daemon_crash_point(const char *name);

/* Fills C from O (C borrows O's strings). */
void daemon_bus_config(const struct daemon_options *o, struct bus_config *c);

#endif
