/*
 * cli.h: shared pieces of the chrysalis command-line tool.
 *
 * The CLI is the only part of the project that prints. Exit codes (documented in README and
 * `chrysalis --help`):
 *   0 success, 1 failure (I/O, memory), 2 usage error, 3 bad input data, 4 store corrupt or of an
 *   unsupported format, 5 store locked by another writer (--no-wait).
 */
#ifndef CHRYS_CLI_H
#define CHRYS_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chrysalis.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_DATA = 3, EXIT_STORE = 4, EXIT_LOCKED = 5 };

/* Exit code for a library result code. */
int cli_exit_for(int rc);

/* ---- vector input (io_vectors.c, io_jsonl.c) ---- */
typedef enum vec_format { FMT_AUTO, FMT_FVECS, FMT_NPY, FMT_RAW, FMT_JSONL } vec_format;

typedef struct vecset {
    size_t n;
    uint32_t dim;
    float *data;     /* n rows of dim floats, row i at data + i * (stride ? stride : dim) */
    size_t stride;   /* floats from one row to the next; 0: dim (dense). Set by a mapped vstream */
    int borrowed;    /* data points into a vstream's mapping: vecset_free leaves it */
    uint64_t *ids;   /* n, or NULL when the input carries no ids */
    char **meta;     /* n (entries may be NULL), or NULL */
    unsigned char *empty; /* n flags: 1 = the record had an empty embedding (merge input); or NULL */
    size_t n_skipped;     /* records dropped as invalid (JSONL with JSONL_SKIP_INVALID) */
    size_t file_off, row_bytes; /* a streamed chunk: file offset of record 0's first component,
                                 * bytes per record (0: not streamed) */
} vecset;

/* JSONL parse flags (merge input). */
#define JSONL_ALLOW_EMPTY 1   /* "embedding": [] or missing: kept as an empty record */
#define JSONL_SKIP_INVALID 2  /* a malformed record is dropped and counted instead of failing */

/* Parse a format name ("fvecs", "npy", "raw", "jsonl", "auto"); -1 if unknown. */
int vec_format_parse(const char *s);
/* Read a whole input ("-" = stdin). raw_dim is required for FMT_RAW. The error message (err)
 * names the file and the record or byte offset. Notes (e.g. float64 conversion) go to *note.
 * Returns CHRYS_OK or a library code (CHRYS_IO, CHRYS_INVALID, CHRYS_DIM, CHRYS_NOMEM). */
int vecset_read(const char *path, vec_format fmt, uint32_t raw_dim, vecset *out, char *err,
                size_t errlen, char *note, size_t notelen);
/* Streaming reader of a large fvecs or raw float32 file (merge): vstream_open returns CHRYS_OK
 * when path is a regular file of that format (by --format, else as the whole-file reader guesses
 * it from extension and content) whose size is a whole
 * number of records, 1 when the whole-file reader should take it (it gives the messages);
 * vstream_next gives the next max_rows records at most in out (out->n == 0 at the end),
 * checked as the whole-file reader checks them, with file-wide record numbers.
 * The file is mapped read-only and out points into the mapping (out->stride: fvecs rows keep
 * their dimension headers between them), valid until the next vstream_next or vstream_close;
 * the chunk before is unmapped then. Where it cannot be mapped, chunks are read into memory.
 * While mapped, a SIGBUS (the file cut short by another process while it is read) ends the
 * process with a message naming the file (exit 4): nothing was written yet. */
typedef struct vstream {
    FILE *f;
    char name[1024];
    int fvecs;
    uint32_t dim;
    size_t row, n, next; /* bytes per record, records in the file, next record to read */
    const unsigned char *map; /* the whole file, or NULL (read through f) */
    size_t map_len, mapped_from; /* bytes; start of the chunk given last (unmapped at the next) */
    int check_finite; /* vstream_next rejects NaN/Inf (1, vstream_open's default); 0: the caller's
                       * consumer checks (the merger's validation: one pass over the input, not two) */
} vstream;
/* The first NaN or infinite component of v[0..dim), or -1. */
long vec_first_nonfinite_cli(const float *v, uint32_t dim);
int vstream_open(const char *path, int fmt, uint32_t raw_dim, vstream *s);
int vstream_next(vstream *s, size_t max_rows, vecset *out, char *err, size_t errlen);
void vstream_close(vstream *s);
/* Parse an in-memory buffer (used by the reader and by fuzz targets). */
int vecset_parse(const char *name, vec_format fmt, uint32_t raw_dim, unsigned char *buf, size_t len,
                 vecset *out, char *err, size_t errlen, char *note, size_t notelen);
int vecset_parse_jsonl(const char *name, const char *buf, size_t len, vecset *out, char *err,
                       size_t errlen);
int vecset_parse_jsonl_ex(const char *name, const char *buf, size_t len, int flags, vecset *out,
                          char *err, size_t errlen);
/* Chrysalis legend files (*_embeddings_full.json): select "kb", "sb", "skill" or "all". */
int vecset_parse_legend(const char *name, const char *buf, size_t len, const char *select,
                        vecset *out, char *err, size_t errlen);
/* Is this buffer a legend file (a JSON object with knowledge_builder_runs or skill_builder_runs)? */
int is_legend_file(const char *name, const unsigned char *buf, size_t len);
void vecset_free(vecset *v);
/* Read a whole file or stdin into a malloc'd buffer. */
int read_all(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen);

/* ---- options (opts.c): one table per command, one parser for all ---- */
typedef enum opt_kind {
    OPT_END,     /* the table's last entry */
    OPT_FLAG,    /* no value: *(int *)dest = 1 */
    OPT_SET,     /* no value: *(int *)dest = value */
    OPT_UNSET,   /* no value: *(const char **)dest = NULL (--no-cache) */
    OPT_LONG,    /* an integer in [min, max] into *(long *)dest */
    OPT_DOUBLE,  /* a finite number in [min, max] (flags: OPT_MIN_EXCL) into *(double *)dest */
    OPT_STRING,  /* any text into *(const char **)dest */
    OPT_CHOICE,  /* one of choices ("a|b|c") into *(const char **)dest */
    OPT_CALL,    /* call(typed, value, dest): 0, or -1 after printing the error */
    OPT_ACTION,  /* no value: call(typed, NULL, dest) */
    OPT_INCLUDE, /* the options of another table (sub), e.g. the embed options in merge */
} opt_kind;
#define OPT_MIN_EXCL 1 /* the minimum itself is refused ("> 0") */
#define OPT_BRACKETS 2 /* the range is shown as "[min, max]" */
typedef struct cli_opt {
    const char *name; /* long name without the dashes, or NULL */
    char short_name;  /* 'k' for -k, or 0 */
    opt_kind kind;
    void *dest;
    double min, max;      /* OPT_LONG, OPT_DOUBLE: the accepted range (INFINITY: unbounded) */
    const char *expect;   /* what is expected, before the range ("seconds", "requests in flight") */
    const char *choices;  /* OPT_CHOICE */
    const char *cfg;      /* also set this configuration key (the flag wins over env and file) */
    int value, flags;     /* OPT_SET's value; OPT_MIN_EXCL, OPT_BRACKETS */
    int (*call)(const char *typed, const char *arg, void *dest);
    const struct cli_opt *sub; /* OPT_INCLUDE */
} cli_opt;
enum { OPTS_OK = 0, OPTS_HELP = 1, OPTS_ERROR = 2 /* a bad value */, OPTS_USAGE = 3 /* unknown option */ };
/* Parse argv[1..argc) against tab (-h/--help are built in): the positional arguments end up in
 * argv[1..1+*npos), in order. Errors are printed, naming the option as typed with its range. */
int opts_parse(const cli_opt *tab, int argc, char **argv, int *npos);
/* opts_parse, then: --help prints help + help2 (either may be NULL) on stdout and gives EXIT_OK;
 * an unknown option prints them on stderr and gives EXIT_USAGE; a bad value gives EXIT_USAGE;
 * success gives -1 (go on). */
int opts_run(const cli_opt *tab, int argc, char **argv, const char *help, const char *help2, int *npos);
/* OPT_CALL for --format F of vector inputs: *(int *)dest = vec_format. */
int opt_vec_format(const char *typed, const char *arg, void *dest);
/* The options every command spells the same way. */
#define OPT_DIM(d) {"dim", 0, OPT_LONG, (d), 1, CHRYS_MAX_DIM}
#define OPT_THREADS {"threads", 0, OPT_LONG, NULL, 0, 256, .cfg = "threads"}
#define OPT_FORMAT(f) {"format", 0, OPT_CALL, (f), .call = opt_vec_format}
#define OPT_NO_WAIT(v) {"no-wait", 0, OPT_FLAG, (v)}
#define OPT_QUIET(v) {"quiet", 'q', OPT_FLAG, (v)}
#define OPT_JSON(v) {"json", 0, OPT_FLAG, (v)}

/* ---- the record-id rule of JSONL inputs (io_jsonl.c; used by every JSONL reader) ---- */
/* "id" is optional but all-or-none across a file's records, and a non-negative integer: a JSON
 * number up to 2^53, or above that a string of decimal digits (below 2^64 - 1, the library's
 * reserved id). rec: the record's JSON object; *has_ids: -1 before the first accepted record,
 * then 0 or 1 (updated here on success; call it as the record's last check). On success *id is
 * the id (0 when the file has none) and CHRYS_OK is returned; else CHRYS_INVALID with err =
 * "NAME:LINE: ..." naming the rule broken. */
struct cJSON;
int jsonl_record_id(const struct cJSON *rec, int *has_ids, uint64_t *id, const char *name, size_t line, char *err,
                    size_t errlen);

/* ---- progress bar on stderr, only when stderr is a terminal ---- */
typedef struct progress {
    int enabled;
    const char *label;
    size_t total, last_shown;
    double t0;
} progress;
void progress_start(progress *p, const char *label, size_t total);
void progress_update(progress *p, size_t done);
void progress_end(progress *p);
double now_seconds(void);

/* ---- commands ---- */
int cmd_build(int argc, char **argv, int is_add);
int cmd_search(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_cache(int argc, char **argv);

/* ---- provider options shared by embed and merge --embed (cmd_embed.c) ---- */
typedef struct embed_cli {
    const char *provider, *model, *base_url, *key_env, *text_field, *cache;
    long dim, batch, retries, concurrency;
    double timeout, rate;
    int fallback;
} embed_cli;
extern const char *EMBED_OPTIONS_HELP;
void embed_cli_init(embed_cli *ec);
/* The provider options' table (include it with OPT_INCLUDE), writing into *ec. */
#define EMBED_N_OPTIONS 15
void embed_cli_options(embed_cli *ec, cli_opt tab[EMBED_N_OPTIONS]);
int embed_cli_make(const embed_cli *ec, chrys_embedder **out);
void embed_cli_report(chrys_embedder *e);
int embed_jsonl_records(const char *name, const char *buf, size_t len, const char *field, char ***texts,
                        char ***metas, uint64_t **ids, int *has_ids, size_t *n, char *err, size_t errlen);
int cmd_export(int argc, char **argv);

/* ---- configuration (config.c): flags > environment > config file > defaults ---- */
int cfg_load(const char *explicit_path);
int cfg_set_flag(const char *key, const char *value, const char *flag); /* prints the error */
const char *cfg_get(const char *key);
const char *cfg_source(const char *key);
unsigned long long cfg_uint(const char *key);
double cfg_double(const char *key);
int cfg_bool(const char *key);
const char *cfg_index_spec(void);
int cfg_parse_bytes(const char *v, unsigned long long *out);
int cmd_config(int argc, char **argv);
int cmd_retrain(int argc, char **argv);

/* Apply --threads to BLAS as well (n > 0). */
void cli_set_threads(long n);

/* Take the writer lock of path (a store, or a cache file) for a mutating command, BEFORE reading
 * it: waits for another writer, saying once on stderr "waiting for PATH: locked by pid N", or with
 * no_wait fails at once with "PATH: locked by pid N". Returns EXIT_OK and *lk (release with
 * chrys_store_unlock after the save), or the exit code after printing the error. */
int cli_lock_store(const char *path, int no_wait, chrys_lock **lk);

/* Open STORE for reading as what it holds: a merger (*m) or an index (*ix), with its header in
 * *sm (struct_size set). Returns EXIT_OK, or the exit code after printing the error. */
int cli_open_store(const char *store, chrys_store_meta *sm, chrys_merger **m, chrys_index **ix);

/* Print "chrysalis: <msg>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
