/*
 * logprobs.c - hardened log-probabilities: what a server returns as
 * top_logprobs, capped, keyed-perturbed and quantized so that the model's
 * output layer is hard to extract from them (hm_logprobs_new(3)).
 *
 * A returned value is r = clamp0(Q(l + eps*s)) - c: l the true
 * log-probability, s in (-1, 1) a keyed function of (key, window, token),
 * Q rounding to the grid, clamp0 min(., 0), c a common shift (a multiple of
 * the grid step) that keeps the returned probabilities summing to at most
 * 1.  Only |clamp0(Q(l + eps*s)) - l| <= eps + quantum/2 enters the
 * total-variation bound; the common shift cancels in the renormalized
 * distribution.
 */
#define _GNU_SOURCE 1 /* strtod_l, uselocale */
#include "internal.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define ID_MAX 32

/* Run-time dispatched copies of the loops, as in kernels.c (GCC only). */
#if defined(HAVE_TARGET_CLONES) && defined(__x86_64__) && \
    !defined(HM_NO_CLONES) && !defined(__clang__)
#define LP_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#else
#define LP_CLONES
#endif

/* 1.5 * 2^52: (t + R) - R rounds t to an integer, ties to even, for
 * |t| < 2^51, with adds that vectorize (nearbyint is a call without
 * SSE4.1). */
#define ROUND_MAGIC 0x1.8p52

struct hm_logprobs {
    char fingerprint[HM_FINGERPRINT_SIZE];
    char tenant[HM_TENANT_MAX];
    char id[ID_MAX];
    unsigned topk;
    unsigned h;
    double eps;
    double quantum;
    /* e^eta 1.0071 (1 + 1e-4) for eta = eps + quantum/2 + 2^-30
     * (common_shift) */
    double est_hi;
    hm_cmac cmac; /* step seeds: seed(CMAC(K, window)), PRF v1 */
};

/* ------------------------------------------------------- parameters */

static int set_param(hm_logprobs *lp, const char *name, const char *val,
                     char *errmsg, size_t errlen)
{
    int ok;
    if (strcmp(name, "topk") == 0)
        ok = hm_spec_uint(val, 1, HM_LOGPROBS_TOPK_MAX, &lp->topk) == 0;
    else if (strcmp(name, "h") == 0)
        ok = hm_spec_uint(val, 1, HM_MAX_CONTEXT, &lp->h) == 0;
    else if (strcmp(name, "eps") == 0)
        ok = hm_spec_double(val, &lp->eps) == 0 && lp->eps >= 0 &&
             lp->eps <= 1;
    else if (strcmp(name, "quantum") == 0)
        ok = hm_spec_double(val, &lp->quantum) == 0 && lp->quantum >= 0 &&
             lp->quantum <= 1 && (lp->quantum == 0 || lp->quantum >= 0x1p-30);
    else if (strcmp(name, "id") == 0) {
        ok = hm_spec_id_ok(val, ID_MAX);
        if (ok)
            strcpy(lp->id, val);
    } else {
        hm_errf(errmsg, errlen, "unknown logprobs parameter '%s'", name);
        return -1;
    }
    if (!ok) {
        hm_errf(errmsg, errlen, "bad value '%s' for logprobs parameter '%s'",
                val, name);
        return -1;
    }
    return 0;
}

static int set_param_cb(void *obj, const char *name, const char *val,
                        char *errmsg, size_t errlen)
{
    return set_param(obj, name, val, errmsg, errlen);
}

static int parse_spec(hm_logprobs *obj, const char *spec, char *errmsg,
                      size_t errlen)
{
    return hm_spec_params(spec, "logprobs", set_param_cb, obj, errmsg, errlen);
}

int hm_logprobs_new(hm_logprobs **out, const hm_key *key, const char *spec,
                    const char *tenant, char *errmsg, size_t errlen)
{
    if (out == NULL || key == NULL)
        return HM_EINVAL;
    *out = NULL;
    if (tenant == NULL)
        tenant = "";
    if (strlen(tenant) >= HM_TENANT_MAX) {
        hm_errf(errmsg, errlen, "tenant id longer than %d bytes",
                HM_TENANT_MAX - 1);
        return HM_EINVAL;
    }
    hm_logprobs *lp = OPENSSL_zalloc(sizeof *lp);
    if (lp == NULL)
        return HM_ENOMEM;
    lp->topk = HM_LOGPROBS_TOPK_DEFAULT;
    lp->h = HM_LOGPROBS_WINDOW_DEFAULT;
    lp->eps = HM_LOGPROBS_EPS_DEFAULT;
    lp->quantum = HM_LOGPROBS_QUANTUM_DEFAULT;
    strcpy(lp->id, "main");
    memcpy(lp->tenant, tenant, strlen(tenant) + 1);
    int rc = spec != NULL ? parse_spec(lp, spec, errmsg, errlen) : HM_OK;
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, lp->fingerprint, sizeof lp->fingerprint);
    if (rc == HM_OK) {
        double eta = lp->eps + lp->quantum / 2 + 0x1p-30;
        lp->est_hi = exp(eta) * 1.0071 * (1 + 1e-4);
    }
    if (rc == HM_OK) {
        /* Its own scheme name in the info string: independent of every
         * watermark channel (hallmark-prf(7), Subkeys). */
        unsigned char okm[16];
        rc = hm_key_derive_for(key, "logprobs", lp->id, tenant, okm,
                               sizeof okm);
        if (rc == HM_OK) {
            hm_cmac_init(&lp->cmac, okm);
        } else {
            hm_errf(errmsg, errlen, "key derivation failed");
        }
        OPENSSL_cleanse(okm, sizeof okm);
    }
    if (rc != HM_OK) {
        hm_logprobs_free(lp);
        return rc;
    }
    *out = lp;
    return HM_OK;
}

void hm_logprobs_free(hm_logprobs *lp)
{
    if (lp != NULL)
        OPENSSL_clear_free(lp, sizeof *lp);
}


size_t hm_logprobs_spec(const hm_logprobs *lp, char *buf, size_t len)
{
    char e[32], q[32], tmp[256];
    if (lp == NULL)
        return 0;
    hm_spec_fmt_double(e, sizeof e, lp->eps);
    hm_spec_fmt_double(q, sizeof q, lp->quantum);
    int n = snprintf(tmp, sizeof tmp, "topk=%u,eps=%s,quantum=%s,h=%u,id=%s",
                     lp->topk, e, q, lp->h, lp->id);
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", tmp);
    return n < 0 ? 0 : (size_t)n;
}

/* The worst error of one value before the common shift, and the
 * total-variation bound it implies (hm_logprobs_new(3), THE BOUND). */
static double max_error(const hm_logprobs *lp)
{
    return lp->eps + lp->quantum / 2;
}

int hm_logprobs_param(const hm_logprobs *lp, const char *name, double *value)
{
    if (lp == NULL || name == NULL || value == NULL)
        return HM_EINVAL;
    if (strcmp(name, "topk") == 0)
        *value = lp->topk;
    else if (strcmp(name, "h") == 0)
        *value = lp->h;
    else if (strcmp(name, "eps") == 0)
        *value = lp->eps;
    else if (strcmp(name, "quantum") == 0)
        *value = lp->quantum;
    else if (strcmp(name, "max_error") == 0)
        *value = max_error(lp);
    else if (strcmp(name, "tv_bound") == 0)
        *value = tanh(max_error(lp) / 2);
    else
        return HM_EINVAL;
    return HM_OK;
}

/* --------------------------------------------------------- offsets */

/* The step seed of row's window: PRF v1's, under the logprobs subkey. */
static int window_of(const hm_logprobs *lp, const hm_row *row, hm_seed *s)
{
    uint32_t w[HM_MAX_CONTEXT];
    if (row->context == NULL && row->n_context > 0)
        return HM_EINVAL;
    int rc = hm_row_window(row, lp->h, w);
    if (rc == HM_OK)
        *s = hm_seed_window(&lp->cmac, w, lp->h);
    return rc;
}

/* s = 2u - 1 for u = ((x >> 12) + 0.5) 2^-52 (PRF v1's uniform map) is
 * an odd multiple of 2^-52 in (-1, 1), exactly, symmetric about 0.  The
 * 52 bits x >> 12 go into the mantissa of d = 1 + (x >> 12) 2^-52, which
 * vectorizes where a 64-bit conversion does not (AVX2); 2d - 3 is a
 * multiple of 2^-51 in [-1, 1) and adding 2^-52 is exact too, so this is
 * (2 (x >> 12) + 1 - 2^52) 2^-52 with no rounding. */
static inline __attribute__((always_inline)) double unit_offset(uint64_t x)
{
    uint64_t b = (x >> 12) | UINT64_C(0x3FF0000000000000);
    double d;
    memcpy(&d, &b, sizeof d); /* 1 + (x >> 12) 2^-52 */
    return (2 * d - 3) + 0x1p-52;
}

/* x = mix(seed, id) of PRF v1, one candidate mixer call per token. */
static inline __attribute__((always_inline)) double
offset_of(hm_seed s, int32_t id, double eps)
{
    return eps * unit_offset(hm_mix(s.a, s.g, (uint32_t)id));
}

int hm_logprobs_offset(const hm_logprobs *lp, const int32_t *context,
                       size_t n_context, int32_t token, double *offset)
{
    if (lp == NULL || offset == NULL || (context == NULL && n_context > 0))
        return HM_EINVAL;
    if (token < 0)
        return HM_ERANGE;
    hm_row row = {context, n_context, NULL, 0.0f, 0.0};
    hm_seed s;
    int rc = window_of(lp, &row, &s);
    if (rc != HM_OK)
        return rc;
    *offset = offset_of(s, token, lp->eps);
    OPENSSL_cleanse(&s, sizeof s);
    return HM_OK;
}

/* ------------------------------------------------------------ hardening */

/* Perturb, round to the grid (grid 1: q > 0), clamp at 0.  a1 is s.a +
 * s.g (offset_of's mixer call with the Weyl step folded in).  grid 2 is
 * grid 1 for values above -2^20 (or -inf): then |t| < 2^51, and the
 * rounded t is always the one taken. */
static inline __attribute__((always_inline)) double
perturb_one(uint64_t a1, uint64_t g, int32_t id, double l, double eps,
            int grid, double q, double inv)
{
    double off = eps * unit_offset(hm_mix_fin(a1 + (uint32_t)id * g));
    if (grid) {
        double t = (l + off) * inv; /* -inf stays -inf */
        double tr = (t + ROUND_MAGIC) - ROUND_MAGIC;
        double y = (grid == 2 || fabs(t) < 0x1p51 ? tr : t) * q;
        /* Clamping at 0 only moves y towards l <= 0. */
        return y < 0 ? y : 0.0;
    }
    double y = l + off;
    return y < 0 ? y : 0.0;
}

/* perturb_one over the row (a loop the compiler vectorizes; fused with
 * the sum below it does not, or only at half the width).  near: no finite
 * value below -2^20. */
LP_CLONES static void perturb(hm_seed s, const int32_t *restrict ids,
                              double *restrict l, size_t n, double eps,
                              double q, int near)
{
    const uint64_t a1 = s.a + s.g, g = s.g;
    const double inv = q > 0 ? 1 / q : 0;
    if (q > 0 && near) /* (separate loops: a select would do all three) */
        for (size_t i = 0; i < n; i++)
            l[i] = perturb_one(a1, g, ids[i], l[i], eps, 2, q, inv);
    else if (q > 0)
        for (size_t i = 0; i < n; i++)
            l[i] = perturb_one(a1, g, ids[i], l[i], eps, 1, q, inv);
    else
        for (size_t i = 0; i < n; i++)
            l[i] = perturb_one(a1, g, ids[i], l[i], eps, 0, q, 0);
}

/* hm_exp_above summed over the row, in eight lanes. */
LP_CLONES static double sum_bound(const double *restrict l, size_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += hm_exp_above(l[i + j]);
    for (; i < n; i++)
        acc[0] += hm_exp_above(l[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* The sum of e^l[i] (values <= 0) within a relative 1e-5, cheaply:
 * binary32 exponentials summed in binary64.  Rounding l to binary32 moves
 * e^l by a relative 87 2^-24 < 5.2e-6 while l >= -87, hm_expf_neg adds
 * 3e-7, the sum of n <= 1024 positive terms n 2^-53; a value below -87
 * counts as e^-87 (it and -inf raise the sum by 1024 e^-87 < 2e-35 at
 * most, absolutely). */
LP_CLONES static double sum_approx(const double *restrict l, size_t n)
{
    hm_v8d a = {0, 0, 0, 0, 0, 0, 0, 0}, b = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) { /* sixteen lanes of binary32 a step */
        hm_v8f x0 = __builtin_convertvector(hm_v8d_load(l + i), hm_v8f);
        hm_v8f x1 = __builtin_convertvector(hm_v8d_load(l + i + 8), hm_v8f);
        hm_v16f e = hm_expf_neg16(__builtin_shufflevector(
            x0, x1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        a += __builtin_convertvector(
            __builtin_shufflevector(e, e, 0, 1, 2, 3, 4, 5, 6, 7), hm_v8d);
        b += __builtin_convertvector(
            __builtin_shufflevector(e, e, 8, 9, 10, 11, 12, 13, 14, 15),
            hm_v8d);
    }
    a += b;
    double acc[8];
    memcpy(acc, &a, sizeof acc);
    for (; i < n; i++)
        acc[0] += (double)hm_expf_neg((float)l[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* The sum of e^l[i] within a relative 1e-12 of the sum of exp(l[i])
 * taken in order (below): hm_exp_nonpos is within 1e-14 of e^x, exp
 * within an ulp, and either sum of n <= 1024 positive terms within
 * n 2^-53 < 1.2e-13. */
LP_CLONES static double sum_close(const double *restrict l, size_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += hm_exp_nonpos(l[i + j]);
    for (; i < n; i++)
        acc[0] += hm_exp_nonpos(l[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Whether a sum s within a relative tol of the reference below decides
 * the shift: 1 with *c set when the reference is more than that away
 * from every boundary (1, or a grid point of its log). */
static int shift_from(double s, double tol, double q, double *c)
{
    if (s * (1 + tol) <= 1) {
        *c = 0;
        return 1;
    }
    if (q > 0 && s * (1 - tol) > 1) {
        /* log(sum) is within tol + an ulp of log(s); ceil of the rounded
         * quotient is monotone in the numerator */
        double lg = log(s);
        double lo = ceil((lg - 2 * tol) / q), hi = ceil((lg + 2 * tol) / q);
        if (lo == hi) {
            *c = hi * q;
            return 1;
        }
    }
    return 0;
}

/* The common shift c of hm_logprobs_new(3): with sum the sum of exp(l[i])
 * in order, 0 if sum <= 1, else log(sum) rounded up to the grid.  Most
 * rows carry less than 1 - 1e-4 of the mass, which a bound shows; a
 * binary32 sum decides it whenever that reference is more than a relative
 * 2e-5 from a boundary, a binary64 one when it is more than 1e-11; only
 * then is the reference computed, with libm, as the vectors are.  Each
 * way gives the reference's c; which one decides is a matter of time.
 *
 * wide: AVX-512's loops (logprobs_wide.c).  There in (or NULL) holds
 * hm_lp_wide_check's estimates, from below and above, of the sum of
 * exp_above8 of the values before perturbation (near, grid 2 or none),
 * which moved each by at most eta = eps + q/2 (+ 2^-30 for rounding), so
 * at most e^eta times its exponential: the sum of the values' exponentials
 * now, or sum_bound of them (at most 1.0071 times that), is at most
 * est_hi times the upper estimate (with its relative 2e-5; a value below
 * -87 counts as -87 there), and at most 1 - 1e-4 leaves sum <= 1 whatever
 * the rounding.  Else the binary32 sum is hm_lp_wide_sum_near, within a
 * relative 1.8e-5 of the sum (values below -86 counted as e^-86, which
 * raises it by 1024 e^-86 < 1e-34 at most), in one pass that shows that
 * bound too. */
static double common_shift(const hm_logprobs *lp, const double *l, size_t n,
                           const double *in, int wide)
{
    const double q = lp->quantum, lim = 1 - 1e-4;
    double c;
    if (wide && in != NULL && in[1] * lp->est_hi <= lim)
        return 0; /* the bound <= 1 - 1e-4: sum <= 1 whatever the rounding */
    if (!wide && sum_bound(l, n) <= lim)
        return 0;
    if (shift_from(wide ? hm_lp_wide_sum_near(l, n) : sum_approx(l, n), 2e-5,
                   q, &c) ||
        shift_from(sum_close(l, n), 1e-11, q, &c))
        return c;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += exp(l[i]);
    if (!(sum > 1))
        return 0;
    c = log(sum);
    return q > 0 ? ceil(c / q) * q : c;
}

/* l[i] - c over the row, in a loop that vectorizes. */
LP_CLONES static void subtract(double *l, size_t n, double c)
{
    for (size_t i = 0; i < n; i++)
        l[i] -= c;
}

/* Tests set this to take the portable loops on AVX-512 CPUs. */
int hm_lp_harden_portable = 0;

/* Whether hardening takes the AVX-512 loops (logprobs_wide.c). */
static int use_wide(void)
{
    return !hm_lp_harden_portable && hm_lp_wide_ok();
}

/* The core: values l[0..n-1] (true log-probabilities, finite or -inf) of
 * ids, hardened in place with the window's step seed, and sorted unless
 * keep; near as for perturb; in (or NULL) hm_lp_wide_check's estimates.
 * The AVX-512 perturbation needs near and eps 2^-52 exact at a normal
 * magnitude. */
static void harden(const hm_logprobs *lp, hm_seed s, int32_t *ids,
                   double *l, size_t n, int near, int keep, const double *in)
{
    const double q = lp->quantum;
    const int wide = use_wide();
    if (wide && near && (lp->eps == 0 || lp->eps >= 0x1p-970)) {
        hm_lp_wide_perturb(s.a + s.g, s.g, ids, l, n, lp->eps * 0x1p-52, q);
    } else {
        perturb(s, ids, l, n, lp->eps, q, near);
    }
    /* A common shift, which leaves the renormalized distribution alone,
     * keeps the probabilities' sum at most 1: without it the sign of a
     * peaked row's perturbation would show. */
    double c = common_shift(lp, l, n, near ? in : NULL, wide);
    if (!keep) /* (the sort shifts the values as it writes them) */
        (void)hm_lp_sort(ids, l, n, q, c);
    else if (c != 0)
        subtract(l, n, c);
}

/* Checks of a row without early exits, so that they vectorize: bit 0 a
 * negative id, bit 1 a value that is NaN, +inf or positive (not a
 * log-probability), bit 2 a finite value below -2^20 (perturb's near). */
LP_CLONES static unsigned check_row(const int32_t *restrict ids,
                                    const double *restrict l, size_t n)
{
    int32_t lo = 0;
    int64_t bad = 0, far = 0; /* (as wide as the values: no packing) */
    for (size_t i = 0; i < n; i++)
        lo = ids[i] < lo ? ids[i] : lo;
    for (size_t i = 0; i < n; i++) {
        bad |= !(l[i] <= 0);
        far |= l[i] < -0x1p20 && l[i] != -INFINITY;
    }
    return (unsigned)(lo < 0) | (unsigned)(bad != 0) << 1 |
           (unsigned)(far != 0) << 2;
}

int hm_logprobs_harden(const hm_logprobs *lp, const hm_row *row,
                       int32_t *ids, double *logprobs, size_t n,
                       unsigned flags)
{
    hm_seed s;
    if (lp == NULL || row == NULL ||
        (n > 0 && (ids == NULL || logprobs == NULL)) ||
        (flags & ~HM_LOGPROBS_KEEP_ORDER) != 0)
        return HM_EINVAL;
    if (n > lp->topk)
        return HM_ERANGE;
    double est[2], *in = NULL;
    unsigned bad = 0;
    if (n > 0 && use_wide()) {
        /* (past (1 - 1e-4) / est_hi the estimate cannot show a fit) */
        bad = hm_lp_wide_check(ids, logprobs, n, (1 - 1e-4) / lp->est_hi,
                               est);
        in = est;
    } else if (n > 0) {
        bad = check_row(ids, logprobs, n);
    }
    const int near = !(bad & 4);
    bad &= 3;
    if (bad == 3) /* both kinds: the first one decides, as it always did */
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || !(logprobs[i] <= 0)) {
                bad = ids[i] < 0 ? 1 : 2;
                break;
            }
    if (bad & 1)
        return HM_ERANGE;
    if (bad)
        return HM_EINVAL;
    int rc = window_of(lp, row, &s);
    if (rc != HM_OK)
        return rc;
    harden(lp, s, ids, logprobs, n, near,
           (flags & HM_LOGPROBS_KEEP_ORDER) != 0, in);
    return HM_OK;
}

/* --------------------------------------------------- top-k of a dense row */

/* Min-heap of the k best (logit, id) so far; the root is the worst. */
typedef struct cand {
    float l;
    int32_t id;
} cand;

static inline int worse(const cand *a, const cand *b)
{
    return a->l < b->l || (a->l == b->l && a->id > b->id);
}

static void heap_down(cand *h, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && worse(&h[c + 1], &h[c]))
            c++;
        if (!worse(&h[c], &h[i]))
            return;
        cand t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static void heap_up(cand *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!worse(&h[i], &h[p]))
            return;
        cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* Sum of e^(l[v] - mx) over the row (each term <= 1), in eight binary32
 * lanes gathered into binary64 every 128 tokens: relative error below
 * 1.5e-6, so log-probabilities within that of exact. */
LP_CLONES static double sum_exp(const float *restrict l, size_t V, float mx)
{
    double sum = 0;
    for (size_t base = 0; base < V; base += 128) {
        size_t m = V - base < 128 ? V - base : 128;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        size_t i = 0;
        for (; i + 8 <= m; i += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += hm_expf_neg(l[base + i + j] - mx);
        for (; i < m; i++)
            acc[0] += hm_expf_neg(l[base + i] - mx);
        for (int j = 0; j < 8; j++)
            sum += acc[j];
    }
    return sum;
}

/* Tests set this to take every logit through row_topk's scalar loop. */
int hm_lp_dense_portable = 0;

/* A block of 16 logits from v on that holds one above t or one that is
 * not below +inf (NaN, +inf), or where the look ended: the blocks before
 * it hold neither, and the maximum of their logits joins *mx.  Most
 * blocks of a long row hold nothing for the heap: unless busy (the last
 * call stopped at its first block), runs of 256 are looked at in sixteen
 * lanes first, with one test at the end of each, and then at most 256
 * logits block by block (so the block returned may hold nothing either:
 * the caller takes it one logit at a time all the same).  The loops
 * vectorize: the maxima stay in sixteen lanes until the end, and may take
 * in logits at and after the block returned too, which the caller's loop
 * looks at again (a maximum may take a value twice; a NaN never wins a
 * comparison, and a +inf fails the row). */
LP_CLONES static size_t quiet_blocks(const float *restrict l, size_t V,
                                     size_t v, float t, int busy, float *mx)
{
    float ml[16];
    for (int j = 0; j < 16; j++)
        ml[j] = -INFINITY;
    for (; !busy && v + 256 <= V; v += 256) {
        int32_t f[16], any = 0;
        for (int j = 0; j < 16; j++)
            f[j] = 0;
        for (size_t i = 0; i < 256; i += 16)
            for (int j = 0; j < 16; j++) {
                float x = l[v + i + j];
                ml[j] = x > ml[j] ? x : ml[j];
                f[j] |= !(x < INFINITY) | (x > t);
            }
        for (int j = 0; j < 16; j++)
            any |= f[j];
        if (any)
            break;
    }
    size_t end = v + 256 <= V ? v + 256 : V;
    for (; v + 16 <= end; v += 16) {
        int stop = 0;
        for (int j = 0; j < 16; j++) {
            float x = l[v + j];
            ml[j] = x > ml[j] ? x : ml[j];
            stop |= !(x < INFINITY) | (x > t);
        }
        if (stop)
            break;
    }
    float m = *mx;
    for (int j = 0; j < 16; j++)
        m = ml[j] > m ? ml[j] : m;
    *mx = m;
    return v;
}

/* The k best tokens of a row, best first, and the row's log-sum-exp;
 * HM_EINVAL for a NaN or +inf logit or a row without a finite one.
 * Blocks of logits none of which the heap would take (none above its
 * worst once it is full: a later id loses a tie) and that are all below
 * +inf are passed over by quiet_blocks, which only takes their maximum;
 * the others go through the loop one by one, so the heap sees the same
 * candidates in the same order. */
static int row_topk(const float *l, size_t V, size_t k, int32_t *ids,
                    double *lp, size_t *n_out)
{
    cand h[HM_LOGPROBS_TOPK_MAX];
    size_t n = 0;
    float mx = -INFINITY;
    int busy = 0;
    /* Past about 32 k logits a block of 16 holds one the heap takes with
     * probability at most a half (k/v each, in a random order): before,
     * passing over blocks costs more than it saves. */
    size_t stop = k <= V / 32 ? 32 * k : V;
    for (size_t v = 0; v < V; v++) {
        if (v == stop && !hm_lp_dense_portable) {
            /* the heap's worst, or below every finite value while it
             * fills; nothing is taken when k is 0 */
            float t = k == 0 ? INFINITY : n < k ? -INFINITY : h[0].l;
            size_t from = v;
            float qm = mx; /* (mx's address taken, it would live in memory
                            * in the loop below, a store and a load a
                            * logit) */
            v = quiet_blocks(l, V, v, t, busy, &qm);
            mx = qm;
            if (v == V)
                break;
            busy = v == from;
            stop = v + 16 <= V ? v + 16 : V; /* (then the next quiet run) */
        }
        float x = l[v];
        if (!(x < INFINITY))
            return HM_EINVAL; /* NaN or +inf */
        if (x == -INFINITY)
            continue;
        mx = x > mx ? x : mx;
        cand c = {x, (int32_t)v};
        if (n < k) {
            h[n] = c;
            heap_up(h, n++);
        } else if (k > 0 && worse(&h[0], &c)) {
            h[0] = c;
            heap_down(h, 0, n);
        }
    }
    if (mx == -INFINITY)
        return HM_EINVAL;
    double sum = sum_exp(l, V, mx);
    /* l - max first: max + log(sum) would lose log(sum) next to a logit
     * of 1e38. */
    double lsum = log(sum);
    *n_out = n;
    for (size_t i = n; i-- > 0;) { /* pop the worst into the last slot */
        ids[i] = h[0].id;
        lp[i] = ((double)h[0].l - (double)mx) - lsum;
        h[0] = h[i];
        heap_down(h, 0, i);
    }
    return HM_OK;
}

int hm_logprobs_dense(const hm_logprobs *lp, const float *logits,
                      size_t n_rows, size_t n_vocab, size_t row_stride,
                      const hm_row *rows, size_t k, int32_t *ids,
                      double *logprobs, size_t *n_out)
{
    if (lp == NULL ||
        (n_rows > 0 && (logits == NULL || rows == NULL || n_out == NULL ||
                        (k > 0 && (ids == NULL || logprobs == NULL)))) ||
        n_vocab == 0 || row_stride < n_vocab)
        return HM_EINVAL;
    if (n_vocab > INT32_MAX || k > lp->topk || k > n_vocab)
        return HM_ERANGE;
    for (size_t r = 0; r < n_rows; r++)
        if (rows[r].context == NULL && rows[r].n_context > 0)
            return HM_EINVAL;
    for (size_t r = 0; r < n_rows; r++) {
        hm_seed s;
        /* (k 0: ids and logprobs may be NULL, no arithmetic on them) */
        int32_t *id = k > 0 ? ids + r * k : ids;
        double *l = k > 0 ? logprobs + r * k : logprobs;
        int rc = row_topk(logits + r * row_stride, n_vocab, k, id, l,
                          &n_out[r]);
        if (rc == HM_OK)
            rc = window_of(lp, &rows[r], &s);
        if (rc != HM_OK)
            return rc;
        harden(lp, s, id, l, n_out[r], 0, 0, NULL); /* (values may be far) */
    }
    return HM_OK;
}
