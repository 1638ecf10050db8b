/*
 * parallel.c: a minimal fork-join over contiguous ranges.
 *
 * Scans split rows or queries into one range per worker; the caller is worker 0. Graph and list
 * searches, whose queries differ in cost, take chunks as they go (chrys_parallel_chunks).
 *
 * The workers are kept: threads started at the first parallel call wait on a condition variable
 * for the next one. Starting a thread and joining it costs about 47 us on this project's VM,
 * waking a kept one and hearing back about 14 us, and the exact merger makes one parallel call a
 * block (about 150 in a 10,000-record merge). One fork-join uses the kept workers at a time; a
 * call made while they are busy (another thread's, or one nested inside a worker) starts its own
 * threads as before. The workers die with the process (a child of fork starts afresh) or when the
 * library is unloaded (a destructor stops and joins them).
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

enum { MAXW = 64 };

/* The kept workers: worker w runs jobs[w + 1] of each generation that has one. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned n;           /* workers started */
    pthread_t tid[MAXW];
    uint64_t gen;         /* the current fork-join */
    job *jobs;
    unsigned njobs;       /* jobs of the current generation (the caller's included) */
    unsigned pending;     /* workers still on the current generation's jobs */
    int quit;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, 0, NULL, 0, 0, 0};
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* held by the fork-join using the pool */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

typedef struct worker_arg {
    unsigned w;
    uint64_t seen;
} worker_arg;

static void *pool_worker(void *arg)
{
    worker_arg a = *(worker_arg *)arg;
    chrys_free(arg);
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.quit && pool.gen == a.seen) pthread_cond_wait(&pool.go, &pool.mu);
        if (pool.quit) break;
        a.seen = pool.gen;
        if (a.w + 1 >= pool.njobs) continue; /* nothing for this worker this time */
        job *j = &pool.jobs[a.w + 1];
        pthread_mutex_unlock(&pool.mu);
        run_job(j);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0) pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* A child of fork has none of the parent's threads: it starts with no workers and fresh locks. */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.go, NULL);
    pthread_cond_init(&pool.done, NULL);
    pthread_mutex_init(&pool_busy, NULL);
    pool.n = 0;
    pool.gen = 0;
    pool.jobs = NULL;
    pool.njobs = pool.pending = 0;
    pool.quit = 0;
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork);
}

__attribute__((destructor)) static void pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    unsigned n = pool.n;
    pool.quit = 1;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    for (unsigned w = 0; w < n; w++) pthread_join(pool.tid[w], NULL);
    pool.n = 0;
}

/* Workers for n jobs (the caller runs one): started up to n - 1 (fewer if a start fails). Called
 * holding pool_busy. Returns how many jobs the workers can take, the caller's included. */
static unsigned pool_grow(unsigned n)
{
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool.mu);
    while (pool.n + 1 < n) {
        worker_arg *a = chrys_malloc(sizeof *a);
        if (!a) break;
        *a = (worker_arg){pool.n, pool.gen};
        if (pthread_create(&pool.tid[pool.n], NULL, pool_worker, a) != 0) {
            chrys_free(a);
            break;
        }
        pool.n++;
    }
    unsigned m = pool.n + 1 < n ? pool.n + 1 : n;
    pthread_mutex_unlock(&pool.mu);
    return m;
}

/* The old way, for a call made while the kept workers are busy: threads of its own. */
static void fork_join_own(unsigned n_workers, job *jobs)
{
    pthread_t tid[MAXW];
    int started[MAXW] = {0};
    for (unsigned w = 1; w < n_workers; w++) started[w] = pthread_create(&tid[w], NULL, run_job, &jobs[w]) == 0;
    run_job(&jobs[0]);
    for (unsigned w = 1; w < n_workers; w++) {
        if (started[w]) pthread_join(tid[w], NULL);
        else run_job(&jobs[w]); /* could not start a thread: do its share here */
    }
}

void chrys_parallel_for(unsigned n_workers, size_t n, chrys_range_fn fn, void *ctx)
{
    if (n_workers > n) n_workers = (unsigned)(n ? n : 1);
    if (n_workers <= 1) {
        fn(ctx, 0, 0, n);
        return;
    }
    if (n_workers > MAXW) n_workers = MAXW;
    job jobs[MAXW];
    for (unsigned w = 0; w < n_workers; w++) jobs[w] = (job){fn, ctx, w, n * w / n_workers, n * (w + 1) / n_workers};
    if (pthread_mutex_trylock(&pool_busy) != 0) {
        fork_join_own(n_workers, jobs);
        return;
    }
    unsigned m = pool_grow(n_workers);
    pthread_mutex_lock(&pool.mu);
    pool.jobs = jobs;
    pool.njobs = m;
    pool.pending = m - 1;
    pool.gen++;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    run_job(&jobs[0]);
    for (unsigned w = m; w < n_workers; w++) run_job(&jobs[w]); /* no worker for these: here */
    pthread_mutex_lock(&pool.mu);
    while (pool.pending) pthread_cond_wait(&pool.done, &pool.mu);
    pool.jobs = NULL;
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool_busy);
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
