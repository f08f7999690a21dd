/*
 * config: the option table applied to a daemon's options struct. Every
 * setting, whatever its source, goes through config_apply, so a default, a
 * file line and a flag are checked the same way.
 *
 *   config_parse:
 *     defaults     every row: zero the field, apply default_value
 *     pass 1       split ARGV into flags (unknown names fail here); note
 *                  --help (print, stop), --config PATH, --check-config
 *     file         "name = value" lines of the last --config PATH
 *     pass 2       apply the other flags in order
 *     summary      --check-config prints "name = value" per row
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errmsg.h"
#include "number.h"
#include "xalloc.h"

/* Longest config file line, without its newline. */
#define CONFIG_LINE_MAX 4096
/* Room for the longest line, its newline and the NUL fgets adds. */
#define CONFIG_LINE_BUF (CONFIG_LINE_MAX + 2)
/* Widest "--name=KIND" column in the help text before it is pushed over. */
#define CONFIG_HELP_COLUMN 28

static const char *const config_true_words[] = {"true", "yes", "on", "1"};
static const char *const config_false_words[] = {"false", "no", "off", "0"};
#define CONFIG_BOOL_WORDS (sizeof(config_true_words) / sizeof(config_true_words[0]))

/* One flag of ARGV, split. OPTION is NULL for the built-in flags. */
struct config_flag {
    const char *name;
    size_t namelen;
    const char *value;   /* NULL for a bare flag */
    const struct config_option *option;
};

static const struct config_option *
config_find(const struct config_option *table, size_t n, const char *name,
            size_t namelen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].name) == namelen
            && memcmp(table[i].name, name, namelen) == 0)
            return &table[i];
    return NULL;
}

static void *
config_field(const struct config_option *opt, void *opts)
{
    return (char *)opts + opt->offset;
}

/* Sets OPT in OPTS from VALUE (NULL only for a NULL string). On failure
 * writes the bare reason, without the option's name, into REASON. */
static int
config_apply(const struct config_option *opt, void *opts, const char *value,
             char *reason, size_t reasonlen)
{
    void *field = config_field(opt, opts);
    int64_t v;

    switch (opt->kind) {
    case CONFIG_STRING:
        if (value != NULL && strlen(value) > CONFIG_STRING_MAX) {
            errmsg_say(reason, reasonlen, "value is longer than %d bytes",
                       CONFIG_STRING_MAX);
            return -1;
        }
        free(*(char **)field);
        *(char **)field = value == NULL ? NULL : xstrndup(value, strlen(value));
        return 0;
    case CONFIG_INT:
        if (number_parse_int64(value, strlen(value), &v) != 0) {
            errmsg_say(reason, reasonlen, "\"%s\" is not an integer", value);
            return -1;
        }
        if (v < opt->min || v > opt->max) {
            errmsg_say(reason, reasonlen, "%s is out of range %ld..%ld", value,
                       opt->min, opt->max);
            return -1;
        }
        *(long *)field = (long)v;
        return 0;
    case CONFIG_BOOL:
        for (size_t i = 0; i < CONFIG_BOOL_WORDS; i++) {
            if (strcasecmp(value, config_true_words[i]) == 0) {
                *(int *)field = 1;
                return 0;
            }
            if (strcasecmp(value, config_false_words[i]) == 0) {
                *(int *)field = 0;
                return 0;
            }
        }
        errmsg_say(reason, reasonlen, "\"%s\" is not a boolean", value);
        return -1;
    }
    errmsg_say(reason, reasonlen, "unknown option kind");
    return -1;
}

/* Zeroes every field without freeing (OPTS may be uninitialized), then
 * applies the defaults. */
static int
config_defaults(const struct config_option *table, size_t n, void *opts,
                char *err, size_t errlen)
{
    char reason[CONFIG_ERR_MAX];

    for (size_t i = 0; i < n; i++) {
        void *field = config_field(&table[i], opts);

        if (table[i].kind == CONFIG_STRING)
            *(char **)field = NULL;
        else if (table[i].kind == CONFIG_INT)
            *(long *)field = 0;
        else
            *(int *)field = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (table[i].default_value == NULL)
            continue;
        if (config_apply(&table[i], opts, table[i].default_value, reason,
                         sizeof(reason)) != 0) {
            errmsg_say(err, errlen, "default of %s: %s", table[i].name, reason);
            return -1;
        }
    }
    return 0;
}

int
config_set(const struct config_option *table, size_t n, void *opts,
           const char *name, const char *value, char *err, size_t errlen)
{
    const struct config_option *opt = config_find(table, n, name, strlen(name));
    char reason[CONFIG_ERR_MAX];

    if (opt == NULL) {
        errmsg_say(err, errlen, "unknown option %s", name);
        return -1;
    }
    if (value == NULL && opt->kind != CONFIG_STRING) {
        errmsg_say(err, errlen, "%s: missing value", name);
        return -1;
    }
    if (config_apply(opt, opts, value, reason, sizeof(reason)) != 0) {
        errmsg_say(err, errlen, "%s: %s", name, reason);
        return -1;
    }
    return 0;
}

/* ---- the config file ------------------------------------------------ */

static char *
config_trim(char *s)
{
    size_t len;

    while (*s == ' ' || *s == '\t')
        s++;
    len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'
                       || s[len - 1] == '\n' || s[len - 1] == '\r'))
        s[--len] = '\0';
    return s;
}

/* Applies one line (newline included). */
static int
config_file_line(const struct config_option *table, size_t n, void *opts,
                 char *line, const char *where, char *err, size_t errlen)
{
    const struct config_option *opt;
    char reason[CONFIG_ERR_MAX];
    char *name, *value, *eq;
    size_t len;

    name = config_trim(line);
    if (name[0] == '\0' || name[0] == '#')
        return 0;
    eq = strchr(name, '=');
    if (eq == NULL || eq == name) {
        errmsg_say(err, errlen, "%s: expected name = value", where);
        return -1;
    }
    *eq = '\0';
    name = config_trim(name);
    value = config_trim(eq + 1);
    len = strlen(value);
    if (value[0] == '"') {
        if (len < 2 || value[len - 1] != '"') {
            errmsg_say(err, errlen, "%s: %s: unterminated quote", where, name);
            return -1;
        }
        value[len - 1] = '\0';
        value++;
    }
    opt = config_find(table, n, name, strlen(name));
    if (opt == NULL) {
        errmsg_say(err, errlen, "%s: unknown option %s", where, name);
        return -1;
    }
    if (config_apply(opt, opts, value, reason, sizeof(reason)) != 0) {
        errmsg_say(err, errlen, "%s: %s: %s", where, name, reason);
        return -1;
    }
    return 0;
}

static int
config_file(const struct config_option *table, size_t n, void *opts,
            const char *path, char *err, size_t errlen)
{
    char line[CONFIG_LINE_BUF];
    char where[CONFIG_ERR_MAX];
    FILE *f;
    int lineno = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        errmsg_say(err, errlen, "--config: cannot open %s: %s", path,
                   strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);

        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (len > CONFIG_LINE_MAX && line[len - 1] != '\n') {
            errmsg_say(err, errlen, "%s: line longer than %d bytes", where,
                       CONFIG_LINE_MAX);
            goto fail;
        }
        if (config_file_line(table, n, opts, line, where, err, errlen) != 0)
            goto fail;
    }
    if (ferror(f)) {
        errmsg_say(err, errlen, "--config: cannot read %s: %s", path,
                   strerror(errno));
        goto fail;
    }
    fclose(f);
    return 0;
fail:
    fclose(f);
    return -1;
}

/* ---- flags ---------------------------------------------------------- */

static int
config_is(const struct config_flag *flag, const char *builtin)
{
    return strlen(builtin) == flag->namelen
           && memcmp(flag->name, builtin, flag->namelen) == 0;
}

/* Splits ARGV[*I] (and its value, if separate) into FLAG and moves *I past
 * them. */
static int
config_next_flag(const struct config_option *table, size_t n, int argc,
                 char **argv, int *i, struct config_flag *flag, char *err,
                 size_t errlen)
{
    const char *arg = argv[*i];
    const char *eq;
    int bare;

    if (strncmp(arg, "--", 2) != 0) {
        errmsg_say(err, errlen, "unexpected argument \"%s\"", arg);
        return -1;
    }
    flag->name = arg + 2;
    eq = strchr(flag->name, '=');
    flag->namelen = eq == NULL ? strlen(flag->name) : (size_t)(eq - flag->name);
    flag->value = eq == NULL ? NULL : eq + 1;
    flag->option = NULL;
    (*i)++;
    if (config_is(flag, "help") || config_is(flag, "check-config")) {
        if (flag->value != NULL) {
            errmsg_say(err, errlen, "--%.*s takes no value", (int)flag->namelen,
                       flag->name);
            return -1;
        }
        return 0;
    }
    if (!config_is(flag, "config")) {
        flag->option = config_find(table, n, flag->name, flag->namelen);
        if (flag->option == NULL) {
            errmsg_say(err, errlen, "unknown option --%.*s", (int)flag->namelen,
                       flag->name);
            return -1;
        }
    }
    bare = flag->option != NULL && flag->option->kind == CONFIG_BOOL;
    if (flag->value == NULL && !bare) {
        if (*i >= argc) {
            errmsg_say(err, errlen, "--%.*s: missing value", (int)flag->namelen,
                       flag->name);
            return -1;
        }
        flag->value = argv[(*i)++];
    }
    return 0;
}

static void
config_summary(const struct config_option *table, size_t n, void *opts,
               FILE *out)
{
    for (size_t i = 0; i < n; i++) {
        void *field = config_field(&table[i], opts);

        if (table[i].kind == CONFIG_STRING) {
            const char *s = *(char **)field;

            fprintf(out, "%s = %s\n", table[i].name, s == NULL ? "" : s);
        } else if (table[i].kind == CONFIG_INT) {
            fprintf(out, "%s = %ld\n", table[i].name, *(long *)field);
        } else {
            fprintf(out, "%s = %s\n", table[i].name,
                    *(int *)field ? "true" : "false");
        }
    }
}

int
config_parse(const struct config_option *table, size_t n, void *opts,
             int argc, char **argv, FILE *out, char *err, size_t errlen)
{
    char reason[CONFIG_ERR_MAX];
    struct config_flag flag;
    const char *path = NULL;
    int checked = 0;

    errmsg_say(err, errlen, "%s", "");
    if (config_defaults(table, n, opts, err, errlen) != 0)
        return -1;
    for (int i = 1; i < argc;) {
        if (config_next_flag(table, n, argc, argv, &i, &flag, err, errlen) != 0)
            return -1;
        if (config_is(&flag, "help")) {
            config_help(table, n, argv[0], out);
            return CONFIG_HELP;
        }
        if (config_is(&flag, "check-config"))
            checked = 1;
        else if (flag.option == NULL)
            path = flag.value;
    }
    if (path != NULL && config_file(table, n, opts, path, err, errlen) != 0)
        return -1;
    for (int i = 1; i < argc;) {
        if (config_next_flag(table, n, argc, argv, &i, &flag, err, errlen) != 0)
            return -1;
        if (flag.option == NULL)
            continue;
        if (config_apply(flag.option, opts,
                         flag.value == NULL ? "true" : flag.value, reason,
                         sizeof(reason)) != 0) {
            errmsg_say(err, errlen, "--%s: %s", flag.option->name, reason);
            return -1;
        }
    }
    if (checked) {
        config_summary(table, n, opts, out);
        return CONFIG_CHECKED;
    }
    return CONFIG_RUN;
}

void
config_help(const struct config_option *table, size_t n, const char *program,
            FILE *out)
{
    static const char *const kind_text[] = {
        [CONFIG_STRING] = "=TEXT",
        [CONFIG_INT] = "=N",
        [CONFIG_BOOL] = "[=BOOL]",
    };

    fprintf(out, "usage: %s [options]\n", program);
    fprintf(out, "  %-*s %s\n", CONFIG_HELP_COLUMN, "--config=PATH",
            "read \"name = value\" lines from PATH");
    fprintf(out, "  %-*s %s\n", CONFIG_HELP_COLUMN, "--check-config",
            "print every option's value and exit");
    fprintf(out, "  %-*s %s\n", CONFIG_HELP_COLUMN, "--help",
            "print this help and exit");
    for (size_t i = 0; i < n; i++) {
        const struct config_option *opt = &table[i];
        int width = CONFIG_HELP_COLUMN - 2 - (int)strlen(opt->name);

        fprintf(out, "  --%s%-*s %s", opt->name, width < 0 ? 0 : width,
                kind_text[opt->kind], opt->help);
        if (opt->kind == CONFIG_INT)
            fprintf(out, " (%ld..%ld)", opt->min, opt->max);
        if (opt->default_value != NULL)
            fprintf(out, " [default: %s]", opt->default_value);
        fputc('\n', out);
    }
}

void
config_free(const struct config_option *table, size_t n, void *opts)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].kind == CONFIG_STRING) {
            char **field = config_field(&table[i], opts);

            free(*field);
            *field = NULL;
        }
    }
}
