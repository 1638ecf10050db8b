/*
 * parallel.c: a minimal fork-join over contiguous ranges.
 *
 * Scans split rows or queries into one range per worker; the caller is worker 0. Graph and list
 * searches, whose queries differ in cost, take chunks as they go (chrys_parallel_chunks). Threads are
 * started per call: a scan that is worth splitting takes milliseconds, against tens of
 * microseconds to start a thread, and no pool means no global state and nothing to shut down.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "index.h"

typedef struct job {
    chrys_range_fn fn;
    void *ctx;
    unsigned worker;
    size_t begin, end;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    j->fn(j->ctx, j->worker, j->begin, j->end);
    return NULL;
}

void chrys_parallel_for(unsigned n_workers, size_t n, chrys_range_fn fn, void *ctx)
{
    if (n_workers > n) n_workers = (unsigned)(n ? n : 1);
    if (n_workers <= 1) {
        fn(ctx, 0, 0, n);
        return;
    }
    enum { MAXW = 64 };
    if (n_workers > MAXW) n_workers = MAXW;
    job jobs[MAXW];
    pthread_t tid[MAXW];
    int started[MAXW] = {0};
    for (unsigned w = 0; w < n_workers; w++) {
        jobs[w] = (job){fn, ctx, w, n * w / n_workers, n * (w + 1) / n_workers};
        if (w > 0) started[w] = pthread_create(&tid[w], NULL, run_job, &jobs[w]) == 0;
    }
    fn(ctx, 0, jobs[0].begin, jobs[0].end);
    for (unsigned w = 1; w < n_workers; w++) {
        if (started[w]) pthread_join(tid[w], NULL);
        else run_job(&jobs[w]); /* could not start a thread: do its share here */
    }
}

/* Independent items of uneven cost (queries of a graph or list search, nodes to link) on a
 * machine whose cores need not run at the same speed: each worker takes the next chunk (of the
 * caller's size, or about n / (16 workers) items) until none are left, so no worker idles while
 * another still holds half the batch. */
typedef struct chunks {
    chrys_range_fn fn;
    void *ctx;
    size_t n, chunk;
    atomic_size_t next;
} chunks;

static void take_chunks(void *arg, unsigned worker, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    chunks *c = arg;
    for (;;) {
        size_t b = atomic_fetch_add(&c->next, c->chunk);
        if (b >= c->n) break;
        c->fn(c->ctx, worker, b, b + c->chunk < c->n ? b + c->chunk : c->n);
    }
}

void chrys_parallel_chunks(unsigned n_workers, size_t n, size_t chunk, chrys_range_fn fn, void *ctx)
{
    if (n_workers > n) n_workers = (unsigned)(n ? n : 1);
    if (!chunk) chunk = n_workers <= 1 ? n : n / (16 * (size_t)n_workers);
    chunks c = {fn, ctx, n, chunk ? chunk : 1, 0};
    if (n_workers <= 1) take_chunks(&c, 0, 0, n);
    else chrys_parallel_for(n_workers, n_workers, take_chunks, &c);
}
