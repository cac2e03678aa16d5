/*
 * ngram_impl.h - the model's layout, shared by ngram.c (training, queries)
 * and ngram_io.c (save, load).
 */
#ifndef HM_EVAL_NGRAM_IMPL_H
#define HM_EVAL_NGRAM_IMPL_H

#include <stdarg.h>

#include "ngram.h"

/* One order k: its histories (the first k-1 ids of its k-grams), each with
 * the sorted run of ids seen after it and their counts.  Histories are kept
 * in lexicographic order (so saving walks them in file order) and found
 * through an open-addressing table of history indices. */
struct ng_level {
    int k;
    size_t n;            /* k-grams */
    size_t n_hist;       /* histories */
    int32_t *hist_ids;   /* n_hist x (k-1) */
    uint32_t *hist_start; /* n_hist + 1: k-grams of history i are
                             [hist_start[i], hist_start[i+1]) */
    double *hist_inv;    /* 1 / c_k(h.) */
    double *hist_gamma;  /* mass left for order k-1 */
    uint32_t *slots;     /* history index + 1; 0 is empty */
    size_t mask;         /* slots - 1 (a power of two minus one) */
    int32_t *word;       /* n: the predicted id of each k-gram */
    uint32_t *count;     /* n: raw (top order) or continuation count */
    double d[4];         /* d[c] = D_k(c) for c = 1, 2, 3+; d[0] = 0 */
};

struct ng_model {
    int order;
    int32_t vocab;
    struct ng_level lv[NG_MAX_ORDER + 1]; /* lv[1..order] */
    double *base;        /* V: P_1(w), order 1 interpolated with uniform */
    float *logbase;      /* V: ln base[w] */
};

/* snprintf into err (NULL or errlen 0: nothing). */
void ng__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

ng_model *ng__alloc(int order, int32_t vocab);
/* Fill lv (k, discounts already set) from n records of k ids and a count,
 * stride k+1, strictly increasing.  -1 on no memory. */
int ng__level_build(struct ng_level *lv, const uint32_t *rec, size_t n);
/* Index of history h (k-1 ids) at level lv, or -1. */
long ng__find_hist(const struct ng_level *lv, const int32_t *h);
/* Count of k-gram (h, w) where hi is the index of h at level lv; 0 if
 * unseen. */
uint32_t ng__cont_count(const struct ng_level *lv, size_t hi, int32_t w);
/* Precompute the order-1 row once every level is built.  -1 on no
 * memory. */
int ng__finish(ng_model *m);

#endif
