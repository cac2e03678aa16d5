/*
 * test_schemes.c - statistical behaviour of the schemes.
 *
 *   - gumbel chooses argmax l/T - ln(-ln u) (checked against a reference
 *     built on the public PRF), is distortion-free: over many contexts the
 *     chosen tokens follow softmax(logits / T); its scores are Exp(1) under
 *     the null and clearly larger for the tokens it chose (exactly as much
 *     larger as theory says);
 *   - unwatermarked sampling (no sampling channel, or a masked window) follows
 *     softmax with the caller's uniforms;
 *   - kgw greens a gamma fraction of the vocabulary, adds exactly delta to
 *     green logits and nothing to red ones, shifts the green mass as the
 *     formula predicts, and works under greedy decoding;
 *   - tournament g-values are fair coins under a wrong key and biased under
 *     the right one; the tournament is distortion-free over keys;
 *   - greedy decoding is the unwatermarked argmax;
 *   - two channels and two tenants have independent values;
 *   - the spec parser refuses bad specs and its canonical form round-trips.
 *
 * Every test uses fixed seeds, so its outcome is reproducible.  Thresholds:
 *   - Pearson chi-square against the 0.999 quantile of chi-square(df);
 *   - z-tests (binomial or mean) against |z| < 4.5 (two-sided 6.8e-6), and
 *     |z| < 5.5 (3.8e-8 each) for families of up to a few thousand;
 *   - two-sided Kolmogorov-Smirnov: sqrt(n) D_n < 1.9495, the 0.999
 *     quantile of the Kolmogorov distribution.
 * Most statistics come with a negative control showing that the same
 * statistic rejects a wrong hypothesis, so that a test cannot pass
 * vacuously.  HM_TEST_VERBOSE=1 prints every statistic as it is checked.
 */
#include "testutil.h"

#include <math.h>

/* 0.999 quantiles of chi-square with df degrees of freedom (regularised
 * incomplete gamma, solved by bisection). */
#define CHI2_999_DF1 10.828
#define CHI2_999_DF7 24.322
#define CHI2_999_DF11 31.264
#define CHI2_999_DF15 37.697

#define Z_BOUND 4.5
#define Z_BOUND_FAMILY 5.5
#define KS_999 1.9495

#define EULER_GAMMA 0.57721566490153286

/* Check's ck_assert* report every passing check to the parent process
 * (a system call each); these only call into Check on failure, so that
 * the inner loops below stay cheap. */
#define REQUIRE(cond)                                                         \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg("%s", #cond);                                        \
    } while (0)
#define REQUIRE_OK(expr)                                                      \
    do {                                                                      \
        int rc_ = (expr);                                                     \
        if (rc_ != HM_OK)                                                     \
            ck_abort_msg("%s returned %d", #expr, rc_);                       \
    } while (0)
#define REQUIRE_EQ(a, b)                                                      \
    do {                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                   \
        if (a_ != b_)                                                         \
            ck_abort_msg("%s == %s (%lld vs %lld)", #a, #b, a_, b_);          \
    } while (0)

/* A statistical check: also printed, passing or not, when HM_TEST_VERBOSE
 * is set, to see how far each statistic is from its bound. */
#define STAT(cond, ...)                                                       \
    do {                                                                      \
        if (getenv("HM_TEST_VERBOSE") != NULL) {                              \
            fprintf(stderr, "%s:%d: ", __func__, __LINE__);                   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
        ck_assert_msg(cond, __VA_ARGS__);                                     \
    } while (0)

/* A fixed 12-token distribution, logits in decreasing order. */
#define K12 12
static const float LOGITS12[K12] = {2.0f, 1.6f, 1.3f,  1.1f,  0.8f,  0.5f,
                                    0.3f, 0.0f, -0.4f, -0.8f, -1.2f, -1.7f};

/* ---------------------------------------------------------------- helpers */

/* A random context of n ids below 2^30 (distinct windows in practice). */
static void rand_ctx(uint64_t *s, int32_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (int32_t)(test_rand(s) >> 34);
}

/* softmax(l / T), with l / T formed in float as the library forms it;
 * -INFINITY gets probability 0. */
static void softmax(const float *l, size_t n, float temperature, double *p)
{
    float inv_t = 1.0f / temperature;
    double mx = -INFINITY, z = 0;
    for (size_t i = 0; i < n; i++)
        if (l[i] > -INFINITY && (double)(l[i] * inv_t) > mx)
            mx = (double)(l[i] * inv_t);
    for (size_t i = 0; i < n; i++) {
        p[i] = l[i] > -INFINITY ? exp((double)(l[i] * inv_t) - mx) : 0.0;
        z += p[i];
    }
    for (size_t i = 0; i < n; i++)
        p[i] /= z;
}

/* Pearson's statistic of counts against probabilities p; a count in a
 * bin of probability 0 makes it infinite. */
static double chi2(const unsigned long *counts, const double *p, size_t n,
                   unsigned long total)
{
    double x = 0;
    for (size_t i = 0; i < n; i++) {
        double e = p[i] * (double)total;
        if (e == 0) {
            if (counts[i] != 0)
                return INFINITY;
            continue;
        }
        x += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
    }
    return x;
}

/* z of k successes in a sum of Bernoulli trials of mean mu and variance
 * var. */
static double zscore(double k, double mu, double var)
{
    return (k - mu) / sqrt(var);
}

/* Index of the first largest element (the argmax greedy decoding takes). */
static int32_t first_argmax(const float *l, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return (int32_t)best;
}

/* H(x) = psi(x + 1) + Euler's gamma, the harmonic number at real x. */
static double harmonic(double x)
{
    double r = 0;
    x += 1;
    while (x < 10) {
        r -= 1 / x;
        x += 1;
    }
    double f = 1 / (x * x);
    return r + log(x) - 0.5 / x -
           f * (1.0 / 12 - f * (1.0 / 120 -
                                f * (1.0 / 252 - f * (1.0 / 240 - f / 132)))) +
           EULER_GAMMA;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sqrt(n) times the two-sided Kolmogorov-Smirnov distance between the
 * scores and Exp(1).  Sorts scores. */
static double ks_exp(double *scores, size_t n)
{
    double d = 0;
    qsort(scores, n, sizeof *scores, cmp_double);
    for (size_t i = 0; i < n; i++) {
        double f = -expm1(-scores[i]); /* Exp(1) cdf */
        double hi = (double)(i + 1) / (double)n - f;
        double lo = f - (double)i / (double)n;
        d = hi > d ? hi : d;
        d = lo > d ? lo : d;
    }
    return sqrt((double)n) * d;
}

static double param(const hm_ctx *c, unsigned ch, const char *name)
{
    double v = NAN;
    ck_assert_msg(hm_ctx_channel_param(c, ch, name, &v) == HM_OK, "param %s",
                  name);
    return v;
}

/* One token chosen by the context's sampler for a single dense row. */
static int32_t select1(const hm_ctx *c, const float *logits, size_t n,
                       const hm_row *row, unsigned *flags)
{
    int32_t tok = -1;
    unsigned f = 0;
    REQUIRE_OK(hm_select_dense(c, logits, 1, n, n, row, &tok, &f));
    REQUIRE(tok >= 0 && (size_t)tok < n);
    if (flags)
        *flags = f;
    return tok;
}

/* Draw `draws` tokens with the keyed sampler, a fresh random 4-token
 * context per draw and a constant uniform (which keyed sampling must not
 * read). */
static void keyed_counts(const hm_ctx *c, const float *logits, size_t n,
                         float temperature, unsigned long draws, uint64_t seed,
                         unsigned long *counts)
{
    uint64_t s = seed;
    memset(counts, 0, n * sizeof *counts);
    for (unsigned long d = 0; d < draws; d++) {
        int32_t ctx[4];
        unsigned f;
        rand_ctx(&s, ctx, 4);
        hm_row row = {ctx, 4, NULL, temperature, 0.5};
        counts[select1(c, logits, n, &row, &f)]++;
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
    }
}

/* ------------------------------------------------------------- gumbel */

/* Over random contexts, gumbel's choices follow softmax(l / T), at T = 1
 * and T = 0.7; a -INFINITY logit is never chosen.  Chi-square with
 * df = 11 (12 finite tokens).  Control: the same counts against the other
 * temperature's softmax are rejected by far. */
START_TEST(test_gumbel_distortion_free)
{
    hm_key *k = test_key(11);
    hm_ctx *c = test_ctx(k, "gumbel");
    const unsigned long draws = 20000;
    const float temps[2] = {1.0f, 0.7f};
    float logits[K12 + 1];
    memcpy(logits, LOGITS12, sizeof LOGITS12);
    logits[K12] = -INFINITY;
    for (int t = 0; t < 2; t++) {
        unsigned long counts[K12 + 1];
        double p[K12 + 1], q[K12 + 1];
        keyed_counts(c, logits, K12 + 1, temps[t], draws, 1000u + t, counts);
        REQUIRE_EQ(counts[K12], 0);
        softmax(logits, K12 + 1, temps[t], p);
        softmax(logits, K12 + 1, temps[1 - t], q);
        double x = chi2(counts, p, K12 + 1, draws);
        double xq = chi2(counts, q, K12 + 1, draws);
        STAT(x < CHI2_999_DF11, "T=%g: chi2 %g (bound %g)", temps[t], x,
             CHI2_999_DF11);
        STAT(xq > 10 * CHI2_999_DF11, "T=%g: control chi2 %g (must exceed %g)",
             temps[t], xq, 10 * CHI2_999_DF11);
    }
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* The same over a 2000-token vocabulary (several chunks of the race, whose
 * cheap bounds skip most candidates): tokens ranked by logit and binned
 * into 16 bins of about equal probability, df = 15.  Control: the same
 * counts against the bins' masses at temperature 0.7. */
static const float *sort_logits;

static int cmp_by_logit(const void *a, const void *b)
{
    float x = sort_logits[*(const int *)a], y = sort_logits[*(const int *)b];
    return (x < y) - (x > y);
}

START_TEST(test_gumbel_large_vocab)
{
    enum { V = 2000, BINS = 16 };
    hm_key *k = test_key(12);
    hm_ctx *c = test_ctx(k, "gumbel:h=3");
    static float logits[V];
    static double p[V], q[V];
    static unsigned long counts[V];
    static int order[V];
    unsigned long bc[BINS] = {0};
    double bp[BINS] = {0}, bq[BINS] = {0};
    uint64_t s = 77;
    const unsigned long draws = 20000;
    for (int i = 0; i < V; i++) {
        logits[i] = (float)(6.0 * test_uniform(&s) - 3.0);
        order[i] = i;
    }
    sort_logits = logits;
    qsort(order, V, sizeof order[0], cmp_by_logit);
    softmax(logits, V, 1.0f, p);
    softmax(logits, V, 0.7f, q);
    keyed_counts(c, logits, V, 1.0f, draws, 2024, counts);
    double cum = 0;
    for (int r = 0; r < V; r++) {
        int i = order[r];
        unsigned b = (unsigned)(cum * BINS);
        b = b < BINS ? b : BINS - 1;
        cum += p[i];
        bp[b] += p[i];
        bq[b] += q[i];
        bc[b] += counts[i];
    }
    for (int b = 0; b < BINS; b++)
        REQUIRE(bp[b] > 0.03); /* expected counts > 600 */
    double x = chi2(bc, bp, BINS, draws), xq = chi2(bc, bq, BINS, draws);
    STAT(x < CHI2_999_DF15, "chi2 %g (bound %g)", x, CHI2_999_DF15);
    STAT(xq > 10 * CHI2_999_DF15, "control chi2 %g (must exceed %g)", xq,
         10 * CHI2_999_DF15);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* The gumbel choice is exactly argmax_v l_v / T - ln(-ln u_v), u_v =
 * hm_prf_to_unit(hm_token_prf(window, v)), computed here in double from
 * the public PRF (-ln u through log1p of the exact complement near 1).
 * The library works in float, so rows whose two best reference keys are
 * within 1e-3 are not compared (they must stay under 1%).  Cases: one
 * dominant token placed last (its u is often below 1/2, where the race's
 * cheap bounds are least tight), the 12-token distribution at T = 0.7,
 * and 1100 tokens (three chunks) at T = 1.3. */
static double ref_gumbel_key(uint64_t x, float l, float inv_t)
{
    double u = hm_prf_to_unit(x);
    double e = u <= 0.5 ? -log(u) : -log1p(-hm_prf_to_unit(~x));
    return (double)(l * inv_t) - log(e);
}

START_TEST(test_gumbel_matches_reference)
{
    enum { VMAX = 1100 };
    static float logits[VMAX];
    static const struct {
        size_t n;
        float temperature;
        int draws;
        int kind; /* 0 dominant last, 1 LOGITS12, 2 random */
    } cases[] = {
        {12, 1.0f, 20000, 0}, {12, 0.7f, 5000, 1}, {VMAX, 1.3f, 300, 2}};
    hm_key *k = test_key(15);
    hm_ctx *c = test_ctx(k, "gumbel");
    uint64_t s = 31415;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        size_t n = cases[ci].n;
        float inv_t = 1.0f / cases[ci].temperature;
        int skipped = 0;
        for (size_t v = 0; v < n; v++)
            logits[v] = cases[ci].kind == 0 ? (v == n - 1 ? 5.0f : 0.0f)
                        : cases[ci].kind == 1
                            ? LOGITS12[v]
                            : (float)(8 * test_uniform(&s) - 4);
        for (int d = 0; d < cases[ci].draws; d++) {
            int32_t ctx[4];
            unsigned f;
            rand_ctx(&s, ctx, 4);
            hm_row row = {ctx, 4, NULL, cases[ci].temperature, 0.5};
            int32_t tok = select1(c, logits, n, &row, &f);
            REQUIRE_EQ(f, HM_STEP_WATERMARKED);
            double best = -INFINITY, second = -INFINITY;
            int32_t arg = -1;
            for (size_t v = 0; v < n; v++) {
                uint64_t x;
                REQUIRE_OK(hm_token_prf(c, 0, ctx, 4, (int32_t)v, &x));
                double key = ref_gumbel_key(x, logits[v], inv_t);
                if (key > best) {
                    second = best;
                    best = key;
                    arg = (int32_t)v;
                } else if (key > second) {
                    second = key;
                }
            }
            if (best - second < 1e-3) {
                skipped++;
                continue;
            }
            if (tok != arg)
                ck_abort_msg("case %zu draw %d: chose %d, reference %d (gap "
                             "%g)",
                             ci, d, tok, arg, best - second);
        }
        STAT(skipped * 100 < cases[ci].draws, "case %zu: %d near ties", ci,
             skipped);
    }
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* Gumbel scores under the null: random (window, token) tuples score
 * -ln(1 - u) with u = hm_prf_to_unit(prf), which is Exp(1): mean 1
 * (z-test, variance 1) and two-sided KS. */
START_TEST(test_gumbel_score_null)
{
    enum { N = 100000 };
    hm_key *k = test_key(13);
    hm_ctx *c = test_ctx(k, "gumbel");
    static double scores[N];
    uint64_t s = 4242;
    double sum = 0;
    for (int i = 0; i < N; i++) {
        int32_t ctx[4];
        uint64_t x;
        rand_ctx(&s, ctx, 4);
        int32_t tok = (int32_t)(test_rand(&s) >> 34);
        REQUIRE_OK(hm_token_prf(c, 0, ctx, 4, tok, &x));
        REQUIRE_OK(hm_token_score(c, 0, ctx, 4, tok, &scores[i]));
        /* 1 - u is exact (52-bit map), so this is bit-exact. */
        REQUIRE(scores[i] == -log(1.0 - hm_prf_to_unit(x)));
        sum += scores[i];
    }
    double z = zscore(sum, N, N);
    STAT(fabs(z) < Z_BOUND, "mean score %g, z = %g", sum / N, z);
    double ks = ks_exp(scores, N);
    STAT(ks < KS_999, "KS sqrt(n)D = %g", ks);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* Tokens gumbel chose score clearly above 1: for softmax p the expected
 * score of the choice is sum_v p_v H(1/p_v) (the choice maximises
 * u_v^(1/p_v), whose maximum M is uniform and independent of the argmax,
 * and u_v = M^(p_v)).  The mean must match it (z with the sample
 * variance), exceed 1.5, and the KS statistic against Exp(1), which passes
 * under the null, must reject by far. */
START_TEST(test_gumbel_score_chosen)
{
    enum { N = 10000 };
    hm_key *k = test_key(14);
    hm_ctx *c = test_ctx(k, "gumbel");
    static double scores[N];
    const float temps[2] = {1.0f, 0.7f};
    for (int t = 0; t < 2; t++) {
        uint64_t s = 99u + (uint64_t)t;
        double p[K12], expect = 0, sum = 0, sum2 = 0;
        softmax(LOGITS12, K12, temps[t], p);
        for (int v = 0; v < K12; v++)
            expect += p[v] * harmonic(1.0 / p[v]);
        for (int i = 0; i < N; i++) {
            int32_t ctx[4];
            unsigned f;
            rand_ctx(&s, ctx, 4);
            hm_row row = {ctx, 4, NULL, temps[t], 0.5};
            int32_t tok = select1(c, LOGITS12, K12, &row, &f);
            REQUIRE_EQ(f, HM_STEP_WATERMARKED);
            REQUIRE_OK(hm_token_score(c, 0, ctx, 4, tok, &scores[i]));
            sum += scores[i];
            sum2 += scores[i] * scores[i];
        }
        double mean = sum / N, var = sum2 / N - mean * mean;
        double z = (mean - expect) / sqrt(var / N);
        STAT(fabs(z) < Z_BOUND, "T=%g: mean %g, theory %g, z %g", temps[t],
             mean, expect, z);
        STAT(mean > 1.5, "T=%g: mean score %g", temps[t], mean);
        REQUIRE(hm_log10_sf_gamma(N, sum) < -100);
        double ks = ks_exp(scores, N);
        STAT(ks > 10 * KS_999, "T=%g: KS %g", temps[t], ks);
    }
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------------ unwatermarked */

/* Without a sampling channel, selection samples softmax(l / T) with the
 * caller's uniforms (flag FALLBACK), at T = 1 and 0.7; df = 11.  Control:
 * a constant uniform always picks the same token. */
START_TEST(test_fallback_matches_softmax)
{
    hm_key *k = test_key(21);
    hm_ctx *c = test_ctx(k, "kgw");
    const unsigned long draws = 20000;
    const float temps[2] = {1.0f, 0.7f};
    for (int t = 0; t < 2; t++) {
        unsigned long counts[K12] = {0}, fixed[K12] = {0};
        double p[K12];
        uint64_t s = 555u + (uint64_t)t;
        for (unsigned long d = 0; d < draws; d++) {
            unsigned f;
            hm_row row = {NULL, 0, NULL, temps[t], test_uniform(&s)};
            counts[select1(c, LOGITS12, K12, &row, &f)]++;
            REQUIRE_EQ(f, HM_STEP_FALLBACK);
            row.uniform = 0.3;
            fixed[select1(c, LOGITS12, K12, &row, NULL)]++;
        }
        softmax(LOGITS12, K12, temps[t], p);
        double x = chi2(counts, p, K12, draws);
        double xf = chi2(fixed, p, K12, draws);
        STAT(x < CHI2_999_DF11, "T=%g: chi2 %g", temps[t], x);
        STAT(xf > 100 * CHI2_999_DF11, "control chi2 %g", xf);
    }
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* A window already seen in the sequence is masked: the choice falls back
 * to the caller's uniform (MASKED | FALLBACK) and follows softmax even
 * though the window never changes.  Control: the same window without the
 * sequence state is keyed, hence one fixed token every time.  kgw leaves
 * a seen window's logits alone. */
START_TEST(test_masked_fallback)
{
    hm_key *k = test_key(22);
    hm_ctx *c = test_ctx(k, "gumbel");
    hm_seq *seq = NULL;
    const int32_t prompt[4] = {1, 2, 3, 4};
    REQUIRE_OK(hm_seq_new(&seq, c, 64));
    REQUIRE_OK(hm_seq_reset(seq, prompt, 4));
    REQUIRE_OK(hm_seq_accept(seq, 5)); /* remembers 1,2,3,4 */
    const unsigned long draws = 20000;
    unsigned long counts[K12] = {0}, keyed[K12] = {0};
    double p[K12];
    uint64_t s = 31337;
    for (unsigned long d = 0; d < draws; d++) {
        unsigned f;
        hm_row row = {prompt, 4, seq, 1.0f, test_uniform(&s)};
        counts[select1(c, LOGITS12, K12, &row, &f)]++;
        REQUIRE_EQ(f, HM_STEP_MASKED | HM_STEP_FALLBACK);
        row.seq = NULL;
        keyed[select1(c, LOGITS12, K12, &row, &f)]++;
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
    }
    /* The sequence's own (unseen) window 2,3,4,5 is watermarked. */
    {
        unsigned f;
        hm_row row = {NULL, 0, seq, 1.0f, 0.5};
        (void)select1(c, LOGITS12, K12, &row, &f);
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
    }
    softmax(LOGITS12, K12, 1.0f, p);
    double x = chi2(counts, p, K12, draws);
    STAT(x < CHI2_999_DF11, "chi2 %g", x);
    unsigned long mx = 0;
    for (int i = 0; i < K12; i++)
        mx = keyed[i] > mx ? keyed[i] : mx;
    REQUIRE_EQ(mx, draws);
    REQUIRE(chi2(keyed, p, K12, draws) > 100 * CHI2_999_DF11);
    hm_seq_free(seq);
    hm_ctx_free(c);

    /* kgw: a seen window is not biased at all (MASKED), an unseen one is. */
    c = test_ctx(k, "kgw");
    REQUIRE_OK(hm_seq_new(&seq, c, 64));
    REQUIRE_OK(hm_seq_reset(seq, prompt, 4));
    REQUIRE_OK(hm_seq_accept(seq, 5)); /* remembers the window 4 */
    {
        float l[K12], b[K12];
        unsigned f;
        const int32_t seen[2] = {9, 4};
        hm_row row = {seen, 2, seq, 1.0f, 0.5};
        memcpy(l, LOGITS12, sizeof l);
        REQUIRE_OK(hm_bias_dense(c, l, 1, K12, K12, &row, &f));
        REQUIRE_EQ(f, HM_STEP_MASKED);
        REQUIRE(memcmp(l, LOGITS12, sizeof l) == 0);
        row = (hm_row){NULL, 0, seq, 1.0f, 0.5}; /* window 5 */
        REQUIRE_OK(hm_bias_dense(c, l, 1, K12, K12, &row, &f));
        REQUIRE_EQ(f, HM_STEP_BIASED);
        const int32_t five[1] = {5};
        row = (hm_row){five, 1, NULL, 1.0f, 0.5};
        memcpy(b, LOGITS12, sizeof b);
        REQUIRE_OK(hm_bias_dense(c, b, 1, K12, K12, &row, &f));
        REQUIRE(memcmp(l, b, sizeof l) == 0);
    }
    hm_seq_free(seq);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* ---------------------------------------------------------------- kgw */

/* Over 2000 distinct windows and a 2048-token vocabulary, biased zero
 * logits are green (== delta) for a "green" fraction overall (z), for
 * every token across windows and for every window across tokens
 * (Binomial, |z| < 5.5 over ~4000 tests).  Control: one window repeated
 * makes the per-token statistic explode. */
START_TEST(test_kgw_green_fraction)
{
    enum { W = 2000, V = 2048, STRIDE = V + 3, BATCH = 50 };
    static const char *specs[] = {"kgw", "kgw:gamma=0.3,delta=1.5"};
    static float logits[BATCH * STRIDE];
    static unsigned long tcount[V], rcount[V];
    hm_key *k = test_key(31);
    for (size_t sp = 0; sp < 2; sp++) {
        hm_ctx *c = test_ctx(k, specs[sp]);
        double gamma = param(c, 0, "gamma"), green = param(c, 0, "green");
        float delta = (float)param(c, 0, "delta");
        REQUIRE(fabs(green - gamma) <= 0x1p-60);
        REQUIRE(param(c, 0, "h") == 1 && param(c, 0, "window") == 1);
        REQUIRE(param(c, 0, "seeding") == HM_SEEDING_LEFTHASH);
        memset(tcount, 0, sizeof tcount);
        memset(rcount, 0, sizeof rcount);
        unsigned long total = 0;
        double wz_max = 0;
        for (int w0 = 0; w0 < W; w0 += BATCH) {
            int32_t ctx[BATCH], fixed = 123456;
            hm_row rows[BATCH], frows[BATCH];
            unsigned flags[BATCH];
            for (int r = 0; r < BATCH; r++) {
                ctx[r] = (int32_t)((w0 + r) * 104729 + 17);
                rows[r] = (hm_row){&ctx[r], 1, NULL, 0, 0};
                frows[r] = (hm_row){&fixed, 1, NULL, 0, 0};
            }
            memset(logits, 0, sizeof logits);
            REQUIRE_OK(
                hm_bias_dense(c, logits, BATCH, V, STRIDE, rows, flags));
            for (int r = 0; r < BATCH; r++) {
                unsigned long g = 0;
                REQUIRE_EQ(flags[r], HM_STEP_BIASED);
                for (int v = 0; v < V; v++) {
                    float l = logits[r * STRIDE + v];
                    REQUIRE(l == 0.0f || l == delta);
                    if (l == delta) {
                        g++;
                        tcount[v]++;
                    }
                }
                /* The padding between rows is never touched. */
                for (int v = V; v < STRIDE; v++)
                    REQUIRE(logits[r * STRIDE + v] == 0.0f);
                total += g;
                double z = fabs(
                    zscore((double)g, V * green, V * green * (1 - green)));
                wz_max = z > wz_max ? z : wz_max;
            }
            memset(logits, 0, sizeof logits);
            REQUIRE_OK(
                hm_bias_dense(c, logits, BATCH, V, STRIDE, frows, NULL));
            for (int r = 0; r < BATCH; r++)
                for (int v = 0; v < V; v++)
                    rcount[v] += logits[r * STRIDE + v] == delta;
        }
        double n = (double)W * V;
        double z = zscore((double)total, n * green, n * green * (1 - green));
        STAT(fabs(z) < Z_BOUND, "%s: green %g vs %g, z %g", specs[sp],
             total / n, green, z);
        STAT(wz_max < Z_BOUND_FAMILY, "%s: window z %g", specs[sp], wz_max);
        double tz_max = 0, rz_max = 0;
        for (int v = 0; v < V; v++) {
            double m = W * green, var = W * green * (1 - green);
            double tz = fabs(zscore((double)tcount[v], m, var));
            double rz = fabs(zscore((double)rcount[v], m, var));
            tz_max = tz > tz_max ? tz : tz_max;
            rz_max = rz > rz_max ? rz : rz_max;
        }
        STAT(tz_max < Z_BOUND_FAMILY, "%s: token z %g", specs[sp], tz_max);
        STAT(rz_max > 10 * Z_BOUND_FAMILY, "control z %g", rz_max);
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* hm_bias_dense adds exactly (float)delta to the logits of the tokens
 * hm_token_score calls green and leaves red ones bit-for-bit alone, for
 * several gammas, deltas, widths and both seedings; a row without context
 * uses the padded window. */
START_TEST(test_kgw_bias_exact)
{
    enum { V = 1000, ROWS = 12 };
    static const char *specs[] = {
        "kgw",
        "kgw:gamma=0.4,delta=1.7",
        "kgw:h=3,gamma=0.1,delta=0.3",
        "kgw:seeding=selfhash",
        "kgw:seeding=selfhash,h=2,gamma=0.6,delta=5",
    };
    hm_key *k = test_key(32);
    uint64_t s = 8080;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        hm_ctx *c = test_ctx(k, specs[sp]);
        float delta = (float)param(c, 0, "delta");
        unsigned long green = 0, red = 0;
        for (int r = 0; r < ROWS; r++) {
            float orig[V], biased[V];
            int32_t ctx[4];
            size_t nctx = r == 0 ? 0 : 4;
            unsigned f = 0;
            rand_ctx(&s, ctx, 4);
            for (int v = 0; v < V; v++)
                orig[v] = biased[v] = (float)(10 * test_uniform(&s) - 5);
            hm_row row = {nctx ? ctx : NULL, nctx, NULL, 0, 0};
            REQUIRE_OK(hm_bias_dense(c, biased, 1, V, V, &row, &f));
            REQUIRE_EQ(f, HM_STEP_BIASED);
            for (int v = 0; v < V; v++) {
                double sc;
                REQUIRE_OK(
                    hm_token_score(c, 0, nctx ? ctx : NULL, nctx, v, &sc));
                if (sc == 1.0) {
                    if (!(biased[v] == orig[v] + delta))
                        ck_abort_msg("%s: green token %d", specs[sp], v);
                    green++;
                } else {
                    REQUIRE(sc == 0.0);
                    if (memcmp(&biased[v], &orig[v], sizeof(float)) != 0)
                        ck_abort_msg("%s: red token %d changed", specs[sp], v);
                    red++;
                }
            }
        }
        ck_assert_uint_gt(green, 0);
        ck_assert_uint_gt(red, 0);
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* The green-list mass after biasing uniform logits is
 * gamma' e^delta / (1 + gamma' (e^delta - 1)) with gamma' = G/V the
 * window's green fraction, exactly (1e-12); averaged over windows it
 * matches the formula at gamma (z with the delta-method variance of
 * gamma', plus the formula's curvature bias as slack). */
static double green_mass_formula(double gamma, double delta)
{
    return gamma * exp(delta) / (1 + gamma * expm1(delta));
}

/* Green probability mass of biased logits (T = 1), and G. */
static double green_mass(const float *biased, const float *orig, size_t n,
                         unsigned long *n_green)
{
    double mx = -INFINITY, zg = 0, z = 0;
    unsigned long g = 0;
    for (size_t i = 0; i < n; i++)
        mx = biased[i] > mx ? biased[i] : mx;
    for (size_t i = 0; i < n; i++) {
        double e = exp((double)biased[i] - mx);
        z += e;
        if (biased[i] != orig[i]) {
            zg += e;
            g++;
        }
    }
    if (n_green)
        *n_green = g;
    return zg / z;
}

START_TEST(test_kgw_green_mass_uniform)
{
    enum { V = 1000, W = 400 };
    hm_key *k = test_key(33);
    hm_ctx *c = test_ctx(k, "kgw");
    double green = param(c, 0, "green"), delta = param(c, 0, "delta");
    double sum = 0;
    uint64_t s = 1234;
    for (int w = 0; w < W; w++) {
        float orig[V], biased[V];
        int32_t ctx[1];
        unsigned long g;
        rand_ctx(&s, ctx, 1);
        for (int v = 0; v < V; v++)
            orig[v] = biased[v] = 0.0f;
        hm_row row = {ctx, 1, NULL, 0, 0};
        REQUIRE_OK(hm_bias_dense(c, biased, 1, V, V, &row, NULL));
        double m = green_mass(biased, orig, V, &g);
        double want = green_mass_formula((double)g / V, delta);
        if (!(fabs(m - want) < 1e-12))
            ck_abort_msg("mass %.17g vs %.17g", m, want);
        sum += m;
    }
    double f = green_mass_formula(green, delta);
    double a = expm1(delta);
    double d1 = exp(delta) / pow(1 + green * a, 2);
    double d2 = 2 * exp(delta) * a / pow(1 + green * a, 3);
    double var_g = green * (1 - green) / V;
    double sd = d1 * sqrt(var_g / W);
    double bias = 0.5 * d2 * var_g;
    STAT(fabs(sum / W - f) < Z_BOUND * sd + bias,
         "mean mass %g vs formula %g (sd %g)", sum / W, f, sd);
    /* Control: the unbiased green mass would be gamma, far away. */
    REQUIRE(fabs(sum / W - green) > 100 * sd);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* Sampling the biased logits with the caller's uniforms (a kgw-only
 * context: FALLBACK) yields green tokens at the rate the biased softmax
 * predicts: per draw the exact green mass p_i, z = (G - sum p_i) /
 * sqrt(sum p_i (1 - p_i)).  Uniform and non-uniform logits.  Control: the
 * same count against the unbiased rate gamma. */
START_TEST(test_kgw_sampling_green_rate)
{
    enum { V = 1000, N = 10000 };
    hm_key *k = test_key(34);
    hm_ctx *c = test_ctx(k, "kgw");
    double green = param(c, 0, "green"), delta = param(c, 0, "delta");
    static float base[V];
    for (int variant = 0; variant < 2; variant++) {
        uint64_t s = 6000u + (uint64_t)variant;
        for (int v = 0; v < V; v++)
            base[v] = variant ? (float)(3 * test_uniform(&s)) : 0.0f;
        double mu = 0, var = 0, hits = 0;
        for (int d = 0; d < N; d++) {
            float l[V];
            int32_t ctx[2];
            unsigned f;
            double sc;
            rand_ctx(&s, ctx, 2);
            memcpy(l, base, sizeof l);
            hm_row row = {ctx, 2, NULL, 1.0f, test_uniform(&s)};
            REQUIRE_OK(hm_bias_dense(c, l, 1, V, V, &row, &f));
            REQUIRE_EQ(f, HM_STEP_BIASED);
            double p = green_mass(l, base, V, NULL);
            int32_t tok = select1(c, l, V, &row, &f);
            REQUIRE_EQ(f, HM_STEP_FALLBACK);
            REQUIRE_OK(hm_token_score(c, 0, ctx, 2, tok, &sc));
            REQUIRE((sc == 1.0) == (l[tok] != base[tok]));
            hits += sc;
            mu += p;
            var += p * (1 - p);
        }
        double z = zscore(hits, mu, var);
        STAT(fabs(z) < Z_BOUND, "variant %d: green %g predicted %g z %g",
             variant, hits / N, mu / N, z);
        if (variant == 0)
            REQUIRE(fabs(mu / N - green_mass_formula(green, delta)) < 0.01);
        double z0 = zscore(hits, N * green, N * green * (1 - green));
        STAT(z0 > 10 * Z_BOUND, "control z %g", z0);
    }
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* kgw works under greedy decoding: on nearly flat logits the argmax of
 * the unbiased row is green at rate gamma (z), after biasing it is green
 * every time (delta = 2 dwarfs a 0.01 spread); flags GREEDY. */
START_TEST(test_kgw_greedy)
{
    enum { V = 500, N = 4000 };
    hm_key *k = test_key(35);
    hm_ctx *c = test_ctx(k, "kgw");
    double green = param(c, 0, "green");
    uint64_t s = 777;
    unsigned long plain_green = 0, biased_green = 0;
    for (int d = 0; d < N; d++) {
        float l[V];
        int32_t ctx[1];
        unsigned f;
        double sc;
        rand_ctx(&s, ctx, 1);
        for (int v = 0; v < V; v++)
            l[v] = (float)(0.01 * test_uniform(&s));
        hm_row row = {ctx, 1, NULL, 0.0f, test_uniform(&s)};
        int32_t tok = select1(c, l, V, &row, &f);
        REQUIRE_EQ(f, HM_STEP_GREEDY);
        REQUIRE_EQ(tok, first_argmax(l, V));
        REQUIRE_OK(hm_token_score(c, 0, ctx, 1, tok, &sc));
        plain_green += sc == 1.0;
        REQUIRE_OK(hm_bias_dense(c, l, 1, V, V, &row, &f));
        REQUIRE_EQ(f, HM_STEP_BIASED);
        tok = select1(c, l, V, &row, &f);
        REQUIRE_EQ(f, HM_STEP_GREEDY);
        REQUIRE_EQ(tok, first_argmax(l, V));
        REQUIRE_OK(hm_token_score(c, 0, ctx, 1, tok, &sc));
        biased_green += sc == 1.0;
    }
    double z = zscore((double)plain_green, N * green, N * green * (1 - green));
    STAT(fabs(z) < Z_BOUND, "unbiased argmax green z %g", z);
    REQUIRE_EQ(biased_green, N);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* SelfHash seeding (h = 4: the three previous tokens and the token
 * itself): parameters, and the green rate over random (window, token)
 * tuples with ids spread over 2^30 (so that the token-only seeds never
 * repeat) is "green" (z). */
START_TEST(test_kgw_selfhash_rate)
{
    enum { N = 200000 };
    hm_key *k = test_key(36);
    hm_ctx *c = test_ctx(k, "kgw:seeding=selfhash");
    REQUIRE(param(c, 0, "seeding") == HM_SEEDING_SELFHASH);
    REQUIRE(param(c, 0, "h") == 4 && param(c, 0, "window") == 3);
    REQUIRE_EQ(hm_ctx_channel_window(c, 0), 3);
    double green = param(c, 0, "green");
    uint64_t s = 5150;
    double hits = 0;
    for (int i = 0; i < N; i++) {
        int32_t ctx[3];
        double sc;
        rand_ctx(&s, ctx, 3);
        int32_t tok = (int32_t)(test_rand(&s) >> 34);
        REQUIRE_OK(hm_token_score(c, 0, ctx, 3, tok, &sc));
        hits += sc;
    }
    double z = zscore(hits, N * green, N * green * (1 - green));
    STAT(fabs(z) < Z_BOUND, "selfhash green %g z %g", hits / N, z);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

/* --------------------------------------------------------- tournament */

/* The distribution a two-candidate tournament with m layers induces over
 * candidates with probabilities p0 and PRF values x: each layer's winner
 * is the better of two independent draws from the previous layer's
 * distribution, which gives p(v) (1 + g_l(v) - E_p[g_l]). */
static void tournament_dist(const double *p0, const uint64_t *x, size_t n,
                            unsigned m, double *p)
{
    memcpy(p, p0, n * sizeof *p);
    for (unsigned l = 0; l < m; l++) {
        double e = 0;
        for (size_t i = 0; i < n; i++)
            e += (double)((x[i] >> l) & 1u) * p[i];
        for (size_t i = 0; i < n; i++)
            p[i] *= 1.0 + (double)((x[i] >> l) & 1u) - e;
    }
}

/* Under a WRONG key the g-values of the tokens the tournament chose are
 * fair coins: every layer's frequency ~ 1/2 (z, 30 layers) and the mean
 * score m/2 (z, variance m/4).  Under the right key the mean score is
 * far above m/2, and matches the induced distribution's expectation per
 * draw (z).  The bits above m are not used: they stay fair. */
START_TEST(test_tournament_gvalues)
{
    enum { N = 20000 };
    hm_key *kr = test_key(41), *kw = test_key(42);
    hm_ctx *cr = test_ctx(kr, "tournament"), *cw = test_ctx(kw, "tournament");
    const unsigned m = (unsigned)param(cr, 0, "m");
    REQUIRE_EQ(m, 30);
    REQUIRE(param(cr, 0, "topk") == 40 && param(cr, 0, "h") == 4);
    const uint64_t mask = (UINT64_C(1) << m) - 1;
    unsigned long layer[64] = {0};
    double wrong = 0, right = 0, mu = 0, var = 0, high = 0;
    double p0[K12];
    uint64_t s = 271828;
    softmax(LOGITS12, K12, 1.0f, p0);
    for (int d = 0; d < N; d++) {
        int32_t ctx[4];
        uint64_t x[K12], xw;
        double p[K12], sw, sr, e = 0, e2 = 0;
        unsigned f;
        rand_ctx(&s, ctx, 4);
        hm_row row = {ctx, 4, NULL, 1.0f, test_uniform(&s)};
        int32_t tok = select1(cr, LOGITS12, K12, &row, &f);
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
        REQUIRE_OK(hm_token_prf(cw, 0, ctx, 4, tok, &xw));
        REQUIRE_OK(hm_token_score(cw, 0, ctx, 4, tok, &sw));
        REQUIRE(sw == __builtin_popcountll(xw & mask));
        for (unsigned l = 0; l < m; l++)
            layer[l] += (xw >> l) & 1u;
        wrong += sw;
        for (int v = 0; v < K12; v++)
            REQUIRE_OK(hm_token_prf(cr, 0, ctx, 4, v, &x[v]));
        tournament_dist(p0, x, K12, m, p);
        for (int v = 0; v < K12; v++) {
            double g = __builtin_popcountll(x[v] & mask);
            e += p[v] * g;
            e2 += p[v] * g * g;
        }
        REQUIRE_OK(hm_token_score(cr, 0, ctx, 4, tok, &sr));
        right += sr;
        mu += e;
        var += e2 - e * e;
        high += __builtin_popcountll(x[tok] >> m);
    }
    for (unsigned l = 0; l < m; l++) {
        double z = zscore((double)layer[l], N * 0.5, N * 0.25);
        STAT(fabs(z) < Z_BOUND, "wrong key layer %u: z %g", l, z);
    }
    double zw = zscore(wrong, N * m / 2.0, N * m / 4.0);
    STAT(fabs(zw) < Z_BOUND, "wrong key mean %g z %g", wrong / N, zw);
    double zr = zscore(right, N * m / 2.0, N * m / 4.0);
    STAT(zr > 20 * Z_BOUND && right / N > m / 2.0 + 1,
         "right key mean %g z %g", right / N, zr);
    double zp = zscore(right, mu, var);
    STAT(fabs(zp) < Z_BOUND, "right key mean %g predicted %g z %g", right / N,
         mu / N, zp);
    double zh = zscore(high, N * (64 - m) / 2.0, N * (64 - m) / 4.0);
    STAT(fabs(zh) < Z_BOUND, "bits above m: z %g", zh);
    hm_ctx_free(cr);
    hm_ctx_free(cw);
    hm_key_free(kr);
    hm_key_free(kw);
}
END_TEST

/* Over random contexts (keys) and uniforms the tournament's choices follow
 * the model's softmax restricted to the top-k: all 12 tokens at T = 1 and
 * T = 0.7 (df = 11), and the 8 largest logits of a shuffled row with
 * topk=8 (never one of the other 4; df = 7).  Control: one fixed context
 * gives one tilted distribution, rejected. */
static const float SHUFFLED12[K12] = {-1.2f, 0.5f, 2.0f,  -0.4f, 0.0f, 1.1f,
                                      -1.7f, 0.8f, -0.8f, 1.6f,  0.3f, 1.3f};

START_TEST(test_tournament_distortion_free)
{
    static const struct {
        const char *spec;
        const float *logits;
        float temperature;
        double crit;
    } cases[] = {{"tournament", LOGITS12, 1.0f, CHI2_999_DF11},
                 {"tournament", LOGITS12, 0.7f, CHI2_999_DF11},
                 {"tournament:topk=8", SHUFFLED12, 1.0f, CHI2_999_DF7}};
    const unsigned long draws = 20000;
    hm_key *k = test_key(43);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        hm_ctx *c = test_ctx(k, cases[ci].spec);
        const float *lg = cases[ci].logits;
        unsigned long counts[K12] = {0}, fixed[K12] = {0};
        float kept[K12];
        double p[K12];
        uint64_t s = 161803u + (uint64_t)ci;
        int32_t fctx[4] = {7, 8, 9, 10};
        for (unsigned long d = 0; d < draws; d++) {
            int32_t ctx[4];
            unsigned f;
            rand_ctx(&s, ctx, 4);
            hm_row row = {ctx, 4, NULL, cases[ci].temperature,
                          test_uniform(&s)};
            counts[select1(c, lg, K12, &row, &f)]++;
            REQUIRE_EQ(f, HM_STEP_WATERMARKED);
            row.context = fctx;
            fixed[select1(c, lg, K12, &row, NULL)]++;
        }
        /* The model's distribution over the top-k (distinct logits). */
        unsigned topk = (unsigned)param(c, 0, "topk");
        for (int v = 0; v < K12; v++) {
            unsigned above = 0;
            for (int w = 0; w < K12; w++)
                above += lg[w] > lg[v];
            kept[v] = above < topk ? lg[v] : -INFINITY;
        }
        softmax(kept, K12, cases[ci].temperature, p);
        double x = chi2(counts, p, K12, draws);
        double xf = chi2(fixed, p, K12, draws);
        STAT(x < cases[ci].crit, "%s T=%g: chi2 %g (bound %g)", cases[ci].spec,
             cases[ci].temperature, x, cases[ci].crit);
        STAT(xf > 10 * cases[ci].crit, "%s T=%g: control chi2 %g",
             cases[ci].spec, cases[ci].temperature, xf);
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------------------- greedy */

/* Temperature 0 is the argmax (first of equal maxima), GREEDY and not
 * WATERMARKED, for every kind of context, on dense rows (several per
 * call, strided) and on shuffled llama.cpp candidate records. */
START_TEST(test_greedy_argmax)
{
    enum { V = 300, STRIDE = 301, ROWS = 4, CALLS = 50 };
    static const char *specs[] = {"gumbel", "tournament", "tournament:topk=4",
                                  "kgw:h=1+gumbel:h=4", "kgw"};
    hm_key *k = test_key(51);
    uint64_t s = 60606;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        hm_ctx *c = test_ctx(k, specs[sp]);
        for (int call = 0; call < CALLS; call++) {
            static float l[ROWS * STRIDE];
            int32_t ctx[ROWS][4], tok[ROWS];
            hm_row rows[ROWS];
            unsigned flags[ROWS];
            for (int r = 0; r < ROWS; r++) {
                rand_ctx(&s, ctx[r], 4);
                rows[r] = (hm_row){ctx[r], 4, NULL, 0.0f, test_uniform(&s)};
                for (int v = 0; v < STRIDE; v++) {
                    /* Quarter steps: equal maxima are common. */
                    float x = (float)floor(test_uniform(&s) * 16) * 0.25f;
                    l[r * STRIDE + v] = test_uniform(&s) < 0.1 ? -INFINITY : x;
                }
            }
            REQUIRE_OK(
                hm_select_dense(c, l, ROWS, V, STRIDE, rows, tok, flags));
            for (int r = 0; r < ROWS; r++) {
                int32_t want = first_argmax(l + r * STRIDE, V);
                REQUIRE_EQ(tok[r], want);
                REQUIRE_EQ(flags[r], HM_STEP_GREEDY);
                REQUIRE(!(flags[r] & HM_STEP_WATERMARKED));
                /* Candidate records in shuffled order: the same token. */
                struct {
                    int32_t id;
                    float logit;
                    float p;
                } rec[V];
                for (int v = 0; v < V; v++) {
                    rec[v].id = v;
                    rec[v].logit = l[r * STRIDE + v];
                    rec[v].p = 0;
                }
                for (int v = V - 1; v > 0; v--) {
                    int j = (int)(test_rand(&s) % (uint64_t)(v + 1));
                    __typeof__(rec[0]) t = rec[v];
                    rec[v] = rec[j];
                    rec[j] = t;
                }
                hm_cands cands = HM_CANDS_LLAMA(rec, V);
                int32_t ct = -1;
                size_t idx = 0;
                unsigned cf = 0;
                REQUIRE_OK(
                    hm_select_cands(c, &cands, &rows[r], &ct, &idx, &cf));
                REQUIRE_EQ(ct, want);
                REQUIRE_EQ(rec[idx].id, want);
                REQUIRE_EQ(cf, HM_STEP_GREEDY);
            }
        }
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* ----------------------------------------------------------- channels */

/* "kgw:h=1+gumbel:h=4": two channels with independent values.
 *   - the layout and each channel's values equal those of the channel
 *     alone (subkeys depend on scheme, id and tenant only);
 *   - on random tuples the two channels' values never coincide (not even
 *     with equal windows, "kgw:h=4+gumbel:h=4"), kgw's
 *     green bit and gumbel's top bit are independent (2x2 chi-square,
 *     df = 1) and the uniforms uncorrelated (|r| sqrt(n) < 4.5);
 *   - without the bias, gumbel's choices are green at rate gamma (z); with
 *     it, at the rate the biased softmax predicts (z), and the gumbel
 *     watermark is still there (mean score > 1.5). */
START_TEST(test_two_channels)
{
    enum { NT = 50000, N = 20000 };
    hm_key *k = test_key(61);
    hm_ctx *c = test_ctx(k, "kgw:h=1+gumbel:h=4");
    hm_ctx *ck = test_ctx(k, "kgw:h=1"), *cg = test_ctx(k, "gumbel:h=4");
    /* Equal windows: only the subkeys can tell the channels apart. */
    hm_ctx *c4 = test_ctx(k, "kgw:h=4+gumbel:h=4");
    REQUIRE_EQ(hm_ctx_channels(c), 2);
    REQUIRE_EQ(hm_ctx_channel_scheme(c, 0), HM_SCHEME_KGW);
    REQUIRE_EQ(hm_ctx_channel_scheme(c, 1), HM_SCHEME_GUMBEL);
    REQUIRE_EQ(hm_ctx_channel_scheme(c, 2), 0);
    REQUIRE_EQ(hm_ctx_channel_window(c, 0), 1);
    REQUIRE_EQ(hm_ctx_channel_window(c, 1), 4);
    double green = param(c, 0, "green");
    uint64_t s = 8675309;

    unsigned long tab[2][2] = {{0, 0}, {0, 0}};
    double su = 0, sv = 0, suu = 0, svv = 0, suv = 0;
    for (int i = 0; i < NT; i++) {
        int32_t ctx[4];
        uint64_t x0, x1, y0, y1;
        rand_ctx(&s, ctx, 4);
        int32_t tok = (int32_t)(test_rand(&s) >> 34);
        REQUIRE_OK(hm_token_prf(c, 0, ctx, 4, tok, &x0));
        REQUIRE_OK(hm_token_prf(c, 1, ctx, 4, tok, &x1));
        REQUIRE_OK(hm_token_prf(ck, 0, ctx, 4, tok, &y0));
        REQUIRE_OK(hm_token_prf(cg, 0, ctx, 4, tok, &y1));
        REQUIRE(x0 == y0 && x1 == y1);
        REQUIRE(x0 != x1);
        REQUIRE_OK(hm_token_prf(c4, 0, ctx, 4, tok, &y0));
        REQUIRE_OK(hm_token_prf(c4, 1, ctx, 4, tok, &y1));
        REQUIRE(y0 != y1 && y1 == x1);
        double g;
        REQUIRE_OK(hm_token_score(c, 0, ctx, 4, tok, &g));
        tab[g == 1.0][x1 >> 63]++;
        double u = hm_prf_to_unit(x0), v = hm_prf_to_unit(x1);
        su += u;
        sv += v;
        suu += u * u;
        svv += v * v;
        suv += u * v;
    }
    {
        unsigned long obs[4] = {tab[0][0], tab[0][1], tab[1][0], tab[1][1]};
        double r0 = (double)(tab[0][0] + tab[0][1]) / NT;
        double c0 = (double)(tab[0][0] + tab[1][0]) / NT;
        double p[4] = {r0 * c0, r0 * (1 - c0), (1 - r0) * c0,
                       (1 - r0) * (1 - c0)};
        double x = chi2(obs, p, 4, NT);
        STAT(x < CHI2_999_DF1, "independence chi2 %g", x);
        double cov = suv / NT - (su / NT) * (sv / NT);
        double r = cov / sqrt((suu / NT - su * su / NT / NT) *
                              (svv / NT - sv * sv / NT / NT));
        STAT(fabs(r) * sqrt(NT) < Z_BOUND, "correlation %g", r);
    }

    double hits = 0, bhits = 0, mu = 0, var = 0, gsum = 0;
    for (int d = 0; d < N; d++) {
        int32_t ctx[4];
        float l[K12];
        unsigned f;
        double sc, gs;
        rand_ctx(&s, ctx, 4);
        hm_row row = {ctx, 4, NULL, 1.0f, 0.5};
        int32_t tok = select1(c, LOGITS12, K12, &row, &f);
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
        REQUIRE_OK(hm_token_score(c, 0, ctx, 4, tok, &sc));
        hits += sc;
        memcpy(l, LOGITS12, sizeof l);
        REQUIRE_OK(hm_bias_dense(c, l, 1, K12, K12, &row, &f));
        REQUIRE_EQ(f, HM_STEP_BIASED);
        double p = green_mass(l, LOGITS12, K12, NULL);
        tok = select1(c, l, K12, &row, &f);
        REQUIRE_EQ(f, HM_STEP_WATERMARKED);
        REQUIRE_OK(hm_token_score(c, 0, ctx, 4, tok, &sc));
        REQUIRE_OK(hm_token_score(c, 1, ctx, 4, tok, &gs));
        bhits += sc;
        mu += p;
        var += p * (1 - p);
        gsum += gs;
    }
    double z = zscore(hits, N * green, N * green * (1 - green));
    STAT(fabs(z) < Z_BOUND, "unbiased green %g z %g", hits / N, z);
    double zb = zscore(bhits, mu, var);
    STAT(fabs(zb) < Z_BOUND, "biased green %g predicted %g z %g", bhits / N,
         mu / N, zb);
    REQUIRE(zscore(bhits, N * green, N * green * (1 - green)) > 10 * Z_BOUND);
    STAT(gsum / N > 1.5, "gumbel mean score %g", gsum / N);
    hm_ctx_free(c);
    hm_ctx_free(ck);
    hm_ctx_free(cg);
    hm_ctx_free(c4);
    hm_key_free(k);
}
END_TEST

/* Tenants: "a" and "b" get different values on every channel (and
 * independent kgw green lists: agreement rate gamma^2 + (1-gamma)^2, z);
 * the same tenant gives the same values and choices from two contexts;
 * NULL and "" are the same default tenant. */
START_TEST(test_tenants)
{
    enum { N = 20000 };
    const char *spec = "kgw:h=1+gumbel:h=4";
    hm_key *k = test_key(62);
    hm_ctx *a = NULL, *a2 = NULL, *b = NULL, *d0 = NULL, *d1 = NULL;
    REQUIRE_OK(hm_ctx_new(&a, k, spec, "a", NULL, 0));
    REQUIRE_OK(hm_ctx_new(&a2, k, spec, "a", NULL, 0));
    REQUIRE_OK(hm_ctx_new(&b, k, spec, "b", NULL, 0));
    REQUIRE_OK(hm_ctx_new(&d0, k, spec, NULL, NULL, 0));
    REQUIRE_OK(hm_ctx_new(&d1, k, spec, "", NULL, 0));
    ck_assert_str_eq(hm_ctx_tenant(a), "a");
    ck_assert_str_eq(hm_ctx_tenant(b), "b");
    ck_assert_str_eq(hm_ctx_tenant(d0), "");
    double green = param(a, 0, "green");
    uint64_t s = 1729;
    unsigned long agree = 0, same_choice = 0;
    for (int i = 0; i < N; i++) {
        int32_t ctx[4];
        rand_ctx(&s, ctx, 4);
        int32_t tok = (int32_t)(test_rand(&s) >> 34);
        for (unsigned ch = 0; ch < 2; ch++) {
            uint64_t xa, xa2, xb, x0, x1;
            REQUIRE_OK(hm_token_prf(a, ch, ctx, 4, tok, &xa));
            REQUIRE_OK(hm_token_prf(a2, ch, ctx, 4, tok, &xa2));
            REQUIRE_OK(hm_token_prf(b, ch, ctx, 4, tok, &xb));
            REQUIRE_OK(hm_token_prf(d0, ch, ctx, 4, tok, &x0));
            REQUIRE_OK(hm_token_prf(d1, ch, ctx, 4, tok, &x1));
            REQUIRE(xa == xa2);
            REQUIRE(xa != xb && xa != x0 && xb != x0);
            REQUIRE(x0 == x1);
        }
        double ga, gb;
        REQUIRE_OK(hm_token_score(a, 0, ctx, 4, tok, &ga));
        REQUIRE_OK(hm_token_score(b, 0, ctx, 4, tok, &gb));
        agree += ga == gb;
        hm_row row = {ctx, 4, NULL, 1.0f, 0.5};
        int32_t ta = select1(a, LOGITS12, K12, &row, NULL);
        REQUIRE_EQ(select1(a2, LOGITS12, K12, &row, NULL), ta);
        same_choice += select1(b, LOGITS12, K12, &row, NULL) == ta;
    }
    double pa = green * green + (1 - green) * (1 - green);
    double z = zscore((double)agree, N * pa, N * pa * (1 - pa));
    STAT(fabs(z) < Z_BOUND, "green agreement %g z %g", (double)agree / N, z);
    /* Independent gumbel draws agree with probability sum p^2. */
    double p[K12], q = 0;
    softmax(LOGITS12, K12, 1.0f, p);
    for (int v = 0; v < K12; v++)
        q += p[v] * p[v];
    double zc = zscore((double)same_choice, N * q, N * q * (1 - q));
    STAT(fabs(zc) < Z_BOUND, "choice agreement %g vs %g z %g",
         (double)same_choice / N, q, zc);
    hm_ctx_free(a);
    hm_ctx_free(a2);
    hm_ctx_free(b);
    hm_ctx_free(d0);
    hm_ctx_free(d1);
    hm_key_free(k);
}
END_TEST

/* --------------------------------------------------------------- spec */

/* Malformed specs fail with the code hm_spec_parse returns (HM_EFORMAT for
 * every parse error), a message, and no context. */
START_TEST(test_spec_errors)
{
    static const char *bad[] = {
        "",
        "+",
        "gumbal",
        "kgwx",
        "kgw:gamma",
        "kgw:gamma=abc",
        "kgw:gamma=0.25x",
        "kgw:gamma=",
        "kgw:gamma=0",
        "kgw:gamma=1",
        "kgw:gamma=-0.25",
        "kgw:gamma=1.5",
        "kgw:gamma=1e-10",
        "kgw:gamma=nan",
        "kgw:delta=-1",
        "kgw:delta=1001",
        "kgw:delta=inf",
        "kgw:h=0",
        "gumbel:h=17",
        "gumbel:h=-1",
        "gumbel:h=4.0",
        "gumbel:h=0x4",
        "gumbel:h=99999999999999999999",
        "tournament:h=100",
        "kgw:seeding=minhash",
        "kgw:seeding=selfhash,h=1",
        "kgw:h=1,seeding=selfhash",
        "gumbel+tournament",
        "tournament+gumbel",
        "gumbel+gumbel:id=b",
        "kgw:id=a+gumbel+tournament:id=t",
        "kgw:id=a+kgw:id=b+kgw:id=c+kgw:id=d+gumbel",
        "kgw:id=a+kgw:id=b+kgw:id=c+kgw:id=d+kgw:id=e",
        "kgw+kgw",
        "kgw:id=x+kgw:id=x",
        "kgw:h=1+kgw:h=4",
        "tournament:topk=1025",
        "tournament:topk=0",
        "tournament:m=65",
        "tournament:m=0",
        "gumbel:gamma=0.5",
        "gumbel:m=3",
        "kgw:m=3",
        "kgw:topk=5",
        "tournament:delta=1",
        "kgw:id=bad id",
        "kgw:id=",
        "kgw:id=abcdefghijklmnopqrstuvwxyz012345",
        "kgw:id=a/b",
        /* loose spellings are refused, not guessed at */
        "gumbel:",
        "gumbel+",
        "+gumbel",
        "kgw++gumbel",
        "kgw:,gamma=0.3",
        "kgw:gamma=0.3,",
        "gumbel:h=4,h=5",
        "kgw:gamma=0.3,delta=1,gamma=0.4",
        "gumbel:h= 4",
        "gumbel:h=+4",
        "kgw:delta=0x1p1",
        "kgw:gamma= 0.25",
        "kgw:=3",
    };
    hm_key *k = test_key(71);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hm_ctx *c = (hm_ctx *)&c; /* must be reset to NULL */
        char msg[HM_ERRMSG_SIZE] = "";
        int rc = hm_ctx_new(&c, k, bad[i], NULL, msg, sizeof msg);
        ck_assert_msg(rc == HM_EFORMAT, "'%s' gave %d", bad[i], rc);
        ck_assert_msg(msg[0] != '\0', "'%s': no message", bad[i]);
        REQUIRE(c == NULL);
    }
    /* Too long a spec. */
    {
        char big[1100];
        hm_ctx *c = NULL;
        char msg[HM_ERRMSG_SIZE] = "";
        memset(big, 'a', sizeof big - 1);
        memcpy(big, "gumbel:id=", 10);
        big[sizeof big - 1] = '\0';
        REQUIRE_EQ(hm_ctx_new(&c, k, big, NULL, msg, sizeof msg), HM_EFORMAT);
        REQUIRE(msg[0] != '\0' && c == NULL);
    }
    /* Invalid arguments rather than a malformed spec. */
    {
        char tenant[300], msg[HM_ERRMSG_SIZE] = "";
        hm_ctx *c = NULL;
        memset(tenant, 't', sizeof tenant - 1);
        tenant[sizeof tenant - 1] = '\0';
        REQUIRE_EQ(hm_ctx_new(&c, k, "gumbel", tenant, msg, sizeof msg),
                   HM_EINVAL);
        REQUIRE(msg[0] != '\0' && c == NULL);
        REQUIRE_EQ(hm_ctx_new(&c, k, NULL, NULL, NULL, 0), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_new(NULL, k, "gumbel", NULL, NULL, 0), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_new(&c, NULL, "gumbel", NULL, NULL, 0), HM_EINVAL);
        /* A short message buffer is truncated, still terminated. */
        char tiny[8];
        memset(tiny, 'x', sizeof tiny);
        REQUIRE_EQ(hm_ctx_new(&c, k, "gumbal", NULL, tiny, sizeof tiny),
                   HM_EFORMAT);
        REQUIRE(memchr(tiny, '\0', sizeof tiny) != NULL && tiny[0] != '\0');
    }
    /* Parameters a scheme does not have. */
    {
        hm_ctx *c = test_ctx(k, "gumbel+kgw");
        double v;
        REQUIRE_EQ(hm_ctx_channel_param(c, 0, "gamma", &v), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_channel_param(c, 0, "m", &v), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_channel_param(c, 1, "topk", &v), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_channel_param(c, 1, "bogus", &v), HM_EINVAL);
        REQUIRE_EQ(hm_ctx_channel_param(c, 2, "h", &v), HM_EINVAL);
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* Canonical specs: the expected spelling for defaults and limits, every
 * one parses back to itself with the same parameters and PRF values, and
 * hm_ctx_spec reports the length it needs and truncates safely. */
START_TEST(test_spec_canonical)
{
    static const struct {
        const char *spec, *canon; /* canon NULL: round trip only */
    } t[] = {
        {"gumbel", "gumbel:id=main,h=4"},
        {"kgw", "kgw:id=main,h=1,gamma=0.25,delta=2,seeding=lefthash"},
        {"kgw:seeding=selfhash",
         "kgw:id=main,h=4,gamma=0.25,delta=2,seeding=selfhash"},
        {"tournament", "tournament:id=main,h=4,m=30,topk=40"},
        {"kgw:h=1+gumbel:h=4",
         "kgw:id=main,h=1,gamma=0.25,delta=2,seeding=lefthash+"
         "gumbel:id=main,h=4"},
        {"gumbel:h=16", "gumbel:id=main,h=16"},
        {"tournament:m=64,topk=1024", "tournament:id=main,h=4,m=64,topk=1024"},
        {"tournament:topk=1,m=1,h=16,id=T.1_x-y",
         "tournament:id=T.1_x-y,h=16,m=1,topk=1"},
        {"kgw:delta=1000,gamma=1e-5",
         "kgw:id=main,h=1,gamma=1e-05,delta=1e03,seeding=lefthash"},
        {"kgw:gamma=0.1,delta=0,h=16",
         "kgw:id=main,h=16,gamma=0.1,delta=0,seeding=lefthash"},
        {"kgw:seeding=selfhash,h=2", NULL},
        {"kgw:gamma=2.3283064365386963e-10", NULL},
        {"kgw:gamma=0.99999999976716936,delta=3.3333333333333335", NULL},
        {"kgw:id=a+kgw:id=b,gamma=0.5+kgw:id=c,h=3+tournament:id=t", NULL},
        {"gumbel:id=x+kgw:id=x", NULL},
        {"kgw:id=abcdefghijklmnopqrstuvwxyz01234", /* longest id: 31 */
         "kgw:id=abcdefghijklmnopqrstuvwxyz01234,h=1,gamma=0.25,delta=2,"
         "seeding=lefthash"},
    };
    hm_key *k = test_key(72);
    static const char *names[] = {"h", "window", "gamma",   "delta",
                                  "m", "topk",   "seeding", "green"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        hm_ctx *c = test_ctx(k, t[i].spec);
        char c1[1024], c2[1024];
        size_t n1 = hm_ctx_spec(c, c1, sizeof c1);
        REQUIRE_EQ(n1, strlen(c1));
        REQUIRE_EQ(hm_ctx_spec(c, NULL, 0), n1);
        if (t[i].canon)
            ck_assert_str_eq(c1, t[i].canon);
        hm_ctx *d = test_ctx(k, c1);
        REQUIRE_EQ(hm_ctx_spec(d, c2, sizeof c2), n1);
        ck_assert_str_eq(c2, c1);
        REQUIRE_EQ(hm_ctx_channels(d), hm_ctx_channels(c));
        for (unsigned ch = 0; ch < hm_ctx_channels(c); ch++) {
            REQUIRE_EQ(hm_ctx_channel_scheme(d, ch),
                       hm_ctx_channel_scheme(c, ch));
            for (size_t j = 0; j < sizeof names / sizeof names[0]; j++) {
                double a, b;
                int ra = hm_ctx_channel_param(c, ch, names[j], &a);
                int rb = hm_ctx_channel_param(d, ch, names[j], &b);
                REQUIRE_EQ(ra, rb);
                if (ra == HM_OK)
                    ck_assert_msg(a == b, "%s: %s %.17g vs %.17g", t[i].spec,
                                  names[j], a, b);
            }
            int32_t ctx[5] = {3, 1, 4, 1, 5};
            for (int32_t tok = 0; tok < 20; tok++) {
                uint64_t xa, xb;
                REQUIRE_OK(hm_token_prf(c, ch, ctx, 5, tok, &xa));
                REQUIRE_OK(hm_token_prf(d, ch, ctx, 5, tok, &xb));
                REQUIRE(xa == xb);
            }
        }
        /* Truncation: the needed length is still returned. */
        char small[6];
        memset(small, 'x', sizeof small);
        REQUIRE_EQ(hm_ctx_spec(c, small, sizeof small), n1);
        REQUIRE_EQ(strlen(small), sizeof small - 1);
        REQUIRE(strncmp(small, c1, sizeof small - 1) == 0);
        hm_ctx_free(d);
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

/* A +inf logit takes all the probability, for every sampling scheme; in a
 * tournament two share it (the Gumbel race breaks the tie by id). */
START_TEST(test_infinite_logit)
{
    static const char *const sp[] = {"gumbel", "tournament", "kgw"};
    hm_key *k = test_key(91);
    for (size_t s = 0; s < 3; s++) {
        hm_ctx *c = test_ctx(k, sp[s]);
        float l[64];
        int hits[2] = {0, 0};
        uint64_t r = 5;
        for (int rep = 0; rep < 400; rep++) {
            for (int v = 0; v < 64; v++)
                l[v] = (float)test_uniform(&r);
            l[17] = INFINITY;
            if (rep >= 200)
                l[40] = INFINITY;
            int32_t ctxt[4] = {rep, rep + 1, 3, 4}, tok = -1;
            hm_row row = {ctxt, 4, NULL, 1.0f, test_uniform(&r)};
            ck_assert_int_eq(hm_select_dense(c, l, 1, 64, 64, &row, &tok, NULL),
                             HM_OK);
            if (rep < 200)
                ck_assert_msg(tok == 17, "%s chose %d", sp[s], tok);
            else {
                ck_assert_msg(tok == 17 || tok == 40, "%s chose %d", sp[s],
                              tok);
                hits[tok == 40]++;
            }
        }
        if (strcmp(sp[s], "tournament") == 0) { /* the limit distribution */
            ck_assert_int_gt(hits[0], 50);
            ck_assert_int_gt(hits[1], 50);
        }
        hm_ctx_free(c);
    }
    hm_key_free(k);
}
END_TEST

static Suite *schemes_suite(void)
{
    Suite *s = suite_create("schemes");
    TCase *tc;

    tc = tcase_create("gumbel");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_gumbel_distortion_free);
    tcase_add_test(tc, test_gumbel_large_vocab);
    tcase_add_test(tc, test_gumbel_matches_reference);
    tcase_add_test(tc, test_gumbel_score_null);
    tcase_add_test(tc, test_gumbel_score_chosen);
    suite_add_tcase(s, tc);

    tc = tcase_create("fallback");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_fallback_matches_softmax);
    tcase_add_test(tc, test_masked_fallback);
    suite_add_tcase(s, tc);

    tc = tcase_create("kgw");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_kgw_green_fraction);
    tcase_add_test(tc, test_kgw_bias_exact);
    tcase_add_test(tc, test_kgw_green_mass_uniform);
    tcase_add_test(tc, test_kgw_sampling_green_rate);
    tcase_add_test(tc, test_kgw_greedy);
    tcase_add_test(tc, test_kgw_selfhash_rate);
    suite_add_tcase(s, tc);

    tc = tcase_create("tournament");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tournament_gvalues);
    tcase_add_test(tc, test_tournament_distortion_free);
    tcase_add_test(tc, test_infinite_logit);
    suite_add_tcase(s, tc);

    tc = tcase_create("greedy");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_greedy_argmax);
    suite_add_tcase(s, tc);

    tc = tcase_create("channels");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_two_channels);
    tcase_add_test(tc, test_tenants);
    suite_add_tcase(s, tc);

    tc = tcase_create("spec");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_spec_errors);
    tcase_add_test(tc, test_spec_canonical);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(schemes_suite());
}
