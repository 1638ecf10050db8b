/*
 * test_alloc.c: fault injection. Every allocation of a whole scenario (create, add, search,
 * save, load) is made to fail in turn; each run must end in a clean error code (never a crash,
 * never a leak under the ASan build), and the scenario must succeed once N passes its last
 * allocation.
 */
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "internal.h"
#include "tests.h"

static int scenario(const char *path)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 8;
    chrys_index *ix = NULL, *back = NULL;
    char *msg = NULL;
    int rc = chrys_index_new(&o, &ix, &msg);
    if (rc) goto done;
    float v[8 * 100];
    uint64_t ids[100];
    const char *meta[100];
    for (int i = 0; i < 800; i++) v[i] = (float)((i * 37) % 11) + 0.5f;
    for (int i = 0; i < 100; i++) {
        ids[i] = (uint64_t)i * 5;
        meta[i] = i % 2 ? "{\"m\":1}" : NULL;
    }
    if ((rc = chrys_index_add(ix, 100, ids, v, meta))) goto done;
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit hits[40 * 10];
    if ((rc = chrys_index_search(ix, 2, v, &so, hits))) goto done;
    if ((rc = chrys_index_search(ix, 40, v, &so, hits))) goto done;
    if ((rc = chrys_index_save(ix, path, &msg))) goto done;
    if ((rc = chrys_index_load(path, &back, &msg))) goto done;
    rc = chrys_index_remove(back, 5);
done:
    chrys_free(msg);
    chrys_index_free(ix);
    chrys_index_free(back);
    return rc;
}

void test_alloc_fault_injection(void)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/chrys_alloc_%d.chrys", (int)getpid());
    long before = chrys__test_alloc_count();
    CHECK_EQ(scenario(path), CHRYS_OK);
    long total = chrys__test_alloc_count() - before;
    CHECK(total > 10);
    int clean = 0;
    for (long n = 1; n <= total + 5; n++) {
        chrys__test_fail_alloc_after(n);
        int rc = scenario(path);
        chrys__test_fail_alloc_after(0);
        if (rc == CHRYS_OK || (rc & 0xff) == CHRYS_NOMEM) clean++;
        else h_fail(__FILE__, __LINE__, "failing allocation %ld gave rc %d, not CHRYS_NOMEM", n, rc);
    }
    CHECK_EQ(clean, total + 5);
    unlink(path);
}
