/*
 * map_touch.c: the floor under `chrysalis search --mmap` on this machine: a process that maps a
 * store file and reads one byte of every 4 KiB page (the file split between two threads, as the
 * search splits its scan), then exits. It computes nothing, so its time is process start plus
 * what the kernel (and, on a VM, the hypervisor) charges to map the file's pages into a fresh
 * process; that charge depends on whether the page cache holds the file in large folios.
 * Each thread first maps its half in one call (MADV_POPULATE_READ), the cheapest way found here
 * (87 -> 73 ms on the 412 MB store), as the library's first scan does.
 * Built and run by bench/table16.sh:  map_touch FILE
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const volatile unsigned char *p;
    size_t n;
    unsigned sum;
} part;

static void *touch(void *arg)
{
    part *t = arg;
    madvise((void *)t->p, t->n, MADV_POPULATE_READ); /* the cheapest way in found: one call, not a fault per 64 KiB */
    unsigned s = 0;
    for (size_t i = 0; i < t->n; i += 4096) s += t->p[i];
    t->sum = s;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) return fprintf(stderr, "usage: map_touch FILE\n"), 2;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || st.st_size <= 0) return perror(argv[1]), 1;
    size_t n = (size_t)st.st_size, half = n / 2 / 4096 * 4096;
    const unsigned char *p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return perror("mmap"), 1;
    part a = {p, half, 0}, b = {p + half, n - half, 0};
    pthread_t th;
    pthread_create(&th, NULL, touch, &b);
    touch(&a);
    pthread_join(th, NULL);
    printf("%u\n", a.sum + b.sum);
    return 0;
}
