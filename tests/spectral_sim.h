/*
 * spectral_sim.h - a simulated teacher, API and distilled student for the
 * spectral fingerprint channel (hm_spectral_new(3)), shared by
 * tests/test_spectral.c and tools/bench_spectral.c.  Public API only.
 *
 * The teacher: for probe window w (one token id, distinct per probe) a base
 * row of SIM_CAND logits, gaussian with sd base_sd, on SIM_CAND distinct
 * random token ids; each of m_ctx training contexts ending in w adds
 * gaussian noise of sd ctx_sd to the logits.  The API returns the top k of
 * each context's row (the rest of the vocabulary has no mass), with the
 * spectral channel applied when sp is not NULL, then hardened by lp.  The
 * student, distilled from those answers: for each window, the average of
 * the m_ctx returned distributions (each renormalized over its k tokens),
 * then gaussian logit noise of sd student_sd.  Probing the student at w
 * returns its top k log-probabilities.
 */
#ifndef HM_SPECTRAL_SIM_H
#define HM_SPECTRAL_SIM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hallmark.h"

#define SIM_CAND 64
#define SIM_VOCAB 50000
#define SIM_K_MAX 64

typedef struct sim_cfg {
    size_t n_probes;
    unsigned m_ctx;   /* training contexts per window */
    unsigned k;       /* returned top k, <= SIM_CAND */
    double base_sd;   /* teacher logits */
    double ctx_sd;    /* context-to-context variation */
    double student_sd; /* the student's own error, in logits */
} sim_cfg;

static const sim_cfg SIM_DEFAULT = {2000, 4, 20, 2.5, 1.0, 0.3};

static inline uint64_t sim_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static inline double sim_unit(uint64_t *s)
{
    return ((double)(sim_next(s) >> 11) + 0.5) * 0x1p-53;
}

static inline double sim_gauss(uint64_t *s)
{
    double u1 = sim_unit(s), u2 = sim_unit(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Indices of the k largest of x[0..n-1], largest first. */
static inline void sim_topk(const double *x, unsigned n, unsigned k,
                            unsigned *idx)
{
    unsigned char used[SIM_CAND];
    memset(used, 0, sizeof used);
    for (unsigned j = 0; j < k; j++) {
        unsigned best = 0;
        double bv = -INFINITY;
        for (unsigned i = 0; i < n; i++)
            if (!used[i] && x[i] > bv) {
                bv = x[i];
                best = i;
            }
        used[best] = 1;
        idx[j] = best;
    }
}

/* log-softmax of x[0..n-1] into out */
static inline void sim_logsoftmax(const double *x, unsigned n, double *out)
{
    double mx = -INFINITY, sum = 0;
    for (unsigned i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (unsigned i = 0; i < n; i++)
        sum += exp(x[i] - mx);
    for (unsigned i = 0; i < n; i++)
        out[i] = x[i] - mx - log(sum);
}

/* The student's answers on n_probes probes: ctx[i] the window (one id),
 * ids and lps k per probe.  Returns HM_OK or the first library error. */
static inline int sim_student(const hm_spectral *sp, const hm_logprobs *lp,
                              const sim_cfg *c, uint64_t seed, int32_t *ctx,
                              int32_t *ids, double *lps)
{
    uint64_t s = seed;
    int32_t cand[SIM_CAND];
    double base[SIM_CAND], row[SIM_CAND], lrow[SIM_CAND], avg[SIM_CAND];
    unsigned top[SIM_K_MAX];
    const unsigned k = c->k;
    for (size_t p = 0; p < c->n_probes; p++) {
        int32_t w = (int32_t)(p + 1);
        ctx[p] = w;
        for (unsigned i = 0; i < SIM_CAND; i++) {
            int dup;
            do { /* distinct ids */
                cand[i] = (int32_t)(sim_next(&s) % SIM_VOCAB);
                dup = 0;
                for (unsigned j = 0; j < i; j++)
                    dup |= cand[j] == cand[i];
            } while (dup);
            base[i] = c->base_sd * sim_gauss(&s);
            avg[i] = 0;
        }
        hm_row r = {&ctx[p], 1, NULL, 0.0f, 0.0};
        for (unsigned m = 0; m < c->m_ctx; m++) {
            int32_t tid[SIM_K_MAX];
            double tl[SIM_K_MAX], mass = 0;
            unsigned pos[SIM_K_MAX];
            for (unsigned i = 0; i < SIM_CAND; i++)
                row[i] = base[i] + c->ctx_sd * sim_gauss(&s);
            sim_logsoftmax(row, SIM_CAND, lrow);
            sim_topk(lrow, SIM_CAND, k, top);
            for (unsigned j = 0; j < k; j++) {
                tid[j] = cand[top[j]];
                tl[j] = lrow[top[j]];
                pos[j] = top[j];
            }
            int rc;
            if (sp != NULL && (rc = hm_spectral_apply(sp, &r, tid, tl, k)) !=
                                  HM_OK)
                return rc;
            /* harden keeps the order with KEEP_ORDER: pos[] still maps */
            if (lp != NULL &&
                (rc = hm_logprobs_harden(lp, &r, tid, tl, k,
                                         HM_LOGPROBS_KEEP_ORDER)) != HM_OK)
                return rc;
            for (unsigned j = 0; j < k; j++)
                mass += exp(tl[j]);
            for (unsigned j = 0; j < k; j++)
                avg[pos[j]] += exp(tl[j]) / mass / c->m_ctx;
        }
        for (unsigned i = 0; i < SIM_CAND; i++)
            row[i] = log(avg[i] + 1e-6) + c->student_sd * sim_gauss(&s);
        sim_logsoftmax(row, SIM_CAND, lrow);
        sim_topk(lrow, SIM_CAND, k, top);
        for (unsigned j = 0; j < k; j++) {
            ids[p * k + j] = cand[top[j]];
            lps[p * k + j] = lrow[top[j]];
        }
    }
    return HM_OK;
}

/* The Lomb-Scargle power of the probes under sp (g and share buffers of
 * n_probes doubles supplied by the caller). */
static inline int sim_power(const hm_spectral *sp, const sim_cfg *c,
                            const int32_t *ctx, const int32_t *ids,
                            const double *lps, double *g, double *y,
                            double *power)
{
    double f;
    int rc = hm_spectral_param(sp, "freq", &f);
    for (size_t p = 0; rc == HM_OK && p < c->n_probes; p++) {
        rc = hm_spectral_point(sp, &ctx[p], 1, &g[p], NULL);
        if (rc == HM_OK)
            rc = hm_spectral_share(sp, ids + p * c->k, lps + p * c->k, c->k,
                                   &y[p]);
    }
    if (rc == HM_OK)
        rc = hm_lomb_scargle(g, y, c->n_probes, f, power);
    return rc;
}

#endif
