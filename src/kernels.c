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

#include <math.h>
#include <string.h>

#if defined(HAVE_TARGET_CLONES) && defined(__x86_64__) && !defined(HM_NO_CLONES)
#define HM_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
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
