/*
 * store_lock.c: one writer at a time per store (docs/FORMAT.md, "The lock file").
 *
 * Why a sidecar: the writer replaces STORE by renaming a temporary file over it, so a lock taken
 * on STORE itself would be taken on an inode that the next rename throws away, and two writers
 * could each hold "the" lock. The lock lives instead on STORE.lock, a file next to the store that
 * is created on first use and never renamed or removed. It is locked with flock(2): the kernel
 * drops the lock when its holder exits, however it exits (kill -9 included), so there is no stale
 * lock to break. While it holds the lock, a holder keeps its pid in the file as ASCII decimal
 * followed by a newline (emptied again on unlock), only so that a waiter can say who it waits for;
 * the pid is never trusted for exclusion.
 *
 * A new holder, once it has the lock, removes STORE.tmp-XXXXXX files: those are the temporaries
 * of a writer killed between mkstemp and rename, and no other writer of STORE can be alive.
 *
 * Process-wide registry. flock locks belong to an open file description, so a second open() of
 * STORE.lock in the same process conflicts with the first: a caller that holds chrys_store_lock
 * and then calls chrys_merger_save would wait for itself forever. Explicit locks are therefore
 * entered in a registry keyed by the lock file's (dev, ino) and the holder's pid, and the writer
 * (store_write) takes no lock of its own when its process is in the registry for that file. The
 * pid makes a forked child, which inherits the parent's memory but is not the holder, ignore the
 * parent's entries. The registry (a list under a mutex) is the one piece of mutable process-wide
 * state besides the kernel table and the allocator hooks; the threading contract needs it.
 *
 * Locking rules: registry_mu guards the list only and is never held across a blocking call.
 * The lock a save takes for itself is not entered in the registry: it is held only by that call.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

struct chrys_lock {
    int fd;                  /* open on STORE.lock, flock(LOCK_EX) held */
    dev_t dev;
    ino_t ino;
    pid_t pid;               /* process that took it */
    pthread_t thread;        /* thread that took it (a second chrys_store_lock from it: CHRYS_INVALID) */
    int registered;          /* 1 for chrys_store_lock, 0 for a save's own lock */
    struct chrys_lock *next; /* registry list */
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static chrys_lock *registry;

/* 1 if this process holds an explicit lock on (dev, ino); with self_thread, only this thread's. */
static int registry_holds(dev_t dev, ino_t ino, int self_thread)
{
    pid_t me = getpid();
    int held = 0;
    pthread_mutex_lock(&registry_mu);
    for (chrys_lock *l = registry; l && !held; l = l->next)
        held = l->dev == dev && l->ino == ino && l->pid == me &&
               (!self_thread || pthread_equal(l->thread, pthread_self()));
    pthread_mutex_unlock(&registry_mu);
    return held;
}

static void registry_add(chrys_lock *lk)
{
    pthread_mutex_lock(&registry_mu);
    lk->next = registry;
    registry = lk;
    lk->registered = 1;
    pthread_mutex_unlock(&registry_mu);
}

static void registry_remove(chrys_lock *lk)
{
    pthread_mutex_lock(&registry_mu);
    for (chrys_lock **p = &registry; *p; p = &(*p)->next)
        if (*p == lk) {
            *p = lk->next;
            break;
        }
    lk->registered = 0;
    pthread_mutex_unlock(&registry_mu);
}

/* The pid a holder wrote into the lock file, or 0 if none can be read. */
static int64_t read_holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return (end != buf && *end == '\n' && v > 0) ? (int64_t)v : 0;
}

/* Holder of a lock we failed to take. A new holder writes its pid just after taking the lock, so
 * an empty file is retried briefly (about 50 ms) before giving up with 0. */
static int64_t wait_for_holder(int fd)
{
    for (int i = 0; i < 10; i++) {
        int64_t pid = read_holder(fd);
        if (pid) return pid;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void write_holder(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld\n", (long long)getpid());
    /* best effort: the pid is information for waiters, never needed for exclusion */
    if (ftruncate(fd, 0) == 0 && pwrite(fd, buf, (size_t)n, 0) != n) {
        /* nothing to do: a waiter then reports "another process" */
    }
}

/* Remove path.tmp-XXXXXX (mkstemp's six characters) left by a killed writer. */
static void remove_temporaries(const char *path)
{
    char *dcopy = chrys_strdup(path), *bcopy = chrys_strdup(path);
    DIR *d = NULL;
    if (!dcopy || !bcopy) goto done;
    const char *dir = dirname(dcopy), *base = basename(bcopy);
    size_t blen = strlen(base);
    if (!(d = opendir(dir))) goto done;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, blen) || strncmp(nm + blen, ".tmp-", 5) || strlen(nm + blen + 5) != 6) continue;
        int alnum = 1;
        for (const char *c = nm + blen + 5; *c; c++)
            alnum &= (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z');
        if (alnum) unlinkat(dfd, nm, 0);
    }
done:
    if (d) closedir(d);
    chrys_free(dcopy);
    chrys_free(bcopy);
}

static int sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    return nanosleep(&ts, NULL);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Take the lock of 'path'. explicit_lock: a chrys_store_lock (registered); else a save's own lock,
 * which returns *out = NULL when this process already holds an explicit lock on the file.
 * timeout_s < 0 waits forever, 0 does not wait. */
static int lock_take(const char *path, int explicit_lock, double timeout_s, chrys_lock_wait_fn on_wait,
                     void *user, chrys_lock **out, char **errmsg)
{
    *out = NULL;
    int rc = CHRYS_OK, fd = -1, notified = 0;
    chrys_lock *lk = NULL;
    char *lpath = chrys_mprintf("%s.lock", path);
    if (!lpath) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
    double deadline = timeout_s > 0 ? mono_now() + timeout_s : 0;
    for (int attempt = 0;; attempt++) {
        struct stat st, now;
        fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || fstat(fd, &st) != 0) {
            rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot open the lock file %s: %s", path, lpath,
                                  strerror(errno));
            goto fail;
        }
        if (registry_holds(st.st_dev, st.st_ino, explicit_lock)) {
            if (explicit_lock) {
                rc = chrys_set_errmsg(errmsg, CHRYS_INVALID, "%s: this thread already holds its lock", path);
                goto fail;
            }
            close(fd); /* the caller's chrys_store_lock covers this save */
            chrys_free(lpath);
            return CHRYS_OK;
        }
        int got = 0;
        while (!got) {
            if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                got = 1;
                break;
            }
            if (errno == EINTR) continue;
            if (errno != EWOULDBLOCK) {
                rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot lock %s: %s", path, lpath, strerror(errno));
                goto fail;
            }
            if (timeout_s == 0) {
                int64_t pid = wait_for_holder(fd);
                if (pid) rc = chrys_set_errmsg(errmsg, CHRYS_LOCKED, "%s: locked by pid %lld", path, (long long)pid);
                else rc = chrys_set_errmsg(errmsg, CHRYS_LOCKED, "%s: locked by another process", path);
                goto fail;
            }
            if (!notified && on_wait) on_wait(user, path, wait_for_holder(fd));
            notified = 1;
            if (timeout_s < 0) {
                /* block in the kernel: woken the moment the holder closes or dies */
                while (flock(fd, LOCK_EX) != 0)
                    if (errno != EINTR) {
                        rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot lock %s: %s", path, lpath,
                                              strerror(errno));
                        goto fail;
                    }
                got = 1;
            } else if (mono_now() >= deadline) {
                int64_t pid = read_holder(fd);
                if (pid)
                    rc = chrys_set_errmsg(errmsg, CHRYS_LOCKED, "%s: locked by pid %lld (waited %g s)", path,
                                          (long long)pid, timeout_s);
                else
                    rc = chrys_set_errmsg(errmsg, CHRYS_LOCKED, "%s: locked by another process (waited %g s)",
                                          path, timeout_s);
                goto fail;
            } else {
                sleep_ms(10);
            }
        }
        /* The file we locked must still be the one at lpath (nobody should remove it, but if
         * someone did, a lock on the orphan would exclude nobody): else try again. */
        if (stat(lpath, &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
            lk = chrys_calloc(1, sizeof *lk);
            if (!lk) {
                rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            lk->fd = fd;
            lk->dev = st.st_dev;
            lk->ino = st.st_ino;
            lk->pid = getpid();
            lk->thread = pthread_self();
            break;
        }
        close(fd);
        fd = -1;
        if (attempt >= 100) {
            rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: the lock file %s keeps being replaced", path, lpath);
            goto fail;
        }
    }
    write_holder(lk->fd);
    remove_temporaries(path); /* we are the only writer of path now */
    if (explicit_lock) registry_add(lk);
    chrys_free(lpath);
    *out = lk;
    return CHRYS_OK;
fail:
    if (fd >= 0) close(fd); /* releases the flock if we had it */
    chrys_free(lpath);
    return rc;
}

int store_lock_for_write(const char *path, chrys_lock **out, char **errmsg)
{
    return lock_take(path, 0, -1, NULL, NULL, out, errmsg);
}

int chrys_store_lock_ex(const char *path, int flags, double timeout_s, chrys_lock_wait_fn on_wait, void *user,
                        chrys_lock **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "out is required");
    *out = NULL;
    if (!path || !path[0]) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path is required");
    if (flags & ~CHRYS_LOCK_NOWAIT) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "unknown lock flags 0x%x", flags);
    if (timeout_s != timeout_s) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "timeout is NaN");
    if (flags & CHRYS_LOCK_NOWAIT) timeout_s = 0;
    return lock_take(path, 1, timeout_s, on_wait, user, out, errmsg);
}

int chrys_store_lock(const char *path, int flags, chrys_lock **out, char **errmsg)
{
    return chrys_store_lock_ex(path, flags, -1, NULL, NULL, out, errmsg);
}

void chrys_store_unlock(chrys_lock *lk)
{
    if (!lk) return;
    if (lk->registered) registry_remove(lk);
    /* Empty the pid before the lock goes (a forked child's copy of the handle leaves the file
     * alone). close() releases the flock; never LOCK_UN, which would also release it for a
     * forked child that shares the open file description. */
    if (lk->pid == getpid() && ftruncate(lk->fd, 0) != 0) {
        /* best effort */
    }
    close(lk->fd);
    chrys_free(lk);
}
