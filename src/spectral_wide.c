/*
 * spectral_wide.c - the spectral channel's loops on eight 64-bit lanes
 * (AVX-512 F, DQ and VL; hm_lp_wide_ok): the checks of a row with its
 * maximum and, on the way, its membership bits gathered from the table;
 * the two masses in one pass; the shift.  Every value that leaves them is
 * the bits that spectral.c's portable loops give; tests/test_spectral.c
 * runs both and compares.
 *
 * The membership of ids i to i + 7 is byte i / 8 of a mask, bit j for
 * id i + j, where the portable loops keep a byte per id.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#define WIDE __attribute__((target("avx512f,avx512dq,avx512vl")))
#define WIDE_INLINE WIDE static inline __attribute__((always_inline))

static inline __mmask8 tail8(size_t left)
{
    return left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1);
}

/* check_row's bits (1 a negative id, 2 a value not <= 0), maximum and OR
 * of the ids, in one pass; the maximum in check_row's lanes and order
 * (MAXPD(x, m) is x > m ? x : m), the rest one by one, then the lanes.
 * km: the membership bits of ids below table (0 for the others), gathered
 * sixteen at a time on the way.  (The gathers cost about what the
 * portable lookup's loads do, 0.4 us at k = 1024 on Zen 4, and more when
 * they move into the masses' loop; one id at a time cost more still.) */
WIDE unsigned hm_sp_wide_scan(const uint64_t *bits, uint32_t table,
                              const int32_t *ids, const double *l, size_t n,
                              double *mx, uint32_t *or_ids, unsigned char *km)
{
    const __m512d zero = _mm512_setzero_pd();
    const __m512i vtab = _mm512_set1_epi32((int)table);
    const __m512i low5 = _mm512_set1_epi32(31);
    const __m512i one = _mm512_set1_epi32(1);
    __m512d mm = _mm512_set1_pd(-INFINITY);
    __m512i lo = _mm512_setzero_si512(), ior = lo;
    __mmask8 bad = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i id = _mm512_loadu_si512(ids + i);
        __m512d x0 = _mm512_loadu_pd(l + i), x1 = _mm512_loadu_pd(l + i + 8);
        lo = _mm512_min_epi32(lo, id);
        ior = _mm512_or_si512(ior, id);
        mm = _mm512_max_pd(x0, mm);
        mm = _mm512_max_pd(x1, mm);
        bad |= _mm512_cmp_pd_mask(x0, zero, _CMP_NLE_UQ) |
               _mm512_cmp_pd_mask(x1, zero, _CMP_NLE_UQ);
        /* the table as 32-bit words: bit u is bit u mod 32 of word u / 32 */
        __mmask16 in = _mm512_cmplt_epu32_mask(id, vtab);
        __m512i w = _mm512_mask_i32gather_epi32(
            _mm512_setzero_si512(), in, _mm512_srli_epi32(id, 5),
            (const void *)bits, 4);
        w = _mm512_srlv_epi32(w, _mm512_and_si512(id, low5));
        __mmask16 k = _mm512_test_epi32_mask(w, one);
        memcpy(km + i / 8, &k, 2);
    }
    if (i + 8 <= n) { /* the values' last block of eight lanes */
        __m512d x = _mm512_loadu_pd(l + i);
        mm = _mm512_max_pd(x, mm);
        bad |= _mm512_cmp_pd_mask(x, zero, _CMP_NLE_UQ);
    }
    double m = -INFINITY, mms[8];
    int b = bad != 0;
    int32_t l32[16];
    uint32_t o32[16], o = 0;
    int32_t low = 0;
    if (i < n)
        memset(km + i / 8, 0, (n - i + 7) / 8);
    for (size_t j = i; j < n; j++) { /* the ids one by one */
        uint32_t u = (uint32_t)ids[j];
        low = ids[j] < low ? ids[j] : low;
        o |= u;
        if (u < table)
            km[j / 8] |= (unsigned char)(((bits[u >> 6] >> (u & 63)) & 1)
                                         << (j & 7));
    }
    for (i += i + 8 <= n ? 8 : 0; i < n; i++) { /* the values' rest */
        m = l[i] > m ? l[i] : m;
        b |= !(l[i] <= 0);
    }
    _mm512_storeu_pd(mms, mm);
    for (int j = 0; j < 8; j++)
        m = mms[j] > m ? mms[j] : m;
    _mm512_storeu_si512(l32, lo);
    _mm512_storeu_si512(o32, ior);
    for (int j = 0; j < 16; j++) {
        low = l32[j] < low ? l32[j] : low;
        o |= o32[j];
    }
    *mx = m;
    *or_ids = o;
    return (unsigned)(low < 0) | (unsigned)b << 1;
}

/* hm_exp_nonpos (internal.h) of l - mx for the 8 nv values at p (nv a
 * constant after inlining; those past left as -inf, whose exponential is
 * 0), the same operations in the same order in each lane, written a step
 * at a time across the vectors: GCC keeps the order, and the core then
 * has nv of the long chains under way instead of about one (nv 8 made
 * the masses of 1024 values 1.4 times as fast as one vector at a time, 4
 * 1.25 times). */
#define EACH _Pragma("GCC unroll 8") for (int j = 0; j < nv; j++)
WIDE_INLINE void exps_at(const double *p, size_t left, __m512d mx,
                         __m512d *e, int nv)
{
    const __m512d magic = _mm512_set1_pd(0x1.8p52);
    static const double c[11] = {1.0 / 3628800, 1.0 / 362880, 1.0 / 40320,
                                 1.0 / 5040,    1.0 / 720,    1.0 / 120,
                                 1.0 / 24,      1.0 / 6,      0.5,
                                 1.0,           1.0};
    __m512d x[8], n[8], r[8], sh[8];
    __mmask8 ok[8];
    EACH {
        size_t at = 8 * (size_t)j;
        x[j] = _mm512_sub_pd(
            _mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY),
                                 tail8(left > at ? left - at : 0), p + at),
            mx);
    }
    EACH ok[j] = _mm512_cmp_pd_mask(x[j], _mm512_set1_pd(-700.0), _CMP_GE_OQ);
    EACH x[j] = _mm512_maskz_mov_pd(ok[j], x[j]); /* tiny or NaN: 0 */
    EACH sh[j] = _mm512_add_pd(
        _mm512_mul_pd(x[j], _mm512_set1_pd(1.4426950408889634)), magic);
    EACH n[j] = _mm512_sub_pd(sh[j], magic);
    EACH r[j] = _mm512_sub_pd(
        x[j], _mm512_mul_pd(n[j], _mm512_set1_pd(0.6931471805598903)));
    EACH r[j] = _mm512_sub_pd(
        r[j], _mm512_mul_pd(n[j], _mm512_set1_pd(5.497923018708371e-14)));
    EACH e[j] = _mm512_add_pd(
        _mm512_mul_pd(_mm512_set1_pd(1.0 / 39916800), r[j]),
        _mm512_set1_pd(c[0]));
    for (int k = 1; k < 11; k++)
        EACH e[j] = _mm512_add_pd(_mm512_mul_pd(e[j], r[j]),
                                  _mm512_set1_pd(c[k]));
    EACH {
        __m512i b = _mm512_slli_epi64(
            _mm512_add_epi64(_mm512_castpd_si512(sh[j]),
                             _mm512_set1_epi64(1023)),
            52); /* 2^round(t): the low bits of sh hold round(t) */
        e[j] = _mm512_maskz_mov_pd(
            ok[j], _mm512_mul_pd(e[j], _mm512_castsi512_pd(b)));
    }
}

/* The exponentials of the 8 nv values at l + i added to the sums in
 * order (past n: +0 to a, nothing to b). */
WIDE_INLINE void add_exps(const double *l, const unsigned char *km, size_t i,
                          size_t n, __m512d mx, __m512d *a, __m512d *b,
                          int nv)
{
    __m512d x[8];
    exps_at(l + i, n - i, mx, x, nv);
    EACH {
        size_t at = i + 8 * (size_t)j;
        *a = _mm512_add_pd(*a, x[j]);
        *b = _mm512_mask_add_pd(*b, at < n ? km[at / 8] : 0, *b, x[j]);
    }
}

/* masses in spectral.c: the sums of e^(l - mx) over all values and over
 * the members, each in eight lanes (value i in lane i mod 8, in order),
 * then the lanes in pairs.  Eight vectors a step (fewer at the end, so
 * that a short row computes few exponentials), added in order; a member
 * adds its term to the second sum, another adds nothing where the
 * portable loop adds +0 (the same: the sum is never -0). */
WIDE void hm_sp_wide_masses(const double *l, const unsigned char *km,
                            size_t n, double mx, double *all, double *sub)
{
    const __m512d vmx = _mm512_set1_pd(mx);
    __m512d a = _mm512_setzero_pd(), b = a;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        add_exps(l, km, i, n, vmx, &a, &b, 8);
    if (n - i > 32)
        add_exps(l, km, i, n, vmx, &a, &b, 8);
    else if (n - i > 8)
        add_exps(l, km, i, n, vmx, &a, &b, 4);
    else if (n > i)
        add_exps(l, km, i, n, vmx, &a, &b, 1);
    double as[8], bs[8];
    _mm512_storeu_pd(as, a);
    _mm512_storeu_pd(bs, b);
    *all = ((as[0] + as[1]) + (as[2] + as[3])) +
           ((as[4] + as[5]) + (as[6] + as[7]));
    *sub = ((bs[0] + bs[1]) + (bs[2] + bs[3])) +
           ((bs[4] + bs[5]) + (bs[6] + bs[7]));
}

/* shift_row in spectral.c: (l + d on the members) - c, clamped at 0 by
 * MINPD(y, +0) (y < 0 ? y : +0).  A member-less value skips the portable
 * loop's + 0.0, which changes only -0 (to +0): the clamp makes +0 of
 * either, shifted. */
WIDE void hm_sp_wide_shift(double *l, const unsigned char *km, size_t n,
                           double d, double c)
{
    const __m512d vd = _mm512_set1_pd(d), vc = _mm512_set1_pd(c);
    const __m512d zero = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d x = _mm512_loadu_pd(l + i);
        x = _mm512_mask_add_pd(x, km[i / 8], x, vd);
        _mm512_storeu_pd(l + i, _mm512_min_pd(_mm512_sub_pd(x, vc), zero));
    }
    if (i < n) {
        __mmask8 m = tail8(n - i);
        __m512d x = _mm512_maskz_loadu_pd(m, l + i);
        x = _mm512_mask_add_pd(x, km[i / 8], x, vd);
        x = _mm512_min_pd(_mm512_sub_pd(x, vc), zero);
        _mm512_mask_storeu_pd(l + i, m, x);
    }
}

#else /* no AVX-512 intrinsics: never called */

unsigned hm_sp_wide_scan(const uint64_t *bits, uint32_t table,
                         const int32_t *ids, const double *l, size_t n,
                         double *mx, uint32_t *or_ids, unsigned char *km)
{
    (void)bits, (void)table, (void)ids, (void)l, (void)n, (void)km;
    *mx = 0;
    *or_ids = 0;
    return 0;
}

void hm_sp_wide_masses(const double *l, const unsigned char *km, size_t n,
                       double mx, double *all, double *sub)
{
    (void)l, (void)km, (void)n, (void)mx;
    *all = *sub = 0;
}

void hm_sp_wide_shift(double *l, const unsigned char *km, size_t n,
                      double d, double c)
{
    (void)l, (void)km, (void)n, (void)d, (void)c;
}
#endif
