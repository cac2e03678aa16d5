/*
 * kernels.c - the per-candidate loops of the hot path.
 *
 * Written as plain element-wise loops so that the compiler vectorises
 * them; on x86-64 each is built for AVX-512, AVX2 and the baseline, and
 * the loader picks one for the CPU at run time (target_clones), so a
 * portable build runs as fast as a -march=native one.  The library is
 * compiled with -ffp-contract=off (and -fno-trapping-math, which lets the
 * selects below become blends): every lane computes exactly what the
 * scalar code computes, so the dense and candidate paths, which feed the
 * same element functions with different layouts, agree bit for bit.
 */
#include "internal.h"
#include "gumbel_log.h"

#include <math.h>
#include <string.h>

/* GCC only: clang (14, at least) emits clones that callers in other
 * files, which see a plain prototype, cannot link to; clang builds get
 * the baseline loops (and the AVX-512 PRF kernel, dispatched by hand). */
#if defined(HAVE_TARGET_CLONES) && defined(__x86_64__) &&                    \
    !defined(HM_NO_CLONES) && !defined(__clang__)
#define HM_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#define HM_CLONES_ON 1
#else
#define HM_CLONES
#endif

/* ln(a) for finite a > 0 in the normal range, within about 2 ulp:
 * Cephes' logf reduction and polynomial, branch-free. */
static inline __attribute__((always_inline)) float hm_logf(float a)
{
    uint32_t i;
    memcpy(&i, &a, sizeof i);
    float e = (float)((int32_t)(i >> 23) - 126);
    uint32_t mi = (i & 0x007fffffu) | 0x3f000000u; /* [0.5, 1) */
    float x;
    memcpy(&x, &mi, sizeof x);
    int small = x < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    x = small ? x + x - 1.0f : x - 1.0f;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return x + y + 0.693359375f * e;
}

/* Gumbel-max key l/T - ln(-ln u) of a token with PRF output x.  The
 * exponential E = -ln u keeps full relative precision when u is close to
 * 1 (the tokens that win): the complement 1-u is formed from the bits
 * exactly and E is its series there. */
static inline __attribute__((always_inline)) float
gumbel_key(uint64_t x, float l, float inv_t)
{
    int top = (int)(x >> 63);
    uint64_t y = top ? ~x : x; /* u, or 1-u when u > 1/2 */
    int32_t hi = (int32_t)(uint32_t)(y >> 32);
    int32_t lo = (int32_t)((uint32_t)y >> 8);
    float f = ((float)hi + (float)lo * 0x1p-24f + 0x1p-25f) * 0x1p-32f;
    float e_log = -hm_logf(top ? 1.0f - f : f);
    float e_ser =
        f * (1.0f + f * (0.5f + f * (0.33333334f + f * (0.25f + f * 0.2f))));
    float e = (top & (f < 0x1p-6f)) ? e_ser : e_log;
    return l * inv_t - hm_logf(e);
}

float hm_gumbel_key(uint64_t x, float l, float inv_t)
{
    return gumbel_key(x, l, inv_t);
}

/* An upper bound on gumbel_key(x, l, inv_t), exact in float arithmetic,
 * for a fraction of the work.  When u <= 1/2, E >= ln 2 and the Gumbel
 * term -ln E is at most 0.3666.  Otherwise E >= 1-u = c >= 2^e, with e
 * the float exponent of c, so -ln E <= -e ln 2.  The margins cover the
 * rounding of hm_logf; since float addition rounds monotonically,
 * l/T + bound >= l/T - ln E holds for the computed values too. */
static inline __attribute__((always_inline)) float
gumbel_bound(uint64_t x, float l, float inv_t)
{
    int top = (int)(x >> 63);
    uint64_t y = ~x;
    int32_t hi = (int32_t)(uint32_t)(y >> 32);
    int32_t lo = (int32_t)((uint32_t)y >> 8);
    float c = ((float)hi + (float)lo * 0x1p-24f + 0x1p-25f) * 0x1p-32f;
    uint32_t bits;
    memcpy(&bits, &c, sizeof bits);
    float e = (float)((int32_t)(bits >> 23) - 127);
    float g = top ? -e * 0.693147182f + 1e-3f : 0.3675f;
    return l * inv_t + g;
}

HM_CLONES void hm_k_gumbel_bounds(hm_seed s, const uint32_t *restrict ids,
                                  uint32_t base, const float *restrict logits,
                                  float inv_t, float *restrict ub, size_t n)
{
    if (ids == NULL) {
        for (size_t i = 0; i < n; i++)
            ub[i] = gumbel_bound(hm_mix(s.a, s.g, (uint64_t)base + i),
                                 logits[i], inv_t);
    } else {
        for (size_t i = 0; i < n; i++)
            ub[i] = gumbel_bound(hm_mix(s.a, s.g, ids[i]), logits[i], inv_t);
    }
}

HM_CLONES void hm_k_gumbel_keys(hm_seed s, const uint32_t *restrict ids,
                                uint32_t base, const float *restrict logits,
                                float inv_t, float *restrict keys, size_t n)
{
    if (ids == NULL) {
        for (size_t i = 0; i < n; i++)
            keys[i] = gumbel_key(hm_mix(s.a, s.g, (uint64_t)base + i),
                                 logits[i], inv_t);
    } else {
        for (size_t i = 0; i < n; i++)
            keys[i] = gumbel_key(hm_mix(s.a, s.g, ids[i]), logits[i], inv_t);
    }
}

HM_CLONES void hm_k_kgw_dense(const hm_kgw_step *st, uint64_t green_below,
                              float delta, float *restrict logits, uint32_t n)
{
    const uint64_t a = st->ctx_seed.a, g = st->ctx_seed.g;
    if (!st->selfhash) {
        for (uint32_t v = 0; v < n; v++) {
            uint64_t x = hm_mix(a, g, v);
            logits[v] = x < green_below ? logits[v] + delta : logits[v];
        }
        return;
    }
    const uint64_t ha = st->hash_seed.a, hg = st->hash_seed.g;
    const uint64_t sa = st->self_seed.a, sg = st->self_seed.g;
    const uint64_t min_hash = st->min_hash;
    for (uint32_t v = 0; v < n; v++) {
        int self = hm_mix(ha, hg, v) < min_hash;
        uint64_t x = hm_mix(self ? sa : a, self ? sg : g, v);
        logits[v] = x < green_below ? logits[v] + delta : logits[v];
    }
}

#define LANES 16

HM_CLONES float hm_k_max(const float *a, size_t n)
{
    float lane[LANES];
    float best = -INFINITY;
    size_t i = 0;
    for (int j = 0; j < LANES; j++)
        lane[j] = -INFINITY;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            lane[j] = a[i + j] > lane[j] ? a[i + j] : lane[j];
    for (int j = 0; j < LANES; j++)
        best = lane[j] > best ? lane[j] : best;
    for (; i < n; i++)
        best = a[i] > best ? a[i] : best;
    return best;
}

HM_CLONES ptrdiff_t hm_k_argmax(const float *keys, size_t n)
{
    float best = hm_k_max(keys, n);
    if (!(best > -INFINITY))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (keys[i] == best)
            return (ptrdiff_t)i;
    return -1;
}

/* Gather ids and logits of m strided records starting at record base
 * (candidate path); cloned so that wide builds vectorise it. */
HM_CLONES void hm_k_gather(const void *data, size_t stride, size_t id_off,
                           size_t logit_off, size_t base, size_t m,
                           uint32_t *restrict ids, float *restrict logits)
{
    const unsigned char *p = (const unsigned char *)data + base * stride;
    for (size_t i = 0; i < m; i++) {
        memcpy(&ids[i], p + i * stride + id_off, sizeof ids[i]);
        memcpy(&logits[i], p + i * stride + logit_off, sizeof logits[i]);
    }
}

/* ------------------------------------------------------------------
 * PRF values of many sliding windows at once (AVX-512 + VAES): the CMAC
 * message blocks are permuted out of the id buffer, sixteen blocks are
 * encrypted together, and the seeds' fix-up and the mixer run on eight
 * 64-bit lanes.  Bit-identical to hm_seed_windows + hm_mix (tested).
 */
#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#define HM_WIDE_TARGET "avx512f,avx512dq,avx512vpopcntdq,vaes"

int hm_k_prf_windows_ok(void)
{
    return hm_cpu_has_avx512_vaes();
}

__attribute__((target(HM_WIDE_TARGET))) static inline __m512i
mix8(__m512i a, __m512i g, __m512i c)
{
    const __m512i one = _mm512_set1_epi64(1);
    __m512i z = _mm512_add_epi64(a, _mm512_mullo_epi64(
                                        _mm512_add_epi64(c, one), g));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 30));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ULL));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 27));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0x94D049BB133111EBULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

__attribute__((target(HM_WIDE_TARGET))) size_t
hm_k_prf_windows(const unsigned char rk[11][16], const unsigned char pad[16],
                 unsigned w, const uint32_t *ids, size_t n, uint64_t *out)
{
    if (w < 1 || w > 4)
        return 0;
    __m512i k[11];
#pragma GCC unroll 11
    for (int r = 0; r < 11; r++)
        k[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)rk[r]));
    const __m512i padv =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)pad));
    /* block j of a register holds the window starting at id j */
    const __m512i perm = _mm512_setr_epi32(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4,
                                           5, 3, 4, 5, 6);
    const __mmask16 keep = (__mmask16)(0x1111u * ((1u << w) - 1));
    const __m512i idx_a = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i idx_g = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    const __m512i alt = _mm512_set1_epi64((long long)0xAAAAAAAAAAAAAAAAULL);
    const __m512i one = _mm512_set1_epi64(1);
    size_t i = 0;
    /* The loops over the eight registers and the rounds are unrolled
     * whole, so that x[] and k[] live in registers: left as loops, every
     * round is a load, an aesenc and a store on the stack. */
    for (; i + 32 <= n; i += 32) { /* eight registers in flight */
        __m512i x[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m512i src = _mm512_loadu_si512((const void *)(ids + i + 4 * j));
            __m512i blk = _mm512_maskz_permutexvar_epi32(keep, perm, src);
            x[j] = _mm512_xor_si512(_mm512_xor_si512(blk, padv), k[0]);
        }
#pragma GCC unroll 9
        for (int r = 1; r < 10; r++)
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                x[j] = _mm512_aesenc_epi128(x[j], k[r]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            x[j] = _mm512_aesenclast_epi128(x[j], k[10]);
#pragma GCC unroll 4
        for (int h = 0; h < 4; h++) {
            __m512i a = _mm512_permutex2var_epi64(x[2 * h], idx_a,
                                                  x[2 * h + 1]);
            __m512i g = _mm512_permutex2var_epi64(x[2 * h], idx_g,
                                                  x[2 * h + 1]);
            g = _mm512_or_si512(g, one);
            __m512i t = _mm512_xor_si512(g, _mm512_srli_epi64(g, 1));
            __mmask8 weak = _mm512_cmplt_epu64_mask(_mm512_popcnt_epi64(t),
                                                    _mm512_set1_epi64(24));
            g = _mm512_mask_xor_epi64(g, weak, g, alt);
            __m512i c = _mm512_cvtepu32_epi64(_mm256_loadu_si256(
                (const __m256i *)(ids + w + i + 8 * h)));
            _mm512_storeu_si512((void *)(out + i + 8 * h), mix8(a, g, c));
        }
    }
    return i;
}
#else
int hm_k_prf_windows_ok(void)
{
    return 0;
}

size_t hm_k_prf_windows(const unsigned char rk[11][16],
                        const unsigned char pad[16], unsigned w,
                        const uint32_t *ids, size_t n, uint64_t *out)
{
    (void)rk, (void)pad, (void)w, (void)ids, (void)n, (void)out;
    return 0;
}
#endif

/* Sums of per-token scores over PRF values (no dedup), vectorised.
 * gumbel: the sum of -ln(1-u) as the log of products of (1-u), eight
 * running products renormalised by their exponent bits every 16 factors,
 * one log per lane at the end.  The factors are taken as (1-u) 2^52, in
 * [1/2, 2^52), and the 2^-52s are counted in the exponents: the same
 * bits as multiplying each by 2^-52, as nothing overflows (16 factors
 * stay below 2^832), one multiply a factor fewer. */
HM_CLONES double hm_k_gumbel_sum(const uint64_t *restrict x, size_t n)
{
    double prod[8];
    int64_t ex[8];
    for (int j = 0; j < 8; j++) {
        prod[j] = 1;
        ex[j] = 0;
    }
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        for (int r = 0; r < 16; r++)
            for (int j = 0; j < 8; j++)
                prod[j] *= (double)(~x[i + 8 * r + j] >> 12) + 0.5;
        for (int j = 0; j < 8; j++) {
            uint64_t b;
            memcpy(&b, &prod[j], sizeof b);
            ex[j] += (int64_t)((b >> 52) & 0x7ff) - 1023 - 16 * 52;
            b = (b & UINT64_C(0x800FFFFFFFFFFFFF)) | (UINT64_C(1023) << 52);
            memcpy(&prod[j], &b, sizeof b);
        }
    }
    double s = 0;
    for (int j = 0; j < 8; j++)
        s -= log(prod[j]) + (double)ex[j] * 0.69314718055994530942;
    for (; i < n; i++)
        s -= log(((double)(~x[i] >> 12) + 0.5) * 0x1p-52);
    return s;
}

/* The gumbel scores of n <= 2^32 PRF values x[0], x[w], x[2w], ...,
 * lowered and cut (hm_gumbel_parts_add, gumbel_log.h), summed as three
 * integers: part[0] the integer parts, part[1] the first 32 bits of the
 * fractions, part[2] the next 32 (so that no sum carries, and the loop has
 * no chain).  Every lane computes what the scalar code does.  The
 * AVX-512 clone vectorises; the AVX2 one stays scalar (AVX2 has no
 * conversions between 64-bit integers and doubles), and
 * gumbel_parts_avx2 below stands in for it. */
HM_CLONES static void gumbel_parts_auto(const uint64_t *restrict x, size_t w,
                                        size_t n, uint64_t part[3])
{
    uint64_t ip = 0, fh = 0, fl = 0;
    if (w == 2) {
        for (size_t i = 0; i < n; i++)
            hm_gumbel_parts_add(x[2 * i], &ip, &fh, &fl);
    } else {
        for (size_t i = 0; i < n; i++)
            hm_gumbel_parts_add(x[i * w], &ip, &fh, &fl);
    }
    part[0] = ip;
    part[1] = fh;
    part[2] = fl;
}

#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>

#define HAVE_GUMBEL_AVX2 1
/* AVX2 alone: where the build does not enable FMA as a whole, no
 * multiply and add could fuse even without -ffp-contract=off, which
 * gumbel_log.h needs anyway. */
#define AVX2 __attribute__((target("avx2")))

/* The integer value of a double d that is an integer of magnitude below
 * 2^51, plus the bits of 1.5 2^52: d + 1.5 2^52 is exact and has d, in
 * two's complement, in its low bits.  The sums of these are corrected by
 * the count at the end. */
#define MAGIC_BITS UINT64_C(0x4338000000000000)

AVX2 static inline __attribute__((always_inline)) __m256i
int_bits(__m256d d)
{
    return _mm256_castpd_si256(_mm256_add_pd(d, _mm256_set1_pd(0x1.8p52)));
}

/* hm_gumbel_parts_add on four lanes, step by step the same binary64
 * operations on the same values; the parts, plus MAGIC_BITS each, are
 * added to ip, fh and fl.  Where the scalar code converts, this computes
 * the same value exactly:
 * - n = nh 2^32 + nl (nh < 2^21) to double: (2^84 + nh 2^32) - (2^84 +
 *   2^52) is exact (Sterbenz), and adding 2^52 + nl gives n < 2^53;
 * - 52 - e = (2^52 + 1075) - (2^52 + (b >> 52)), integers below 2^53;
 * - R = m C - 2^61, m = mh 2^32 + ml: A = mh C < 2^30 and B = ml C < 2^41
 *   by 32 x 32-bit products, (2^52 + A) - (2^52 + 2^29) = A - 2^29 and
 *   (2^52 + B) - 2^52 = B exactly, and r = (A - 2^29) 2^-29 + B 2^-61:
 *   both terms exact, their sum R 2^-61, a double as |R| < 2^53;
 * - the casts of v, y and (y - yi) 2^32 to integers truncate: rounded
 *   toward zero, they are integers of magnitude below 2^32 (v is below
 *   64), which int_bits converts. */
AVX2 static inline __attribute__((always_inline)) void
parts4(__m256i x, __m256i *ip, __m256i *fh, __m256i *fl)
{
    const __m256i two52 = _mm256_set1_epi64x(0x4330000000000000);
    const __m256d d52 = _mm256_set1_pd(0x1p52);
    const __m256i nx = _mm256_srli_epi64(
        _mm256_xor_si256(x, _mm256_set1_epi64x(-1)), 12);
    const __m256i n = _mm256_or_si256(_mm256_add_epi64(nx, nx),
                                      _mm256_set1_epi64x(1));
    __m256d nhi = _mm256_castsi256_pd(_mm256_or_si256(
        _mm256_srli_epi64(n, 32), _mm256_set1_epi64x(0x4530000000000000)));
    __m256d nlo = _mm256_castsi256_pd(_mm256_blend_epi32(n, two52, 0xAA));
    __m256d dn = _mm256_add_pd(
        _mm256_sub_pd(nhi, _mm256_set1_pd(0x1p84 + 0x1p52)), nlo);
    __m256i b = _mm256_castpd_si256(dn);
    __m256d k = _mm256_sub_pd(
        _mm256_set1_pd(0x1p52 + 1075),
        _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(b, 52),
                                            two52)));
    __m256i frac =
        _mm256_and_si256(b, _mm256_set1_epi64x((INT64_C(1) << 52) - 1));
    /* the table entries by scalar loads: AVX2 gathers cost more on Zen 4,
     * and more still on Zen 2 and on Intel CPUs with the microcode that
     * mitigates Gather Data Sampling */
    uint64_t j[4] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)j, _mm256_srli_epi64(frac, 44));
    __m256i c = _mm256_setr_epi64x(GL_C[j[0]], GL_C[j[1]], GL_C[j[2]],
                                   GL_C[j[3]]);
    __m256i mh = _mm256_or_si256(_mm256_srli_epi64(frac, 32),
                                 _mm256_set1_epi64x(INT64_C(1) << 20));
    __m256d da = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(_mm256_mul_epu32(mh, c), two52)),
        _mm256_set1_pd(0x1p52 + 0x1p29));
    __m256d db = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(_mm256_mul_epu32(frac, c),
                                            two52)),
        d52);
    __m256d r = _mm256_add_pd(_mm256_mul_pd(da, _mm256_set1_pd(0x1p-29)),
                              _mm256_mul_pd(db, _mm256_set1_pd(0x1p-61)));
    /* (52 - e) ln 2 + ln(C / 256) = s0 + lo */
    __m256d a = _mm256_mul_pd(k, _mm256_set1_pd(GL_L2H));
    __m256d dh = _mm256_setr_pd(GL_DH[j[0]], GL_DH[j[1]], GL_DH[j[2]],
                                GL_DH[j[3]]);
    __m256d s0 = _mm256_add_pd(a, dh), bv = _mm256_sub_pd(s0, a);
    __m256d lo = _mm256_add_pd(
        _mm256_add_pd(_mm256_sub_pd(a, _mm256_sub_pd(s0, bv)),
                      _mm256_sub_pd(dh, bv)),
        _mm256_add_pd(_mm256_mul_pd(k, _mm256_set1_pd(GL_L2L)),
                      _mm256_setr_pd(GL_DL[j[0]], GL_DL[j[1]], GL_DL[j[2]],
                                     GL_DL[j[3]])));
    /* minus r = t + lo2 */
    __m256d t = _mm256_sub_pd(s0, r), bt = _mm256_sub_pd(t, s0);
    __m256d nr = _mm256_xor_pd(r, _mm256_set1_pd(-0.0));
    __m256d lo2 = _mm256_add_pd(_mm256_sub_pd(s0, _mm256_sub_pd(t, bt)),
                               _mm256_sub_pd(nr, bt));
    /* ln(1 + r) - r = r^2 p(r) */
    __m256d p = _mm256_add_pd(_mm256_set1_pd(-0x1.5555555555555p-3),
                              _mm256_mul_pd(r, _mm256_set1_pd(
                                                   0x1.2492492492492p-3)));
    p = _mm256_add_pd(_mm256_set1_pd(0x1.999999999999ap-3),
                      _mm256_mul_pd(r, p));
    p = _mm256_add_pd(_mm256_set1_pd(-0.25), _mm256_mul_pd(r, p));
    p = _mm256_add_pd(_mm256_set1_pd(0x1.5555555555555p-2),
                      _mm256_mul_pd(r, p));
    p = _mm256_add_pd(_mm256_set1_pd(-0.5), _mm256_mul_pd(r, p));
    __m256d s = _mm256_add_pd(
        t, _mm256_sub_pd(_mm256_add_pd(lo, lo2),
                         _mm256_mul_pd(_mm256_mul_pd(r, r), p)));
    /* hm_gumbel_score_low, then the cut */
    __m256d v = _mm256_sub_pd(_mm256_mul_pd(s, _mm256_set1_pd(1 - 0x1p-50)),
                              _mm256_set1_pd(0x1p-66));
    /* an integer constant expression (a const int is not one to clang) */
    enum { z = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC };
    __m256d di = _mm256_round_pd(v, z);
    __m256d y = _mm256_mul_pd(_mm256_sub_pd(v, di), _mm256_set1_pd(0x1p32));
    __m256d yi = _mm256_round_pd(y, z);
    __m256d f = _mm256_round_pd(
        _mm256_mul_pd(_mm256_sub_pd(y, yi), _mm256_set1_pd(0x1p32)), z);
    *ip = _mm256_add_epi64(*ip, int_bits(di));
    *fh = _mm256_add_epi64(*fh, int_bits(yi));
    *fl = _mm256_add_epi64(*fl, int_bits(f));
}

AVX2 static uint64_t lanes_sum(__m256i a)
{
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(a),
                              _mm256_extracti128_si256(a, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) +
           (uint64_t)_mm_extract_epi64(s, 1);
}

/* gumbel_parts_auto on AVX2, four values at a time, the rest by the
 * scalar code; the lanes' integer sums are added in any order, exactly
 * (mod 2^64). */
AVX2 static void gumbel_parts_avx2(const uint64_t *restrict x, size_t w,
                                   size_t n, uint64_t part[3])
{
    __m256i ip = _mm256_setzero_si256(), fh = ip, fl = ip;
    size_t i = 0;
    if (w == 1) {
        for (; i + 4 <= n; i += 4)
            parts4(_mm256_loadu_si256((const __m256i *)(x + i)), &ip, &fh,
                   &fl);
    } else if (w == 2) {
        for (; i + 4 <= n; i += 4) {
            __m256i u = _mm256_loadu_si256((const __m256i *)(x + 2 * i));
            __m256i v = _mm256_loadu_si256((const __m256i *)(x + 2 * i + 4));
            /* x[0] x[4] x[2] x[6] -> x[0] x[2] x[4] x[6] */
            parts4(_mm256_permute4x64_epi64(_mm256_unpacklo_epi64(u, v),
                                            0xD8),
                   &ip, &fh, &fl);
        }
    } else { /* scalar loads: a gather here took twice as long (Zen 4) */
        for (; i + 4 <= n; i += 4)
            parts4(_mm256_setr_epi64x((long long)x[i * w],
                                      (long long)x[(i + 1) * w],
                                      (long long)x[(i + 2) * w],
                                      (long long)x[(i + 3) * w]),
                   &ip, &fh, &fl);
    }
    uint64_t bias = (uint64_t)i * MAGIC_BITS;
    uint64_t a = lanes_sum(ip) - bias, h = lanes_sum(fh) - bias,
             l = lanes_sum(fl) - bias;
    for (; i < n; i++)
        hm_gumbel_parts_add(x[i * w], &a, &h, &l);
    part[0] = a;
    part[1] = h;
    part[2] = l;
}
#endif

int hm_k_gumbel_force_avx2 = 0;

int hm_k_gumbel_avx2_ok(void)
{
#ifdef HAVE_GUMBEL_AVX2
    return hm_cpu_has_avx2();
#else
    return 0;
#endif
}

/* The AVX2 loop where the CPU has AVX2 and gumbel_parts_auto would not
 * be vectorised with AVX-512: the clone for CPUs of level x86-64-v4, or
 * in a build without clones, a build for AVX-512. */
void hm_k_gumbel_parts(const uint64_t *x, size_t w, size_t n,
                       uint64_t part[3])
{
#ifdef HAVE_GUMBEL_AVX2
#if defined(HM_CLONES_ON)
    int wide = hm_cpu_has_x86_64_v4();
#elif defined(__AVX512F__) && defined(__AVX512DQ__)
    int wide = 1;
#else
    int wide = 0;
#endif
    if ((hm_k_gumbel_force_avx2 || !wide) && hm_cpu_has_avx2()) {
        gumbel_parts_avx2(x, w, n, part);
        return;
    }
#endif
    gumbel_parts_auto(x, w, n, part);
}

HM_CLONES uint64_t hm_k_count_below(const uint64_t *restrict x, size_t n,
                                    uint64_t below)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += x[i] < below;
    return c;
}

HM_CLONES uint64_t hm_k_popcount_sum(const uint64_t *restrict x, size_t n,
                                     uint64_t mask)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (uint64_t)__builtin_popcountll(x[i] & mask);
    return c;
}
