/*
 * test_logprobs.c - hardened log-probabilities (hm_logprobs_new(3)):
 * repeats are identical, offsets depend on key, tenant, id and window and
 * on nothing else, the total-variation bound holds exactly on random and
 * adversarial rows (and is nearly attained), the grid, order and validity
 * of the output, the true top-k set, bad input, threads, and no allocation.
 *
 * Every test uses fixed seeds, so a failure reproduces exactly.
 */
#define _GNU_SOURCE 1

#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "../src/internal.h"

/* ------------------------------------------------- malloc interposition */

/* Count allocator calls in a region (not under AddressSanitizer). */
#include "mallochook.h"

/* ------------------------------------------------------------ helpers */

/* Slack for binary64 rounding in the bound checks: the library computes
 * log-probabilities in binary64, so values are exact to a few ulps of
 * numbers below 1e3 in magnitude. */
#define TV_SLACK 1e-12

static hm_logprobs *test_lp(const hm_key *k, const char *spec,
                            const char *tenant)
{
    hm_logprobs *lp = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_logprobs_new(&lp, k, spec, tenant, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "hm_logprobs_new(%s): %d %s",
                  spec ? spec : "NULL", rc, msg);
    return lp;
}

static double param(const hm_logprobs *lp, const char *name)
{
    double v = NAN;
    ck_assert_int_eq(hm_logprobs_param(lp, name, &v), HM_OK);
    return v;
}

static double gauss(uint64_t *s)
{
    double u1 = 1.0 - test_uniform(s);
    double u2 = test_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Rows of many kinds, the adversarial ones included. */
#define N_KINDS 9
static void fill_row(float *l, size_t V, int kind, uint64_t *s)
{
    for (size_t v = 0; v < V; v++) {
        double g = gauss(s);
        switch (kind) {
        case 0: /* ordinary */
            l[v] = (float)(3 * g);
            break;
        case 1: /* peaked: one token takes almost everything */
            l[v] = (float)(g + (v == 7 ? 40 : 0));
            break;
        case 2: /* flat: all tied */
            l[v] = 1.5f;
            break;
        case 3: /* near-ties: values a few ulps apart */
            l[v] = 2.0f + (float)(test_rand(s) % 64) * 0x1p-22f;
            break;
        case 4: /* huge dynamic range */
            l[v] = (float)(g * 1e30);
            break;
        case 5: /* extreme finite values and masked tokens */
            l[v] = test_rand(s) % 3 == 0   ? -INFINITY
                   : test_rand(s) % 2 == 0 ? 3.0e38f
                                           : -3.0e38f;
            break;
        case 6: /* coarse: many exact ties at a few levels */
            l[v] = (float)(test_rand(s) % 6) * 0.25f;
            break;
        case 7: /* two groups a quantum apart, half the mass each */
            l[v] = (float)(v % 2 ? 0.0 : -0.015625) + (float)(1e-3 * g);
            break;
        default: /* heavy tail */
            l[v] = (float)(-log(1.0 - test_uniform(s)) * 8);
            break;
        }
    }
    if (kind == 5)
        l[test_rand(s) % V] = 1.0f; /* at least one finite */
}

/* The true top-k of a row, as the library must choose it: larger logit
 * first, ties to the smaller id, -inf never. */
typedef struct ref {
    float l;
    int32_t id;
} ref;

static int cmp_ref(const void *pa, const void *pb)
{
    const ref *a = pa, *b = pb;
    if (a->l != b->l)
        return a->l > b->l ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static size_t true_topk(const float *l, size_t V, size_t k, ref *out)
{
    size_t n = 0;
    for (size_t v = 0; v < V; v++)
        if (l[v] != -INFINITY) {
            out[n].l = l[v];
            out[n].id = (int32_t)v;
            n++;
        }
    qsort(out, n, sizeof *out, cmp_ref);
    return n < k ? n : k;
}

/* Total variation between the true distribution restricted to the returned
 * tokens and the renormalized returned one, in long double. */
static long double tv_distance(const float *l, const int32_t *ids,
                               const double *r, size_t n)
{
    long double mt = -INFINITY, mr = -INFINITY, zt = 0, zr = 0, tv = 0;
    for (size_t i = 0; i < n; i++) {
        mt = fmaxl(mt, (long double)l[ids[i]]);
        mr = fmaxl(mr, (long double)r[i]);
    }
    for (size_t i = 0; i < n; i++) {
        zt += expl((long double)l[ids[i]] - mt);
        zr += expl((long double)r[i] - mr);
    }
    for (size_t i = 0; i < n; i++)
        tv += fabsl(expl((long double)l[ids[i]] - mt) / zt -
                    expl((long double)r[i] - mr) / zr);
    return tv / 2;
}

/* Sorted by value, then id; valid log-probabilities; on the grid. */
static void check_valid(const int32_t *ids, const double *r, size_t n,
                        double quantum, const char *what)
{
    long double sum = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(r[i] <= 0 && !isnan(r[i]), "%s: value %zu is %a",
                      what, i, r[i]);
        sum += expl((long double)r[i]);
        if (i > 0)
            ck_assert_msg(r[i - 1] > r[i] ||
                              (r[i - 1] == r[i] && ids[i - 1] < ids[i]),
                          "%s: not sorted at %zu", what, i);
        if (quantum > 0 && isfinite(r[i])) {
            double m = r[i] / quantum;
            if (quantum == ldexp(1, ilogb(quantum)))
                ck_assert_msg(m == nearbyint(m), "%s: %a off the grid",
                              what, r[i]);
            else
                ck_assert_msg(fabs(m - nearbyint(m)) <= 1e-9 * fmax(1, fabs(m)),
                              "%s: %a off the grid %g", what, r[i], quantum);
        }
    }
    ck_assert_msg(sum <= 1 + 1e-12L, "%s: probabilities sum to %Lg", what,
                  sum);
}

/* ------------------------------------------------------------- tests */

START_TEST(test_params)
{
    hm_key *key = test_key(1);
    char buf[256];
    hm_logprobs *lp = test_lp(key, NULL, NULL);
    ck_assert_double_eq(param(lp, "topk"), HM_LOGPROBS_TOPK_DEFAULT);
    ck_assert_double_eq(param(lp, "eps"), HM_LOGPROBS_EPS_DEFAULT);
    ck_assert_double_eq(param(lp, "quantum"), HM_LOGPROBS_QUANTUM_DEFAULT);
    ck_assert_double_eq(param(lp, "h"), HM_LOGPROBS_WINDOW_DEFAULT);
    double eta = HM_LOGPROBS_EPS_DEFAULT + HM_LOGPROBS_QUANTUM_DEFAULT / 2;
    ck_assert_double_eq(param(lp, "max_error"), eta);
    ck_assert_double_eq(param(lp, "tv_bound"), tanh(eta / 2));
    size_t n = hm_logprobs_spec(lp, buf, sizeof buf);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_str_eq(buf, "topk=20,eps=0.0625,quantum=0.015625,h=4,id=main");
    hm_logprobs_free(lp);

    /* the canonical string reads back to the same parameters */
    lp = test_lp(key, "quantum=0.01,topk=1024,eps=0,h=16,id=x-2", "t");
    ck_assert_uint_eq(hm_logprobs_spec(lp, NULL, 0),
                      hm_logprobs_spec(lp, buf, sizeof buf));
    ck_assert_str_eq(buf, "topk=1024,eps=0,quantum=0.01,h=16,id=x-2");
    hm_logprobs *lp2 = test_lp(key, buf, "t");
    char buf2[256];
    hm_logprobs_spec(lp2, buf2, sizeof buf2);
    ck_assert_str_eq(buf, buf2);
    double v;
    ck_assert_int_eq(hm_logprobs_param(lp, "gamma", &v), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_param(NULL, "eps", &v), HM_EINVAL);
    hm_logprobs_free(lp);
    hm_logprobs_free(lp2);
    hm_logprobs_free(NULL);

    static const char *const bad[] = {
        "topk=0", "topk=1025", "eps=-0.1", "eps=2", "eps=nan", "quantum=-1",
        "quantum=1e-40", "h=0", "h=17", "id=", "id=a/b", "gamma=1", "topk",
        "topk=20,", ",topk=20", "eps=0x1p-4", "eps= 1", "topk=+3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char msg[HM_ERRMSG_SIZE] = "";
        lp = (hm_logprobs *)&v;
        ck_assert_msg(hm_logprobs_new(&lp, key, bad[i], NULL, msg,
                                      sizeof msg) == HM_EFORMAT,
                      "accepted '%s'", bad[i]);
        ck_assert_ptr_null(lp);
        ck_assert_msg(msg[0] != '\0', "no message for '%s'", bad[i]);
    }
    char long_tenant[HM_TENANT_MAX + 1];
    memset(long_tenant, 'a', HM_TENANT_MAX);
    long_tenant[HM_TENANT_MAX] = '\0';
    ck_assert_int_eq(hm_logprobs_new(&lp, key, NULL, long_tenant, NULL, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_new(&lp, NULL, NULL, NULL, NULL, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_new(NULL, key, NULL, NULL, NULL, 0),
                     HM_EINVAL);
    hm_key_free(key);
}
END_TEST

/* Offsets: in [-eps, eps], about uniform, a function of key, tenant, id,
 * window and token only. */
START_TEST(test_offsets)
{
    hm_key *k1 = test_key(1), *k2 = test_key(2);
    hm_logprobs *a = test_lp(k1, NULL, NULL);
    hm_logprobs *a2 = test_lp(k1, "h=4,eps=0.0625", "");
    hm_logprobs *b = test_lp(k2, NULL, NULL);
    hm_logprobs *t = test_lp(k1, NULL, "acme");
    hm_logprobs *i = test_lp(k1, "id=other", NULL);
    hm_logprobs *big = test_lp(k1, "eps=0.5", NULL);
    const int32_t c1[] = {9, 1, 2, 3, 4}, c2[] = {8, 1, 2, 3, 4},
                  c3[] = {1, 2, 3, 5};
    const size_t N = 4000;
    size_t same_key = 0, same_tenant = 0, same_id = 0, same_window = 0;
    size_t quart[4] = {0, 0, 0, 0};
    double sum = 0;
    for (int32_t v = 0; v < (int32_t)N; v++) {
        double x, y, z;
        ck_assert_int_eq(hm_logprobs_offset(a, c1, 5, v, &x), HM_OK);
        ck_assert(x >= -0.0625 && x <= 0.0625);
        /* same key, tenant, id, window: the same value, from another
         * handle and from a context that differs outside the window */
        ck_assert_int_eq(hm_logprobs_offset(a2, c2, 5, v, &y), HM_OK);
        ck_assert(x == y);
        ck_assert_int_eq(hm_logprobs_offset(b, c1, 5, v, &z), HM_OK);
        same_key += z == x;
        ck_assert_int_eq(hm_logprobs_offset(t, c1, 5, v, &z), HM_OK);
        same_tenant += z == x;
        ck_assert_int_eq(hm_logprobs_offset(i, c1, 5, v, &z), HM_OK);
        same_id += z == x;
        ck_assert_int_eq(hm_logprobs_offset(a, c3, 4, v, &z), HM_OK);
        same_window += z == x;
        ck_assert_int_eq(hm_logprobs_offset(big, c1, 5, v, &z), HM_OK);
        /* eps scales one unit offset s(key, window, token) */
        ck_assert(z == 8 * x);
        sum += x;
        quart[(size_t)((x / 0.0625 + 1) * 2) & 3]++;
    }
    ck_assert_uint_eq(same_key, 0);
    ck_assert_uint_eq(same_tenant, 0);
    ck_assert_uint_eq(same_id, 0);
    ck_assert_uint_eq(same_window, 0);
    /* mean 0 (sd of the mean 0.036/sqrt(N)), quarters about N/4 */
    ck_assert(fabs(sum / N) < 5 * 0.0625 / sqrt(3.0 * N));
    for (int q = 0; q < 4; q++)
        ck_assert_msg(quart[q] > N / 4 - 150 && quart[q] < N / 4 + 150,
                      "quarter %d: %zu", q, quart[q]);
    /* short contexts are padded: () and (PAD...) are one window */
    double e1, e2;
    ck_assert_int_eq(hm_logprobs_offset(a, NULL, 0, 5, &e1), HM_OK);
    ck_assert_int_eq(hm_logprobs_offset(a, c1, 0, 5, &e2), HM_OK);
    ck_assert(e1 == e2);
    ck_assert_int_eq(hm_logprobs_offset(a, c1, 5, -1, &e1), HM_ERANGE);
    ck_assert_int_eq(hm_logprobs_offset(a, NULL, 3, 1, &e1), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_offset(NULL, c1, 3, 1, &e1), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_offset(a, c1, 3, 1, NULL), HM_EINVAL);
    const int32_t neg[] = {1, -4, 2};
    ck_assert_int_eq(hm_logprobs_offset(a, neg, 3, 1, &e1), HM_ERANGE);
    hm_logprobs_free(a);
    hm_logprobs_free(a2);
    hm_logprobs_free(b);
    hm_logprobs_free(t);
    hm_logprobs_free(i);
    hm_logprobs_free(big);
    hm_key_free(k1);
    hm_key_free(k2);
}
END_TEST

/* Repeating a query returns identical bytes, from any handle with the same
 * key and parameters; the offsets are those hm_logprobs_offset reports. */
START_TEST(test_repeats_identical)
{
    const size_t V = 5000, K = 20;
    hm_key *key = test_key(3);
    hm_logprobs *lp = test_lp(key, NULL, NULL);
    hm_logprobs *lp2 = test_lp(key, NULL, NULL);
    hm_logprobs *raw = test_lp(key, "eps=0,quantum=0", NULL);
    float *l = malloc(V * sizeof *l);
    ck_assert_ptr_nonnull(l);
    uint64_t s = 0x3003;
    int32_t ctx[6] = {5, 6, 7, 8, 9, 10};
    hm_row row = {ctx, 6, NULL, 0.0f, 0.0};
    int32_t id1[K], id2[K], id3[K], ids0[K];
    double r1[K], r2[K], r3[K], l0[K];
    size_t n1, n2, n3, n0;
    for (int trial = 0; trial < 50; trial++) {
        fill_row(l, V, 0, &s);
        ctx[5] = (int32_t)trial;
        ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, K, id1, r1,
                                           &n1), HM_OK);
        ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, K, id2, r2,
                                           &n2), HM_OK);
        ck_assert_int_eq(hm_logprobs_dense(lp2, l, 1, V, V, &row, K, id3,
                                           r3, &n3), HM_OK);
        ck_assert_uint_eq(n1, K);
        ck_assert_uint_eq(n2, K);
        ck_assert_uint_eq(n3, K);
        ck_assert_mem_eq(id1, id2, sizeof id1);
        ck_assert_mem_eq(r1, r2, sizeof r1);
        ck_assert_mem_eq(id1, id3, sizeof id1);
        ck_assert_mem_eq(r1, r3, sizeof r1);
        /* without hardening: the exact top-k log-probabilities */
        ck_assert_int_eq(hm_logprobs_dense(raw, l, 1, V, V, &row, K, ids0,
                                           l0, &n0), HM_OK);
        ck_assert_uint_eq(n0, K);
        /* dense == harden of the true values, and the offsets are
         * hm_logprobs_offset's */
        ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids0, l0, K,
                                            HM_LOGPROBS_KEEP_ORDER), HM_OK);
        double q = HM_LOGPROBS_QUANTUM_DEFAULT;
        for (size_t i = 0; i < K; i++) {
            size_t j = 0;
            while (j < K && id1[j] != ids0[i])
                j++;
            ck_assert_uint_lt(j, K);
            ck_assert(r1[j] == l0[i]);
        }
        /* rebuild one value by hand when no clamp or shift applied */
        ck_assert_int_eq(hm_logprobs_dense(raw, l, 1, V, V, &row, K, ids0,
                                           l0, &n0), HM_OK);
        double sum = 0, off;
        for (size_t i = 0; i < K; i++)
            sum += exp(l0[i]);
        if (sum < 0.5) {
            ck_assert_int_eq(hm_logprobs_offset(lp, ctx, 6, ids0[0], &off),
                             HM_OK);
            double want = nearbyint((l0[0] + off) / q) * q;
            size_t j = 0;
            while (id1[j] != ids0[0])
                j++;
            ck_assert(r1[j] == want);
        }
    }
    free(l);
    hm_logprobs_free(lp);
    hm_logprobs_free(lp2);
    hm_logprobs_free(raw);
    hm_key_free(key);
}
END_TEST

/* The returned set is the true top-k; the window decides the offsets:
 * contexts equal in their last h ids give identical output, others not. */
START_TEST(test_set_and_window)
{
    const size_t V = 3000;
    hm_key *key = test_key(4);
    hm_logprobs *lp = test_lp(key, "topk=64", NULL);
    float *l = malloc(V * sizeof *l);
    ref *rf = malloc(V * sizeof *rf);
    ck_assert_ptr_nonnull(l);
    ck_assert_ptr_nonnull(rf);
    uint64_t s = 0x4004;
    for (int kind = 0; kind < N_KINDS; kind++) {
        for (size_t k = 0; k <= 64; k += (k < 4 ? 1 : 15)) {
            int32_t ids[64], ids2[64];
            double r[64], r2[64];
            size_t n = 99, n2;
            char what[64];
            fill_row(l, V, kind, &s);
            snprintf(what, sizeof what, "kind %d k %zu", kind, k);
            const int32_t c1[] = {100, 1, 2, 3, 4}, c2[] = {200, 1, 2, 3, 4},
                          c3[] = {100, 1, 2, 3, 5};
            hm_row row1 = {c1, 5, NULL, 0, 0}, row2 = {c2, 5, NULL, 0, 0},
                   row3 = {c3, 5, NULL, 0, 0};
            ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row1, k, ids,
                                               r, &n), HM_OK);
            size_t m = true_topk(l, V, k, rf);
            ck_assert_uint_eq(n, m);
            check_valid(ids, r, n, HM_LOGPROBS_QUANTUM_DEFAULT, what);
            /* the same set of ids */
            for (size_t i = 0; i < m; i++) {
                size_t j = 0;
                while (j < n && ids[j] != rf[i].id)
                    j++;
                ck_assert_msg(j < n, "%s: true top-%zu token %d missing",
                              what, i, (int)rf[i].id);
            }
            ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row2, k,
                                               ids2, r2, &n2), HM_OK);
            ck_assert_uint_eq(n2, n);
            ck_assert_mem_eq(ids, ids2, n * sizeof ids[0]);
            ck_assert_mem_eq(r, r2, n * sizeof r[0]);
            if (kind == 0 && k >= 19) {
                ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row3, k,
                                                   ids2, r2, &n2), HM_OK);
                ck_assert_msg(memcmp(r, r2, n * sizeof r[0]) != 0 ||
                                  memcmp(ids, ids2, n * sizeof ids[0]) != 0,
                              "%s: another window, the same output", what);
            }
        }
    }
    free(l);
    free(rf);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

/* The bound: TV(true restricted, returned renormalized) <= tanh(eta/2),
 * over many rows of every kind and many parameter sets; and each value,
 * up to one common shift c in [0, eta + quantum], within eta of the truth. */
START_TEST(test_tv_bound)
{
    static const char *const specs[] = {
        "topk=1024",
        "topk=1024,eps=0.25,quantum=0.125",
        "topk=1024,eps=0.01,quantum=0",
        "topk=1024,eps=0,quantum=0.5",
        "topk=1024,eps=0.1,quantum=0.01",
        "topk=1024,eps=1,quantum=1",
    };
    static const size_t ks[] = {1, 2, 5, 20, 100, 1024};
    const size_t V = 4096;
    hm_key *key = test_key(5);
    float *l = malloc(V * sizeof *l);
    ck_assert_ptr_nonnull(l);
    uint64_t s = 0x5005;
    size_t checked = 0;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        hm_logprobs *lp = test_lp(key, specs[sp], NULL);
        double eta = param(lp, "max_error"), bound = param(lp, "tv_bound");
        double quantum = param(lp, "quantum");
        double worst = 0;
        ck_assert_double_eq(bound, tanh(eta / 2));
        for (int trial = 0; trial < 60; trial++) {
            int kind = trial % N_KINDS;
            size_t k = ks[(size_t)trial % 6];
            int32_t ids[1024], ctx[3] = {trial, kind, 7};
            double r[1024];
            size_t n;
            ref *rf = malloc(V * sizeof *rf);
            ck_assert_ptr_nonnull(rf);
            fill_row(l, V, kind, &s);
            hm_row row = {ctx, 3, NULL, 0, 0};
            ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, k, ids,
                                               r, &n), HM_OK);
            ck_assert_uint_eq(n, true_topk(l, V, k, rf));
            char what[96];
            snprintf(what, sizeof what, "%s kind %d k %zu", specs[sp], kind,
                     k);
            check_valid(ids, r, n, quantum, what);
            long double tv = tv_distance(l, ids, r, n);
            ck_assert_msg(tv <= bound + TV_SLACK,
                          "%s: TV %.17Lg > bound %.17g", what, tv, bound);
            worst = fmax(worst, (double)tv);
            /* per value: exists c in [0, eta + quantum] with
             * |r + c - true| <= eta for every token of finite value, up to
             * the 1.5e-6 of the library's log-sum-exp */
            long double lo = -INFINITY, hi = INFINITY, mx = -INFINITY,
                        z = 0;
            for (size_t v = 0; v < V; v++)
                mx = fmaxl(mx, (long double)l[v]);
            for (size_t v = 0; v < V; v++)
                z += expl((long double)l[v] - mx);
            for (size_t i = 0; i < n; i++) {
                long double t = (long double)l[ids[i]] - mx - logl(z);
                if (!isfinite(r[i]) || t < -1e3L)
                    continue; /* beyond binary64's absolute precision */
                long double d = t - (long double)r[i]; /* = c - err */
                lo = fmaxl(lo, d - eta);
                hi = fminl(hi, d + eta);
            }
            ck_assert_msg(lo <= hi + 2e-6L && hi >= -2e-6L &&
                              lo <= eta + quantum + 2e-6L,
                          "%s: no common shift: [%Lg, %Lg]", what, lo, hi);
            checked++;
            free(rf);
        }
        if (getenv("HM_TEST_VERBOSE") != NULL)
            fprintf(stderr, "%s: worst TV %g, bound %g\n", specs[sp], worst,
                    bound);
        hm_logprobs_free(lp);
    }
    ck_assert_uint_eq(checked, 360);
    free(l);
    hm_key_free(key);
}
END_TEST

/* The bound is nearly attained, so it is the right one: with eps 0 and a
 * grid of 1, values -0.5 round up and -1.5 down (ties to even), every
 * error is +-1/2 and the masses of the two groups are about equal. */
START_TEST(test_tv_bound_tight)
{
    hm_key *key = test_key(6);
    hm_logprobs *lp = test_lp(key, "topk=1024,eps=0,quantum=1", NULL);
    enum { NA = 269, NB = 731 };
    int32_t ids[NA + NB];
    double r[NA + NB], t[NA + NB];
    for (int i = 0; i < NA + NB; i++) {
        ids[i] = i;
        /* a distribution scaled down so that its sum stays below 1 */
        t[i] = (i < NA ? -0.5 : -1.5) - 8;
        r[i] = t[i];
    }
    hm_row row = {NULL, 0, NULL, 0, 0};
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, NA + NB, 0),
                     HM_OK);
    /* TV in closed form from the returned values */
    long double zt = 0, zr = 0, tv = 0;
    for (int i = 0; i < NA + NB; i++) {
        zt += expl((long double)t[ids[i]]);
        zr += expl((long double)r[i]);
    }
    for (int i = 0; i < NA + NB; i++)
        tv += fabsl(expl((long double)t[ids[i]]) / zt -
                    expl((long double)r[i]) / zr);
    tv /= 2;
    double bound = param(lp, "tv_bound");
    ck_assert_double_eq(bound, tanh(0.25));
    ck_assert_msg(tv <= bound && tv >= 0.94 * bound, "TV %Lg, bound %g", tv,
                  bound);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

/* The grid, sums, clamping and the common shift on crafted inputs. */
START_TEST(test_grid_and_validity)
{
    hm_key *key = test_key(7);
    hm_logprobs *lp = test_lp(key, "topk=8", NULL);
    hm_logprobs *dec = test_lp(key, "topk=8,quantum=0.01", NULL);
    const int32_t c[] = {1, 2, 3};
    hm_row row = {c, 3, NULL, 0, 0};
    /* a certain token: log-probability 0, must stay <= 0 */
    {
        int32_t ids[3] = {4, 9, 2};
        double r[3] = {0.0, -40, -INFINITY};
        ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 3, 0), HM_OK);
        check_valid(ids, r, 3, HM_LOGPROBS_QUANTUM_DEFAULT, "certain");
        ck_assert_int_eq(ids[0], 4);
        ck_assert(r[0] <= 0 && r[0] >= -HM_LOGPROBS_EPS_DEFAULT - 0.015625);
        ck_assert_int_eq(ids[2], 2);
        ck_assert(r[2] == -INFINITY);
    }
    /* two halves: the sum may exceed 1 before the shift */
    for (int32_t base = 0; base < 200; base++) {
        int32_t ids[2] = {base, base + 1000};
        double r[2] = {log(0.5), log(0.5)}, r2[2];
        ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 2, 0), HM_OK);
        check_valid(ids, r, 2, HM_LOGPROBS_QUANTUM_DEFAULT, "halves");
        ids[0] = base;
        ids[1] = base + 1000;
        r2[0] = r2[1] = log(0.5);
        ck_assert_int_eq(hm_logprobs_harden(dec, &row, ids, r2, 2, 0), HM_OK);
        check_valid(ids, r2, 2, 0.01, "halves, decimal grid");
    }
    /* quantum 0, eps 0: the input comes back, sorted */
    hm_logprobs *id = test_lp(key, "topk=8,eps=0,quantum=0", NULL);
    int32_t ids[5] = {3, 1, 4, 0, 2};
    double r[5] = {-3, -1, -4, -1, -2};
    ck_assert_int_eq(hm_logprobs_harden(id, &row, ids, r, 5, 0), HM_OK);
    const int32_t wid[5] = {0, 1, 2, 3, 4};
    const double wr[5] = {-1, -1, -2, -3, -4};
    ck_assert_mem_eq(ids, wid, sizeof wid);
    ck_assert_mem_eq(r, wr, sizeof wr);
    /* n 0 is fine, with NULL arrays */
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, NULL, NULL, 0, 0), HM_OK);
    hm_logprobs_free(id);
    hm_logprobs_free(lp);
    hm_logprobs_free(dec);
    hm_key_free(key);
}
END_TEST

/* The common shift against the page's rule computed here (sum of exp in
 * order, log, ceil to the grid), with eps 0 so the values are known: rows
 * whose mass lands near 1 from either side, at every length, on a binary
 * and a decimal grid and without one.  The library decides most rows from
 * vectorized sums and must agree bit for bit. */
static double grid_ref(double l, double q)
{
    if (q > 0) {
        double t = l * (1 / q);
        double tr = (t + 0x1.8p52) - 0x1.8p52;
        l = (fabs(t) < 0x1p51 ? tr : t) * q;
    }
    return l < 0 ? l : 0.0;
}

START_TEST(test_shift_reference)
{
    hm_key *key = test_key(12);
    static const char *specs[] = {"topk=1024,eps=0",
                                  "topk=1024,eps=0,quantum=0.01",
                                  "topk=1024,eps=0,quantum=0"};
    static const double qs[] = {HM_LOGPROBS_QUANTUM_DEFAULT, 0.01, 0};
    static int32_t ids[1024];
    static double l[1024], want[1024];
    uint64_t s = 0x5417;
    size_t shifted = 0;
    for (int sp = 0; sp < 3; sp++) {
        hm_logprobs *lp = test_lp(key, specs[sp], NULL);
        const double q = qs[sp];
        for (int trial = 0; trial < 300; trial++) {
            size_t n = 1 + test_rand(&s) % (trial % 3 == 0 ? 1024 : 40);
            double mass = 0;
            for (size_t i = 0; i < n; i++) {
                ids[i] = (int32_t)i;
                l[i] = -3 * test_uniform(&s) - 0.01 * (double)i;
                mass += exp(l[i]);
            }
            /* target mass 1 + dev, dev from 1e-16 to 1e-2, either side */
            double dev = pow(10, -16 + 14 * test_uniform(&s));
            double target = trial % 2 ? 1 + dev : 1 - dev;
            if (trial % 5 == 4)
                target = 1; /* exactly 1 before rounding */
            double sh = log(target / mass);
            for (size_t i = 0; i < n; i++)
                l[i] = fmin(l[i] + sh, 0.0);
            if (q == 0 && trial % 5 == 4) { /* mass 1 to the last ulps */
                double rest = 0;
                for (size_t i = 1; i < n; i++)
                    rest += exp(l[i]);
                if (rest < 1)
                    l[0] = log1p(-rest);
            }
            double sum = 0;
            for (size_t i = 0; i < n; i++) {
                want[i] = grid_ref(l[i], q);
                sum += exp(want[i]);
            }
            if (sum > 1) {
                double c = log(sum);
                if (q > 0)
                    c = ceil(c / q) * q;
                for (size_t i = 0; i < n; i++)
                    want[i] -= c;
                shifted++;
            }
            hm_row row = {ids, 2, NULL, 0, 0};
            ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, l, n,
                                                HM_LOGPROBS_KEEP_ORDER),
                             HM_OK);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(l[i] == want[i],
                              "spec %d trial %d n %zu: value %zu is %a, "
                              "want %a",
                              sp, trial, n, i, l[i], want[i]);
        }
        hm_logprobs_free(lp);
    }
    ck_assert_uint_gt(shifted, 200);
    hm_key_free(key);
}
END_TEST

/* Large k with many near-ties: the output order is by returned value even
 * when the input is far from it (the sort's worst case). */
START_TEST(test_sort_worst_case)
{
    hm_key *key = test_key(8);
    hm_logprobs *lp = test_lp(key, "topk=1024,eps=0.5,quantum=0", NULL);
    int32_t ids[1024];
    double r[1024];
    uint64_t s = 0x8008;
    for (int trial = 0; trial < 4; trial++) {
        for (int i = 0; i < 1024; i++) {
            ids[i] = (int32_t)(trial == 0 ? i : 1023 - i) * 7;
            r[i] = trial < 2 ? -10.0 : -10.0 - 1e-3 * test_uniform(&s);
        }
        hm_row row = {ids, (size_t)trial, NULL, 0, 0};
        ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 1024, 0),
                         HM_OK);
        check_valid(ids, r, 1024, 0, "worst case");
    }
    hm_logprobs_free(lp);
    /* on the grid: -inf among the values, all -inf, a single id, large
     * ids and one far value (both sorted by comparison), values in true
     * order; test_sort_paths takes each way of the sort on purpose */
    hm_logprobs *g = test_lp(key, "topk=1024", NULL);
    for (int trial = 0; trial < 8; trial++) {
        size_t n = trial < 3 ? 100 : 1024;
        for (size_t i = 0; i < n; i++) {
            ids[i] = trial == 4 ? (int32_t)(INT32_MAX - 3 * i)
                                : (int32_t)(5 * i + (size_t)trial);
            r[i] = trial == 1 || test_rand(&s) % 7 == 0
                       ? -INFINITY
                       : -20 * test_uniform(&s) - (trial == 5 ? 1e6 : 0);
            if (trial == 7)
                r[i] = -5.0 - 2.0 * log1p((double)i);
        }
        if (trial == 6)
            r[n / 2] = -1e6;
        hm_row row = {NULL, 0, NULL, 0, 0};
        ck_assert_int_eq(hm_logprobs_harden(g, &row, ids, r, n, 0), HM_OK);
        check_valid(ids, r, n, HM_LOGPROBS_QUANTUM_DEFAULT, "grid sort");
    }
    hm_logprobs_free(g);
    hm_key_free(key);
}
END_TEST

/* hm_lp_sort directly, one case per way through it, against qsort by
 * value (larger first) then id.  The values are made as hardening makes
 * them, (j q) - c, which the grid sort relies on to give them back. */
typedef struct srt {
    double l;
    int32_t id;
} srt;

static int cmp_srt(const void *pa, const void *pb)
{
    const srt *a = pa, *b = pb;
    if (a->l != b->l)
        return a->l > b->l ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Each case three times: the portable sorts (want_path), the default,
 * which on a CPU with AVX-512 takes the bitonic sort (3) from 65 records
 * up where the portable ones would sort 32-bit keys, and on one with AVX2
 * the AVX2 bitonic sort (5), which the last run forces on AVX-512 CPUs
 * too.  The values come before the shift c, as the perturbation leaves
 * them, and are wanted shifted as a kept order shifts them. */
static void check_sort(int32_t *ids, double *l, size_t n, double q,
                       double c, int want_path, const char *what)
{
    static srt want[1024];
    static int32_t ids0[1024];
    static double l0[1024];
    for (size_t i = 0; i < n; i++) {
        want[i].l = c != 0 ? l[i] - c : l[i];
        want[i].id = ids[i];
    }
    qsort(want, n, sizeof *want, cmp_srt);
    memcpy(ids0, ids, n * sizeof *ids);
    memcpy(l0, l, n * sizeof *l);
    /* mode 2 portable, 1 the default, 0 the AVX2 bitonic sort forced */
    for (int mode = 2; mode >= 0; mode--) {
        const int portable = mode == 2;
        memcpy(ids, ids0, n * sizeof *ids);
        memcpy(l, l0, n * sizeof *l);
        hm_lp_sort_portable = portable;
        hm_lp_sort_avx2 = mode == 0;
        int path = hm_lp_sort(ids, l, n, q, c);
        hm_lp_sort_portable = hm_lp_sort_avx2 = 0;
        int want_here = want_path;
        if (!portable && (want_path == 1 || want_path == 2) && n > 64) {
            if (mode == 1 && hm_cpu_has_avx512_vaes())
                want_here = 3;
            else if (hm_cpu_has_avx2())
                want_here = 5;
        }
        ck_assert_msg(path == want_here, "%s: path %d, want %d", what, path,
                      want_here);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(ids[i] == want[i].id &&
                              memcmp(&l[i], &want[i].l, sizeof l[i]) == 0,
                          "%s (mode %d): record %zu is %d %a, want %d %a",
                          what, mode, i, ids[i], l[i], want[i].id,
                          want[i].l);
    }
}

/* j q as the perturbation leaves it (clamped at 0, so never -0) */
static double on_grid(double j, double q)
{
    double y = j * q;
    return y < 0 ? y : 0.0;
}

START_TEST(test_sort_paths)
{
    static int32_t ids[1024];
    static double l[1024];
    uint64_t s = 0x5027;
    const double q = HM_LOGPROBS_QUANTUM_DEFAULT;
    /* k = 1024 in true order, many values to a rank, perturbed by up to
     * four steps: the counting sorts; with a shift, and on a decimal grid
     * with a shift that is K q rounded */
    static const double qs[] = {0.015625, 0.015625, 0.01, 0.01};
    static const double cs[] = {0, 5 * 0.015625, 0, 37 * 0.01};
    for (int t = 0; t < 4; t++) {
        for (size_t i = 0; i < 1024; i++) {
            double j = floor((-5 - 2 * log1p((double)i)) / qs[t]) +
                       (double)(test_rand(&s) % 9) - 4;
            ids[i] = (int32_t)(test_rand(&s) % 32000) * 1024 + (int32_t)i;
            ids[i] %= 1 << 20; /* distinct: i in the low bits */
            l[i] = on_grid(j, qs[t]);
        }
        check_sort(ids, l, 1024, qs[t], cs[t], 1, "true order");
    }
    /* -inf among them, and all -inf (ordered by id) */
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(7 * (1023 - i));
        l[i] = i % 5 == 0 ? -INFINITY
                          : on_grid(-(double)(test_rand(&s) % 700), q);
    }
    check_sort(ids, l, 1024, q, 0, 1, "some -inf");
    for (size_t i = 0; i < 1024; i++)
        l[i] = -INFINITY;
    check_sort(ids, l, 1024, q, 0, 1, "all -inf");
    /* more than 2048 ranks: two counting passes on the rank */
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(3 * i + 1);
        l[i] = on_grid(-(double)(test_rand(&s) % 9000), q);
    }
    check_sort(ids, l, 1024, q, 0, 1, "wide ranks");
    /* k = 100 with ranks far apart: the insertion sort on the keys alone */
    for (size_t i = 0; i < 100; i++) {
        ids[i] = (int32_t)(test_rand(&s) % 1000) * 100 + (int32_t)i;
        l[i] = on_grid(-(double)(20 * i + test_rand(&s) % 30), q);
    }
    check_sort(ids, l, 100, q, 0, 1, "sparse ranks");
    /* the same in random order: the insertion sort gives up after n moves
     * and the counting sorts take over */
    for (size_t i = 0; i < 100; i++)
        l[i] = on_grid(-(double)(test_rand(&s) % 3000), q);
    check_sort(ids, l, 100, q, 0, 1, "sparse ranks, random order");
    /* one value, ids that share their top bits except one far above them,
     * in descending order: the counting sort on the top bits leaves them
     * all in one bucket, the insertion sort after it gives up after 2n
     * moves, and the radix sort finishes */
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = i == 0 ? (int32_t)1 << 30 : (int32_t)(1024 - i);
        l[i] = on_grid(-300, q);
    }
    check_sort(ids, l, 1024, q, 0, 2, "radix");
    /* 64-bit keys: a rank range past 2^22, ids too wide for 32-bit keys,
     * a fine grid (18-bit ranks) with a shift */
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(5 * i);
        l[i] = on_grid(-(double)(test_rand(&s) % 700), q);
    }
    l[500] = on_grid(-(double)(1 << 23), q);
    check_sort(ids, l, 1024, q, 0, 4, "wider than two passes");
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(INT32_MAX - 3 * i);
        l[i] = on_grid(-(double)(test_rand(&s) % 700), q);
    }
    check_sort(ids, l, 1024, q, 0, 4, "wide ids");
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(test_rand(&s) % 100) * 1024 + (int32_t)i;
        l[i] = on_grid(floor((-3 - 2 * log1p((double)i)) / 1e-4) +
                           (double)(test_rand(&s) % 600) - 300,
                       1e-4);
    }
    check_sort(ids, l, 1024, 1e-4, 7e-4, 4, "fine grid");
    /* by comparison: off the grid (quantum 0), a value 2^40 steps out,
     * ranks and ids past 64 bits, and k <= 32 */
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(5 * i);
        l[i] = -20 * test_uniform(&s);
    }
    check_sort(ids, l, 1024, 0, 0, 0, "quantum 0");
    for (size_t i = 0; i < 1024; i++)
        l[i] = on_grid(-(double)(test_rand(&s) % 700), q);
    l[500] = on_grid(-0x1p41, q);
    check_sort(ids, l, 1024, q, 0, 0, "far value");
    check_sort(ids, l, 1024, q, 3 * q, 0, "far value, shifted");
    for (size_t i = 0; i < 1024; i++)
        ids[i] = (int32_t)(INT32_MAX - 3 * i);
    l[500] = on_grid(-0x1p30, q);
    check_sort(ids, l, 1024, q, 0, 0, "past 64 bits");
    check_sort(ids, l, 32, q, 0, 0, "k 32");
    check_sort(ids, l, 32, q, 7 * q, 0, "k 32, shifted");
    /* every size through the bitonic networks' blocks and merges, in true
     * order and in random order */
    for (size_t n = 33; n <= 1024; n += n < 300 ? 1 : 37) {
        for (int order = 0; order < 2; order++) {
            for (size_t i = 0; i < n; i++) {
                ids[i] = (int32_t)(test_rand(&s) % 1024) * 1024 + (int32_t)i;
                double j = order ? -(double)(test_rand(&s) % 2000)
                                 : floor((-3 - 2 * log1p((double)i)) / q) +
                                       (double)(test_rand(&s) % 9) - 4;
                l[i] = test_rand(&s) % 50 == 0 ? -INFINITY
                                               : on_grid(j, q);
            }
            check_sort(ids, l, n, q, n % 3 == 0 ? 2 * q : 0, 1, "sizes");
        }
    }
}
END_TEST

/* The AVX2 bitonic sort (forced on AVX-512 CPUs) against the portable
 * sorts at every size up to 1024: the records in random order, already in
 * order, in reverse order, and in order but for a few swaps of neighbours
 * a few places apart, with and without a shift; some values -inf, and
 * many sharing a rank at the larger sizes. */
START_TEST(test_sort_avx2)
{
    static srt rec[1024];
    static int32_t ids[1024], ids2[1024];
    static double l[1024], l2[1024];
    uint64_t s = 0xa4a2;
    const double q = HM_LOGPROBS_QUANTUM_DEFAULT;
    const int avx2 = hm_cpu_has_avx2();
    for (size_t n = 1; n <= 1024; n++) {
        for (int order = 0; order < 4; order++) {
            const uint64_t ranks = 50 + test_rand(&s) % 3000;
            const double c = order == 1 ? 3 * q : 0;
            for (size_t i = 0; i < n; i++) {
                rec[i].id =
                    (int32_t)(test_rand(&s) % 1024) * 1024 + (int32_t)i;
                rec[i].l = test_rand(&s) % 40 == 0
                               ? -INFINITY
                               : on_grid(-(double)(test_rand(&s) % ranks), q);
            }
            if (order > 0) /* in the order sorted (the shift keeps it) */
                qsort(rec, n, sizeof *rec, cmp_srt);
            if (order == 2)
                for (size_t i = 0; i < n / 2; i++) {
                    srt t = rec[i];
                    rec[i] = rec[n - 1 - i];
                    rec[n - 1 - i] = t;
                }
            if (order == 3)
                for (size_t t = 0; t < n / 16 + 1 && n > 1; t++) {
                    size_t i = test_rand(&s) % n;
                    size_t j = i + 1 + test_rand(&s) % 8;
                    j = j < n ? j : n - 1;
                    srt u = rec[i];
                    rec[i] = rec[j];
                    rec[j] = u;
                }
            for (size_t i = 0; i < n; i++) {
                ids[i] = ids2[i] = rec[i].id;
                l[i] = l2[i] = rec[i].l;
            }
            hm_lp_sort_portable = 1;
            int p1 = hm_lp_sort(ids, l, n, q, c);
            hm_lp_sort_portable = 0;
            hm_lp_sort_avx2 = 1;
            int p2 = hm_lp_sort(ids2, l2, n, q, c);
            hm_lp_sort_avx2 = 0;
            ck_assert_int_eq(p1, n > 32 ? (p1 == 2 ? 2 : 1) : 0);
            ck_assert_msg(p2 == (n > 64 && avx2 ? 5 : p1),
                          "n %zu, order %d: path %d", n, order, p2);
            for (size_t i = 0; i < n; i++) {
                ck_assert_msg(ids[i] == ids2[i] &&
                                  memcmp(&l[i], &l2[i], sizeof l[i]) == 0,
                              "n %zu, order %d: record %zu is %d %a, "
                              "portable %d %a",
                              n, order, i, ids2[i], l2[i], ids[i], l[i]);
                if (i > 0)
                    ck_assert(l[i - 1] > l[i] ||
                              (l[i - 1] == l[i] && ids[i - 1] < ids[i]));
            }
        }
    }
}
END_TEST

/* Sorted output is the kept-order output permuted, bit for bit: the grid
 * sorts rebuild each value from its rank as hardening computed it, on
 * binary and decimal grids, a fine grid (64-bit keys), off the grid, with
 * and without a common shift, at every path's sizes. */
static int cmp_rec_id(const void *pa, const void *pb)
{
    const srt *a = pa, *b = pb;
    return a->id < b->id ? -1 : a->id > b->id;
}

START_TEST(test_sorted_is_permutation)
{
    hm_key *key = test_key(14);
    static const char *specs[] = {"topk=1024", "topk=1024,quantum=0.01",
                                  "topk=1024,quantum=0.0001,eps=0.01",
                                  "topk=1024,quantum=0",
                                  "topk=1024,quantum=0.5,eps=1"};
    static int32_t ids[1024], ids2[1024], ids0[1024], ids3[1024];
    static double l[1024], l2[1024], l0[1024], l3[1024];
    static srt a[1024], b[1024];
    static const size_t ns[] = {40, 64, 65, 200, 256, 257, 700, 1024};
    uint64_t s = 0x9e37;
    size_t shifted = 0;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        hm_logprobs *lp = test_lp(key, specs[sp], NULL);
        for (size_t t = 0; t < 2 * sizeof ns / sizeof ns[0]; t++) {
            size_t n = ns[t / 2];
            double mass = 0;
            for (size_t i = 0; i < n; i++) {
                ids[i] = (int32_t)(test_rand(&s) % 300) * 1024 + (int32_t)i;
                /* even t: a tail in true order; odd: near all the mass */
                l[i] = t % 2 == 0 ? -4 - 2 * log1p((double)i)
                                  : -log((double)n) + 0.3 * test_uniform(&s);
                mass += exp(l[i]);
            }
            shifted += mass > 1;
            memcpy(ids2, ids, n * sizeof *ids);
            memcpy(l2, l, n * sizeof *l);
            memcpy(ids0, ids, n * sizeof *ids);
            memcpy(l0, l, n * sizeof *l);
            int32_t c[2] = {(int32_t)t, (int32_t)sp};
            hm_row row = {c, 2, NULL, 0, 0};
            ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, l, n,
                                                HM_LOGPROBS_KEEP_ORDER),
                             HM_OK);
            ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids2, l2, n, 0),
                             HM_OK);
            /* the same row through the portable sorts and the AVX2
             * bitonic sort: the same bits */
            for (int mode = 0; mode < 2; mode++) {
                memcpy(ids3, ids0, n * sizeof *ids);
                memcpy(l3, l0, n * sizeof *l);
                hm_lp_sort_portable = mode == 0;
                hm_lp_sort_avx2 = mode == 1;
                ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids3, l3, n, 0),
                                 HM_OK);
                hm_lp_sort_portable = hm_lp_sort_avx2 = 0;
                ck_assert_msg(memcmp(ids3, ids2, n * sizeof *ids) == 0 &&
                                  memcmp(l3, l2, n * sizeof *l) == 0,
                              "%s, n %zu, mode %d: not the default's order",
                              specs[sp], n, mode);
            }
            for (size_t i = 0; i < n; i++) {
                a[i].id = ids[i];
                a[i].l = l[i];
                b[i].id = ids2[i];
                b[i].l = l2[i];
                if (i > 0)
                    ck_assert(l2[i - 1] > l2[i] ||
                              (l2[i - 1] == l2[i] && ids2[i - 1] < ids2[i]));
            }
            qsort(a, n, sizeof *a, cmp_rec_id);
            qsort(b, n, sizeof *b, cmp_rec_id);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(a[i].id == b[i].id &&
                                  memcmp(&a[i].l, &b[i].l, sizeof a[i].l) == 0,
                              "%s, n %zu: id %d kept %a, sorted %d %a",
                              specs[sp], n, a[i].id, a[i].l, b[i].id, b[i].l);
        }
        hm_logprobs_free(lp);
    }
    ck_assert_uint_gt(shifted, 20);
    hm_key_free(key);
}
END_TEST

/* The exponentials of internal.h against libm over their ranges: e^x
 * within a relative 1e-14 (the common shift's decision and the spectral
 * masses count on it), the bound of the sum from above, at most 1.0071
 * times e^y and below it by no more than rounding, and the binary32 one;
 * and their vector forms against the scalar ones. */
START_TEST(test_exp_helpers)
{
    uint64_t s = 0xe4e4;
    double worst = 0, lo = INFINITY, hi = 0;
    for (long i = 0; i <= 2000000; i++) {
        /* a grid of [-700, 0] with the ends, then random points */
        double x = i <= 1000000 ? -700.0 * (double)i / 1000000
                                : -700.0 * test_uniform(&s);
        double e = exp(x);
        double r = fabs(hm_exp_nonpos(x) - e) / e;
        worst = r > worst ? r : worst;
        if (x >= -690) {
            double b = hm_exp_above(x) / e;
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
        }
    }
    ck_assert_msg(worst < 1e-14, "hm_exp_nonpos: relative error %g", worst);
    ck_assert_msg(lo >= 1 - 1e-13 && hi <= 1.0071,
                  "hm_exp_above / exp in [%.17g, %.17g]", lo, hi);
    /* below the ranges: 0, and a bound that is still one */
    ck_assert(hm_exp_nonpos(-700.5) == 0 && hm_exp_nonpos(-INFINITY) == 0);
    ck_assert(hm_exp_above(-800) >= exp(-800.0));
    ck_assert(hm_exp_above(-INFINITY) > 0);
    ck_assert(hm_exp_nonpos(0) == 1 && hm_exp_above(0) == 1);
    /* binary32: within 3e-7 of e^x for x in [-87, 0] (the shift's first
     * filter counts on it), e^-87 below */
    double wf = 0;
    for (long i = 0; i <= 2000000; i++) {
        float x = (float)(-87.0 * (double)i / 2000000);
        double e = exp((double)x);
        double r = fabs((double)hm_expf_neg(x) - e) / e;
        wf = r > wf ? r : wf;
    }
    ck_assert_msg(wf < 3e-7, "hm_expf_neg: relative error %g", wf);
    ck_assert(hm_expf_neg(-INFINITY) == hm_expf_neg(-87.0f));
    /* the vector forms compute what the scalar ones compute, lane by
     * lane, bit for bit (NaN and -inf included) */
    for (int k = 0; k < 20000; k++) {
        double x[8], y[8];
        float xf[16], yf[16];
        for (int j = 0; j < 8; j++)
            x[j] = k == 0 && j < 3 ? (j == 0 ? NAN : j == 1 ? -INFINITY : 0)
                                   : -720 * test_uniform(&s);
        for (int j = 0; j < 16; j++)
            xf[j] = k == 0 && j == 0 ? -INFINITY
                                     : (float)(-100 * test_uniform(&s));
        hm_v8d v = hm_exp_nonpos8(hm_v8d_load(x));
        memcpy(y, &v, sizeof y);
        for (int j = 0; j < 8; j++) {
            double want = hm_exp_nonpos(x[j]);
            ck_assert_msg(memcmp(&y[j], &want, sizeof want) == 0,
                          "hm_exp_nonpos8(%a) = %a, scalar %a", x[j], y[j],
                          want);
        }
        hm_v16f vf;
        memcpy(&vf, xf, sizeof vf);
        vf = hm_expf_neg16(vf);
        memcpy(yf, &vf, sizeof yf);
        for (int j = 0; j < 16; j++) {
            float want = hm_expf_neg(xf[j]);
            ck_assert_msg(memcmp(&yf[j], &want, sizeof want) == 0,
                          "hm_expf_neg16(%a) = %a, scalar %a", (double)xf[j],
                          (double)yf[j], (double)want);
        }
    }
}
END_TEST

/* hardening's AVX-512 loops (logprobs_wide.c) against the portable ones,
 * bit for bit: the same return code, ids and value bits for rows of every
 * kind (light and heavy, -inf, +0 and -0, far values, bad values, every
 * length up to 1024) under grids of every kind, kept in order and sorted.
 * On a CPU without them both runs take the portable loops. */
static double wide_value(int kind, size_t i, size_t n, uint64_t *s)
{
    switch (kind) {
    case 0: /* a light tail in true order */
        return -5.0 - 2.0 * log1p((double)i) - 1e-3 * test_uniform(s);
    case 1: /* mass about 1, either side */
        return log((0.97 + 0.06 * test_uniform(s)) / (double)n);
    case 2: /* mass well above 1 */
        return -3.0 * test_uniform(s) - 0.01 * (double)i;
    case 3: /* -inf among them */
        return test_rand(s) % 9 == 0 ? -INFINITY : -20 * test_uniform(s);
    case 4: /* zeros of both signs next to small values */
        return test_rand(s) % 13 == 0 ? (test_rand(s) % 2 ? 0.0 : -0.0)
                                     : -1e-3 * test_uniform(s);
    case 5: /* a far value now and then */
        return test_rand(s) % 50 == 0 ? -1e7 * (1 + test_uniform(s))
                                      : -8 * test_uniform(s);
    case 6: /* a bad value now and then */
        return test_rand(s) % 200 == 0 ? (test_rand(s) % 2 ? NAN : 0.25)
                                       : -6 * test_uniform(s);
    default: /* values of every size: the grid's rounding at its ends */
        return -ldexp(test_uniform(s), (int)(test_rand(s) % 40) - 20);
    }
}

START_TEST(test_wide_paths)
{
    hm_key *key = test_key(31);
    static const char *specs[] = {
        "topk=1024", "topk=1024,quantum=0.01", "topk=1024,quantum=0",
        "topk=1024,eps=0", "topk=1024,eps=1,quantum=1",
        "topk=1024,eps=1e-300,quantum=0.125", "topk=1024,eps=0.3,quantum=0.0000000009313225746154785",
        "topk=1024,eps=0.5,quantum=0.1", "topk=1024,eps=0,quantum=0"};
    static int32_t ids[1024], ids0[1024], ids1[1024];
    static double l[1024], l0[1024], l1[1024];
    uint64_t s = 0x31de;
    size_t compared = 0;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        hm_logprobs *lp = test_lp(key, specs[sp], NULL);
        for (int trial = 0; trial < 400; trial++) {
            size_t n = trial % 4 == 0 ? 1024 : 1 + test_rand(&s) % 1024;
            if (trial % 4 == 1)
                n = 1 + test_rand(&s) % 40;
            int kind = trial % 8;
            for (size_t i = 0; i < n; i++) {
                ids[i] = (int32_t)(test_rand(&s) % (trial % 3 ? 32000 : 1u << 30));
                l[i] = wide_value(kind, i, n, &s);
            }
            if (kind == 6 && test_rand(&s) % 2)
                ids[test_rand(&s) % n] = -1;
            int32_t ctx[3] = {trial, (int32_t)sp, 7};
            hm_row row = {ctx, 3, NULL, 0, 0};
            for (unsigned flags = 0; flags <= HM_LOGPROBS_KEEP_ORDER;
                 flags += HM_LOGPROBS_KEEP_ORDER) {
                memcpy(ids0, ids, n * sizeof *ids);
                memcpy(l0, l, n * sizeof *l);
                memcpy(ids1, ids, n * sizeof *ids);
                memcpy(l1, l, n * sizeof *l);
                hm_lp_harden_portable = 1;
                int rc0 = hm_logprobs_harden(lp, &row, ids0, l0, n, flags);
                hm_lp_harden_portable = 0;
                int rc1 = hm_logprobs_harden(lp, &row, ids1, l1, n, flags);
                ck_assert_msg(rc0 == rc1 &&
                                  memcmp(ids0, ids1, n * sizeof *ids) == 0 &&
                                  memcmp(l0, l1, n * sizeof *l) == 0,
                              "spec %s trial %d kind %d n %zu flags %u: "
                              "rc %d and %d, or the rows differ",
                              specs[sp], trial, kind, n, flags, rc0, rc1);
                compared++;
            }
        }
        hm_logprobs_free(lp);
    }
    ck_assert_uint_eq(compared, 2 * 400 * sizeof specs / sizeof specs[0]);
    hm_key_free(key);
}
END_TEST

/* The pieces of the AVX-512 loops whose bits do not all reach the output:
 * the sum that decides the common shift against the sum of e^x it stands
 * for, and the check's estimates against the sum of hm_exp_above they
 * bound, finished and left open. */
START_TEST(test_wide_pieces)
{
    if (!hm_lp_wide_ok()) {
        fputs("logprobs: no AVX-512 (F, DQ, VL, VAES): wide pieces not "
              "tested\n", stderr);
        return;
    }
    static int32_t ids[1024];
    static double l[1024];
    uint64_t s = 0x91ec;
    double worst = 0;
    int left_open = 0;
    for (int trial = 0; trial < 3000; trial++) {
        size_t n = 1 + test_rand(&s) % 1024;
        int kind = trial % 8;
        if (kind == 6)
            kind = 2; /* (no bad values: the estimates' inputs are valid) */
        for (size_t i = 0; i < n; i++) {
            ids[i] = (int32_t)i;
            l[i] = wide_value(kind, i, n, &s);
            if (trial % 11 == 0 && i % 7 == 0)
                l[i] -= 90; /* below binary32's exponential's range */
            if (trial % 5 == 0)
                l[i] = -86.5 * test_uniform(&s); /* all of its range */
        }
        double sum = 0, sum_far = 0;
        for (size_t i = 0; i < n; i++) {
            sum += exp(l[i]);
            sum_far += exp(l[i] > -86 ? l[i] : -86);
        }
        double near = hm_lp_wide_sum_near(l, n);
        ck_assert_msg(near <= sum_far * (1 + 1.8e-5) &&
                          near >= sum * (1 - 1.8e-5),
                      "trial %d n %zu: sum_near %.17g, sum %.17g", trial, n,
                      near, sum);
        worst = fmax(worst, fabs(near / sum_far - 1));
        double bound = 0, bound_far = 0, est[2], part[2];
        for (size_t i = 0; i < n; i++) {
            bound += hm_exp_above(l[i]);
            bound_far += hm_exp_above(l[i] > -87 ? l[i] : -87);
        }
        (void)hm_lp_wide_check(ids, l, n, INFINITY, est);
        ck_assert_msg(est[0] <= bound_far * (1 + 2e-5) &&
                          est[1] * (1 + 2e-5) >= bound,
                      "trial %d n %zu: check's estimates %.17g %.17g, "
                      "sum %.17g",
                      trial, n, est[0], est[1], bound);
        /* left open past stop: a part of the sum below, +inf above */
        double stop = bound * test_uniform(&s);
        (void)hm_lp_wide_check(ids, l, n, stop, part);
        ck_assert_msg(part[0] <= est[0] &&
                          (part[1] == est[1] || part[1] == INFINITY),
                      "trial %d n %zu stop %.17g: estimates %.17g %.17g, "
                      "finished %.17g %.17g",
                      trial, n, stop, part[0], part[1], est[0], est[1]);
        left_open += part[1] == INFINITY;
    }
    ck_assert(worst < 1.8e-5);
    ck_assert(left_open > 0);
}
END_TEST

/* Batches, strides, tracked contexts. */
START_TEST(test_batch_and_seq)
{
    enum { R = 3, V = 700, K = 20, S = 710 };
    hm_key *key = test_key(9);
    hm_logprobs *lp = test_lp(key, NULL, NULL);
    hm_ctx *ctx = test_ctx(key, "gumbel");
    float *l = malloc((size_t)R * S * sizeof *l);
    ck_assert_ptr_nonnull(l);
    uint64_t s = 0x9009;
    for (int r = 0; r < R; r++)
        fill_row(l + r * S, S, r, &s);
    const int32_t prompt[7] = {11, 12, 13, 14, 15, 16, 17};
    hm_seq *seq = NULL;
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 16), HM_OK);
    ck_assert_int_eq(hm_seq_reset(seq, prompt, 7), HM_OK);
    hm_row rows[R] = {{prompt, 7, NULL, 0, 0},
                      {NULL, 0, seq, 0, 0},
                      {prompt, 3, NULL, 0, 0}};
    int32_t ids[R * K], one[K];
    double lps[R * K], lone[K];
    size_t n[R], n1;
    ck_assert_int_eq(hm_logprobs_dense(lp, l, R, V, S, rows, K, ids, lps, n),
                     HM_OK);
    for (int r = 0; r < R; r++) {
        hm_row single = rows[r];
        ck_assert_int_eq(hm_logprobs_dense(lp, l + r * S, 1, V, V, &single,
                                           K, one, lone, &n1), HM_OK);
        ck_assert_uint_eq(n[r], n1);
        ck_assert_mem_eq(ids + r * K, one, sizeof one);
        ck_assert_mem_eq(lps + r * K, lone, sizeof lone);
    }
    /* the tracked context equals the explicit one */
    ck_assert_int_eq(hm_logprobs_dense(lp, l + S, 1, V, V, &rows[0], K, one,
                                       lone, &n1), HM_OK);
    ck_assert_mem_eq(ids + K, one, sizeof one);
    ck_assert_mem_eq(lps + K, lone, sizeof lone);
    /* k 0: nothing to write, NULL arrays allowed */
    ck_assert_int_eq(hm_logprobs_dense(lp, l, R, V, S, rows, 0, NULL, NULL,
                                       n), HM_OK);
    for (int r = 0; r < R; r++)
        ck_assert_uint_eq(n[r], 0);
    /* fewer finite logits than k */
    for (int v = 0; v < V; v++)
        l[v] = v % 100 == 3 ? (float)v : -INFINITY;
    ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, rows, K, one, lone,
                                       &n1), HM_OK);
    ck_assert_uint_eq(n1, 7);
    ck_assert_int_eq(one[0], 603);
    hm_seq_free(seq);
    hm_ctx_free(ctx);
    free(l);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

/* hm_logprobs_dense passes over blocks of 16 logits none of which its
 * heap would take: the same output as one logit at a time, for rows of
 * every length around the block size, ties everywhere, rising and
 * falling rows (the heap changes at every logit), -inf runs, and a NaN
 * or +inf anywhere (the same error). */
START_TEST(test_dense_blocks)
{
    enum { KINDS = 8 };
    static const size_t Vs[] = {1, 15, 16, 17, 31, 32, 33, 700, 4099};
    static const size_t ks[] = {0, 1, 5, 20, 64, 1024};
    hm_key *key = test_key(21);
    hm_logprobs *lp = test_lp(key, "topk=1024", NULL);
    float *l = malloc(4099 * sizeof *l);
    int32_t *ids[2] = {malloc(1024 * sizeof(int32_t)),
                       malloc(1024 * sizeof(int32_t))};
    double *r[2] = {malloc(1024 * sizeof(double)),
                    malloc(1024 * sizeof(double))};
    ck_assert(l && ids[0] && ids[1] && r[0] && r[1]);
    uint64_t s = 0xb10c;
    int32_t ctx[4] = {1, 2, 3, 4};
    hm_row row = {ctx, 4, NULL, 0, 0};
    size_t rows = 0, errors = 0;
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (int kind = 0; kind < KINDS; kind++)
                for (int rep = 0; rep < 4; rep++) {
                    size_t V = Vs[vi], k = ks[ki] < V ? ks[ki] : V;
                    for (size_t v = 0; v < V; v++) {
                        double u = test_uniform(&s);
                        float x;
                        switch (kind) {
                        case 0: x = (float)(8 * u - 4); break;
                        case 1: x = (float)floor(8 * u) * 0.5f; break;
                        case 2: x = (float)v * 0.01f; break;
                        case 3: x = -(float)v * 0.01f; break;
                        case 4: x = 1.5f; break;
                        case 5: x = u < 0.9 ? -INFINITY : (float)u; break;
                        case 6: /* rising by blocks, falling within */
                            x = (float)(v / 16) - (float)(v % 16) * 0.001f;
                            break;
                        default: x = (float)(3 * gauss(&s)); break;
                        }
                        l[v] = x;
                    }
                    if (rep == 3) { /* a bad value somewhere */
                        size_t at = (size_t)(test_rand(&s) % V);
                        l[at] = (test_rand(&s) & 1) ? NAN : INFINITY;
                    }
                    int rc[2];
                    size_t n[2] = {77, 77};
                    ctx[3] = (int32_t)rows;
                    for (int p = 0; p < 2; p++) {
                        hm_lp_dense_portable = p;
                        memset(ids[p], 0xAB, 1024 * sizeof(int32_t));
                        memset(r[p], 0xAB, 1024 * sizeof(double));
                        rc[p] = hm_logprobs_dense(lp, l, 1, V, V, &row, k,
                                                  ids[p], r[p], &n[p]);
                    }
                    hm_lp_dense_portable = 0;
                    ck_assert_int_eq(rc[0], rc[1]);
                    errors += rc[0] != HM_OK;
                    if (rc[0] == HM_OK) {
                        ck_assert_uint_eq(n[0], n[1]);
                        ck_assert_mem_eq(ids[0], ids[1],
                                         n[0] * sizeof(int32_t));
                        ck_assert_mem_eq(r[0], r[1], n[0] * sizeof(double));
                    }
                    rows++;
                }
    /* every row with a bad value, and the rows of -inf alone, fail */
    ck_assert_uint_ge(errors, rows / 4);
    free(l);
    for (int p = 0; p < 2; p++) {
        free(ids[p]);
        free(r[p]);
    }
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

START_TEST(test_bad_input)
{
    enum { V = 100 };
    hm_key *key = test_key(10);
    hm_logprobs *lp = test_lp(key, NULL, NULL);
    float l[V];
    int32_t ids[20];
    double r[20];
    size_t n = 77;
    const int32_t c[] = {1, 2};
    hm_row row = {c, 2, NULL, 0, 0};
    for (int v = 0; v < V; v++)
        l[v] = (float)v * 0.01f;
#define DENSE(lp_, l_, nr, nv, st, rows_, k_) \
    hm_logprobs_dense(lp_, l_, nr, nv, st, rows_, k_, ids, r, &n)
    ck_assert_int_eq(DENSE(NULL, l, 1, V, V, &row, 5), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, NULL, 1, V, V, &row, 5), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, NULL, 5), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 1, 0, 0, &row, 0), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 1, V, V - 1, &row, 5), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, &row, 21), HM_ERANGE); /* > topk */
    ck_assert_int_eq(DENSE(lp, l, 1, 10, 10, &row, 11), HM_ERANGE); /* > V */
    ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, 5, NULL, r, &n),
                     HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, 5, ids, NULL,
                                       &n), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_dense(lp, l, 1, V, V, &row, 5, ids, r,
                                       NULL), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 0, V, V, NULL, 5), HM_OK);
    hm_row badrow = {NULL, 3, NULL, 0, 0};
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, &badrow, 5), HM_EINVAL);
    const int32_t neg[] = {1, -2};
    hm_row negrow = {neg, 2, NULL, 0, 0};
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, &negrow, 5), HM_ERANGE);
    uint64_t fake[32] = {0}; /* no state: the magic is missing */
    hm_row seqrow = {NULL, 0, (hm_seq *)(void *)fake, 0, 0};
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, &seqrow, 5), HM_EINVAL);
    /* NaN and +inf anywhere in the row; a row without a finite logit */
    static const float badv[] = {NAN, INFINITY};
    for (int b = 0; b < 2; b++) {
        for (int at = 0; at < V; at += 33) {
            float save = l[at];
            l[at] = badv[b];
            ck_assert_int_eq(DENSE(lp, l, 1, V, V, &row, 5), HM_EINVAL);
            l[at] = save;
        }
    }
    float inf[V];
    for (int v = 0; v < V; v++)
        inf[v] = -INFINITY;
    ck_assert_int_eq(DENSE(lp, inf, 1, V, V, &row, 5), HM_EINVAL);
    ck_assert_int_eq(DENSE(lp, l, 1, V, V, &row, 5), HM_OK);
    ck_assert_uint_eq(n, 5);
#undef DENSE

    /* harden */
    for (int i = 0; i < 20; i++) {
        ids[i] = i;
        r[i] = -1.0 - i;
    }
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 21, 0), HM_ERANGE);
    ck_assert_int_eq(hm_logprobs_harden(NULL, &row, ids, r, 2, 0), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, NULL, ids, r, 2, 0), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, NULL, r, 2, 0), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, NULL, 2, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 2, 0x8), HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, &badrow, ids, r, 2, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_logprobs_harden(lp, &negrow, ids, r, 2, 0),
                     HM_ERANGE);
    static const double badl[] = {NAN, INFINITY, 0.5, 1e-300};
    for (int b = 0; b < 4; b++) {
        double save = r[1];
        r[1] = badl[b];
        ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 3, 0),
                         HM_EINVAL);
        r[1] = save;
    }
    ids[2] = -5;
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 3, 0), HM_ERANGE);
    /* both kinds in one row: the first bad record decides */
    r[1] = NAN;
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 3, 0), HM_EINVAL);
    r[1] = -2.0;
    r[3] = NAN;
    ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, r, 4, 0), HM_ERANGE);
    r[3] = -4.0;
    /* rejected calls leave the arrays alone */
    ck_assert_int_eq(ids[0], 0);
    ck_assert(r[0] == -1.0 && r[1] == -2.0);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

/* One handle, many threads: the same results as one thread. */
typedef struct job {
    const hm_logprobs *lp;
    const float *l;
    size_t V;
    int32_t ids[32][20];
    double r[32][20];
    int rc;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    j->rc = HM_OK;
    for (int rep = 0; rep < 20; rep++)
        for (int t = 0; t < 32 && j->rc == HM_OK; t++) {
            int32_t c[2] = {t, 5};
            hm_row row = {c, 2, NULL, 0, 0};
            size_t n;
            j->rc = hm_logprobs_dense(j->lp, j->l + (size_t)t * j->V, 1,
                                      j->V, j->V, &row, 20, j->ids[t],
                                      j->r[t], &n);
        }
    return NULL;
}

START_TEST(test_threads)
{
    enum { T = 4, V = 2000 };
    hm_key *key = test_key(11);
    hm_logprobs *lp = test_lp(key, NULL, NULL);
    float *l = malloc((size_t)32 * V * sizeof *l);
    job *jobs = calloc(T + 1, sizeof *jobs);
    ck_assert_ptr_nonnull(l);
    ck_assert_ptr_nonnull(jobs);
    uint64_t s = 0xb00b;
    for (int t = 0; t < 32; t++)
        fill_row(l + (size_t)t * V, V, t % N_KINDS == 5 ? 0 : t % N_KINDS,
                 &s);
    pthread_t th[T];
    for (int i = 0; i <= T; i++) {
        jobs[i].lp = lp;
        jobs[i].l = l;
        jobs[i].V = V;
    }
    run_job(&jobs[T]);
    ck_assert_int_eq(jobs[T].rc, HM_OK);
    for (int i = 0; i < T; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].rc, HM_OK);
        ck_assert_mem_eq(jobs[i].ids, jobs[T].ids, sizeof jobs[T].ids);
        ck_assert_mem_eq(jobs[i].r, jobs[T].r, sizeof jobs[T].r);
    }
    free(jobs);
    free(l);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST

#if HOOK_MALLOC
START_TEST(test_no_allocation)
{
    enum { V = 32000 };
    hm_key *key = test_key(12);
    hm_logprobs *lp = test_lp(key, "topk=1024", NULL);
    hm_ctx *ctx = test_ctx(key, "gumbel");
    hm_seq *seq = NULL;
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 16), HM_OK);
    float *l = malloc(V * sizeof *l);
    int32_t *ids = malloc(1024 * sizeof *ids);
    double *r = malloc(1024 * sizeof *r), off;
    ck_assert_ptr_nonnull(l);
    ck_assert_ptr_nonnull(ids);
    ck_assert_ptr_nonnull(r);
    uint64_t s = 0xc00c;
    fill_row(l, V, 0, &s);
    const int32_t c[] = {1, 2, 3, 4, 5};
    hm_row row = {c, 5, NULL, 0, 0}, srow = {NULL, 0, seq, 0, 0};
    size_t n;
    int rc[8];
    hook_start();
    rc[0] = hm_logprobs_dense(lp, l, 1, V, V, &row, 1024, ids, r, &n);
    rc[1] = hm_logprobs_harden(lp, &row, ids, r, n, 0);
    rc[2] = hm_logprobs_dense(lp, l, 1, V, V, &srow, 20, ids, r, &n);
    rc[3] = hm_logprobs_harden(lp, &srow, ids, r, n, HM_LOGPROBS_KEEP_ORDER);
    rc[4] = hm_logprobs_offset(lp, c, 5, 17, &off);
    l[5] = NAN; /* error paths too */
    rc[5] = hm_logprobs_dense(lp, l, 1, V, V, &row, 20, ids, r, &n) ==
                    HM_EINVAL
                ? HM_OK
                : -100;
    rc[6] = hm_logprobs_param(lp, "tv_bound", &off);
    unsigned long n_alloc = hook_stop();
    for (int i = 0; i < 7; i++)
        ck_assert_msg(rc[i] == HM_OK, "call %d returned %d", i, rc[i]);
    ck_assert_msg(n_alloc == 0, "%lu allocator calls", n_alloc);
    /* the counter sees setup allocations */
    hm_logprobs *lp2 = NULL;
    hook_start();
    rc[0] = hm_logprobs_new(&lp2, key, NULL, NULL, NULL, 0);
    ck_assert_uint_ge(hook_stop(), 1);
    ck_assert_int_eq(rc[0], HM_OK);
    hm_logprobs_free(lp2);
    free(l);
    free(ids);
    free(r);
    hm_seq_free(seq);
    hm_ctx_free(ctx);
    hm_logprobs_free(lp);
    hm_key_free(key);
}
END_TEST
#endif

/* The committed vectors, computed from the man page by
 * tools/gen-logprobs-vectors.py with the openssl tool: offsets and
 * hardened values bit for bit. */
static size_t parse_ids(char *s, int32_t *out, size_t max)
{
    size_t n = 0;
    if (strcmp(s, "-") == 0)
        return 0;
    for (char *t = strtok(s, ","); t != NULL; t = strtok(NULL, ",")) {
        ck_assert_uint_lt(n, max);
        out[n++] = (int32_t)strtol(t, NULL, 10);
    }
    return n;
}

/* x of an offset record from PRF v1's primitives as hallmark-prf(7)
 * composes them (the library returns only eps*s, 52 bits of x). */
static uint64_t vector_x(const hm_key *key, const char *spec,
                         const char *tenant, const hm_logprobs *lp,
                         const int32_t *c, size_t nc, int32_t v)
{
    const char *id = strstr(spec, "id=");
    unsigned char k[16];
    uint32_t w[HM_MAX_CONTEXT];
    hm_cmac cmac;
    ck_assert_ptr_nonnull(id);
    ck_assert_int_eq(hm_key_derive_for(key, "logprobs", id + 3, tenant, k,
                                       sizeof k),
                     HM_OK);
    hm_cmac_init(&cmac, k);
    unsigned h = (unsigned)param(lp, "h");
    hm_row row = {c, nc, NULL, 0, 0};
    ck_assert_int_eq(hm_row_window(&row, h, w), HM_OK);
    hm_seed sd = hm_seed_window(&cmac, w, h);
    hm_cmac_wipe(&cmac);
    return hm_mix(sd.a, sd.g, (uint64_t)(uint32_t)v);
}

START_TEST(test_vectors)
{
    FILE *f = test_open_vectors("logprobs-v1.txt");
    char line[4096];
    size_t n_offset = 0, n_harden = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        char kind[16], master[80], spec[160], tenant[64], ctx[256],
            a[1024], b[1024];
        unsigned char mb[HM_KEY_BYTES];
        int32_t c[32];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        ck_assert_int_eq(sscanf(line, "%15s %79s %159s %63s %255s %1023s "
                                      "%1023s",
                                kind, master, spec, tenant, ctx, a, b),
                         7);
        test_hex(master, mb, sizeof mb);
        hm_key *key = NULL;
        ck_assert_int_eq(hm_key_from_bytes(&key, mb, sizeof mb), HM_OK);
        hm_logprobs *lp =
            test_lp(key, spec, strcmp(tenant, "-") == 0 ? "" : tenant);
        char canon[160];
        hm_logprobs_spec(lp, canon, sizeof canon);
        ck_assert_str_eq(canon, spec);
        size_t nc = parse_ids(ctx, c, 32);
        if (strcmp(kind, "offset") == 0) {
            /* a is the token, b the 64-bit value; the offset follows */
            double want, got;
            const char *rest = strstr(line, b) + strlen(b);
            ck_assert_int_eq(sscanf(rest, "%lf", &want), 1);
            ck_assert_int_eq(hm_logprobs_offset(lp, c, nc,
                                                (int32_t)strtol(a, NULL, 10),
                                                &got),
                             HM_OK);
            ck_assert_msg(got == want, "%s: offset %a, want %a", line, got,
                          want);
            uint64_t x = vector_x(key, spec,
                                  strcmp(tenant, "-") == 0 ? "" : tenant, lp,
                                  c, nc, (int32_t)strtol(a, NULL, 10));
            ck_assert_msg(x == strtoull(b, NULL, 16), "%s: x %016llx", line,
                          (unsigned long long)x);
            n_offset++;
        } else {
            int32_t ids[20];
            double in[20], out[20];
            size_t n = 0, m = 0;
            for (char *t = strtok(a, ","); t != NULL; t = strtok(NULL, ",")) {
                ck_assert_uint_lt(n, 20);
                ids[n] = (int32_t)strtol(t, &t, 10);
                ck_assert_int_eq(*t, ':');
                in[n++] = strtod(t + 1, NULL);
            }
            for (char *t = strtok(b, ","); t != NULL; t = strtok(NULL, ","))
                out[m++] = strtod(t, NULL);
            ck_assert_uint_eq(n, m);
            hm_row row = {c, nc, NULL, 0, 0};
            ck_assert_int_eq(hm_logprobs_harden(lp, &row, ids, in, n,
                                                HM_LOGPROBS_KEEP_ORDER),
                             HM_OK);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(in[i] == out[i], "%s: value %zu is %a, want %a",
                              line, i, in[i], out[i]);
            n_harden++;
        }
        hm_logprobs_free(lp);
        hm_key_free(key);
    }
    fclose(f);
    ck_assert_uint_ge(n_offset, 300);
    ck_assert_uint_ge(n_harden, 70);
}
END_TEST

static Suite *logprobs_suite(void)
{
    Suite *s = suite_create("logprobs");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_offsets);
    tcase_add_test(tc, test_repeats_identical);
    tcase_add_test(tc, test_set_and_window);
    tcase_add_test(tc, test_vectors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("bound");
    tcase_add_test(tc, test_tv_bound);
    tcase_add_test(tc, test_tv_bound_tight);
    tcase_add_test(tc, test_grid_and_validity);
    tcase_add_test(tc, test_shift_reference);
    tcase_add_test(tc, test_sort_worst_case);
    tcase_add_test(tc, test_sort_paths);
    tcase_add_test(tc, test_sorted_is_permutation);
    tcase_add_test(tc, test_sort_avx2);
    tcase_add_test(tc, test_exp_helpers);
    tcase_add_test(tc, test_wide_paths);
    tcase_add_test(tc, test_wide_pieces);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("mechanics");
    tcase_add_test(tc, test_batch_and_seq);
    tcase_add_test(tc, test_dense_blocks);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_threads);
#if HOOK_MALLOC
    tcase_add_test(tc, test_no_allocation);
#else
    fputs("logprobs: no-allocation test skipped (AddressSanitizer owns "
          "malloc)\n",
          stderr);
#endif
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(logprobs_suite());
}
