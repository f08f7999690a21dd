/*
 * config: daemon options as one table. Each row names an option, its kind,
 * where it lives in the daemon's options struct, its default and its help
 * text. Command-line flags, the config file, `--help` and
 * `--check-config` all come from the same table.
 *
 *   defaults (table) --> config file (--config=PATH) --> flags
 *
 * Flags are `--name=value` or `--name value`; booleans also accept a bare
 * `--name`. The config file has one `name = value` per line; blank lines
 * and lines starting with `#` are ignored; a value may be wrapped in
 * double quotes. Later settings override earlier ones, and flags override
 * the file wherever they appear on the command line.
 */
#ifndef TALLY_CONFIG_H
#define TALLY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_ERR_MAX 256
#define CONFIG_STRING_MAX 4096

enum config_kind {
    CONFIG_STRING,   /* char * (owned by the struct; config_free frees it) */
    CONFIG_INT,      /* long, within [min, max] */
    CONFIG_BOOL,     /* int: true/false, yes/no, on/off, 1/0 */
};

struct config_option {
    const char *name;          /* "amqp-port" */
    enum config_kind kind;
    size_t offset;             /* offsetof(struct daemon_options, field) */
    const char *default_value; /* text, parsed like any setting; NULL for
                                  a NULL string */
    long min, max;             /* CONFIG_INT only */
    const char *help;
};

/* The result of config_parse. */
enum config_action {
    CONFIG_RUN = 0,            /* options are set; run the daemon */
    CONFIG_HELP = 1,           /* --help: config_help was printed */
    CONFIG_CHECKED = 2,        /* --check-config: valid, summary printed */
};

/*
 * Sets every field of OPTS (a struct the table describes; its old contents
 * are overwritten, not freed) to its default, then applies the file named
 * by the last --config (if any), then the other flags of ARGV (ARGC
 * entries; ARGV[0] is the program name). A bare boolean
 * never takes the next argument as its value (use `--name=false`). --help
 * prints the help to OUT at once; --check-config prints every option's
 * final value to OUT as "name = value" lines. OPTS' strings are owned by
 * OPTS (free them with config_free); ARGV is only read.
 * Returns a config_action, or -1 with a reason in ERR (always
 * NUL-terminated) naming the option and, for the file, the line:
 * "unknown option --foo", "config.conf:3: amqp-port: 99999 is out of
 * range 1..65535", "--instance: \"x\" is not an integer". On -1, OPTS may
 * hold some settings; config_free still frees them.
 */
int config_parse(const struct config_option *table, size_t n, void *opts,
                 int argc, char **argv, FILE *out, char *err, size_t errlen);

/* Sets one option NAME to the text VALUE (copied; NULL sets a string
 * option to NULL), freeing the old string. 0, or -1 with a reason in ERR:
 * "unknown option NAME" or "NAME: <reason>". */
int config_set(const struct config_option *table, size_t n, void *opts,
               const char *name, const char *value, char *err,
               size_t errlen);

/* Prints "usage: PROGRAM [options]" and one line per option with its
 * default and help text to OUT. */
void config_help(const struct config_option *table, size_t n,
                 const char *program, FILE *out);

/* Frees the strings of OPTS that the table owns (not OPTS itself). */
void config_free(const struct config_option *table, size_t n, void *opts);

#endif
