/*
 * test_lock.c: the writer lock (src/store/store_lock.c, chrys_store_lock).
 *  - another process (a forked child) cannot take a held lock: NOWAIT gives CHRYS_LOCKED with the
 *    holder's pid, a bounded wait times out, and it gets the lock the moment the holder lets go;
 *  - a save while this process holds the lock writes under it (no self-deadlock), from the
 *    holding thread and from another; the holding thread locking again gets CHRYS_INVALID;
 *    another thread waits or gets CHRYS_LOCKED;
 *  - a new holder removes the temporaries of a killed writer (PATH.tmp-XXXXXX) and nothing else;
 *  - read-modify-write by three processes at once, each under the lock, loses no record;
 *  - argument and I/O errors.
 * Every test works in its own mkdtemp directory and removes it.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "tests.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A fresh directory; *store = DIR/s.chrys. */
static char *make_dir(char store[512])
{
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/chrys_lock_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return NULL;
    snprintf(store, 512, "%s/s.chrys", dir);
    return dir;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[600];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static chrys_index *small_index(uint64_t first_id, size_t n)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 4;
    chrys_index *ix = NULL;
    if (chrys_index_new(&o, &ix, NULL)) return NULL;
    for (size_t i = 0; i < n; i++) {
        float v[4] = {1.0f + (float)i, 2.0f, 3.0f, (float)(i % 5)};
        uint64_t id = first_id + i;
        chrys_index_add(ix, 1, &id, v, NULL);
    }
    return ix;
}

/* Child side of the fork tests: exit code 0 when every expectation held, else the failing step. */
static int child_expect_locked(const char *store, pid_t parent)
{
    chrys_lock *lk = NULL;
    char *msg = NULL, want[64];
    int rc = chrys_store_lock(store, CHRYS_LOCK_NOWAIT, &lk, &msg);
    snprintf(want, sizeof want, "locked by pid %lld", (long long)parent);
    if (rc != CHRYS_LOCKED || lk) return 1;
    if (!msg || !strstr(msg, want) || !strstr(msg, store)) return 2;
    chrys_free(msg);
    msg = NULL;
    double t0 = mono();
    rc = chrys_store_lock_ex(store, 0, 0.2, NULL, NULL, &lk, &msg);
    if (rc != CHRYS_LOCKED || mono() - t0 < 0.19) return 3;
    chrys_free(msg);
    return 0;
}

static void on_wait_count(void *user, const char *path, int64_t pid)
{
    (void)path;
    int64_t *seen = user;
    seen[0]++;
    seen[1] = pid;
}

void test_lock_nowait_from_forked_child(void)
{
    char store[512], *dir = make_dir(store);
    CHECK(dir != NULL);
    if (!dir) return;
    chrys_lock *lk = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_store_lock(store, 0, &lk, &msg), CHRYS_OK);
    CHECK(lk != NULL);
    char lpath[600];
    snprintf(lpath, sizeof lpath, "%s.lock", store);
    CHECK(exists(lpath));
    CHECK(!exists(store)); /* the store need not exist to be locked */
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) _exit(child_expect_locked(store, parent));
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    chrys_store_unlock(lk);
    lk = NULL;

    /* A waiter gets the lock as soon as the holder (another process) lets go, and is told once
     * who it waits for. (The holder is a child: a child forked while the parent held the lock
     * would share it until it exits.) */
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        chrys_lock *c = NULL;
        char y = chrys_store_lock(store, 0, &c, NULL) == CHRYS_OK ? 'y' : 'n';
        ssize_t w = write(pfd[1], &y, 1);
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        double released = mono();
        chrys_store_unlock(c);
        w += write(pfd[1], &released, sizeof released);
        _exit(w == 1 + (ssize_t)sizeof released ? 0 : 1);
    }
    close(pfd[1]);
    char y = 0;
    CHECK_EQ(read(pfd[0], &y, 1), 1);
    CHECK_EQ(y, 'y');
    int64_t seen[2] = {0, 0};
    CHECK_EQ(chrys_store_lock_ex(store, 0, -1, on_wait_count, seen, &lk, NULL), CHRYS_OK);
    double got = mono(), released = 0;
    CHECK_EQ(seen[0], 1);
    CHECK_EQ(seen[1], (long long)pid);
    CHECK_EQ(read(pfd[0], &released, sizeof released), (long)sizeof released);
    close(pfd[0]);
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(got >= released && got - released < 1.0); /* woken by the release */
    chrys_store_unlock(lk);

    /* Released: free for anyone, and the lock file no longer names a holder. */
    CHECK_EQ(chrys_store_lock(store, CHRYS_LOCK_NOWAIT, &lk, NULL), CHRYS_OK);
    chrys_store_unlock(lk);
    struct stat st;
    CHECK(stat(lpath, &st) == 0 && st.st_size == 0);
    remove_dir(dir);
}

void test_lock_killed_holder_leaves_no_stale_lock(void)
{
    char store[512], *dir = make_dir(store);
    if (!dir) return;
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        chrys_lock *lk = NULL;
        char c = chrys_store_lock(store, 0, &lk, NULL) == CHRYS_OK ? 'y' : 'n';
        ssize_t w = write(pfd[1], &c, 1);
        (void)w;
        for (;;) pause(); /* hold it until killed */
    }
    char c = 0;
    CHECK_EQ(read(pfd[0], &c, 1), 1);
    CHECK_EQ(c, 'y');
    chrys_lock *lk = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_store_lock(store, CHRYS_LOCK_NOWAIT, &lk, &msg), CHRYS_LOCKED);
    chrys_free(msg);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double t0 = mono();
    CHECK_EQ(chrys_store_lock(store, CHRYS_LOCK_NOWAIT, &lk, NULL), CHRYS_OK); /* at once */
    CHECK(mono() - t0 < 0.5);
    chrys_store_unlock(lk);
    close(pfd[0]);
    close(pfd[1]);
    remove_dir(dir);
}

typedef struct thread_arg {
    const char *store;
    const chrys_index *ix;
    int lock_rc, save_rc;
    int64_t seen[2];
} thread_arg;

static void *other_thread(void *p)
{
    thread_arg *a = p;
    chrys_lock *lk = NULL;
    a->lock_rc = chrys_store_lock_ex(a->store, 0, 0.1, on_wait_count, a->seen, &lk, NULL);
    chrys_store_unlock(lk);
    a->save_rc = chrys_index_save(a->ix, a->store, NULL); /* under the process's lock: no wait */
    return NULL;
}

void test_lock_save_while_held_no_deadlock(void)
{
    char store[512], *dir = make_dir(store);
    if (!dir) return;
    chrys_index *ix = small_index(0, 10);
    chrys_lock *lk = NULL, *again = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_store_lock(store, 0, &lk, NULL), CHRYS_OK);
    double t0 = mono();
    CHECK_EQ(chrys_index_save(ix, store, &msg), CHRYS_OK); /* would wait for itself without the registry */
    CHECK(mono() - t0 < 5);
    /* the holding thread locking again: refused, not a deadlock */
    CHECK_EQ(chrys_store_lock(store, 0, &again, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "already holds");
    CHECK(again == NULL);
    chrys_free(msg);
    msg = NULL;
    /* another thread: a bounded wait times out (with one notice naming us); its save goes through */
    thread_arg a = {store, ix, -1, -1, {0, 0}};
    pthread_t th;
    pthread_create(&th, NULL, other_thread, &a);
    pthread_join(th, NULL);
    CHECK_EQ(a.lock_rc, CHRYS_LOCKED);
    CHECK_EQ(a.seen[0], 1);
    CHECK_EQ(a.seen[1], (long long)getpid());
    CHECK_EQ(a.save_rc, CHRYS_OK);
    /* a merger save under the same lock */
    chrys_merge_opts mo;
    chrys_merge_opts_init(&mo);
    mo.dim = 4;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&mo, &m, NULL), CHRYS_OK);
    float v[4] = {1, 0, 0, 0};
    chrys_merge_record r = {7, v, 4, NULL};
    CHECK_EQ(chrys_merger_merge(m, 1, &r, NULL), CHRYS_OK);
    char mstore[600];
    snprintf(mstore, sizeof mstore, "%s/m.chrys", dir);
    chrys_lock *mlk = NULL;
    CHECK_EQ(chrys_store_lock(mstore, 0, &mlk, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_save(m, mstore, NULL), CHRYS_OK);
    chrys_store_unlock(mlk);
    chrys_store_unlock(lk);
    /* unlocked: a save takes the lock for itself */
    CHECK_EQ(chrys_index_save(ix, store, NULL), CHRYS_OK);
    chrys_index *back = NULL;
    CHECK_EQ(chrys_index_load(store, &back, NULL), CHRYS_OK);
    chrys_index_free(back);
    chrys_merger_free(m);
    chrys_index_free(ix);
    remove_dir(dir);
}

void test_lock_removes_temporaries_of_killed_writer(void)
{
    char store[512], *dir = make_dir(store);
    if (!dir) return;
    const char *names[] = {"s.chrys.tmp-Ab12Z9", "s.chrys.tmp-000000", /* a killed writer's: removed */
                           "s.chrys.tmp-short", "s.chrys.tmp-toolong1", "other.chrys.tmp-Ab12Z9",
                           "s.chrys.tmp-ab_12z"};                   /* not ours: kept */
    char p[600];
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        if (f) fclose(f);
    }
    chrys_lock *lk = NULL;
    CHECK_EQ(chrys_store_lock(store, 0, &lk, NULL), CHRYS_OK);
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        CHECK_EQ(exists(p), i >= 2);
    }
    chrys_store_unlock(lk);
    /* a save that takes the lock itself cleans up too */
    snprintf(p, sizeof p, "%s.tmp-Qq7788", store);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
    chrys_index *ix = small_index(0, 3);
    CHECK_EQ(chrys_index_save(ix, store, NULL), CHRYS_OK);
    CHECK(!exists(p));
    chrys_index_free(ix);
    remove_dir(dir);
}

/* Three processes each add 50 ids to one store by load / add / save under the lock, at once. */
void test_lock_read_modify_write_processes(void)
{
    char store[512], *dir = make_dir(store);
    if (!dir) return;
    chrys_index *ix = small_index(0, 5);
    CHECK_EQ(chrys_index_save(ix, store, NULL), CHRYS_OK);
    chrys_index_free(ix);
    pid_t kids[3];
    fflush(NULL);
    for (int k = 0; k < 3; k++) {
        if ((kids[k] = fork()) == 0) {
            int bad = 0;
            for (int round = 0; round < 5; round++) {
                chrys_lock *lk = NULL;
                chrys_index *x = NULL;
                bad |= chrys_store_lock(store, 0, &lk, NULL) != CHRYS_OK;
                bad |= chrys_index_load(store, &x, NULL) != CHRYS_OK;
                for (int i = 0; i < 10 && x; i++) {
                    uint64_t id = 1000 + (uint64_t)k * 100 + (uint64_t)round * 10 + (uint64_t)i;
                    float v[4] = {1, (float)k, (float)round, (float)i};
                    bad |= chrys_index_add(x, 1, &id, v, NULL) != CHRYS_OK;
                }
                bad |= !x || chrys_index_save(x, store, NULL) != CHRYS_OK;
                chrys_index_free(x);
                chrys_store_unlock(lk);
            }
            _exit(bad);
        }
    }
    for (int k = 0; k < 3; k++) {
        int status = -1;
        waitpid(kids[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_EQ(chrys_index_load(store, &ix, NULL), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    if (ix) chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, 5 + 3 * 50);
    chrys_index_free(ix);
    remove_dir(dir);
}

void test_lock_bad_arguments(void)
{
    chrys_lock *lk = (chrys_lock *)&lk;
    char *msg = NULL;
    CHECK_EQ(chrys_store_lock(NULL, 0, &lk, &msg), CHRYS_INVALID);
    CHECK(lk == NULL);
    chrys_free(msg);
    msg = NULL;
    CHECK_EQ(chrys_store_lock("/tmp/x.chrys", 0, NULL, NULL), CHRYS_INVALID);
    CHECK_EQ(chrys_store_lock("/tmp/x.chrys", 8, &lk, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "flags");
    chrys_free(msg);
    msg = NULL;
    CHECK_EQ(chrys_store_lock("/nonexistent/dir/y.chrys", 0, &lk, &msg), CHRYS_IO);
    CHECK_STR_CONTAINS(msg, "/nonexistent/dir/y.chrys");
    chrys_free(msg);
    CHECK_STR_CONTAINS(chrys_errstr(CHRYS_LOCKED), "locked");
    chrys_store_unlock(NULL);
}
