/*
 * bench_spectral.c - the spectral fingerprint channel (hm_spectral_new(3)):
 * its cost per served row next to hardening, and the amplitude a simulated
 * student distilled from the served values needs before hallmark probe's
 * key-permutation test gives p <= 1e-3 (R = 999 alternate keys) from 1000
 * and 10000 probes.  The simulation is tests/spectral_sim.h.
 *
 * usage: bench-spectral [--quick] [--cost] [--compare OLD/libhallmark.so.0]
 *   --quick     fewer trials of the amplitude search
 *   --cost      the cost only
 *   --compare   the cost of this build and another one, interleaved, with
 *               the ratios
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hallmark.h"
#include "../tests/spectral_sim.h"
#include "bench_lib.h"

#define R_NULL 999
#define LABEL "hallmark probe null"

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-spectral: %s: %s\n", what, hm_strerror(rc));
    exit(2);
}

static hm_spectral *spectral(const hm_key *k, const char *spec)
{
    hm_spectral *sp = NULL;
    char msg[HM_ERRMSG_SIZE];
    int rc = hm_spectral_new(&sp, k, spec, NULL, msg, sizeof msg);
    if (rc != HM_OK)
        die(msg, rc);
    return sp;
}

/* ---------------------------------------------------------- the cost */

enum { REPS = 21 }; /* short runs, many: a busy machine moves the median less */

/* Microseconds per row through lib: mode 0 apply, 1 harden (kept order),
 * 2 both, 3 only the copy of the row that each starts with. */
static double time_mode(const bench_lib *lib, const hm_spectral *sp,
                        const hm_logprobs *lp, const int32_t *ids,
                        const double *base, size_t k, int mode, size_t reps)
{
    int32_t ctx[8] = {11, 22, 33, 44, 55, 66, 77, 88};
    int32_t ids2[1024];
    double l[1024];
    double t0 = bench_now();
    for (size_t r = 0; r < reps; r++) {
        hm_row row = {ctx, 8, NULL, 0.0f, 0.0};
        ctx[7] = (int32_t)r; /* a fresh window each time */
        memcpy(l, base, k * sizeof *l);
        memcpy(ids2, ids, k * sizeof *ids);
        int rc = HM_OK;
        if (mode == 0 || mode == 2)
            rc = lib->sp_apply(sp, &row, ids2, l, k);
        if (rc == HM_OK && (mode == 1 || mode == 2))
            rc = lib->lp_harden(lp, &row, ids2, l, k, HM_LOGPROBS_KEEP_ORDER);
        if (rc != HM_OK)
            die("apply", rc);
    }
    return (bench_now() - t0) / (double)reps * 1e6;
}

static void cost(const bench_lib *libs, int n_libs)
{
    static const size_t ks[] = {20, 256, 1024};
    hm_spectral *sp[2] = {NULL, NULL};
    hm_logprobs *lp[2] = {NULL, NULL};
    hm_key *key[2] = {NULL, NULL};
    char msg[HM_ERRMSG_SIZE];
    unsigned char kb[HM_KEY_BYTES];
    for (int i = 0; i < HM_KEY_BYTES; i++)
        kb[i] = (unsigned char)(0xa5 ^ (29 * i));
    for (int b = 0; b < n_libs; b++) {
        if (libs[b].key_from_bytes(&key[b], kb, sizeof kb) != HM_OK ||
            libs[b].sp_new(&sp[b], key[b], NULL, NULL, msg, sizeof msg) !=
                HM_OK ||
            libs[b].lp_new(&lp[b], key[b], "topk=1024", NULL, msg,
                           sizeof msg) != HM_OK)
            die(libs[b].name, HM_EINVAL);
    }
    int32_t ids[1024];
    double base[1024];
    uint64_t s = 42;
    for (size_t i = 0; i < 1024; i++) {
        ids[i] = (int32_t)(i * 131 + 7);
        base[i] = -3.0 - 2.0 * sim_unit(&s) - 0.01 * (double)i;
    }
    printf("cost per served row = one served token (one context, k "
           "returned tokens); target 1 us.\nMicroseconds per row, median "
           "of %d runs; each row is copied in first ('copy' alone);\n'net' "
           "is without that copy (the median of the differences, run by "
           "run), which a\nserver, working on its top-k buffer in place, "
           "does not make, and the target is\njudged on it%s\n",
           REPS, n_libs > 1 ? ";\n'old' the --compare library, n/o new "
                             "over old." : ".");
    printf("  %6s %9s %9s %13s %6s %10s %9s %8s", "k", "apply", "harden",
           "apply+harden", "copy", "apply net", "both net", "<= 1 us");
    if (n_libs > 1)
        printf(" %9s %9s %9s %9s", "old apply", "old both", "apply n/o",
               "both n/o");
    printf("\n");
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        size_t k = ks[t];
        size_t reps = k <= 20 ? 2000 : k <= 256 ? 400 : 100;
        double tm[2][4][REPS], med[2][4];
        for (int r = 0; r < REPS; r++)
            for (int mode = 0; mode < 4; mode++)
                for (int b = 0; b < n_libs; b++)
                    tm[b][mode][r] = time_mode(&libs[b], sp[b], lp[b], ids,
                                               base, k, mode, reps);
        double net_apply = bench_net_median(tm[0][0], tm[0][3], REPS),
               net_both = bench_net_median(tm[0][2], tm[0][3], REPS);
        for (int b = 0; b < n_libs; b++)
            for (int mode = 0; mode < 4; mode++)
                med[b][mode] = bench_median(tm[b][mode], REPS);
        printf("  %6zu %9.3f %9.3f %13.3f %6.3f %10.3f %9.3f %8s", k,
               med[0][0], med[0][1], med[0][2], med[0][3], net_apply,
               net_both,
               net_both <= 1    ? "both"
               : net_apply <= 1 ? "apply"
                                : "no");
        if (n_libs > 1)
            printf(" %9.3f %9.3f %9.2f %9.2f", med[1][0], med[1][2],
                   med[0][0] / med[1][0], med[0][2] / med[1][2]);
        printf("\n");
    }
    double t0 = bench_now(); /* key[0] is this build's */
    hm_spectral *tmp = spectral(key[0], "id=timing");
    printf("  hm_spectral_new (HKDF + 2^18 membership bits): %.2f ms\n",
           (bench_now() - t0) * 1e3);
    hm_spectral_free(tmp);
    for (int b = 0; b < n_libs; b++) {
        libs[b].sp_free(sp[b]);
        libs[b].lp_free(lp[b]);
        libs[b].key_free(key[b]);
    }
}

/* ---------------------------------------------------- the amplitude */

typedef struct buffers {
    int32_t *ctx, *ids;
    double *lps, *g, *y;
} buffers;

/* p of the key-permutation test for one simulated student. */
static double probe_p(const hm_spectral *sp, hm_spectral *const *null,
                      const sim_cfg *c, buffers *b, double *power)
{
    double p0, pj;
    int rc = sim_power(sp, c, b->ctx, b->ids, b->lps, b->g, b->y, &p0);
    if (rc != HM_OK)
        die("power", rc);
    size_t ge = 0;
    for (size_t j = 0; j < R_NULL; j++) {
        rc = sim_power(null[j], c, b->ctx, b->ids, b->lps, b->g, b->y, &pj);
        if (rc != HM_OK)
            die("null power", rc);
        ge += pj >= p0;
    }
    *power = p0;
    return (1.0 + (double)ge) / (1.0 + R_NULL);
}

static void amplitude(int quick)
{
    static const double amps[] = {0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5};
    static const size_t ns[] = {1000, 10000};
    const int trials = quick ? 2 : 5;
    hm_spectral *null[R_NULL];
    for (uint32_t j = 0; j < R_NULL; j++) {
        hm_key *k = NULL;
        int rc = hm_key_from_label(&k, LABEL, j);
        if (rc != HM_OK)
            die("hm_key_from_label", rc);
        null[j] = spectral(k, NULL);
        hm_key_free(k);
    }
    hm_logprobs *lp = NULL;
    hm_key *srv = NULL;
    unsigned char kb[HM_KEY_BYTES];
    for (int i = 0; i < HM_KEY_BYTES; i++)
        kb[i] = (unsigned char)(7 * i + 1);
    if (hm_key_from_bytes(&srv, kb, sizeof kb) != HM_OK ||
        hm_logprobs_new(&lp, srv, NULL, NULL, NULL, 0) != HM_OK)
        die("setup", HM_EINVAL);
    printf("\namplitude needed (student: %u training contexts per window, "
           "k=%u, logit sd %.1f/%.1f/%.2f; served values hardened with the "
           "hm_logprobs defaults; R=%d, %d trials each):\n",
           SIM_DEFAULT.m_ctx, SIM_DEFAULT.k, SIM_DEFAULT.base_sd,
           SIM_DEFAULT.ctx_sd, SIM_DEFAULT.student_sd, R_NULL, trials);
    printf("  %6s %6s %10s %12s %12s %10s\n", "probes", "amp", "tv_bound",
           "median p", "max p", "p<=1e-3");
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        sim_cfg c = SIM_DEFAULT;
        c.n_probes = ns[t];
        buffers b = {malloc(c.n_probes * sizeof(int32_t)),
                     malloc(c.n_probes * c.k * sizeof(int32_t)),
                     malloc(c.n_probes * c.k * sizeof(double)),
                     malloc(c.n_probes * sizeof(double)),
                     malloc(c.n_probes * sizeof(double))};
        if (!b.ctx || !b.ids || !b.lps || !b.g || !b.y)
            die("malloc", HM_ENOMEM);
        int done = 0;
        for (size_t a = 0; a < sizeof amps / sizeof amps[0] && !done; a++) {
            char spec[64];
            snprintf(spec, sizeof spec, "amp=%g", amps[a]);
            double ps[8], power, tv;
            int hits = 0;
            for (int tr = 0; tr < trials; tr++) {
                hm_spectral *sp = spectral(srv, spec);
                /* fresh student per trial; the served key stays */
                int rc = sim_student(sp, lp, &c, 1000 + (uint64_t)tr, b.ctx,
                                     b.ids, b.lps);
                if (rc != HM_OK)
                    die("student", rc);
                ps[tr] = probe_p(sp, null, &c, &b, &power);
                hits += ps[tr] <= 1e-3;
                if (hm_spectral_param(sp, "tv_bound", &tv) != HM_OK)
                    die("param", HM_EINVAL);
                hm_spectral_free(sp);
            }
            for (int i = 1; i < trials; i++) /* sort */
                for (int j = i; j > 0 && ps[j] < ps[j - 1]; j--) {
                    double x = ps[j];
                    ps[j] = ps[j - 1];
                    ps[j - 1] = x;
                }
            printf("  %6zu %6.2f %10.4f %12.4g %12.4g %7d/%d\n", c.n_probes,
                   amps[a], tv, ps[trials / 2], ps[trials - 1], hits, trials);
            fflush(stdout);
            done = hits == trials;
        }
        free(b.ctx);
        free(b.ids);
        free(b.lps);
        free(b.g);
        free(b.y);
    }
    for (size_t j = 0; j < R_NULL; j++)
        hm_spectral_free(null[j]);
    hm_logprobs_free(lp);
    hm_key_free(srv);
}

int main(int argc, char **argv)
{
    int quick = 0, only_cost = 0, n_libs = 1;
    bench_lib libs[2];
    bench_lib_self(&libs[0]);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--cost") == 0)
            only_cost = 1;
        else if (strcmp(argv[i], "--compare") == 0 && i + 1 < argc) {
            char err[512];
            if (bench_lib_open(&libs[1], argv[++i], err, sizeof err) != 0) {
                fprintf(stderr, "bench-spectral: %s\n", err);
                return 2;
            }
            n_libs = 2;
        } else {
            fprintf(stderr, "usage: bench-spectral [--quick] [--cost] "
                            "[--compare LIBHALLMARK.so]\n");
            return 2;
        }
    }
    cost(libs, n_libs);
    if (!only_cost)
        amplitude(quick);
    return 0;
}
