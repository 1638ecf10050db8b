/*
 * replay_main.c: replays the fuzz corpus as an ordinary test (no clang needed).
 * `fuzz_replay CORPUS_DIR` runs the files of corpus/load through fuzz_load_one, corpus/hnsw through
 * fuzz_hnsw_one, corpus/jsonl through
 * fuzz_jsonl_one and corpus/fvecs through fuzz_fvecs_one. A crash or sanitizer report fails the
 * run; otherwise it prints "N passed, 0 failed" (one per file).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static int replay_dir(const char *root, const char *sub, int (*fn)(const uint8_t *, size_t))
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char f[8192];
        snprintf(f, sizeof f, "%s/%s", path, e->d_name);
        FILE *fp = fopen(f, "rb");
        if (!fp) continue;
        fseek(fp, 0, SEEK_END);
        long len = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
        size_t got = fread(buf, 1, (size_t)len, fp);
        fclose(fp);
        fn(buf, got);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : "tests/fuzz/corpus";
    int n = replay_dir(root, "load", fuzz_load_one) + replay_dir(root, "jsonl", fuzz_jsonl_one) +
            replay_dir(root, "fvecs", fuzz_fvecs_one) + replay_dir(root, "hnsw", fuzz_hnsw_one);
    printf("fuzz replay: %d inputs\n", n);
    printf("%d passed, 0 failed\n", n);
    return n > 0 ? 0 : 1;
}
