/*
 * topk.c: the one bounded top-k structure, used by every search path.
 *
 * A min-heap of (score, id) whose root is the worst pair kept, so a candidate is compared with
 * the root once and only better ones pay for a sift. "Worse" is a total order: lower score, or
 * equal score and larger id; hence results do not depend on scan order or thread split.
 */
#include "internal.h"

void topk_init(topk *t, topk_item *storage, size_t cap)
{
    t->items = storage;
    t->n = 0;
    t->cap = cap;
}

static inline int worse_item(const topk_item *a, const topk_item *b)
{
    return topk_worse(a->score, a->id, b->score, b->id);
}

static void sift_down(topk_item *h, size_t n, size_t i)
{
    topk_item x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && worse_item(&h[c + 1], &h[c])) c++;
        if (!worse_item(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

void topk_push(topk *t, float score, uint32_t slot, uint64_t id)
{
    topk_item it = {score, slot, id};
    if (t->n < t->cap) {
        size_t i = t->n++;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!worse_item(&it, &t->items[p])) break;
            t->items[i] = t->items[p];
            i = p;
        }
        t->items[i] = it;
    } else if (t->cap > 0 && worse_item(&t->items[0], &it)) {
        t->items[0] = it;
        sift_down(t->items, t->n, 0);
    }
}

void topk_sort(topk *t)
{
    /* Heap sort: repeatedly move the worst to the end; the array ends best first. */
    size_t n = t->n;
    while (n > 1) {
        topk_item tmp = t->items[0];
        t->items[0] = t->items[n - 1];
        t->items[n - 1] = tmp;
        n--;
        sift_down(t->items, n, 0);
    }
}

int ranked_cmp_best_first(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (rank_worse(b->score, b->id, a->score, a->id)) return -1;
    return rank_worse(a->score, a->id, b->score, b->id);
}
