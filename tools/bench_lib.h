/*
 * bench_lib.h - the serving entry points that the benchmarks time, taken
 * either from the libhallmark they link or, for --compare, from another
 * build of it loaded with dlopen, so that two versions run side by side
 * in one process and one load, interleaved.  Handles made by one library
 * go back to that library only.
 */
#ifndef HM_BENCH_LIB_H
#define HM_BENCH_LIB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* RTLD_DEEPBIND */
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hallmark.h"

typedef struct bench_lib {
    const char *name;
    int (*key_from_bytes)(hm_key **, const unsigned char *, size_t);
    void (*key_free)(hm_key *);
    int (*lp_new)(hm_logprobs **, const hm_key *, const char *,
                  const char *, char *, size_t);
    void (*lp_free)(hm_logprobs *);
    int (*lp_harden)(const hm_logprobs *, const hm_row *, int32_t *,
                     double *, size_t, unsigned);
    int (*sp_new)(hm_spectral **, const hm_key *, const char *, const char *,
                  char *, size_t);
    void (*sp_free)(hm_spectral *);
    int (*sp_apply)(const hm_spectral *, const hm_row *, const int32_t *,
                    double *, size_t);
} bench_lib;

static inline void bench_lib_self(bench_lib *b)
{
    b->name = "this build";
    b->key_from_bytes = hm_key_from_bytes;
    b->key_free = hm_key_free;
    b->lp_new = hm_logprobs_new;
    b->lp_free = hm_logprobs_free;
    b->lp_harden = hm_logprobs_harden;
    b->sp_new = hm_spectral_new;
    b->sp_free = hm_spectral_free;
    b->sp_apply = hm_spectral_apply;
}

/* Another libhallmark.so; 0 on success, else -1 with a message in err.
 * Its own calls must stay inside it (RTLD_DEEPBIND): its exported
 * functions would otherwise bind to the linked library's. */
static inline int bench_lib_open(bench_lib *b, const char *path, char *err,
                                 size_t len)
{
#ifdef RTLD_DEEPBIND
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (h == NULL) {
        snprintf(err, len, "%s", dlerror());
        return -1;
    }
    struct {
        const char *sym;
        void **slot;
    } t[] = {
        {"hm_key_from_bytes", (void **)&b->key_from_bytes},
        {"hm_key_free", (void **)&b->key_free},
        {"hm_logprobs_new", (void **)&b->lp_new},
        {"hm_logprobs_free", (void **)&b->lp_free},
        {"hm_logprobs_harden", (void **)&b->lp_harden},
        {"hm_spectral_new", (void **)&b->sp_new},
        {"hm_spectral_free", (void **)&b->sp_free},
        {"hm_spectral_apply", (void **)&b->sp_apply},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        void *p = dlsym(h, t[i].sym);
        if (p == NULL) {
            snprintf(err, len, "%s: no %s", path, t[i].sym);
            return -1;
        }
        memcpy(t[i].slot, &p, sizeof p); /* (object to function pointer) */
    }
    b->name = path;
    return 0;
#else
    (void)b;
    snprintf(err, len, "%s: --compare needs dlopen with RTLD_DEEPBIND",
             path);
    return -1;
#endif
}

/* Timing helpers both benchmarks use: seconds on the monotonic clock,
 * and the median of n timings (sorted in place). */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return v[n / 2];
}

/* The median of t[r] - base[r] over n <= 64 runs, each pair timed in the
 * same round: the cost of a step net of the set-up that each run repeats
 * (base: that set-up alone). */
static inline double bench_net_median(const double *t, const double *base,
                                      int n)
{
    double d[64];
    if (n > 64)
        n = 64;
    for (int r = 0; r < n; r++)
        d[r] = t[r] - base[r];
    return bench_median(d, n);
}

#endif /* HM_BENCH_LIB_H */
