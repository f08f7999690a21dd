/*
 * test_config: the option table (defaults, config file, flags, --help,
 * --check-config and every error message) against a small options struct,
 * and the log line format with stderr captured in a temporary file.
 *
 *   args (+ file in a temp dir) --config_parse--> struct == expected
 *                                              or err == exact message
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "xalloc.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TEST_ARGS_MAX 8
#define TEST_DIR_MAX 64
#define TEST_PATH_MAX 512
#define TEST_OUT_MAX 4096
/* A timestamp read back must be this close to the clock, in seconds. */
#define TEST_CLOCK_SLACK 5

struct test_options {
    char *amqp_host;
    long amqp_port;
    long instance;
    int verbose;
    char *tag;
};

static const struct config_option test_table[] = {
    {.name = "amqp-host", .kind = CONFIG_STRING,
     .offset = offsetof(struct test_options, amqp_host),
     .default_value = "127.0.0.1", .help = "RabbitMQ host"},
    {.name = "amqp-port", .kind = CONFIG_INT,
     .offset = offsetof(struct test_options, amqp_port),
     .default_value = "5672", .min = 1, .max = 65535, .help = "RabbitMQ port"},
    {.name = "instance", .kind = CONFIG_INT,
     .offset = offsetof(struct test_options, instance),
     .default_value = "0", .min = 0, .max = 1023, .help = "instance number"},
    {.name = "verbose", .kind = CONFIG_BOOL,
     .offset = offsetof(struct test_options, verbose),
     .default_value = "false", .help = "log debug lines"},
    {.name = "tag", .kind = CONFIG_STRING,
     .offset = offsetof(struct test_options, tag),
     .default_value = NULL, .help = "log tag"},
};

static char test_dir[TEST_DIR_MAX];

/* ---- helpers -------------------------------------------------------- */

/* Runs config_parse on "prog" followed by ARGS (NULL-terminated). */
static int
parse(struct test_options *o, FILE *out, char *err, const char *const *args)
{
    char *argv[TEST_ARGS_MAX + 1];
    int argc = 0, rc;

    argv[argc++] = xstrndup("prog", strlen("prog"));
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(argc < TEST_ARGS_MAX);
        argv[argc++] = xstrndup(args[i], strlen(args[i]));
    }
    argv[argc] = NULL;
    memset(err, 'x', CONFIG_ERR_MAX);   /* must be overwritten */
    rc = config_parse(test_table, ARRAY_LEN(test_table), o, argc, argv, out,
                      err, CONFIG_ERR_MAX);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    return rc;
}

/* Writes TEXT to NAME in the temp dir; returns the path (static buffer). */
static const char *
write_file(const char *name, const char *text)
{
    static char path[TEST_PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return path;
}

/* A string of LEN copies of C; the caller frees it. */
static char *
repeat(char c, size_t len)
{
    char *s = xmalloc(len + 1);

    memset(s, c, len);
    s[len] = '\0';
    return s;
}

static int
setup_dir(void **state)
{
    (void)state;
    snprintf(test_dir, sizeof(test_dir), "/tmp/test_config.XXXXXX");
    return mkdtemp(test_dir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
    char path[TEST_PATH_MAX];
    struct dirent *e;
    DIR *d = opendir(test_dir);

    (void)state;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", test_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(test_dir);
}

/* ---- config: settings ----------------------------------------------- */

static void
test_defaults(void **state)
{
    const char *args[] = {NULL};
    char err[CONFIG_ERR_MAX];
    struct test_options o;

    (void)state;
    memset(&o, 0xff, sizeof(o));   /* garbage: defaults must not free it */
    assert_int_equal(parse(&o, stdout, err, args), CONFIG_RUN);
    assert_string_equal(err, "");
    assert_string_equal(o.amqp_host, "127.0.0.1");
    assert_int_equal(o.amqp_port, 5672);
    assert_int_equal(o.instance, 0);
    assert_int_equal(o.verbose, 0);
    assert_null(o.tag);
    config_free(test_table, ARRAY_LEN(test_table), &o);
    assert_null(o.amqp_host);
}

static void
test_file_then_flags(void **state)
{
    const char *path = write_file("a.conf",
                                  "# tally options\n"
                                  "\n"
                                  "   \t\n"
                                  "amqp-port = 99\n"
                                  "  instance=7  \r\n"
                                  "amqp-host = \"  rabbit = 1  \"\n"
                                  "tag = first\n"
                                  "tag = second # not a comment\n"
                                  "verbose = yes");
    char config_arg[TEST_PATH_MAX + 16];
    const char *before[] = {"--amqp-port=1234", "--config", path, NULL};
    const char *after[] = {NULL, "--verbose=off", "--instance", "8", NULL};
    char err[CONFIG_ERR_MAX];
    struct test_options o;

    (void)state;
    /* A flag before --config still beats the file. */
    assert_int_equal(parse(&o, stdout, err, before), CONFIG_RUN);
    assert_int_equal(o.amqp_port, 1234);
    assert_int_equal(o.instance, 7);
    assert_string_equal(o.amqp_host, "  rabbit = 1  ");
    assert_string_equal(o.tag, "second # not a comment");
    assert_int_equal(o.verbose, 1);
    config_free(test_table, ARRAY_LEN(test_table), &o);

    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    after[0] = config_arg;
    assert_int_equal(parse(&o, stdout, err, after), CONFIG_RUN);
    assert_int_equal(o.amqp_port, 99);
    assert_int_equal(o.instance, 8);
    assert_int_equal(o.verbose, 0);
    config_free(test_table, ARRAY_LEN(test_table), &o);
}

static void
test_flag_forms(void **state)
{
    const char *args[] = {"--amqp-host", "rabbit.local", "--tag", "--x",
                          "--tag=y", "--verbose", "--instance=1023", NULL};
    const char *last_wins[] = {"--verbose", "--verbose=0", "--amqp-host=",
                               "--amqp-port=007", NULL};
    char err[CONFIG_ERR_MAX];
    struct test_options o;

    (void)state;
    assert_int_equal(parse(&o, stdout, err, args), CONFIG_RUN);
    assert_string_equal(o.amqp_host, "rabbit.local");
    assert_string_equal(o.tag, "y");   /* "--x" was replaced and freed */
    assert_int_equal(o.verbose, 1);    /* bare: did not eat --instance */
    assert_int_equal(o.instance, 1023);
    assert_int_equal(o.amqp_port, 5672);
    config_free(test_table, ARRAY_LEN(test_table), &o);

    assert_int_equal(parse(&o, stdout, err, last_wins), CONFIG_RUN);
    assert_int_equal(o.verbose, 0);
    assert_string_equal(o.amqp_host, "");
    assert_int_equal(o.amqp_port, 7);
    config_free(test_table, ARRAY_LEN(test_table), &o);
}

static void
test_config_set(void **state)
{
    static const struct {
        const char *value;
        int expect;
    } bools[] = {
        {"true", 1}, {"yes", 1}, {"on", 1}, {"1", 1}, {"TRUE", 1},
        {"false", 0}, {"no", 0}, {"off", 0}, {"0", 0}, {"Off", 0},
    };
    struct test_options o = {0};
    char err[CONFIG_ERR_MAX];
    char *longest = repeat('s', CONFIG_STRING_MAX);
    char *too_long = repeat('s', CONFIG_STRING_MAX + 1);

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(bools); i++) {
        o.verbose = !bools[i].expect;
        assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                    "verbose", bools[i].value, err,
                                    sizeof(err)), 0);
        assert_int_equal(o.verbose, bools[i].expect);
    }
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                "verbose", "2", err, sizeof(err)), -1);
    assert_string_equal(err, "verbose: \"2\" is not a boolean");
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                "nope", "1", err, sizeof(err)), -1);
    assert_string_equal(err, "unknown option nope");
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                "instance", "-1", err, sizeof(err)), -1);
    assert_string_equal(err, "instance: -1 is out of range 0..1023");
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                "instance", "1e3", err, sizeof(err)), -1);
    assert_string_equal(err, "instance: \"1e3\" is not an integer");
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o,
                                "amqp-port", "99999999999999999999", err,
                                sizeof(err)), -1);
    assert_string_equal(err, "amqp-port: \"99999999999999999999\" is not an integer");
    assert_int_equal(o.instance, 0);   /* failures leave the value alone */

    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o, "tag",
                                longest, err, sizeof(err)), 0);
    assert_int_equal(strlen(o.tag), CONFIG_STRING_MAX);
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o, "tag",
                                too_long, err, sizeof(err)), -1);
    assert_string_equal(err, "tag: value is longer than 4096 bytes");
    assert_int_equal(strlen(o.tag), CONFIG_STRING_MAX);
    assert_int_equal(config_set(test_table, ARRAY_LEN(test_table), &o, "tag",
                                NULL, err, sizeof(err)), 0);
    assert_null(o.tag);
    config_free(test_table, ARRAY_LEN(test_table), &o);
    free(longest);
    free(too_long);
}

/* ---- config: errors ------------------------------------------------- */

static void
test_flag_errors(void **state)
{
    static const struct {
        const char *args[TEST_ARGS_MAX];
        const char *err;
    } cases[] = {
        {{"--foo"}, "unknown option --foo"},
        {{"--instance=3", "--foo=1"}, "unknown option --foo"},
        {{"--"}, "unknown option --"},
        {{"-v"}, "unexpected argument \"-v\""},
        {{"stray"}, "unexpected argument \"stray\""},
        {{"--amqp-port=99999"}, "--amqp-port: 99999 is out of range 1..65535"},
        {{"--amqp-port", "0"}, "--amqp-port: 0 is out of range 1..65535"},
        {{"--instance=x"}, "--instance: \"x\" is not an integer"},
        {{"--instance="}, "--instance: \"\" is not an integer"},
        {{"--instance", " 5"}, "--instance: \" 5\" is not an integer"},
        {{"--instance", "5x"}, "--instance: \"5x\" is not an integer"},
        {{"--instance"}, "--instance: missing value"},
        {{"--config"}, "--config: missing value"},
        {{"--verbose=maybe"}, "--verbose: \"maybe\" is not a boolean"},
        {{"--verbose="}, "--verbose: \"\" is not a boolean"},
        {{"--help=1"}, "--help takes no value"},
        {{"--check-config=yes"}, "--check-config takes no value"},
    };
    char err[CONFIG_ERR_MAX];
    struct test_options o;

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        assert_int_equal(parse(&o, stdout, err, cases[i].args), -1);
        assert_string_equal(err, cases[i].err);
        config_free(test_table, ARRAY_LEN(test_table), &o);
    }
}

static void
test_file_errors(void **state)
{
    static const struct {
        const char *text;
        const char *err;   /* after "PATH:" */
    } cases[] = {
        {"amqp-port = 99999\n", "1: amqp-port: 99999 is out of range 1..65535"},
        {"# c\n\nbogus = 1\n", "3: unknown option bogus"},
        {"instance = 1\ninstance 5\n", "2: expected name = value"},
        {"= 5\n", "1: expected name = value"},
        {"tag = \"abc\n", "1: tag: unterminated quote"},
        {"tag = \"\n", "1: tag: unterminated quote"},
        {"instance = \"x\"\n", "1: instance: \"x\" is not an integer"},
        {"verbose = maybe", "1: verbose: \"maybe\" is not a boolean"},
    };
    char err[CONFIG_ERR_MAX], expect[CONFIG_ERR_MAX + TEST_PATH_MAX];
    struct test_options o;
    const char *args[] = {"--config", NULL, NULL};

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        args[1] = write_file("bad.conf", cases[i].text);
        snprintf(expect, sizeof(expect), "%s:%s", args[1], cases[i].err);
        assert_int_equal(parse(&o, stdout, err, args), -1);
        assert_string_equal(err, expect);
        config_free(test_table, ARRAY_LEN(test_table), &o);
    }

    snprintf(expect, sizeof(expect), "%s/missing.conf", test_dir);
    args[1] = expect;
    assert_int_equal(parse(&o, stdout, err, args), -1);
    snprintf(expect, sizeof(expect),
             "--config: cannot open %s/missing.conf: No such file or directory",
             test_dir);
    assert_string_equal(err, expect);
    config_free(test_table, ARRAY_LEN(test_table), &o);
}

static void
test_file_line_limit(void **state)
{
    /* "tag = " plus the value fills exactly CONFIG_STRING_MAX bytes. */
    size_t fill = CONFIG_STRING_MAX - strlen("tag = ");
    char *value = repeat('v', fill);
    char *text = xmalloc(2 * CONFIG_STRING_MAX + 64);
    const char *args[] = {"--config", NULL, NULL};
    char err[CONFIG_ERR_MAX], expect[CONFIG_ERR_MAX + TEST_PATH_MAX];
    struct test_options o;

    (void)state;
    snprintf(text, 2 * CONFIG_STRING_MAX + 64, "tag = %s\n", value);
    args[1] = write_file("long.conf", text);
    assert_int_equal(parse(&o, stdout, err, args), CONFIG_RUN);
    assert_string_equal(o.tag, value);
    config_free(test_table, ARRAY_LEN(test_table), &o);

    /* The same line without a newline at the end of the file. */
    snprintf(text, 2 * CONFIG_STRING_MAX + 64, "tag = %s", value);
    args[1] = write_file("long.conf", text);
    assert_int_equal(parse(&o, stdout, err, args), CONFIG_RUN);
    assert_string_equal(o.tag, value);
    config_free(test_table, ARRAY_LEN(test_table), &o);

    /* One byte more on line 2 is too long. */
    snprintf(text, 2 * CONFIG_STRING_MAX + 64, "instance = 1\ntag = %sv\n",
             value);
    args[1] = write_file("long.conf", text);
    snprintf(expect, sizeof(expect), "%s:2: line longer than 4096 bytes",
             args[1]);
    assert_int_equal(parse(&o, stdout, err, args), -1);
    assert_string_equal(err, expect);
    config_free(test_table, ARRAY_LEN(test_table), &o);
    free(value);
    free(text);
}

/* ---- config: --help and --check-config ------------------------------ */

/* Runs ARGS with OUT in memory; copies what was printed into TEXT. */
static int
parse_printing(const char *const *args, char *text, size_t textlen)
{
    char err[CONFIG_ERR_MAX];
    struct test_options o;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    int rc;

    assert_non_null(out);
    rc = parse(&o, out, err, args);
    assert_int_equal(fclose(out), 0);
    snprintf(text, textlen, "%s", buf);
    free(buf);
    config_free(test_table, ARRAY_LEN(test_table), &o);
    return rc;
}

static void
test_help(void **state)
{
    const char *help[] = {"--instance=5", "--help", "--foo", NULL};
    const char *bad_first[] = {"--foo", "--help", NULL};
    char text[TEST_OUT_MAX];

    (void)state;
    assert_int_equal(parse_printing(help, text, sizeof(text)), CONFIG_HELP);
    assert_string_equal(text,
        "usage: prog [options]\n"
        "  --config=PATH                read \"name = value\" lines from PATH\n"
        "  --check-config               print every option's value and exit\n"
        "  --help                       print this help and exit\n"
        "  --amqp-host=TEXT             RabbitMQ host [default: 127.0.0.1]\n"
        "  --amqp-port=N                RabbitMQ port (1..65535) [default: 5672]\n"
        "  --instance=N                 instance number (0..1023) [default: 0]\n"
        "  --verbose[=BOOL]             log debug lines [default: false]\n"
        "  --tag=TEXT                   log tag\n");
    assert_int_equal(parse_printing(bad_first, text, sizeof(text)), -1);
    assert_string_equal(text, "");
}

static void
test_check_config(void **state)
{
    const char *path = write_file("check.conf", "instance = 9\ntag = from file\n");
    const char *args[] = {"--check-config", "--verbose", "--config", path,
                          "--amqp-port", "15672", NULL};
    const char *bad[] = {"--check-config", "--amqp-port", "x", NULL};
    char text[TEST_OUT_MAX];

    (void)state;
    assert_int_equal(parse_printing(args, text, sizeof(text)), CONFIG_CHECKED);
    assert_string_equal(text,
                        "amqp-host = 127.0.0.1\n"
                        "amqp-port = 15672\n"
                        "instance = 9\n"
                        "verbose = true\n"
                        "tag = from file\n");
    assert_int_equal(parse_printing(bad, text, sizeof(text)), -1);
    assert_string_equal(text, "");
}

/* ---- log ------------------------------------------------------------ */

static void
test_log_level_parse(void **state)
{
    static const char *const bad[] = {"", "INFO", "warning", "info ", "err"};
    enum log_level level = LOG_LEVEL_ERROR;

    (void)state;
    assert_int_equal(log_level_parse("debug", &level), 0);
    assert_int_equal(level, LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("info", &level), 0);
    assert_int_equal(level, LOG_LEVEL_INFO);
    assert_int_equal(log_level_parse("warn", &level), 0);
    assert_int_equal(level, LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("error", &level), 0);
    assert_int_equal(level, LOG_LEVEL_ERROR);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_int_equal(log_level_parse(bad[i], &level), -1);
        assert_int_equal(level, LOG_LEVEL_ERROR);   /* untouched */
    }
}

/* Points fd 2 at a temporary file; returns the saved fd 2. */
static int
capture_start(FILE **file)
{
    int saved;

    fflush(stderr);
    *file = tmpfile();
    assert_non_null(*file);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(*file), STDERR_FILENO) >= 0);
    return saved;
}

/* Restores fd 2 and reads what was written into TEXT; returns its length. */
static size_t
capture_end(FILE *file, int saved, char *text, size_t textlen)
{
    size_t len;

    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(file);
    len = fread(text, 1, textlen - 1, file);
    text[len] = '\0';
    fclose(file);
    return len;
}

/* Checks the "YYYY-MM-DDTHH:MM:SS.mmmZ " prefix of LINE against the clock
 * and returns what follows it. */
static const char *
check_timestamp(const char *line)
{
    struct tm tm = {0};
    int msec = -1, used = 0;
    time_t t;

    assert_int_equal(sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %n",
                            &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, &msec, &used), 7);
    assert_int_equal(used, strlen("2026-11-22T21:55:08.123Z "));
    assert_true(msec >= 0 && msec <= 999);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    t = timegm(&tm);
    assert_true(llabs((long long)(time(NULL) - t)) <= TEST_CLOCK_SLACK);
    return line + used;
}

/* Checks that LINE is a timestamp followed by REST (newline included);
 * returns the text after it. */
static const char *
check_line(const char *line, const char *rest)
{
    const char *after = check_timestamp(line);

    assert_memory_equal(after, rest, strlen(rest));
    return after + strlen(rest);
}

static void
test_log_write(void **state)
{
    char text[TEST_OUT_MAX];
    char *long_tag = repeat('t', LOG_TAG_MAX + 10);
    char *long_message = repeat('m', 2 * LOG_LINE_MAX);
    const char *next;
    int evaluated = 0;
    FILE *file;
    size_t len;
    int saved;

    (void)state;
    assert_int_equal(log_threshold, LOG_LEVEL_INFO);
    saved = capture_start(&file);
    log_debug("skipped %d", ++evaluated);
    log_info("hello %d", 42);
    len = capture_end(file, saved, text, sizeof(text));
    assert_int_equal(evaluated, 0);   /* arguments not evaluated */
    assert_int_equal(len, strlen(text));
    assert_string_equal(check_timestamp(text), "INFO  tally: hello 42\n");

    log_setup("aggregator 1", LOG_LEVEL_DEBUG);
    saved = capture_start(&file);
    log_debug("a");
    log_warn("b%s", "c");
    log_error("%d", -1);
    capture_end(file, saved, text, sizeof(text));
    next = check_line(text, "DEBUG aggregator 1: a\n");
    next = check_line(next, "WARN  aggregator 1: bc\n");
    next = check_line(next, "ERROR aggregator 1: -1\n");
    assert_string_equal(next, "");

    /* Long tags are cut to LOG_TAG_MAX bytes, long messages to one line
     * of LOG_LINE_MAX bytes ending in "...". */
    log_setup(long_tag, LOG_LEVEL_WARN);
    saved = capture_start(&file);
    log_info("skipped");
    log_error("%s", long_message);
    len = capture_end(file, saved, text, sizeof(text));
    assert_int_equal(len, LOG_LINE_MAX);
    next = check_timestamp(text);
    assert_memory_equal(next, "ERROR ", strlen("ERROR "));
    next += strlen("ERROR ");
    assert_memory_equal(next, long_tag, LOG_TAG_MAX);
    next += LOG_TAG_MAX;
    assert_memory_equal(next, ": mmm", strlen(": mmm"));
    assert_string_equal(text + len - strlen("m...\n"), "m...\n");
    log_setup("tally", LOG_LEVEL_INFO);
    free(long_tag);
    free(long_message);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_then_flags),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_config_set),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_file_line_limit),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_log_write),
    };

    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
