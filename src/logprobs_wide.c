/*
 * logprobs_wide.c - hardening's loops on eight 64-bit lanes (AVX-512 F,
 * DQ and VL; hm_lp_wide_ok): the checks of a row, the perturbation fused
 * with an estimate of the bound that decides most common shifts, and the
 * binary32 sum of the exponentials.  Every value that leaves them is the
 * bits that logprobs.c's portable loops give; tests/test_logprobs.c runs
 * both and compares.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#define WIDE_TARGET "avx512f,avx512dq,avx512vl,fma"
#define WIDE __attribute__((target(WIDE_TARGET)))
#define WIDE_INLINE WIDE static inline __attribute__((always_inline))

int hm_lp_wide_ok(void)
{
    static int ok = -1; /* a benign race: every thread computes the same */
    if (ok < 0)
        ok = hm_cpu_has_avx512_vaes() && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
    return ok;
}

/* About hm_exp_above(y) for eight values (y <= 0, -inf, or anything a
 * check rejects), in binary32: 2^m (1 + f (a + (1 - a) f)) for
 * t = y log2(e), m = floor(t), f = t - m, values below -87 counted as
 * -87.  The quadratic meets 2^f at f = 0 and 1, so this is continuous in
 * t and which integer m is taken at a tie does not matter.  Against the
 * same function of the exact t: y rounded to binary32 and the product t
 * move t by 3 2^-24 |t| <= 2.3e-5 (|t| <= 126), which moves the value by
 * a relative 0.71 of that (the largest slope of its log), 1.6e-5; the
 * fused multiply-adds add 1.2e-7.  hm_exp_above is within 1e-12 of that
 * function of its own (clamped) argument. */
WIDE_INLINE __m256 exp_above8(__m512d y)
{
    __m256 x = _mm256_max_ps(_mm512_cvtpd_ps(y), _mm256_set1_ps(-87.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
    __m256 m = _mm256_round_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, m); /* exact: 0 <= f < 1 */
    __m256 p = _mm256_fmadd_ps(f, _mm256_set1_ps(0.3068528194400547f),
                               _mm256_set1_ps(0.6931471805599453f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    return _mm256_scalef_ps(p, m); /* p 2^m, m >= -126: normal */
}

/* The sum of two accumulators of eight binary32 lanes, in binary64.
 * Each lane adds at most 64 positive terms (k <= 1024): within a relative
 * 64 2^-24 < 3.9e-6. */
WIDE_INLINE double sum16(__m256 e0, __m256 e1)
{
    __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e0)),
                               _mm256_cvtps_pd(_mm256_castps256_ps128(e1)));
    __m256d hi =
        _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1)),
                      _mm256_cvtps_pd(_mm256_extractf128_ps(e1, 1)));
    __m256d s = _mm256_add_pd(lo, hi);
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s),
                            _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

static inline __mmask8 tail8(size_t left)
{
    return left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1);
}

/* The sum of exp_above8 over l, within a relative 2e-5 of the same
 * function summed exactly.  Alone, this costs a quarter of what it costs
 * fused into the perturbation, whose ports it shares. */
WIDE double hm_lp_wide_est(const double *l, size_t n)
{
    __m256 e0 = _mm256_setzero_ps(), e1 = e0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        e0 = _mm256_add_ps(e0, exp_above8(_mm512_loadu_pd(l + i)));
        e1 = _mm256_add_ps(e1, exp_above8(_mm512_loadu_pd(l + i + 8)));
    }
    for (; i < n; i += 8) {
        __mmask8 m = tail8(n - i);
        e0 = _mm256_add_ps(e0, _mm256_maskz_mov_ps(
                                   m, exp_above8(_mm512_maskz_loadu_pd(m, l + i))));
    }
    return sum16(e0, e1);
}

/* ------------------------------------------------------------- checks */

/* The bits of check_row in logprobs.c: 1 a negative id, 2 a value that
 * is not <= 0, 4 a finite value below -2^20.  As signed 64-bit integers
 * the bits of the values in [-2^20, -0] are the ones at most those of
 * -2^20 (more negative doubles have larger bits, positive ones and +0 are
 * not negative), so one maximum clears most rows; a row with a -inf, a +0
 * or a bad value is classified by comparisons.  On the way, which the
 * check's loads leave nearly free, est[0] = hm_lp_wide_est of the values
 * except blocks of sixteen all below -14 (as unsigned integers the bits
 * of those are above those of -14, +0's below), and est[1] = est[0] plus
 * e^-14 for each value left out: bounds of the estimate from below and
 * from above.  Servers hand rows over in their true order, whose tail
 * carries little mass. */
WIDE unsigned hm_lp_wide_check(const int32_t *ids, const double *l, size_t n,
                               double est[2])
{
    const long long lim = (long long)UINT64_C(0xC130000000000000); /* -2^20 */
    const __m512i skip = _mm512_set1_epi64((long long)UINT64_C(0xC02C000000000000)); /* -14 */
    __m512i ior = _mm512_setzero_si512();
    __m512i mx0 = _mm512_set1_epi64((long long)INT64_MIN), mx1 = mx0;
    __m256 e0 = _mm256_setzero_ps(), e1 = e0;
    size_t i = 0, left_out = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i b0 = _mm512_loadu_si512(l + i), b1 = _mm512_loadu_si512(l + i + 8);
        ior = _mm512_or_si512(ior, _mm512_loadu_si512(ids + i));
        mx0 = _mm512_max_epi64(mx0, b0);
        mx1 = _mm512_max_epi64(mx1, b1);
        if ((_mm512_cmp_epu64_mask(b0, skip, _MM_CMPINT_LE) |
             _mm512_cmp_epu64_mask(b1, skip, _MM_CMPINT_LE)) == 0) {
            left_out += 16;
            continue;
        }
        e0 = _mm256_add_ps(e0, exp_above8(_mm512_castsi512_pd(b0)));
        e1 = _mm256_add_ps(e1, exp_above8(_mm512_castsi512_pd(b1)));
    }
    if (i < n)
        ior = _mm512_or_si512(
            ior, _mm512_maskz_loadu_epi32((__mmask16)((1u << (n - i)) - 1),
                                          ids + i));
    for (; i < n; i += 8) {
        __mmask8 m = tail8(n - i);
        __m512d x = _mm512_maskz_loadu_pd(m, l + i);
        mx0 = _mm512_mask_max_epi64(mx0, m, mx0, _mm512_castpd_si512(x));
        e0 = _mm256_add_ps(e0, _mm256_maskz_mov_ps(m, exp_above8(x)));
    }
    est[0] = sum16(e0, e1);
    est[1] = est[0] + (double)left_out * 8.3153e-7; /* > e^-14 */
    unsigned bad = _mm512_reduce_or_epi32(ior) < 0;
    if (_mm512_reduce_max_epi64(_mm512_max_epi64(mx0, mx1)) <= lim)
        return bad;
    const __m512d zero = _mm512_setzero_pd(), far = _mm512_set1_pd(-0x1p20),
                  ninf = _mm512_set1_pd(-INFINITY);
    __mmask8 kb = 0, kf = 0;
    for (i = 0; i < n; i += 8) {
        __mmask8 m = tail8(n - i);
        __m512d x = _mm512_maskz_loadu_pd(m, l + i);
        kb |= _mm512_mask_cmp_pd_mask(m, x, zero, _CMP_NLE_UQ);
        kf |= _mm512_mask_cmp_pd_mask(_mm512_cmp_pd_mask(x, far, _CMP_LT_OQ),
                                      x, ninf, _CMP_NEQ_OQ);
    }
    return bad | (unsigned)(kb != 0) << 1 | (unsigned)(kf != 0) << 2;
}

/* -------------------------------------------------------- perturbation */

/* The offset's unit value of PRF v1 for eight mixer inputs z (before the
 * last xor-shift): perturb_one's unit_offset is V 2^-52 exactly for the
 * odd integer V = 2 (x >> 12) + 1 - 2^52 = ((x >> 11) | 1) - 2^52; the
 * arithmetic shift of x ^ 2^63 (x - 2^63 as a signed integer) by 11 is
 * (x >> 11) - 2^52 with the same lowest bit, and |V| < 2^52 converts to
 * binary64 exactly.  Returned: V, the caller scales. */
WIDE_INLINE __m512d unit_v(__m512i z)
{
    const __m512i sign = _mm512_set1_epi64((long long)INT64_MIN);
    const __m512i one = _mm512_set1_epi64(1);
    __m512i x = _mm512_ternarylogic_epi64(z, _mm512_srli_epi64(z, 31), sign,
                                          0x96); /* z ^ z >> 31 ^ 2^63 */
    return _mm512_cvtepi64_pd(_mm512_or_si512(_mm512_srai_epi64(x, 11), one));
}

/* hm_mix_fin(a1 + id g) for eight ids, before its last xor-shift. */
WIDE_INLINE __m512i mix_ids(__m256i id, __m512i a1, __m512i g)
{
    const __m512i m1 = _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ULL);
    const __m512i m2 = _mm512_set1_epi64((long long)0x94D049BB133111EBULL);
    __m512i z = _mm512_add_epi64(
        a1, _mm512_mullo_epi64(_mm512_cvtepu32_epi64(id), g));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);
    return _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                              m2);
}

enum { GRID_NONE, GRID_POW2, GRID_ANY };

/* perturb_one (logprobs.c) for eight values, grid 0 or 2.  off = eps V
 * 2^-52 there is (eps 2^-52) V here: epsv is eps 2^-52, exact, and the
 * product is rounded once, at a normal magnitude (the caller sees to
 * both).  GRID_POW2, q = 2^-k: (t + R) - R rounds t = (l + off) 2^k to an
 * integer, ties to even, and times q gives that multiple of q; with
 * R' = R q, (x + R') - R' rounds x = l + off to the same multiple of q
 * directly, exactly, for |x| < 2^51 q, which values near (above -2^20)
 * keep for q >= 2^-30; -inf stays -inf, and a rounded 0 is +0 in both.
 * GRID_ANY: the same operations as perturb_one.  The clamp: MINPD(y, 0)
 * is y < 0 ? y : +0, NaN and -0 included. */
WIDE_INLINE __m512d perturb8(__m256i id, __m512d l, __m512i a1, __m512i g,
                             __m512d epsv, __m512d rq, __m512d inv,
                             __m512d q, int grid)
{
    const __m512d magic = _mm512_set1_pd(0x1.8p52);
    __m512d y = _mm512_add_pd(l, _mm512_mul_pd(epsv,
                                               unit_v(mix_ids(id, a1, g))));
    if (grid == GRID_POW2)
        y = _mm512_sub_pd(_mm512_add_pd(y, rq), rq);
    else if (grid == GRID_ANY)
        y = _mm512_mul_pd(
            _mm512_sub_pd(_mm512_add_pd(_mm512_mul_pd(y, inv), magic), magic),
            q);
    return _mm512_min_pd(y, _mm512_setzero_pd());
}

WIDE_INLINE void perturb_row(uint64_t a1, uint64_t g, const int32_t *ids,
                             double *l, size_t n, double eps52, double q,
                             int grid)
{
    const __m512i va = _mm512_set1_epi64((long long)a1);
    const __m512i vg = _mm512_set1_epi64((long long)g);
    const __m512d epsv = _mm512_set1_pd(eps52);
    const __m512d vq = _mm512_set1_pd(q);
    const __m512d inv = _mm512_set1_pd(q > 0 ? 1 / q : 0);
    const __m512d rq = _mm512_set1_pd(0x1.8p52 * q);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d y0 = perturb8(_mm256_loadu_si256((const __m256i *)(ids + i)),
                              _mm512_loadu_pd(l + i), va, vg, epsv, rq, inv,
                              vq, grid);
        __m512d y1 = perturb8(
            _mm256_loadu_si256((const __m256i *)(ids + i + 8)),
            _mm512_loadu_pd(l + i + 8), va, vg, epsv, rq, inv, vq, grid);
        _mm512_storeu_pd(l + i, y0);
        _mm512_storeu_pd(l + i + 8, y1);
    }
    for (; i < n; i += 8) {
        __mmask8 m = tail8(n - i);
        __m512d y = perturb8(_mm256_maskz_loadu_epi32(m, ids + i),
                             _mm512_maskz_loadu_pd(m, l + i), va, vg, epsv,
                             rq, inv, vq, grid);
        _mm512_mask_storeu_pd(l + i, m, y);
    }
}

WIDE void hm_lp_wide_perturb(uint64_t a1, uint64_t g, const int32_t *ids,
                             double *l, size_t n, double eps52, double q)
{
    int e;
    if (q == 0)
        perturb_row(a1, g, ids, l, n, eps52, q, GRID_NONE);
    else if (frexp(q, &e) == 0.5)
        perturb_row(a1, g, ids, l, n, eps52, q, GRID_POW2);
    else
        perturb_row(a1, g, ids, l, n, eps52, q, GRID_ANY);
}

/* ------------------------------------------------------- binary32 sum */

/* sum_approx (logprobs.c), the same operations on the same lanes: sixteen
 * values to binary32, hm_expf_neg16, back to binary64 into two sums of
 * eight lanes, their sum, and the rest one by one into lane 0. */
WIDE double hm_lp_wide_sum_approx(const double *l, size_t n)
{
    __m512d a = _mm512_setzero_pd(), b = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm512_cvtpd_ps(_mm512_loadu_pd(l + i))),
            _mm512_cvtpd_ps(_mm512_loadu_pd(l + i + 8)), 1);
        /* hm_expf_neg16, whose select is MAXPS's (x > -87 ? x : -87,
         * NaN included) */
        hm_v16f e = hm_expf_neg16(
            (hm_v16f)_mm512_max_ps(x, _mm512_set1_ps(-87.0f)));
        a = _mm512_add_pd(a, _mm512_cvtps_pd(
                                 _mm512_castps512_ps256((__m512)e)));
        b = _mm512_add_pd(b, _mm512_cvtps_pd(
                                 _mm512_extractf32x8_ps((__m512)e, 1)));
    }
    a = _mm512_add_pd(a, b);
    double acc[8];
    _mm512_storeu_pd(acc, a);
    for (; i < n; i++)
        acc[0] += (double)hm_expf_neg((float)l[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#else /* no AVX-512 intrinsics: never called */

int hm_lp_wide_ok(void)
{
    return 0;
}

unsigned hm_lp_wide_check(const int32_t *ids, const double *l, size_t n,
                          double est[2])
{
    (void)ids, (void)l, (void)n;
    est[0] = est[1] = 0;
    return 0;
}

double hm_lp_wide_est(const double *l, size_t n)
{
    (void)l, (void)n;
    return 0;
}

void hm_lp_wide_perturb(uint64_t a1, uint64_t g, const int32_t *ids,
                        double *l, size_t n, double eps52, double q)
{
    (void)a1, (void)g, (void)ids, (void)l, (void)n, (void)eps52, (void)q;
}

double hm_lp_wide_sum_approx(const double *l, size_t n)
{
    (void)l, (void)n;
    return 0;
}
#endif
