/*
 * topk.h: the one binary heap of topk_items (internal.h), inline for the hot loops that use it
 * directly (the HNSW walk), and under the bounded top-k of topk.c.
 *
 * One order for every heap: topk_worse (lower score, or equal score and larger id). A heap keeps
 * either the worst item on top (best_top = 0: a bounded top-k's min-heap, whose root is the next
 * to leave) or the best (best_top = 1: a best-first frontier, popped in order). best_top is a
 * constant at every call site, so each use compiles to a plain heap of its own direction.
 *
 * The HNSW walk orders ties by slot: its items carry id = slot.
 */
#ifndef CHRYS_TOPK_H
#define CHRYS_TOPK_H

#include "internal.h"

/* a belongs above b in a heap of this direction */
static inline int topk_above(const topk_item *a, const topk_item *b, int best_top)
{
    return best_top ? topk_worse(b->score, b->id, a->score, a->id) : topk_worse(a->score, a->id, b->score, b->id);
}

/* Place x at hole i of h, moving it up past the parents it belongs above. */
static inline void topk_sift_up(topk_item *h, size_t i, topk_item x, int best_top)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!topk_above(&x, &h[p], best_top)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

/* Place x at hole i of h[0..n), moving it down past the children that belong above it. */
static inline void topk_sift_down(topk_item *h, size_t n, size_t i, topk_item x, int best_top)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && topk_above(&h[c + 1], &h[c], best_top)) c++;
        if (!topk_above(&h[c], &x, best_top)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Push x onto h[0..*n) (room for one more is the caller's). */
static inline void topk_heap_push(topk_item *h, size_t *n, topk_item x, int best_top)
{
    topk_sift_up(h, (*n)++, x, best_top);
}

/* Remove and return the top of h[0..*n), *n > 0. */
static inline topk_item topk_heap_pop(topk_item *h, size_t *n, int best_top)
{
    topk_item top = h[0];
    size_t m = --*n;
    if (m) topk_sift_down(h, m, 0, h[m], best_top);
    return top;
}

/* Replace the top of h[0..n), n > 0, with x. */
static inline void topk_heap_replace_top(topk_item *h, size_t n, topk_item x, int best_top)
{
    topk_sift_down(h, n, 0, x, best_top);
}

/* Sort a worst-on-top heap h[0..n) best first, in place: each step moves the worst to the end. */
static inline void topk_heap_sort(topk_item *h, size_t n)
{
    while (n > 1) {
        topk_item worst = h[0];
        n--;
        topk_sift_down(h, n, 0, h[n], 0);
        h[n] = worst;
    }
}

/* Sort any h[0..n) best first (make it a worst-on-top heap, then topk_heap_sort). */
static inline void topk_sort_items(topk_item *h, size_t n)
{
    for (size_t i = n / 2; i-- > 0;) topk_sift_down(h, n, i, h[i], 0);
    topk_heap_sort(h, n);
}

/* ------------------------------------------------------------------------------------------
 * Keys: a walk item (score, slot) as one uint64_t whose unsigned order is topk_worse's (id =
 * slot): the score's bits mapped to an order-preserving unsigned form in the high half (-0 taken
 * as +0, as the float comparison has them equal), the slot's complement in the low half (of two
 * equal scores the smaller slot is the better). The HNSW walk keeps its two heaps as keys: half
 * the bytes of a topk_item and one integer comparison per step, with the same sift rules as above
 * (so the same items come out in the same order), and hands its results back as topk_items.
 */
static inline uint32_t topk_key_hi(float s)
{
    uint32_t u;
    s += 0.0f; /* -0 -> +0 (not folded away without -ffast-math) */
    memcpy(&u, &s, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static inline uint64_t topk_key(float s, uint32_t slot) { return ((uint64_t)topk_key_hi(s) << 32) | (uint32_t)~slot; }
static inline uint32_t topk_key_slot(uint64_t k) { return ~(uint32_t)k; }
static inline float topk_key_score(uint64_t k)
{
    uint32_t u = (uint32_t)(k >> 32);
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
    float s;
    memcpy(&s, &u, sizeof s);
    return s;
}

/* The heap of keys: best_top as above (1: the largest key on top). */
static inline void topk_kheap_push(uint64_t *h, size_t *n, uint64_t x, int best_top)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!(best_top ? x > h[p] : x < h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}
static inline void topk_kheap_sift_down(uint64_t *h, size_t n, uint64_t x, int best_top)
{
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && (best_top ? h[c + 1] > h[c] : h[c + 1] < h[c])) c++;
        if (!(best_top ? h[c] > x : h[c] < x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}
static inline void topk_kheap_pop(uint64_t *h, size_t *n, int best_top)
{
    size_t m = --*n;
    if (m) topk_kheap_sift_down(h, m, h[m], best_top);
}

#endif
