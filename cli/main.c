/*
 * main.c: the chrysalis command-line tool: dispatch and top-level help.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "chrysalis %s: exact embedding search and a single-file vector store\n"
    "\n"
    "usage: chrysalis [--config FILE] COMMAND [options] ...\n"
    "\n"
    "commands:\n"
    "  build STORE INPUT...     create STORE from vector files (fails if STORE exists; --force replaces)\n"
    "  add STORE INPUT...       add vectors to an existing STORE\n"
    "  search STORE QUERIES     top-k search: -k 10 [--threshold 0.85] [--json]\n"
    "  info STORE               describe a store [--json]\n"
    "  merge STORE INPUT...     merge embeddings the Chrysalis way (cosine >= 0.85: fold, else append)\n"
    "  export STORE             write a store's entries as JSONL or fvecs\n"
    "  embed INPUT.jsonl        embed texts (deterministic, OpenAI/Voyage, Ollama) through a cache\n"
    "  cache stats|prune CACHE  inspect or trim an embedding cache\n"
    "  retrain STORE            retrain an IVF store's lists on its current vectors\n"
    "  config                   print the effective configuration and where each value came from\n"
    "  version                  print the version and the SIMD level in use\n"
    "\n"
    "inputs: .fvecs, .npy (float32; float64 converted), raw float32 (--dim D), .jsonl records\n"
    "{\"id\": N, \"embedding\": [...], ...other fields kept as metadata}; '-' reads stdin (--format).\n"
    "record ids (every JSONL input): on every record or none; an integer >= 0 (a string of digits above 2^53).\n"
    "\n"
    "'chrysalis COMMAND --help' shows each command's options: --name value or --name=value, before\n"
    "or after the arguments; --threads N is 0..256 (0: all cores) and --dim D 1..16384 everywhere.\n"
    "\n"
    "exit codes: 0 ok, 1 failure (I/O, memory), 2 usage error, 3 bad input data\n"
    "            (NaN/Inf, wrong dimension, duplicate id, malformed JSON), 4 store corrupt or unsupported,\n"
    "            5 store locked by another writer (--no-wait).\n"
    "writers (build, add, merge, retrain, cache prune) take STORE.lock and run one at a time: a second\n"
    "             one waits (\"waiting for STORE: locked by pid N\") unless --no-wait; readers never wait.\n"
    "configuration: flags > environment (CHRYSALIS_INDEX, CHRYSALIS_AUTO_THRESHOLD, CHRYSALIS_NPROBE, ...,\n"
    "             and FAISS_ENABLED, FAISS_THRESHOLD, FAISS_INDEX_TYPE (IVFFlat, HNSW, Flat or a spec),\n"
    "             FAISS_NLIST, FAISS_USE_GPU) > config file\n"
    "             (--config, $CHRYSALIS_CONFIG, ./chrysalis.conf, ~/.config/chrysalis/config) > defaults;\n"
    "             'chrysalis config' shows them.\n"
    "environment: CHRYS_SIMD=scalar|avx2|avx512 forces a lower SIMD level; CHRYS_NO_PROGRESS=1 hides\n"
    "             the progress bar (shown only when stderr is a terminal).\n";

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    if (argc >= 3 && !strcmp(argv[1], "--config")) {
        config_path = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc < 2) {
        fprintf(stderr, USAGE, chrys_version());
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        printf(USAGE, chrys_version());
        return EXIT_OK;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("chrysalis %s (simd: %s)\n", chrys_version(), chrys_simd_name());
        return EXIT_OK;
    }
    if (cfg_load(config_path)) return EXIT_USAGE;
    if (!strcmp(cmd, "config")) return cmd_config(argc - 1, argv + 1);
    if (!strcmp(cmd, "retrain")) return cmd_retrain(argc - 1, argv + 1);
    if (!strcmp(cmd, "build")) return cmd_build(argc - 1, argv + 1, 0);
    if (!strcmp(cmd, "add")) return cmd_build(argc - 1, argv + 1, 1);
    if (!strcmp(cmd, "search")) return cmd_search(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "merge")) return cmd_merge(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 1, argv + 1);
    if (!strcmp(cmd, "cache")) return cmd_cache(argc - 1, argv + 1);
    cli_error("unknown command '%s' (try 'chrysalis --help')", cmd);
    return EXIT_USAGE;
}
