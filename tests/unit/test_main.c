/*
 * test_main.c: the unit-test runner. `unit_tests [FILTER...]` runs the tests whose names contain
 * any FILTER (all by default) and ends with "N passed, N failed".
 */
#include <stdarg.h>

#include "../harness.h"
#include "chrysalis.h"
#include "tests.h"

int h_check_failures;
uint64_t h_seed = 20261124;

void *h_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    *len = b ? fread(b, 1, (size_t)n, f) : 0;
    if (b) b[*len] = 0;
    fclose(f);
    return b;
}

void h_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    h_check_failures++;
}

#define X(name) {#name, name},
const test_case all_tests[] = {TEST_LIST{NULL, NULL}};
#undef X

int main(int argc, char **argv)
{
    const char *seed = getenv("TEST_SEED");
    if (seed) h_seed = strtoull(seed, NULL, 10);
    int passed = 0, failed = 0;
    printf("unit tests (simd: %s, seed %llu)\n", chrys_simd_name(), (unsigned long long)h_seed);
    for (const test_case *t = all_tests; t->name; t++) {
        int run = argc < 2;
        for (int i = 1; i < argc; i++)
            if (strstr(t->name, argv[i])) run = 1;
        if (!run) continue;
        int before = h_check_failures;
        t->fn();
        if (h_check_failures == before) {
            passed++;
            printf("  ok    %s\n", t->name);
        } else {
            failed++;
            printf("  FAIL  %s (seed %llu)\n", t->name, (unsigned long long)h_seed);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
