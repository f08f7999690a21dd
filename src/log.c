/*
 * log: one line per call, built in a stack buffer and written with a
 * single write(2) so lines from several threads never interleave.
 *
 *   2026-11-22T21:55:08.123Z INFO  aggregator 1: consuming tally.agg.1
 *   `-- UTC, milliseconds --' `-5-' `-- tag --'  `-- message, cut to fit
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_NSEC_PER_MSEC 1000000L
#define LOG_ELLIPSIS "..."

enum log_level log_threshold = LOG_LEVEL_INFO;

static char log_tag[LOG_TAG_MAX + 1] = "tally";

/* Level names, each padded to five characters. */
static const char *const log_level_names[] = {
    [LOG_LEVEL_DEBUG] = "DEBUG",
    [LOG_LEVEL_INFO] = "INFO ",
    [LOG_LEVEL_WARN] = "WARN ",
    [LOG_LEVEL_ERROR] = "ERROR",
};

/* The names log_level_parse accepts, in level order. */
static const char *const log_level_words[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_ERROR] = "error",
};
#define LOG_LEVELS (sizeof(log_level_words) / sizeof(log_level_words[0]))

void
log_setup(const char *tag, enum log_level level)
{
    snprintf(log_tag, sizeof(log_tag), "%s", tag);
    log_threshold = level;
}

int
log_level_parse(const char *s, enum log_level *level)
{
    for (size_t i = 0; i < LOG_LEVELS; i++) {
        if (strcmp(s, log_level_words[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void
log_write(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    size_t len, room;
    int saved_errno = errno;   /* callers often log, then look at errno */
    va_list ap;
    int n;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    len += (size_t)snprintf(line + len, sizeof(line) - len, ".%03ldZ %s %s: ",
                            now.tv_nsec / LOG_NSEC_PER_MSEC,
                            log_level_names[(unsigned)level < LOG_LEVELS
                                                ? level : LOG_LEVEL_ERROR],
                            log_tag);
    room = sizeof(line) - len - 1;   /* keep a byte for the newline */
    va_start(ap, fmt);
    n = vsnprintf(line + len, room + 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > room) {
        memcpy(line + sizeof(line) - sizeof(LOG_ELLIPSIS), LOG_ELLIPSIS,
               strlen(LOG_ELLIPSIS));
        n = (int)room;
    }
    len += (size_t)n;
    line[len++] = '\n';
    while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR)
        continue;
    errno = saved_errno;
}
