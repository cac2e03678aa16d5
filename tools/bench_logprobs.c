/*
 * bench_logprobs.c - hardened log-probabilities (hm_logprobs_new(3)):
 * what they cost per served token, and what they do to a simulated
 * hidden-size extraction attack (Carlini et al. 2024; Finlayson et al.
 * 2024).
 *
 *   tools/bench-logprobs            both parts
 *   tools/bench-logprobs --cost     cost only
 *   tools/bench-logprobs --attack   attack only
 *   tools/bench-logprobs --audit    open-model audit cost only
 *                                   (the three combine; none: all)
 *   tools/bench-logprobs --cost --compare OLD/libhallmark.so.0
 *                                   cost of this build and another one,
 *                                   interleaved, with the ratios
 *
 * The open-model audit (hm_greenmass_new(3)) reads such top-k records back
 * from a suspect: its cost per record added and per listed pair scored
 * under one key (a result: the green lists, then the three bounds).
 *
 * The attack.  A model whose logits are z = W h (vocabulary V, hidden size
 * d) answers N prompts.  The attacker is granted more than this API gives:
 * for every prompt, the returned value of every token, obtained as in the
 * papers' logit-bias attacks with k tokens per query, one of them a
 * reference token (the prompt's argmax) so that differences cancel the
 * normalization: ceil((V-1)/(k-1)) queries per prompt.  (hm_logprobs
 * computes its output from the unbiased row, so a real attacker sees only
 * each prompt's true top k and cannot steer other tokens into view; the
 * simulation is the papers' setting, not ours.)  Each query goes through
 * hm_logprobs_harden.  The attacker stacks the N rows of differences,
 * centres each row (which removes the normalization direction), computes
 * the singular values from the eigenvalues of the N x N Gram matrix
 * (cyclic Jacobi rotations in double) and takes the hidden size to be the
 * index of the largest ratio sigma_i / sigma_{i+1} (Carlini et al.,
 * Algorithm 1).  Reported: that ratio at i = d, the attacker's estimate, and
 * the number of prompts and queries after which the estimate is d.
 *
 * Two spectra of W: "flat" (i.i.d. Gaussian W, every direction as strong
 * as the others) and "decaying" (the singular values of W fall by three
 * decades from the first to the d-th, as the logit matrices of trained
 * models do).  In both the logits of a prompt have standard deviation 2
 * over the vocabulary.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hallmark.h"
#include "bench_lib.h"

#define REPS 7

static uint64_t rng_state = 0x10b5;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}
static double unif(void)
{
    return ((double)(rnd() >> 11) + 0.5) * 0x1p-53;
}
static double gauss(void)
{
    return sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif());
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "bench-logprobs: out of memory\n");
        exit(2);
    }
    return p;
}

static void check(int rc, const char *what)
{
    if (rc != HM_OK) {
        fprintf(stderr, "bench-logprobs: %s: %s\n", what, hm_strerror(rc));
        exit(2);
    }
}

/* ----------------------------------------------------------------- cost */

/* Log-softmax of a row of Gaussian logits (sd 2), top k, sorted: what a
 * server's own top-k logprob kernel hands to hm_logprobs_harden. */
static void true_topk(size_t V, size_t k, int32_t *ids, double *l)
{
    /* Order statistics of V Gaussians are close to the quantiles. */
    for (size_t i = 0; i < k; i++) {
        ids[i] = (int32_t)(rnd() % V);
        l[i] = -5.0 - 2.0 * log1p((double)i) - 1e-3 * unif();
    }
}

static int cmp_desc(const void *a, const void *b)
{
    return -bench_cmp_double(a, b);
}

/* The top k of a softmax over V Gaussian logits (sd 3, one logit 5 above
 * the largest other), in true order: at k = 1024 about 0.98 of the mass,
 * so that the hardened probabilities can sum past 1 and the common shift
 * has to be decided. */
static void softmax_topk(size_t V, size_t k, int32_t *ids, double *l)
{
    double *z = xmalloc(V * sizeof *z), mx = -INFINITY, sum = 0;
    for (size_t v = 0; v < V; v++) {
        z[v] = 3 * gauss();
        mx = z[v] > mx ? z[v] : mx;
    }
    z[0] = mx += 5;
    for (size_t v = 0; v < V; v++)
        sum += exp(z[v] - mx);
    qsort(z, V, sizeof *z, cmp_desc);
    for (size_t i = 0; i < k; i++) {
        ids[i] = (int32_t)(rnd() % V);
        l[i] = (z[i] - mx) - log(sum);
    }
    free(z);
}

/* A returned record, for the host's own sort (mode 3 below). */
typedef struct host_rec {
    double r;
    int32_t id;
} host_rec;

/* hm_logprobs_harden's order: larger value first, then smaller id. */
static int cmp_host_rec(const void *a, const void *b)
{
    const host_rec *x = a, *y = b;
    if (x->r != y->r)
        return x->r > y->r ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The alternative to the sorted path: harden in input order, then the
 * host sorts the records with qsort. */
static void host_sort(int32_t *w, double *x, size_t k, host_rec *rec)
{
    for (size_t i = 0; i < k; i++) {
        rec[i].r = x[i];
        rec[i].id = w[i];
    }
    qsort(rec, k, sizeof *rec, cmp_host_rec);
    for (size_t i = 0; i < k; i++) {
        x[i] = rec[i].r;
        w[i] = rec[i].id;
    }
}

/* Microseconds per row of M_ROWS rows through lib, copying each row in
 * first as a server hands over fresh values (from D_ROWS distinct ones,
 * which stay in cache as the output of the server's top-k kernel would);
 * mode 0 keeps the order, 1 sorts, 2 only copies, 3 keeps the order and
 * sorts with qsort (rec: room for k records). */
enum { M_ROWS = 128, D_ROWS = 16, COST_REPS = 21 };
static double time_rows(const bench_lib *lib, const hm_logprobs *lp,
                        const int32_t *ids, const double *l,
                        int32_t (*ctx)[4], size_t k, int mode, int32_t *w,
                        double *x, host_rec *rec)
{
    double t0 = bench_now();
    for (size_t m = 0; m < M_ROWS; m++) {
        hm_row row = {ctx[m], 4, NULL, 0, 0};
        memcpy(w, ids + m % D_ROWS * k, k * sizeof *w);
        memcpy(x, l + m % D_ROWS * k, k * sizeof *x);
        if (mode != 2)
            check(lib->lp_harden(lp, &row, w, x, k,
                                 mode == 1 ? 0 : HM_LOGPROBS_KEEP_ORDER),
                  "harden");
        if (mode == 3)
            host_sort(w, x, k, rec);
    }
    return (bench_now() - t0) / M_ROWS * 1e6;
}

/* Whether the sorted path and the host's qsort give the same records for
 * row m (the comparison in the table is of equals). */
static int same_order(const bench_lib *lib, const hm_logprobs *lp,
                      const int32_t *ids, const double *l, int32_t (*ctx)[4],
                      size_t k, int32_t *w, double *x, host_rec *rec)
{
    int32_t *w2 = malloc(k * sizeof *w2);
    double *x2 = malloc(k * sizeof *x2);
    int same = w2 != NULL && x2 != NULL;
    for (size_t m = 0; same && m < D_ROWS; m++) {
        hm_row row = {ctx[m], 4, NULL, 0, 0};
        memcpy(w, ids + m * k, k * sizeof *w);
        memcpy(x, l + m * k, k * sizeof *x);
        memcpy(w2, w, k * sizeof *w);
        memcpy(x2, x, k * sizeof *x);
        check(lib->lp_harden(lp, &row, w, x, k, 0), "harden");
        check(lib->lp_harden(lp, &row, w2, x2, k, HM_LOGPROBS_KEEP_ORDER),
              "harden");
        host_sort(w2, x2, k, rec);
        same = memcmp(w, w2, k * sizeof *w) == 0 &&
               memcmp(x, x2, k * sizeof *x) == 0;
    }
    free(w2);
    free(x2);
    return same;
}

/* Per served token (one generation step hardens one row of k values),
 * next to the 1 microsecond target; with two libraries, both, run in
 * turns, and new/old. */
static void cost_harden(const unsigned char *kb, const bench_lib *libs,
                        int n_libs)
{
    static const size_t ks[] = {1, 20, 256, 1024};
    hm_logprobs *lp[2] = {NULL, NULL};
    hm_key *key[2] = {NULL, NULL};
    for (int b = 0; b < n_libs; b++) {
        check(libs[b].key_from_bytes(&key[b], kb, HM_KEY_BYTES), "key");
        check(libs[b].lp_new(&lp[b], key[b], "topk=1024", NULL, NULL, 0),
              "new");
    }
    printf("harden: perturb + quantize (+ sort) one row of k true "
           "log-probabilities = one served token;\ntarget 1 us per token. "
           "Microseconds per row, median of %d runs of %d rows (windows "
           "all\ndistinct); each row is copied in first ('copy' alone), as "
           "the bench must hand over\nfresh values; 'net' is without that "
           "copy (the median of the differences, run by\nrun), which a "
           "server, hardening its top-k buffer in place, does not make, "
           "and the\ntarget is judged on it.  Rows: 'tail' -5 - 2 ln(1+i); "
           "'softmax' the top k of 32000\nGaussian logits (mass 0.98 at "
           "k=1024).\n'qsort net': the alternative to 'sorted', input "
           "order and then the host's qsort\n(the same records, checked); "
           "'ratio': sorted net / qsort net%s\n",
           COST_REPS, M_ROWS,
           n_libs > 1 ? "; 'old' the --compare library." : ".");
    printf("  %-8s %5s %8s %8s %6s %9s %10s %9s %7s %8s", "rows", "k",
           "kept", "sorted", "copy", "kept net", "sorted net", "qsort net",
           "ratio", "<= 1 us");
    if (n_libs > 1)
        printf(" %8s %8s %9s %9s", "old kept", "old sort", "kept n/o",
               "sort n/o");
    printf("\n");
    for (int kind = 0; kind < 2; kind++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            size_t k = ks[ki];
            int32_t *ids = xmalloc(D_ROWS * k * sizeof *ids),
                    *w = xmalloc(k * sizeof *w);
            double *l = xmalloc(D_ROWS * k * sizeof *l),
                   *x = xmalloc(k * sizeof *x);
            host_rec *rec = xmalloc(k * sizeof *rec);
            int32_t(*ctx)[4] = xmalloc(M_ROWS * sizeof *ctx);
            for (size_t m = 0; m < D_ROWS; m++) {
                if (kind == 0)
                    true_topk(32000, k, ids + m * k, l + m * k);
                else
                    softmax_topk(32000, k, ids + m * k, l + m * k);
            }
            for (size_t m = 0; m < M_ROWS; m++)
                for (int j = 0; j < 4; j++)
                    ctx[m][j] = (int32_t)(rnd() % 32000);
            if (!same_order(&libs[0], lp[0], ids, l, ctx, k, w, x, rec)) {
                fprintf(stderr, "bench-logprobs: the sorted path and qsort "
                                "disagree at k = %zu\n", k);
                exit(1);
            }
            double t[2][4][COST_REPS];
            for (int r = 0; r < COST_REPS; r++)
                for (int mode = 0; mode < 4; mode++)
                    for (int b = 0; b < (mode < 3 ? n_libs : 1); b++)
                        t[b][mode][r] = time_rows(&libs[b], lp[b], ids, l,
                                                  ctx, k, mode, w, x, rec);
            double med[2][3], net[3];
            for (int mode = 0; mode < 2; mode++)
                net[mode] = bench_net_median(t[0][mode], t[0][2], COST_REPS);
            net[2] = bench_net_median(t[0][3], t[0][2], COST_REPS);
            for (int b = 0; b < n_libs; b++)
                for (int mode = 0; mode < 3; mode++)
                    med[b][mode] = bench_median(t[b][mode], COST_REPS);
            printf("  %-8s %5zu %8.3f %8.3f %6.3f %9.3f %10.3f %9.3f %7.2f "
                   "%8s",
                   kind == 0 ? "tail" : "softmax", k, med[0][0], med[0][1],
                   med[0][2], net[0], net[1], net[2], net[1] / net[2],
                   net[1] <= 1   ? "both"
                   : net[0] <= 1 ? "kept"
                                 : "no");
            if (n_libs > 1)
                printf(" %8.3f %8.3f %9.2f %9.2f", med[1][0], med[1][1],
                       med[0][0] / med[1][0], med[0][1] / med[1][1]);
            printf("\n");
            free(ids);
            free(w);
            free(l);
            free(x);
            free(rec);
            free(ctx);
        }
    for (int b = 0; b < n_libs; b++) {
        libs[b].lp_free(lp[b]);
        libs[b].key_free(key[b]);
    }
}

static void cost_audit(const hm_key *key)
{
    static const size_t ks[] = {20, 256};
    hm_ctx *ctx = NULL;
    check(hm_ctx_new(&ctx, key, "kgw:h=1", NULL, NULL, 0), "ctx");
    printf("\nopen-model audit (hm_greenmass): add a top-k record, score "
           "its pairs under one key\n");
    printf("  %6s %8s %8s %14s %12s %12s\n", "k", "records", "windows",
           "ns/record add", "ns/pair add", "ns/pair key");
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        size_t k = ks[ki], M = 200000 / k;
        int32_t *ids = xmalloc(M * k * sizeof *ids), (*ctxs)[4] =
                                                         xmalloc(M * sizeof *ctxs);
        double *l = xmalloc(M * k * sizeof *l);
        for (size_t m = 0; m < M; m++) {
            true_topk(32000, k, ids + m * k, l + m * k);
            /* distinct ids: true_topk may repeat one */
            for (size_t i = 0; i < k; i++)
                ids[m * k + i] = (int32_t)((ids[m * k] + 7919 * i) % 32000);
            for (int j = 0; j < 4; j++)
                ctxs[m][j] = (int32_t)(rnd() % 32000);
        }
        double ta[REPS], tr[REPS];
        hm_greenmass_stats st = {0};
        for (int r = 0; r < REPS; r++) {
            hm_greenmass *g = NULL;
            check(hm_greenmass_new(&g, (const hm_ctx *const *)&ctx, 1, 0,
                                   NULL, 0),
                  "greenmass");
            double t0 = bench_now();
            for (size_t m = 0; m < M; m++)
                check(hm_greenmass_add(g, ctxs[m], 4, ids + m * k, l + m * k,
                                       k),
                      "add");
            double t1 = bench_now();
            check(hm_greenmass_result(g, 0, 0, &st), "result");
            double t2 = bench_now();
            ta[r] = (t1 - t0) / (double)M * 1e9;
            tr[r] = (t2 - t1) / (double)st.pairs * 1e9;
            hm_greenmass_free(g);
        }
        double add = bench_median(ta, REPS);
        printf("  %6zu %8zu %8llu %14.0f %12.1f %12.1f\n", k, M,
               (unsigned long long)st.windows, add, add / (double)k,
               bench_median(tr, REPS));
        free(ids);
        free(ctxs);
        free(l);
    }
    hm_ctx_free(ctx);
}

static void cost_dense(const hm_key *key)
{
    static const size_t vs[] = {32000, 128256};
    static const size_t ks[] = {20, 1024};
    hm_logprobs *lp = NULL;
    check(hm_logprobs_new(&lp, key, "topk=1024", NULL, NULL, 0), "new");
    printf("dense: top-k selection + log-sum-exp over the row + harden\n");
    printf("  %7s %6s %12s\n", "V", "k", "us/token");
    for (size_t vi = 0; vi < 2; vi++) {
        size_t V = vs[vi];
        enum { M = 8 };
        float *l = xmalloc(M * V * sizeof *l);
        int32_t *ids = xmalloc(1024 * sizeof *ids);
        double *x = xmalloc(1024 * sizeof *x);
        for (size_t i = 0; i < M * V; i++)
            l[i] = (float)(2 * gauss());
        for (size_t ki = 0; ki < 2; ki++) {
            size_t k = ks[ki], n;
            double t[REPS];
            for (int r = 0; r < REPS; r++) {
                double t0 = bench_now();
                for (size_t m = 0; m < M; m++) {
                    int32_t ctx[4] = {(int32_t)m, 1, 2, 3};
                    hm_row row = {ctx, 4, NULL, 0, 0};
                    check(hm_logprobs_dense(lp, l + m * V, 1, V, V, &row, k,
                                            ids, x, &n),
                          "dense");
                }
                t[r] = (bench_now() - t0) / M * 1e6;
            }
            printf("  %7zu %6zu %12.1f\n", V, k, bench_median(t, REPS));
        }
        free(l);
        free(ids);
        free(x);
    }
    hm_logprobs_free(lp);
}

/* --------------------------------------------------------------- attack */

/* Eigenvalues of the symmetric n x n matrix a (destroyed), by cyclic
 * Jacobi rotations, into ev in decreasing order. */
static void jacobi_eigenvalues(double *a, size_t n, double *ev)
{
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (size_t i = 0; i < n; i++) {
            diag += a[i * n + i] * a[i * n + i];
            for (size_t j = i + 1; j < n; j++)
                off += a[i * n + j] * a[i * n + j];
        }
        if (off <= 1e-30 * diag)
            break;
        for (size_t p = 0; p < n; p++) {
            for (size_t q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) <= 1e-300)
                    continue;
                double app = a[p * n + p], aqq = a[q * n + q];
                double theta = (aqq - app) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) /
                           (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                /* rows and columns p and q (a is kept symmetric) */
                for (size_t k = 0; k < n; k++) {
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (size_t k = 0; k < n; k++) {
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        ev[i] = a[i * n + i];
    qsort(ev, n, sizeof *ev, bench_cmp_double);
    for (size_t i = 0; i < n / 2; i++) {
        double t = ev[i];
        ev[i] = ev[n - 1 - i];
        ev[n - 1 - i] = t;
    }
}

typedef struct model {
    size_t V, d;
    double *W; /* V x d */
    double *w; /* d column scales (singular values / sqrt(V)) */
} model;

static void model_init(model *m, size_t V, size_t d, int decaying)
{
    m->V = V;
    m->d = d;
    m->W = xmalloc(V * d * sizeof *m->W);
    m->w = xmalloc(d * sizeof *m->w);
    double ss = 0;
    for (size_t j = 0; j < d; j++) {
        m->w[j] = decaying ? pow(10.0, -3.0 * (double)j / (double)(d - 1))
                           : 1.0;
        ss += m->w[j] * m->w[j];
    }
    for (size_t j = 0; j < d; j++)
        m->w[j] *= 2.0 / sqrt(ss); /* logit sd 2 for h ~ N(0, I) */
    for (size_t i = 0; i < V * d; i++)
        m->W[i] = gauss();
}

/* The d-th singular value of W with its rows centred (what the attacker's
 * centring leaves of W h), squared, times the column scales: the
 * smallest eigenvalue of the d x d matrix (C W diag(w))^T (C W diag(w)). */
static double model_sd2(const model *m)
{
    size_t V = m->V, d = m->d;
    double *M = xmalloc(d * d * sizeof *M), *ev = xmalloc(d * sizeof *ev);
    double *mean = xmalloc(d * sizeof *mean);
    for (size_t j = 0; j < d; j++) {
        mean[j] = 0;
        for (size_t v = 0; v < V; v++)
            mean[j] += m->W[v * d + j];
        mean[j] /= (double)V;
    }
    for (size_t a = 0; a < d; a++)
        for (size_t b = 0; b <= a; b++) {
            double acc = 0;
            for (size_t v = 0; v < V; v++)
                acc += (m->W[v * d + a] - mean[a]) * (m->W[v * d + b] - mean[b]);
            M[a * d + b] = M[b * d + a] = acc * m->w[a] * m->w[b];
        }
    jacobi_eigenvalues(M, d, ev);
    double sd2 = ev[d - 1];
    free(M);
    free(ev);
    free(mean);
    return sd2;
}

/* Prompts after which the attacker's rule should find d: the d-th signal
 * eigenvalue of the N x N Gram matrix, about (sqrt(N) - sqrt(d))^2 s_d^2
 * + tau^2 V, must exceed the top of the noise bulk, tau^2 (sqrt(V) +
 * sqrt(N))^2, by the factor rho^2 that the largest ratio elsewhere in the
 * spectrum reaches (rho = 1.3 here).  tau^2 is the variance of the error
 * of one returned value. */
static double estimate_prompts(double sd2, double tau2, size_t V, size_t d)
{
    const double rho2 = 1.3 * 1.3;
    if (tau2 <= 0)
        return (double)d + 1;
    for (double N = (double)d + 1; N < 1e12; N *= 1.01) {
        double sig = pow(sqrt(N) - sqrt((double)d), 2) * sd2 + tau2 * V;
        double edge = tau2 * pow(sqrt((double)V) + sqrt(N), 2);
        if (sig >= rho2 * edge)
            return N;
    }
    return INFINITY;
}

static void model_free(model *m)
{
    free(m->W);
    free(m->w);
}

typedef struct outcome {
    double ratio_d; /* sigma_d / sigma_{d+1} */
    size_t d_hat;   /* the attacker's estimate */
    double max_other; /* largest ratio at any other index */
} outcome;

/* Run the attack with N prompts through lp.  shared: every prompt has the
 * same context window (and the attacker also centres columns). */
static outcome attack(const model *m, const hm_logprobs *lp, size_t N,
                      size_t k, int shared)
{
    size_t V = m->V, d = m->d;
    double *Y = xmalloc(N * V * sizeof *Y);
    double *l = xmalloc(V * sizeof *l), *h = xmalloc(d * sizeof *h);
    float *z = xmalloc(V * sizeof *z);
    int32_t ids[HM_LOGPROBS_TOPK_MAX];
    double vals[HM_LOGPROBS_TOPK_MAX];
    for (size_t n = 0; n < N; n++) {
        int32_t ctx[4];
        for (int j = 0; j < 4; j++)
            ctx[j] = shared ? 1000 + j : (int32_t)(rnd() % V);
        hm_row row = {ctx, 4, NULL, 0, 0};
        for (size_t j = 0; j < d; j++)
            h[j] = gauss() * m->w[j];
        /* the model's float logits and their exact log-softmax */
        double mx = -INFINITY, sum = 0;
        size_t ref = 0;
        for (size_t v = 0; v < V; v++) {
            double acc = 0;
            for (size_t j = 0; j < d; j++)
                acc += m->W[v * d + j] * h[j];
            z[v] = (float)acc;
            if (z[v] > mx) {
                mx = z[v];
                ref = v;
            }
        }
        for (size_t v = 0; v < V; v++)
            sum += exp((double)z[v] - mx);
        for (size_t v = 0; v < V; v++)
            l[v] = ((double)z[v] - mx) - log(sum);
        /* queries: the reference token and k-1 others each */
        double *y = Y + n * V;
        size_t v = 0;
        while (v < V) {
            size_t c = 0;
            ids[c] = (int32_t)ref;
            vals[c++] = l[ref];
            for (; v < V && c < k; v++) {
                if (v == ref)
                    continue;
                ids[c] = (int32_t)v;
                vals[c++] = l[v];
            }
            check(hm_logprobs_harden(lp, &row, ids, vals, c,
                                     HM_LOGPROBS_KEEP_ORDER),
                  "harden");
            for (size_t i = 1; i < c; i++)
                y[ids[i]] = vals[i] - vals[0];
            y[ref] = 0;
        }
        double mean = 0;
        for (size_t u = 0; u < V; u++)
            mean += y[u];
        mean /= (double)V;
        for (size_t u = 0; u < V; u++)
            y[u] -= mean;
    }
    if (shared) { /* the common offsets are a common row: remove it */
        for (size_t u = 0; u < V; u++) {
            double mean = 0;
            for (size_t n = 0; n < N; n++)
                mean += Y[n * V + u];
            mean /= (double)N;
            for (size_t n = 0; n < N; n++)
                Y[n * V + u] -= mean;
        }
    }
    double *G = xmalloc(N * N * sizeof *G), *ev = xmalloc(N * sizeof *ev);
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j <= i; j++) {
            double acc = 0;
            const double *a = Y + i * V, *b = Y + j * V;
            for (size_t u = 0; u < V; u++)
                acc += a[u] * b[u];
            G[i * N + j] = G[j * N + i] = acc;
        }
    jacobi_eigenvalues(G, N, ev);
    /* Eigenvalues of a binary64 Gram matrix below 1e-15 of the largest are
     * rounding noise (some come out negative): the attacker cannot see
     * below that floor. */
    for (size_t i = 0; i < N; i++)
        ev[i] = fmax(ev[i], 1e-15 * ev[0]);
    outcome o = {0, 0, 0};
    double best = 0;
    /* sigma_i / sigma_{i+1} for i = 1 .. N-3 (1-based); the last ones can
     * be zero by the centring */
    for (size_t i = 1; i + 2 < N; i++) {
        double r = sqrt(ev[i - 1] / ev[i]);
        if (i == d)
            o.ratio_d = r;
        else if (r > o.max_other)
            o.max_other = r;
        if (r > best) {
            best = r;
            o.d_hat = i;
        }
    }
    free(Y);
    free(l);
    free(h);
    free(z);
    free(G);
    free(ev);
    return o;
}

static void run_attack(const hm_key *key)
{
    const size_t V = 4096, d = 64, k = HM_LOGPROBS_TOPK_DEFAULT;
    const size_t per_prompt = (V - 1 + k - 2) / (k - 1);
    static const size_t Ns[] = {96, 128, 256, 512};
    rng_state = 0xa77ac4; /* the same models whether or not --cost ran */
    struct {
        const char *name;
        const char *spec;
        int shared;
    } cfg[] = {
        {"none (exact)", "eps=0,quantum=0", 0},
        {"quantize only", "eps=0", 0},
        {"default", NULL, 0},
        {"eps=0.125", "eps=0.125", 0},
        {"default, shared window", NULL, 1},
    };
    printf("\nhidden-size attack: V=%zu, d=%zu, k=%zu tokens per query, "
           "%zu queries per prompt\n",
           V, d, k, per_prompt);
    printf("(attacker estimate = argmax sigma_i/sigma_{i+1}; 'found' = "
           "estimate is d)\n");
    for (int decaying = 0; decaying < 2; decaying++) {
        model m;
        model_init(&m, V, d, decaying);
        double sd2 = model_sd2(&m);
        printf("\nspectrum %s: sigma_d(W) / sigma_1(W) = %.3g, "
               "s_d^2 = %.3g (d-th squared singular value of the centred "
               "W diag(w))\n",
               decaying ? "decaying" : "flat", m.w[d - 1] / m.w[0], sd2);
        printf("  %-24s %6s %12s %10s %10s %8s %12s\n", "hardening", "N",
               "sd/sd+1", "max other", "estimate", "found", "queries");
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            hm_logprobs *lp = NULL;
            check(hm_logprobs_new(&lp, key, cfg[c].spec, NULL, NULL, 0),
                  "new");
            double eps, q;
            check(hm_logprobs_param(lp, "eps", &eps), "param");
            check(hm_logprobs_param(lp, "quantum", &q), "param");
            size_t found = 0, streak = 0;
            /* (stop once two sizes in a row found d: larger N only
             * sharpens the gap, and the Jacobi runs cost N^3) */
            for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0] && streak < 2;
                 ni++) {
                size_t N = Ns[ni];
                outcome o = attack(&m, lp, N, k, cfg[c].shared);
                int ok = o.d_hat == d;
                streak = ok ? streak + 1 : 0;
                if (ok && !found)
                    found = N;
                printf("  %-24s %6zu %12.4g %10.4g %10zu %8s %12zu\n",
                       cfg[c].name, N, o.ratio_d, o.max_other, o.d_hat,
                       ok ? "yes" : "no", N * per_prompt);
            }
            /* With one window for all prompts the offsets cancel in the
             * column centring and only quantization is left. */
            double tau2 = (cfg[c].shared ? 0 : eps * eps / 3) + q * q / 12;
            double pred = estimate_prompts(sd2, tau2, V, d);
            if (found)
                printf("  %-24s -> found from N=%zu prompts, %zu queries"
                       " (estimate %.3g prompts)\n",
                       cfg[c].name, found, found * per_prompt, pred);
            else
                printf("  %-24s -> not found up to N=%zu; estimate %.3g"
                       " prompts, %.3g queries (inf: the gap stays below"
                       " the spectrum's own ratios)\n",
                       cfg[c].name, Ns[sizeof Ns / sizeof Ns[0] - 1], pred,
                       pred * (double)per_prompt);
            hm_logprobs_free(lp);
        }
        model_free(&m);
    }
}

int main(int argc, char **argv)
{
    /* each of --cost, --attack and --audit adds its part; none: all */
    int cost = 0, att = 0, audit = 0, n_libs = 1;
    bench_lib libs[2];
    bench_lib_self(&libs[0]);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cost") == 0)
            cost = 1;
        else if (strcmp(argv[i], "--attack") == 0)
            att = 1;
        else if (strcmp(argv[i], "--audit") == 0)
            audit = 1;
        else if (strcmp(argv[i], "--compare") == 0 && i + 1 < argc) {
            char err[512];
            if (bench_lib_open(&libs[1], argv[++i], err, sizeof err) != 0) {
                fprintf(stderr, "bench-logprobs: %s\n", err);
                return 2;
            }
            n_libs = 2;
        } else {
            fprintf(stderr, "usage: bench-logprobs [--cost | --attack | "
                            "--audit] [--compare LIBHALLMARK.so]\n");
            return 2;
        }
    }
    if (!cost && !att && !audit)
        cost = att = audit = 1;
    /* A fixed key, so that runs are comparable. */
    unsigned char kb[HM_KEY_BYTES];
    for (int i = 0; i < HM_KEY_BYTES; i++)
        kb[i] = (unsigned char)(0x5a ^ (13 * i));
    hm_key *key = NULL;
    check(hm_key_from_bytes(&key, kb, sizeof kb), "key");
    if (cost) {
        cost_harden(kb, libs, n_libs);
        cost_dense(key);
    }
    if (audit)
        cost_audit(key);
    if (att)
        run_attack(key);
    hm_key_free(key);
    return 0;
}
