/*
 * log: leveled logging for the daemons. Every line carries a UTC
 * timestamp, the level, and the process tag (e.g. "aggregator 1" or
 * "frontend :8080"), so a merged log still says who spoke:
 *
 *   2026-11-22T21:55:08.123Z INFO  aggregator 1: consuming tally.agg.1
 *
 * The macros test the level before evaluating their arguments, so a call
 * below the level costs one comparison. Thread-safe: each line is written
 * with one write(2) to stderr.
 */
#ifndef TALLY_LOG_H
#define TALLY_LOG_H

/* Longest line log_write writes, newline included; a longer message is cut
 * and ends in "...". */
#define LOG_LINE_MAX 1024
/* Longest tag kept by log_setup. */
#define LOG_TAG_MAX 63

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

/* Lines below this level are skipped by the macros; LOG_LEVEL_INFO until
 * log_setup. */
extern enum log_level log_threshold;

/* Sets the tag (copied, at most LOG_TAG_MAX bytes kept; "tally" until
 * called) and the level. Call once at startup, before threads start. */
void log_setup(const char *tag, enum log_level level);
/* 0 and *LEVEL set from "debug", "info", "warn" or "error"; else -1. */
int log_level_parse(const char *s, enum log_level *level);

/* Formats one line and writes it with one write(2) to fd 2, whatever
 * log_threshold says (the macros check it). Allocates nothing. */
void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                                                 \
    do {                                                                   \
        if ((level) >= log_threshold)                                      \
            log_write((level), __VA_ARGS__);                               \
    } while (0)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
