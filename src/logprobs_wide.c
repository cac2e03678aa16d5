/*
 * logprobs_wide.c - hardening's loops on eight 64-bit lanes (AVX-512 F,
 * DQ and VL; hm_lp_wide_ok): the checks of a row with an estimate of the
 * bound that shows most rows need no common shift, the perturbation, and
 * the binary32 sum of the exponentials that decides the shift of the
 * others.  Every value that leaves them is the bits that logprobs.c's
 * portable loops give; tests/test_logprobs.c runs both and compares.
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

/* e^y for sixteen values y0, y1 (y <= 0 or -inf), in binary32, within a
 * relative 1.42e-5 of e^max(y, -86): 2^m P(f) for t = x log2(e), x = y
 * rounded to binary32 and clamped at -86, m = round(t) (ties to even, by
 * the bits of t + 1.5 2^23) and f = t - m in [-1/2, 1/2], exact; P a
 * quartic near 2^f.  Rounding y moves e^y by a relative 86 2^-24 <
 * 5.2e-6; the rounded log2(e) (1.4e-8) and the product (2^-24) move t by
 * |t| 7.4e-8 <= 9.2e-6, e^y by ln 2 times that, 6.4e-6; P's fused
 * multiply-adds are within 2.7e-6 of 2^f for every binary32 f in
 * [-1/2, 1/2] (all of them tried).  m >= -124 keeps 2^m P(f) normal, so
 * adding m to P's exponent bits multiplies exactly. */
WIDE_INLINE __m512 exp_near16(__m512d y0, __m512d y1)
{
    const __m512 round = _mm512_set1_ps(0x1.8p23f);
    __m512 x = _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm512_cvtpd_ps(y0)), _mm512_cvtpd_ps(y1), 1);
    x = _mm512_max_ps(x, _mm512_set1_ps(-86.0f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 sh = _mm512_add_ps(t, round); /* low bits: m */
    __m512 f = _mm512_sub_ps(t, _mm512_sub_ps(sh, round));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0x1.3997d6p-7f), f,
                               _mm512_set1_ps(0x1.ca144p-5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0x1.ec06dap-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0x1.62e0dcp-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0x1.ffffe8p-1f));
    /* (the bits of 1.5 2^23 shifted by 23 are 0 modulo 2^32) */
    return _mm512_castsi512_ps(
        _mm512_add_epi32(_mm512_castps_si512(p),
                         _mm512_slli_epi32(_mm512_castps_si512(sh), 23)));
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

/* The sum of e^l[i] (values <= 0 or -inf; below -86, e^-86) within a
 * relative 1.8e-5, for the common shift: exp_near16 summed in sixteen
 * binary32 lanes, each of at most 64 positive terms (k <= 1024), so
 * within a relative 63 2^-24 < 3.8e-6 of the exact sum of the lanes'
 * terms, then in binary64. */
WIDE double hm_lp_wide_sum_near(const double *l, size_t n)
{
    __m512 e = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        e = _mm512_add_ps(e, exp_near16(_mm512_loadu_pd(l + i),
                                        _mm512_loadu_pd(l + i + 8)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        e = _mm512_add_ps(
            e, _mm512_maskz_mov_ps(
                   m, exp_near16(_mm512_maskz_loadu_pd((__mmask8)m, l + i),
                                 _mm512_maskz_loadu_pd((__mmask8)(m >> 8),
                                                       l + i + 8))));
    }
    return sum16(_mm512_castps512_ps256(e), _mm512_extractf32x8_ps(e, 1));
}

/* ------------------------------------------------------------- checks */

/* The bits of check_row in logprobs.c: 1 a negative id, 2 a value that
 * is not <= 0, 4 a finite value below -2^20.  As signed 64-bit integers
 * the bits of the values in [-2^20, -0] are the ones at most those of
 * -2^20 (more negative doubles have larger bits, positive ones and +0 are
 * not negative), so one maximum clears most rows; a row with a -inf, a +0
 * or a bad value is classified by comparisons.  On the way, which the
 * check's loads leave nearly free, est[0] = the sum of exp_above8 over the
 * values except blocks of sixteen all below -14 (as unsigned integers the
 * bits of those are above those of -14, +0's below), in sixteen binary32
 * lanes (within a relative 2e-5 of that sum taken exactly), and est[1] =
 * est[0] plus e^-14 for each value left out: bounds of the estimate from
 * below and from above.  Servers hand rows over in their true order, whose
 * tail carries little mass.  When the first sixteen values of a row of
 * 128 or more take est[0] past stop, the estimate cannot show that the
 * row fits and is left unfinished: est[0] is then their part, still a
 * bound from below, and est[1] is +inf; a row that carries its mass at
 * the top (the softmax rows) pays for sixteen exponentials.  (One look,
 * which costs a tail row of 256 values 1%: more cost it 15%, and a
 * shorter row has less to save.) */
/* Sixteen values of hm_lp_wide_check's main loop; est: estimate them. */
WIDE_INLINE void check16(const int32_t *ids, const double *l, __m512i *ior,
                         __m512i *mx0, __m512i *mx1, __m256 *e0, __m256 *e1,
                         size_t *left_out, int est)
{
    const __m512i skip = _mm512_set1_epi64((long long)UINT64_C(0xC02C000000000000)); /* -14 */
    __m512i b0 = _mm512_loadu_si512(l), b1 = _mm512_loadu_si512(l + 8);
    *ior = _mm512_or_si512(*ior, _mm512_loadu_si512(ids));
    *mx0 = _mm512_max_epi64(*mx0, b0);
    *mx1 = _mm512_max_epi64(*mx1, b1);
    if (!est)
        return;
    if ((_mm512_cmp_epu64_mask(b0, skip, _MM_CMPINT_LE) |
         _mm512_cmp_epu64_mask(b1, skip, _MM_CMPINT_LE)) == 0) {
        *left_out += 16;
        return;
    }
    *e0 = _mm256_add_ps(*e0, exp_above8(_mm512_castsi512_pd(b0)));
    *e1 = _mm256_add_ps(*e1, exp_above8(_mm512_castsi512_pd(b1)));
}

WIDE unsigned hm_lp_wide_check(const int32_t *ids, const double *l, size_t n,
                               double stop, double est[2])
{
    const long long lim = (long long)UINT64_C(0xC130000000000000); /* -2^20 */
    __m512i ior = _mm512_setzero_si512();
    __m512i mx0 = _mm512_set1_epi64((long long)INT64_MIN), mx1 = mx0;
    __m256 e0 = _mm256_setzero_ps(), e1 = e0;
    size_t i = 0, left_out = 0;
    int open = 1; /* still estimating */
    if (n >= 128) {
        check16(ids, l, &ior, &mx0, &mx1, &e0, &e1, &left_out, 1);
        /* (a look in binary32: only the time depends on it) */
        __m256 e = _mm256_add_ps(e0, e1);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(e),
                              _mm256_extractf128_ps(e, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        open = !(_mm_cvtss_f32(h) > stop);
        i = 16;
    }
    if (open)
        for (; i + 16 <= n; i += 16)
            check16(ids + i, l + i, &ior, &mx0, &mx1, &e0, &e1, &left_out, 1);
    else
        for (; i + 16 <= n; i += 16)
            check16(ids + i, l + i, &ior, &mx0, &mx1, &e0, &e1, &left_out, 0);
    if (i < n)
        ior = _mm512_or_si512(
            ior, _mm512_maskz_loadu_epi32((__mmask16)((1u << (n - i)) - 1),
                                          ids + i));
    for (; i < n; i += 8) {
        __mmask8 m = tail8(n - i);
        __m512d x = _mm512_maskz_loadu_pd(m, l + i);
        mx0 = _mm512_mask_max_epi64(mx0, m, mx0, _mm512_castpd_si512(x));
        if (open)
            e0 = _mm256_add_ps(e0, _mm256_maskz_mov_ps(m, exp_above8(x)));
    }
    est[0] = sum16(e0, e1);
    est[1] = open ? est[0] + (double)left_out * 8.3153e-7 /* > e^-14 */
                  : INFINITY;
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

/* The offsets eps V 2^-52 of PRF v1 for eight mixer inputs z (before the
 * last xor-shift), epsv = eps 2^-52: perturb_one's unit_offset is V 2^-52
 * exactly for the odd integer V = 2 m + 1 - 2^52, m = x >> 12 (52 bits)
 * for the mixer's output x = z ^ z >> 31, so m = z >> 12 ^ z >> 43.  Its
 * bits under those of 2^52 are the binary64 D = 2^52 + m, and T =
 * D - 1.5 2^52 = m - 2^51 is exact; (2 epsv) T + epsv is epsv V, which
 * one fused multiply-add rounds once, as the product epsv V is rounded:
 * the same bits (epsv 0 gives +0 where the product gave -0 for V < 0,
 * which the rounding to the grid and the clamp make +0 either way).
 * Five operations where the conversion of V took six. */
WIDE_INLINE __m512d offset8(__m512i z, __m512d epsv, __m512d eps2)
{
    const __m512i two52 = _mm512_set1_epi64(0x4330000000000000LL);
    __m512i d = _mm512_ternarylogic_epi64(_mm512_srli_epi64(z, 12),
                                          _mm512_srli_epi64(z, 43), two52,
                                          0xBE); /* (a ^ b) | c */
    __m512d t = _mm512_sub_pd(_mm512_castsi512_pd(d),
                              _mm512_set1_pd(0x1.8p52));
    return _mm512_fmadd_pd(eps2, t, epsv);
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
    __m512d y = _mm512_add_pd(
        l, offset8(mix_ids(id, a1, g), epsv, _mm512_add_pd(epsv, epsv)));
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

#else /* no AVX-512 intrinsics: never called */

int hm_lp_wide_ok(void)
{
    return 0;
}

unsigned hm_lp_wide_check(const int32_t *ids, const double *l, size_t n,
                          double stop, double est[2])
{
    (void)ids, (void)l, (void)n, (void)stop;
    est[0] = est[1] = 0;
    return 0;
}

double hm_lp_wide_sum_near(const double *l, size_t n)
{
    (void)l, (void)n;
    return 0;
}

void hm_lp_wide_perturb(uint64_t a1, uint64_t g, const int32_t *ids,
                        double *l, size_t n, double eps52, double q)
{
    (void)a1, (void)g, (void)ids, (void)l, (void)n, (void)eps52, (void)q;
}

#endif
