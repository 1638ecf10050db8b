/*
 * topk.c: the one bounded top-k structure, used by every search path.
 *
 * A min-heap of (score, id) whose root is the worst pair kept, so a candidate is compared with
 * the root once and only better ones pay for a sift. "Worse" is a total order: lower score, or
 * equal score and larger id; hence results do not depend on scan order or thread split. The heap
 * itself (and that order) is topk.h's, which the HNSW walk also uses inline.
 */
#include "topk.h"

void topk_init(topk *t, topk_item *storage, size_t cap)
{
    t->items = storage;
    t->n = 0;
    t->cap = cap;
}

void topk_push(topk *t, float score, uint32_t slot, uint64_t id)
{
    topk_item it = {score, slot, id};
    if (t->n < t->cap) topk_heap_push(t->items, &t->n, it, 0);
    else if (t->cap > 0 && topk_above(&t->items[0], &it, 0)) topk_heap_replace_top(t->items, t->n, it, 0);
}

void topk_sort(topk *t)
{
    /* Heap sort: repeatedly move the worst to the end; the array ends best first. */
    topk_heap_sort(t->items, t->n);
}
