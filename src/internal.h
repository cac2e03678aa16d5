/*
 * internal.h - definitions shared by libhallmark's sources, never installed.
 */
#ifndef HM_INTERNAL_H
#define HM_INTERNAL_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hallmark.h"

#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/aes.h>

#define HM_HIDDEN __attribute__((visibility("hidden")))

/* Padding id for positions before the start of a sequence (PRF v1). */
#define HM_PAD_ID 0xFFFFFFFFu

/* ------------------------------------------------------------ AES-128 */

/* An expanded AES-128 encryption key.  Encryption through it is a pure
 * function of const data, so one schedule serves many threads. */
typedef struct hm_aes {
    union {
        unsigned char rk[11][16]; /* AES-NI round keys */
        AES_KEY ossl;             /* OpenSSL's portable schedule */
    } u;
    int use_ni; /* AES-NI available at set-up */
} hm_aes;

/* Tests set this to exercise the portable path on AES-NI machines. */
HM_HIDDEN extern int hm_aes_force_portable;

HM_HIDDEN void hm_aes_init(hm_aes *aes, const unsigned char key[16]);
HM_HIDDEN void hm_aes_encrypt(const hm_aes *aes, const unsigned char in[16],
                              unsigned char out[16]);
/* n independent blocks (ECB), pipelined; in and out may be the same. */
HM_HIDDEN void hm_aes_encrypt_blocks(const hm_aes *aes,
                                     const unsigned char *in,
                                     unsigned char *out, size_t n);
HM_HIDDEN void hm_aes_wipe(hm_aes *aes);

/* ---------------------------------------------------------------- PRF */

/* The per-step seed of PRF v1: Weyl offset a and odd increment g. */
typedef struct hm_seed {
    uint64_t a;
    uint64_t g;
} hm_seed;

/* AES-CMAC keyed state for step seeds. */
typedef struct hm_cmac {
    hm_aes aes;
    unsigned char k1[16];
    unsigned char k2[16];
} hm_cmac;

HM_HIDDEN void hm_cmac_init(hm_cmac *c, const unsigned char key[16]);
HM_HIDDEN void hm_cmac_tag(const hm_cmac *c, const unsigned char *msg,
                       size_t len, unsigned char tag[16]);
HM_HIDDEN void hm_cmac_wipe(hm_cmac *c);

/* Seed from 16 bytes (a CMAC tag or a derived secret). */
HM_HIDDEN hm_seed hm_seed_from_bytes(const unsigned char b[16]);
/* Step seed of a window of n token ids (oldest first). */
HM_HIDDEN hm_seed hm_seed_window(const hm_cmac *c, const uint32_t *w,
                                 size_t n);
/* Step seeds of n windows of width ids each, window i starting at
 * ids + i * stride (stride 1: sliding windows over one buffer), computed
 * in batches. */
HM_HIDDEN void hm_seed_windows(const hm_cmac *c, const uint32_t *ids,
                               unsigned width, size_t stride, size_t n,
                               hm_seed *out);
/* Unkeyed seed from a caller's uniform, for unwatermarked sampling. */
HM_HIDDEN hm_seed hm_seed_uniform(double u);

/* Bits set in x, without the libgcc call that __builtin_popcountll is
 * in a build without -mpopcnt. */
static inline __attribute__((always_inline)) unsigned
hm_popcount64(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) +
        ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

/* SplitMix64's finaliser, the second half of the mixer below. */
static inline __attribute__((always_inline)) uint64_t hm_mix_fin(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* The PRF v1 candidate mixer: SplitMix64's finaliser over a keyed Weyl
 * sequence.  Inline so the kernels vectorise it.  (A loop over many c
 * saves an add per candidate with hm_mix_fin((a + g) + c * g), the same
 * value modulo 2^64.) */
static inline __attribute__((always_inline)) uint64_t
hm_mix(uint64_t a, uint64_t g, uint64_t c)
{
    return hm_mix_fin(a + (c + 1u) * g);
}

/* e^x for x <= 0 in binary64, relative error below 1e-14 (x below -700
 * gives 0, -inf included); unlike exp it vectorizes: the integer part
 * comes out of the rounding constant's bits, not a conversion.  Shared by
 * spectral.c and logprobs.c; built with -ffp-contract=off, every vector
 * lane computes what the scalar code computes. */
static inline __attribute__((always_inline)) double
hm_exp_nonpos(double x)
{
    int tiny = !(x >= -700.0);
    x = tiny ? 0.0 : x;
    double t = x * 1.4426950408889634;
    double sh = t + 0x1.8p52; /* 1.5 * 2^52 + round(t) */
    double n = sh - 0x1.8p52;
    double r = x - n * 0.6931471805598903;
    r = r - n * 5.497923018708371e-14;
    double p = 1.0 / 39916800;
    p = p * r + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t b;
    memcpy(&b, &sh, sizeof b);
    b = (b + 1023) << 52; /* 2^round(t): the low bits of sh hold round(t) */
    double scale;
    memcpy(&scale, &b, sizeof scale);
    return tiny ? 0.0 : p * scale;
}

/* About e^y from above, at most 1.0071 times it: e^y = 2^t, t = y log2(e),
 * and 2^t = 2^m 2^f <= 2^m (1 + f (a + (1 - a) f)) for an integer m with
 * f = t - m in [0, 1] and a = ln 2 (the quadratic meets 2^f at 0 and 1
 * with the slope of 2^f at 0, and lies above it in between).  m is
 * round(t - 1/2), in which the subtraction is exact (|t| < 1000) and a tie
 * leaves f 0 or 1; values below -690 count as -690, which only raises it.
 * The rounding of t, of the polynomial and of a sum of n <= 1024 terms
 * lowers it by a relative 1e-12 at most, far inside the margin
 * logprobs.c's common shift leaves. */
static inline __attribute__((always_inline)) double hm_exp_above(double y)
{
    y = y > -690.0 ? y : -690.0;
    double t = y * 1.4426950408889634;
    double sh = (t - 0.5) + 0x1.8p52; /* low bits: m */
    double f = t - (sh - 0x1.8p52);
    uint64_t b;
    memcpy(&b, &sh, sizeof b);
    b = (b + (1023 - UINT64_C(0x4338000000000000))) << 52; /* 2^m */
    double p2;
    memcpy(&p2, &b, sizeof p2);
    return (1.0 + f * (0.6931471805599453 + 0.3068528194400547 * f)) * p2;
}

/* e^x for x <= 0 in binary32, relative error below 3e-7 (2.5e-7 seen) for
 * x >= -87, e^-87 below: logprobs.c's log-sum-exp of a dense row needs no
 * more, and unlike expf this vectorizes. */
static inline __attribute__((always_inline)) float hm_expf_neg(float x)
{
    x = x > -87.0f ? x : -87.0f;
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round, |t| < 2^22 */
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

/* Eight lanes of binary64 for loops the auto-vectorizer handles badly
 * (GCC and clang vector extensions): the same operations lane by lane, so
 * each lane computes what the scalar code computes, at whatever width the
 * target has (one AVX-512 register, two AVX2, four SSE2).  The helpers are
 * always inlined, so no call passes a vector and GCC's note that the ABI
 * of one would differ without AVX-512 does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi" /* (reported at the end of a file) */
typedef double hm_v8d __attribute__((vector_size(64)));
typedef int64_t hm_v8i __attribute__((vector_size(64)));
typedef uint64_t hm_v8u __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) hm_v8d hm_v8d_load(const double *p)
{
    hm_v8d v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* m ? a : b for a mask m of all ones or zeros per lane. */
static inline __attribute__((always_inline)) hm_v8d
hm_v8d_select(hm_v8i m, hm_v8d a, hm_v8d b)
{
    return (hm_v8d)(((hm_v8i)a & m) | ((hm_v8i)b & ~m));
}

/* hm_exp_nonpos in each lane, the same operations in the same order. */
static inline __attribute__((always_inline)) hm_v8d hm_exp_nonpos8(hm_v8d x)
{
    const hm_v8d zero = {0, 0, 0, 0, 0, 0, 0, 0};
    hm_v8i ok = x >= -700.0; /* all ones, or zeros for tiny or NaN */
    x = hm_v8d_select(ok, x, zero);
    hm_v8d t = x * 1.4426950408889634;
    hm_v8d sh = t + 0x1.8p52;
    hm_v8d n = sh - 0x1.8p52;
    hm_v8d r = x - n * 0.6931471805598903;
    r = r - n * 5.497923018708371e-14;
    hm_v8d p = 1.0 / 39916800 + zero;
    p = p * r + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    hm_v8u b = ((hm_v8u)sh + 1023) << 52; /* (unsigned, as in the scalar) */
    return hm_v8d_select(ok, p * (hm_v8d)b, zero);
}

/* hm_expf_neg in each of sixteen binary32 lanes, the same operations. */
typedef float hm_v16f __attribute__((vector_size(64)));
typedef int32_t hm_v16i __attribute__((vector_size(64)));
typedef float hm_v8f __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) hm_v16f hm_expf_neg16(hm_v16f x)
{
    const hm_v16f zero = {0}, lo = zero - 87.0f;
    const hm_v16i keep = x > lo;
    x = (hm_v16f)(((hm_v16i)x & keep) | ((hm_v16i)lo & ~keep));
    hm_v16f t = x * 1.44269504088896341f;
    hm_v16f n = (t + 12582912.0f) - 12582912.0f;
    hm_v16f r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    hm_v16f p = r * (1.0f / 720) + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    hm_v16i e = (__builtin_convertvector(n, hm_v16i) + 127) << 23;
    return p * (hm_v16f)e;
}

/* ------------------------------------------------------------ context */

typedef struct hm_channel {
    int scheme;        /* HM_SCHEME_* */
    char id[32];       /* channel id, part of the HKDF info */
    unsigned h;        /* context width parameter as the papers count it */
    unsigned window;   /* preceding tokens the PRF reads */
    double gamma;      /* kgw */
    double delta;      /* kgw */
    int seeding;       /* kgw: HM_SEEDING_* */
    unsigned layers;   /* tournament m */
    unsigned topk;     /* tournament candidate set */
    uint64_t green_below; /* kgw: green iff x < green_below */
    hm_cmac cmac;      /* step seeds */
    hm_seed s_hash;    /* selfhash: token min-hash seed */
    hm_seed s_self;    /* selfhash: seed when the token is its own minimum */
} hm_channel;

#define HM_TENANT_MAX 256

struct hm_ctx {
    char fingerprint[HM_FINGERPRINT_SIZE]; /* of the master key */
    char tenant[HM_TENANT_MAX];
    unsigned n_channels;
    int sampler; /* index of the gumbel or tournament channel, or -1 */
    unsigned max_window;
    hm_channel ch[HM_MAX_CHANNELS];
};

/* Parse spec into ctx's parameters (keys not set). */
HM_HIDDEN int hm_spec_parse(hm_ctx *ctx, const char *spec, char *errmsg,
                            size_t errlen);
HM_HIDDEN const char *hm_scheme_name(int scheme);
/* Room for a canonical spec (hm_ctx_spec) and its NUL. */
#define HM_SPEC_SIZE 1024
/* The spec shared by the n contexts of a multi-key detector, into spec:
 * HM_EINVAL for a NULL context, and with a message for two specs (what
 * names the detector: "a tally"); HM_ERANGE for one that does not fit. */
HM_HIDDEN int hm_ctx_one_spec(const hm_ctx *const *ctxs, size_t n,
                              const char *what, char spec[HM_SPEC_SIZE],
                              char *errmsg, size_t errlen);

/* Derive a channel's secrets from the master key (HKDF-SHA256). */
HM_HIDDEN int hm_key_derive(const hm_key *key, const char *info,
                            unsigned char *out, size_t len);
/* The same with info "hallmark/v1/" name "/" id "/" tenant, the form every
 * per-channel subkey uses (hallmark-prf(7)): name is a scheme, "logprobs"
 * or "spectral"; the tenant comes last so that any bytes are unambiguous. */
HM_HIDDEN int hm_key_derive_for(const hm_key *key, const char *name,
                                const char *id, const char *tenant,
                                unsigned char *out, size_t len);

/* ------------------------------------------------------- sequence state */

#define HM_SEQ_MAGIC UINT64_C(0x31716573686d6c68) /* "hlmhseq1" */

struct hm_seq {
    uint64_t magic;
    const hm_ctx *ctx;
    size_t slots;       /* history table size, a power of two, or 0 */
    uint64_t n_tokens;  /* tokens seen, prompt included */
    uint32_t last[HM_MAX_CONTEXT]; /* last tokens, oldest first */
    uint64_t table[];   /* window hashes, 0 = empty */
};

/* Gather the last n ids before the current position into w (oldest
 * first), padding the start; HM_ERANGE on a negative id. */
HM_HIDDEN int hm_row_window(const hm_row *row, unsigned n, uint32_t *w);
HM_HIDDEN int hm_seq_seen(const hm_seq *seq, unsigned channel,
                          const uint32_t *w, unsigned n);

/* ------------------------------------------------------------- kernels */

/* Value of the channel's PRF for token id v given its window w. */
HM_HIDDEN uint64_t hm_channel_value(const hm_channel *ch, const uint32_t *w,
                                    uint32_t v);

/* Per-step state of a kgw channel: everything that does not depend on the
 * candidate. */
typedef struct hm_kgw_step {
    hm_seed ctx_seed;
    hm_seed self_seed;
    hm_seed hash_seed;
    uint64_t min_hash; /* selfhash: candidates hashing below use self_seed */
    uint32_t anchor;   /* selfhash: the window token that seeds ctx_seed */
    int selfhash;
} hm_kgw_step;

HM_HIDDEN void hm_kgw_prepare(const hm_channel *ch, const uint32_t *w,
                              hm_kgw_step *st);
static inline uint64_t hm_kgw_value(const hm_kgw_step *st, uint64_t v)
{
    if (st->selfhash &&
        hm_mix(st->hash_seed.a, st->hash_seed.g, v) < st->min_hash)
        return hm_mix(st->self_seed.a, st->self_seed.g, v);
    return hm_mix(st->ctx_seed.a, st->ctx_seed.g, v);
}

/* Vectorised kernels (kernels.c), dispatched on the CPU at run time. */
HM_HIDDEN void hm_k_kgw_dense(const hm_kgw_step *st, uint64_t green_below,
                              float delta, float *logits, uint32_t n);
/* keys[i] = logits[i]*inv_t - ln(-ln(u(x_i))), the Gumbel-max key of
 * token ids[i] (ids NULL: ids are base+i). */
HM_HIDDEN void hm_k_gumbel_keys(hm_seed s, const uint32_t *ids, uint32_t base,
                                const float *logits, float inv_t, float *keys,
                                size_t n);
/* Upper bounds of those keys, cheap enough to skip most candidates. */
HM_HIDDEN void hm_k_gumbel_bounds(hm_seed s, const uint32_t *ids,
                                  uint32_t base, const float *logits,
                                  float inv_t, float *ub, size_t n);
/* One key, computed exactly as hm_k_gumbel_keys computes it. */
HM_HIDDEN float hm_gumbel_key(uint64_t x, float l, float inv_t);
/* Gather ids and logits of m strided records from record base on. */
HM_HIDDEN void hm_k_gather(const void *data, size_t stride, size_t id_off,
                           size_t logit_off, size_t base, size_t m,
                           uint32_t *ids, float *logits);
/* PRF values of windows of width w (1..4) sliding over ids, the token of
 * window i being ids[w + i]: out[i] = mix(seed(ids[i..i+w-1]), ids[w+i]).
 * rk: AES-NI round keys; pad: the CMAC padding XOR K1/K2.  Reads up to 16
 * ids past ids + n.  Returns how many it did (a multiple of 32; 0 when the
 * CPU lacks AVX-512/VAES, see hm_k_prf_windows_ok). */
HM_HIDDEN int hm_k_prf_windows_ok(void);
HM_HIDDEN size_t hm_k_prf_windows(const unsigned char rk[11][16],
                                  const unsigned char pad[16], unsigned w,
                                  const uint32_t *ids, size_t n,
                                  uint64_t *out);
/* The CMAC pad of a single-block window of width 1..4 (RFC 4493 10*
 * padding XOR K2, or K1 for exactly 16 bytes). */
HM_HIDDEN void hm_cmac_pad(const hm_cmac *c, unsigned width,
                           unsigned char pad[16]);
/* Score sums over PRF values: gumbel -ln(1-u), kgw x < below, tournament
 * popcount(x & mask). */
HM_HIDDEN double hm_k_gumbel_sum(const uint64_t *x, size_t n);
/* The sum of the gumbel scores of x[0], x[w], ..., x[(n-1) w], n <= 2^32,
 * each at most its exact value (gumbel_log.h) and cut to a multiple of
 * 2^-64: sum = part[0] + part[1] 2^-32 + part[2] 2^-64. */
HM_HIDDEN void hm_k_gumbel_parts(const uint64_t *x, size_t w, size_t n,
                                 uint64_t part[3]);
/* hm_k_gumbel_parts has an AVX2 loop (x86-64, and the CPU has AVX2),
 * which it takes unless the CPU's AVX-512 clone runs instead; tests set
 * hm_k_gumbel_force_avx2 to take it on AVX-512 CPUs too. */
HM_HIDDEN int hm_k_gumbel_avx2_ok(void);
HM_HIDDEN extern int hm_k_gumbel_force_avx2;
HM_HIDDEN uint64_t hm_k_count_below(const uint64_t *x, size_t n,
                                    uint64_t below);
HM_HIDDEN uint64_t hm_k_popcount_sum(const uint64_t *x, size_t n,
                                     uint64_t mask);
/* Largest element (-INFINITY for none; NaN never wins). */
HM_HIDDEN float hm_k_max(const float *a, size_t n);
/* Index of the largest key, -1 when none exceeds -INFINITY; ties go to the
 * first. */
HM_HIDDEN ptrdiff_t hm_k_argmax(const float *keys, size_t n);

/* CPU features the run-time dispatch needs beyond what every compiler's
 * __builtin_cpu_supports knows: AVX-512 F, DQ and VPOPCNTDQ with VAES,
 * and the OS saving ZMM state (cpuid and xgetbv; cached). */
HM_HIDDEN int hm_cpu_has_avx512_vaes(void);
/* AVX2; the level x86-64-v4 (AVX-512 F, BW, CD, DQ and VL on top of
 * AVX2), for which the loader picks the target_clones' AVX-512 clone. */
HM_HIDDEN int hm_cpu_has_avx2(void);
HM_HIDDEN int hm_cpu_has_x86_64_v4(void);

/* Parameter-string pieces shared by the spec parsers (spec.c): plain
 * decimal numbers in the C locale, identifiers of [A-Za-z0-9_.-] shorter
 * than max, and the shortest decimal that reads back as x. */
HM_HIDDEN int hm_spec_uint(const char *v, unsigned lo, unsigned hi,
                           unsigned *out);
HM_HIDDEN int hm_spec_double(const char *v, double *out);
HM_HIDDEN int hm_spec_id_ok(const char *v, size_t max);
HM_HIDDEN void hm_spec_fmt_double(char *out, size_t n, double x);
/* NAME=VALUE[,...] pairs of a module's parameter string, each handed to
 * set (0, or -1 with errmsg set); what names them in messages. */
HM_HIDDEN int hm_spec_params(const char *spec, const char *what,
                             int (*set)(void *obj, const char *name,
                                        const char *val, char *errmsg,
                                        size_t errlen),
                             void *obj, char *errmsg, size_t errlen);

/* Files with a SHA-256 trailer, written atomically (tallies, sketches).
 * hm_out_bytes writes and digests (f NULL: digests only); the first error
 * sticks in err.  hm_save_digested creates a temporary file beside path,
 * lets body write the contents through o, appends the SHA-256 of all of it,
 * syncs, and renames the file over path; on failure nothing is left and
 * errmsg says "path: cannot ...". */
typedef struct hm_out {
    FILE *f;
    struct evp_md_ctx_st *md;
    int err;
} hm_out;
HM_HIDDEN void hm_out_bytes(hm_out *o, const void *p, size_t n);
HM_HIDDEN int hm_save_digested(const char *path,
                               int (*body)(const void *obj, hm_out *o),
                               const void *obj, char *errmsg, size_t errlen);

/* Small helpers shared by the hot path. */
HM_HIDDEN void hm_errf(char *errmsg, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Shift and sort n hardened records (logprobs_sort.c): each value less
 * the common shift c, then larger value first, ties to the smaller id.
 * q > 0: every value is -inf or j q for an integer j <= 0 (+0 for 0), as
 * the perturbation leaves them; else q is 0.  Returns which sort ran (0
 * comparison, 1 counting, 2 counting then radix, 3 bitonic on AVX-512, 4
 * radix on 64-bit keys, 5 bitonic on AVX2), which only the tests look
 * at. */
HM_HIDDEN int hm_lp_sort(int32_t *ids, double *l, size_t n, double q,
                         double c);
/* Tests set these: hm_lp_sort_portable to take hm_lp_sort's portable
 * paths on CPUs with AVX2 or AVX-512 (no bitonic sort), hm_lp_sort_avx2
 * to take the AVX2 bitonic sort on AVX-512 CPUs. */
HM_HIDDEN extern int hm_lp_sort_portable;
HM_HIDDEN extern int hm_lp_sort_avx2;
/* Tests set this to take hm_logprobs_dense's scan one logit at a time,
 * without passing over blocks the heap would not take from. */
HM_HIDDEN extern int hm_lp_dense_portable;

/* Hardening's loops on AVX-512 (logprobs_wide.c), each giving the bits of
 * its portable counterpart in logprobs.c where its result reaches the
 * output.  hm_lp_wide_ok: the CPU has them (AVX-512 F, DQ, VL with VAES,
 * and FMA).  hm_lp_wide_check: check_row's bits, and on the way estimates
 * from below and above of the sum of binary32 evaluations of the function
 * whose binary64 evaluations sum_bound adds (est[0], est[1]; left open,
 * est[1] +inf, once est[0] passes stop: see there).
 * hm_lp_wide_perturb: perturb for rows with no finite value below -2^20,
 * eps52 = eps 2^-52 exactly (eps 0 or at least 2^-970).
 * hm_lp_wide_sum_near: the sum of e^l[i] within a relative 1.8e-5 (values
 * below -86 counted as e^-86), which the common shift takes as it takes
 * sum_approx. */
HM_HIDDEN int hm_lp_wide_ok(void);
HM_HIDDEN unsigned hm_lp_wide_check(const int32_t *ids, const double *l,
                                    size_t n, double stop, double est[2]);
HM_HIDDEN void hm_lp_wide_perturb(uint64_t a1, uint64_t g,
                                  const int32_t *ids, double *l, size_t n,
                                  double eps52, double q);
HM_HIDDEN double hm_lp_wide_sum_near(const double *l, size_t n);
/* Tests set this to take hardening's portable loops on AVX-512 CPUs. */
HM_HIDDEN extern int hm_lp_harden_portable;

/* The spectral channel's loops on AVX-512 (spectral_wide.c), taken where
 * hm_lp_wide_ok, each giving the bits of its portable counterpart in
 * spectral.c, with the membership as a bit per id (byte i / 8, bit
 * i mod 8) instead of a byte.  hm_sp_wide_scan: check_row's bits,
 * maximum and OR of the ids, and the bits of the ids below table from
 * the table bits.  hm_sp_wide_masses: masses.  hm_sp_wide_shift:
 * shift_row. */
HM_HIDDEN unsigned hm_sp_wide_scan(const uint64_t *bits, uint32_t table,
                                   const int32_t *ids, const double *l,
                                   size_t n, double *mx, uint32_t *or_ids,
                                   unsigned char *km);
HM_HIDDEN void hm_sp_wide_masses(const double *l, const unsigned char *km,
                                 size_t n, double mx, double *all,
                                 double *sub);
HM_HIDDEN void hm_sp_wide_shift(double *l, const unsigned char *km,
                                size_t n, double d, double c);
/* Tests set this to take the spectral channel's portable loops on AVX-512
 * CPUs. */
HM_HIDDEN extern int hm_sp_portable;

/* Served-window sketch (sketch.c): 1 if the window w of width n (a width
 * the sketch records) may have been added.  Read by tally filters. */
HM_HIDDEN int hm_sketch_has_window(const hm_sketch *s, const uint32_t *w,
                                   unsigned n);

#endif /* HM_INTERNAL_H */
