/*
 * opts.c: the one option parser of every command.
 *
 * A command describes its options in a table (cli_opt: name, kind, range, destination) and
 * opts_parse walks argv once: options may come before, between or after the positional
 * arguments (as getopt_long allowed), "--name value", "--name=value", "-k 10", "-k10" and
 * bundled short flags ("-qh") are accepted, a unique prefix of a long name stands for it, and
 * "--" ends the options. A bad value is refused with the option as the user typed it, what was
 * expected (with its range) and what was given: "--dim: expected 1..16384, got '0'".
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The range part of the "expected" text: "1..256", "> 0", ">= 0", "[-1, 1]", or "". */
static void range_text(const cli_opt *o, char *out, size_t cap)
{
    out[0] = 0;
    if (o->kind == OPT_LONG && isinf(o->max)) snprintf(out, cap, ">= %.0f", o->min);
    else if (o->kind == OPT_LONG) snprintf(out, cap, "%.0f..%.0f", o->min, o->max);
    else if (isinf(o->min) && isinf(o->max)) return;
    else if (o->flags & OPT_BRACKETS) snprintf(out, cap, "[%g, %g]", o->min, o->max);
    else if (isinf(o->max)) snprintf(out, cap, "%s %g", o->flags & OPT_MIN_EXCL ? ">" : ">=", o->min);
    else snprintf(out, cap, "%g..%g", o->min, o->max);
}

/* The choices "a|b|c" as "a, b or c". */
static void choice_text(const char *choices, char *out, size_t cap)
{
    size_t n = 0, k = 0, len = strlen(choices);
    for (size_t i = 0; i < len; i++) n += choices[i] == '|';
    out[0] = 0;
    for (const char *p = choices; *p; k++) {
        size_t l = strcspn(p, "|");
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%.*s", k == 0 ? "" : k == n ? " or " : ", ", (int)l, p);
        p += l + (p[l] == '|');
    }
}

static int is_choice(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = choices; *p;) {
        size_t l = strcspn(p, "|");
        if (l == vl && !strncmp(p, v, l)) return 1;
        p += l + (p[l] == '|');
    }
    return 0;
}

static int bad_value(const cli_opt *o, const char *typed, const char *arg)
{
    char what[256], range[64];
    if (o->kind == OPT_CHOICE) choice_text(o->choices, what, sizeof what);
    else {
        range_text(o, range, sizeof range);
        snprintf(what, sizeof what, "%s%s%s", o->expect ? o->expect : "", o->expect && range[0] ? " " : "", range);
    }
    cli_error("%s: expected %s, got '%s'", typed, what, arg);
    return -1;
}

/* Check arg against o and store it; -1 after printing the error. */
static int take_value(const cli_opt *o, const char *typed, const char *arg)
{
    char *end;
    switch (o->kind) {
    case OPT_LONG: {
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (!*arg || *end || errno || v < o->min || v > o->max) return bad_value(o, typed, arg);
        if (o->dest) *(long *)o->dest = v;
        break;
    }
    case OPT_DOUBLE: {
        double v = strtod(arg, &end);
        int below = o->flags & OPT_MIN_EXCL ? !(v > o->min) : !(v >= o->min);
        if (!*arg || *end || !isfinite(v) || below || !(v <= o->max)) return bad_value(o, typed, arg);
        if (o->dest) *(double *)o->dest = v;
        break;
    }
    case OPT_CHOICE:
        if (!is_choice(o->choices, arg)) return bad_value(o, typed, arg);
        /* fall through */
    case OPT_STRING:
        if (o->dest) *(const char **)o->dest = arg;
        break;
    case OPT_CALL:
        if (o->call(typed, arg, o->dest)) return -1;
        break;
    default: break;
    }
    /* a configuration value: the flag wins over environment and file (chrysalis config shows it) */
    if (o->cfg && cfg_set_flag(o->cfg, arg, typed)) return -1;
    return 0;
}

static int takes_value(const cli_opt *o)
{
    return o->kind != OPT_FLAG && o->kind != OPT_SET && o->kind != OPT_UNSET && o->kind != OPT_ACTION;
}

static void set_flag(const cli_opt *o, const char *typed)
{
    if (o->kind == OPT_ACTION) o->call(typed, NULL, o->dest);
    else if (o->kind == OPT_UNSET) *(const char **)o->dest = NULL;
    else *(int *)o->dest = o->kind == OPT_SET ? o->value : 1;
}

/* Visit the long names of tab (and its included tables): the exact match, and prefix matches. */
static void match_long(const cli_opt *tab, const char *name, size_t len, const cli_opt **exact,
                       const cli_opt **prefix, int *n_prefix)
{
    for (const cli_opt *o = tab; o->kind != OPT_END; o++) {
        if (o->kind == OPT_INCLUDE) match_long(o->sub, name, len, exact, prefix, n_prefix);
        else if (o->name && !strncmp(o->name, name, len)) {
            if (strlen(o->name) == len) *exact = o;
            *prefix = o;
            ++*n_prefix;
        }
    }
}

/* The exact name, else the one option it is a unique prefix of (as getopt_long took it). */
static const cli_opt *find_long(const cli_opt *tab, const char *name, size_t len, int *ambiguous)
{
    const cli_opt *exact = NULL, *prefix = NULL;
    int n_prefix = 0;
    match_long(tab, name, len, &exact, &prefix, &n_prefix);
    *ambiguous = !exact && n_prefix > 1;
    return exact ? exact : n_prefix == 1 ? prefix : NULL;
}

static const cli_opt *find_short(const cli_opt *tab, char c)
{
    for (const cli_opt *o = tab; o->kind != OPT_END; o++) {
        if (o->kind == OPT_INCLUDE) {
            const cli_opt *sub = find_short(o->sub, c);
            if (sub) return sub;
        } else if (o->short_name == c) return o;
    }
    return NULL;
}

/* One "--name[=value]" argument; *i moves past a separate value. */
static int parse_long(const cli_opt *tab, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    char typed[128];
    snprintf(typed, sizeof typed, "--%.*s", (int)len, name);
    if (len == 4 && !strncmp(name, "help", 4)) return OPTS_HELP;
    int ambiguous = 0;
    const cli_opt *o = find_long(tab, name, len, &ambiguous);
    if (!o) {
        cli_error(ambiguous ? "option '%s' is ambiguous" : "unknown option '%s'", typed);
        return OPTS_USAGE;
    }
    if (!takes_value(o)) {
        if (eq) {
            cli_error("%s takes no value", typed);
            return OPTS_USAGE;
        }
        set_flag(o, typed);
        return OPTS_OK;
    }
    const char *arg = eq ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (!arg) {
        cli_error("%s needs a value", typed);
        return OPTS_USAGE;
    }
    return take_value(o, typed, arg) ? OPTS_ERROR : OPTS_OK;
}

/* One "-x[value]" argument (flags may be bundled: "-qh"). */
static int parse_short(const cli_opt *tab, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    for (size_t j = 1; a[j]; j++) {
        char typed[3] = {'-', a[j], 0};
        if (a[j] == 'h') return OPTS_HELP;
        const cli_opt *o = find_short(tab, a[j]);
        if (!o) {
            cli_error("unknown option '%s'", typed);
            return OPTS_USAGE;
        }
        if (!takes_value(o)) {
            set_flag(o, typed);
            continue;
        }
        const char *arg = a[j + 1] ? a + j + 1 : *i + 1 < argc ? argv[++*i] : NULL;
        if (!arg) {
            cli_error("%s needs a value", typed);
            return OPTS_USAGE;
        }
        return take_value(o, typed, arg) ? OPTS_ERROR : OPTS_OK;
    }
    return OPTS_OK;
}

int opts_parse(const cli_opt *tab, int argc, char **argv, int *npos)
{
    int w = 1, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = OPTS_OK;
        if (only_pos || a[0] != '-' || !a[1]) argv[w++] = argv[i]; /* "-" is stdin, a positional */
        else if (!strcmp(a, "--")) only_pos = 1;
        else if (a[1] == '-') r = parse_long(tab, argc, argv, &i);
        else r = parse_short(tab, argc, argv, &i);
        if (r != OPTS_OK) return r;
    }
    *npos = w - 1;
    return OPTS_OK;
}

int opts_run(const cli_opt *tab, int argc, char **argv, const char *help, const char *help2, int *npos)
{
    int r = opts_parse(tab, argc, argv, npos);
    FILE *f = r == OPTS_HELP ? stdout : r == OPTS_USAGE ? stderr : NULL; /* a bad value: its message only */
    if (f && help) fputs(help, f);
    if (f && help2) fputs(help2, f);
    return r == OPTS_HELP ? EXIT_OK : r == OPTS_OK ? -1 : EXIT_USAGE;
}

int opt_vec_format(const char *typed, const char *arg, void *dest)
{
    int f = vec_format_parse(arg);
    if (f < 0) {
        cli_error("%s: expected fvecs, npy, raw, jsonl or auto, got '%s'", typed, arg);
        return -1;
    }
    *(int *)dest = f;
    return 0;
}
