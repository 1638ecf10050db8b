/*
 * bench_embed.c: throughput of the deterministic provider on one core.
 *   bench_embed [N]   embeds N distinct texts ("legend text number i ...", about 60 bytes) at 1024
 *                     dimensions, best of 3, and prints texts per second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chrysalis.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    char text[128];
    float v[1024];
    double best = 1e30, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            int l = snprintf(text, sizeof text, "legend text number %d: Skill: salt %d - as demonstrated by someone", i, i % 97);
            chrys_embed_deterministic(text, (size_t)l, 1024, v);
            sink += v[i % 1024];
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("deterministic provider: %d texts x 1024 dims in %.3f s on one core: %.0f texts/s (checksum %.3f)\n", n, best,
           n / best, sink);
    return 0;
}
