/*
 * daemon: shared daemon plumbing, see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jsonrpc.h"
#include "log.h"

#define DAEMON_NS_PER_US 1000
#define DAEMON_US_PER_S 1000000LL
#define DAEMON_SLEEP_STEP_MS 50
#define DAEMON_NS_PER_MS 1000000L

volatile sig_atomic_t daemon_stopping;

static void
daemon_on_signal(int sig)
{
    (void)sig;
    daemon_stopping = 1;
}

void
daemon_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = daemon_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

int64_t
daemon_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * DAEMON_US_PER_S + ts.tv_nsec / DAEMON_NS_PER_US;
}

int64_t
daemon_monotonic_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * DAEMON_US_PER_S + ts.tv_nsec / DAEMON_NS_PER_US;
}

long
daemon_backoff_next(long ms, long max_ms)
{
    return ms > max_ms / 2 ? max_ms : ms * 2;
}

void
daemon_sleep_ms(long ms)
{
    while (ms > 0 && !daemon_stopping) {
        long step = ms < DAEMON_SLEEP_STEP_MS ? ms : DAEMON_SLEEP_STEP_MS;
        struct timespec ts = {0, step * DAEMON_NS_PER_MS};

        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* 1 if PATH names a file (NULL and "" do not). */
static int
daemon_given(const char *path)
{
    return path != NULL && path[0] != '\0';
}

/* Checks the AMQP TLS options at start, so a typo fails here and not as
 * a broker that never becomes reachable. */
static int
daemon_check_tls(const struct daemon_options *o, char *err, size_t errlen)
{
    const char *const files[][2] = {
        {"amqp-cacert", o->amqp_cacert},
        {"amqp-cert", o->amqp_cert},
        {"amqp-key", o->amqp_key},
    };

    if (!o->amqp_tls)
        return 0;
    if (!daemon_given(o->amqp_cacert)) {
        snprintf(err, errlen, "amqp-tls needs --amqp-cacert, the CA that "
                 "signs the broker's certificate");
        return -1;
    }
    if (daemon_given(o->amqp_cert) != daemon_given(o->amqp_key)) {
        snprintf(err, errlen, "amqp-cert and amqp-key go together (only "
                 "--%s is set)", daemon_given(o->amqp_cert) ? "amqp-cert"
                                                             : "amqp-key");
        return -1;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (daemon_given(files[i][1]) && access(files[i][1], R_OK) != 0) {
            snprintf(err, errlen, "%s: cannot read %s: %s", files[i][0],
                     files[i][1], strerror(errno));
            return -1;
        }
    }
    return 0;
}

struct slotmap *
daemon_setup(const struct daemon_options *o, const char *tag, char *err,
             size_t errlen)
{
    enum log_level level;

    if (log_level_parse(o->log_level, &level) != 0) {
        snprintf(err, errlen, "log-level: \"%s\" is not one of debug, info, "
                 "warn, error", o->log_level);
        return NULL;
    }
    log_setup(tag, level);
    if (strcmp(o->queue_type, "classic") != 0
        && strcmp(o->queue_type, "quorum") != 0) {
        snprintf(err, errlen, "queue-type: \"%s\" is not classic or quorum",
                 o->queue_type);
        return NULL;
    }
    if (daemon_check_tls(o, err, errlen) != 0)
        return NULL;
    if (o->slot_map != NULL && o->slot_map[0] != '\0')
        return slotmap_load(o->slot_map, err, errlen);
    return slotmap_create_default((uint32_t)o->instances, 1);
}

void
daemon_bus_config(const struct daemon_options *o, struct bus_config *c)
{
    memset(c, 0, sizeof(*c));
    c->host = o->amqp_host;
    c->port = (int)o->amqp_port;
    c->vhost = o->amqp_vhost;
    c->user = o->amqp_user;
    c->password = o->amqp_password;
    c->heartbeat_s = (int)o->amqp_heartbeat;
    c->timeout_ms = DAEMON_BUS_TIMEOUT_MS;
    c->queue_type = o->queue_type;
    c->tls = o->amqp_tls;
    c->tls_cacert = o->amqp_cacert;
    c->tls_cert = o->amqp_cert;
    c->tls_key = o->amqp_key;
    c->tls_verify_hostname = o->amqp_tls_verify_hostname;
}

struct json_object *
daemon_parse_json(const void *text, size_t len)
{
    return jsonrpc_parse_json(text, len);
}

const char *
daemon_json_string(struct json_object *obj, const char *key)
{
    json_object *v;

    if (!json_object_is_type(obj, json_type_object)
        || !json_object_object_get_ex(obj, key, &v)
        || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

#define DAEMON_CRASH_ENV "TALLY_CRASH_AT"
#define DAEMON_CRASH_NAME_MAX 64

void
daemon_crash_point(const char *name)
{
    static int parsed;
    static char point[DAEMON_CRASH_NAME_MAX];
    static long left;
    const char *env, *colon;

    if (!parsed) {
        parsed = 1;
        env = getenv(DAEMON_CRASH_ENV);
        colon = env != NULL ? strrchr(env, ':') : NULL;
        if (colon != NULL && (size_t)(colon - env) < sizeof(point)) {
            memcpy(point, env, (size_t)(colon - env));
            left = strtol(colon + 1, NULL, 10);
        }
    }
    if (left <= 0 || strcmp(point, name) != 0 || --left > 0)
        return;
    raise(SIGKILL);
}
