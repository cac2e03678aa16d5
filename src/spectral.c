/*
 * spectral.c - the spectral fingerprint channel (hm_spectral_new(3)),
 * after GINSEW (Zhao, Wang and Li 2023): returned log-probabilities of a
 * keyed half S of the vocabulary are shifted by amp*sin(2 pi f g(w) + phi),
 * g(w) in [0,1) a keyed hash of the context window, f and phi secret; the
 * row is then renormalized to its former mass.  A model distilled from the
 * served values carries the sinusoid in its share of mass on S, which the
 * verifier finds with a Lomb-Scargle periodogram over the points g(w).
 *
 * GINSEW adds eps(1 + cos) to a group's probability and rescales the group;
 * this shifts log-probabilities instead (an exponential tilt), so the
 * likelihood ratio of every token stays within e^(+-amp) and the
 * total-variation cost is tanh(amp/4) whatever the distribution, the same
 * argument as hm_logprobs_new(3)'s bound.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define ID_MAX 32
#define TABLE_IDS (1u << 18) /* membership bits precomputed below this id */
#define AES_BATCH 64
#define TWO_PI 6.283185307179586476925

/* The secret frequency, in cycles per unit of g: uniform in
 * [FREQ_LO, FREQ_LO + FREQ_SPAN). */
#define FREQ_LO 16.0
#define FREQ_SPAN 32.0

#if defined(HAVE_TARGET_CLONES) && defined(__x86_64__) && \
    !defined(HM_NO_CLONES) && !defined(__clang__)
#define SP_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#else
#define SP_CLONES
#endif

struct hm_spectral {
    char fingerprint[HM_FINGERPRINT_SIZE];
    char tenant[HM_TENANT_MAX];
    char id[ID_MAX];
    unsigned h;
    double amp;
    double freq;  /* f, cycles per unit of g */
    double phase; /* phi, radians */
    hm_cmac cmac; /* g(w): CMAC(K_w, window) */
    hm_aes tok;   /* S: AES(K_s, LE32(v) || 0^12), top bit */
    uint64_t bits[TABLE_IDS / 64];
};

/* ------------------------------------------------------- parameters */

static int set_param(hm_spectral *sp, const char *name, const char *val,
                     char *errmsg, size_t errlen)
{
    int ok;
    if (strcmp(name, "amp") == 0)
        ok = hm_spec_double(val, &sp->amp) == 0 && sp->amp >= 0 &&
             sp->amp <= 1;
    else if (strcmp(name, "h") == 0)
        ok = hm_spec_uint(val, 1, HM_MAX_CONTEXT, &sp->h) == 0;
    else if (strcmp(name, "id") == 0) {
        ok = hm_spec_id_ok(val, ID_MAX);
        if (ok)
            strcpy(sp->id, val);
    } else {
        hm_errf(errmsg, errlen, "unknown spectral parameter '%s'", name);
        return -1;
    }
    if (!ok) {
        hm_errf(errmsg, errlen, "bad value '%s' for spectral parameter '%s'",
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

static int parse_spec(hm_spectral *obj, const char *spec, char *errmsg,
                      size_t errlen)
{
    return hm_spec_params(spec, "spectral", set_param_cb, obj, errmsg, errlen);
}

static uint64_t le64(const unsigned char *b)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | b[i];
    return x;
}

/* PRF v1's map to (0,1) at 53 bits: ((x >> 11) + 0.5) 2^-53. */
static double unit53(uint64_t x)
{
    return ((double)(x >> 11) + 0.5) * 0x1p-53;
}

/* Membership bits of ids base .. base+m-1 (m <= 64), as a word. */
static uint64_t member_word(const hm_aes *aes, uint32_t base, unsigned m)
{
    unsigned char blk[AES_BATCH][16];
    uint64_t w = 0;
    memset(blk, 0, (size_t)m * 16);
    for (unsigned i = 0; i < m; i++) {
        uint32_t v = base + i;
        blk[i][0] = (unsigned char)v;
        blk[i][1] = (unsigned char)(v >> 8);
        blk[i][2] = (unsigned char)(v >> 16);
        blk[i][3] = (unsigned char)(v >> 24);
    }
    hm_aes_encrypt_blocks(aes, &blk[0][0], &blk[0][0], m);
    for (unsigned i = 0; i < m; i++)
        w |= (uint64_t)(blk[i][7] >> 7) << i; /* top bit of LE64 */
    OPENSSL_cleanse(blk, (size_t)m * 16);
    return w;
}

int hm_spectral_new(hm_spectral **out, const hm_key *key, const char *spec,
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
    hm_spectral *sp = OPENSSL_zalloc(sizeof *sp);
    if (sp == NULL)
        return HM_ENOMEM;
    sp->h = HM_SPECTRAL_WINDOW_DEFAULT;
    sp->amp = HM_SPECTRAL_AMP_DEFAULT;
    strcpy(sp->id, "main");
    memcpy(sp->tenant, tenant, strlen(tenant) + 1);
    int rc = spec != NULL ? parse_spec(sp, spec, errmsg, errlen) : HM_OK;
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, sp->fingerprint, sizeof sp->fingerprint);
    if (rc == HM_OK) {
        unsigned char okm[48];
        rc = hm_key_derive_for(key, "spectral", sp->id, tenant, okm,
                               sizeof okm);
        if (rc == HM_OK) {
            hm_cmac_init(&sp->cmac, okm);
            hm_aes_init(&sp->tok, okm + 16);
            sp->freq = FREQ_LO + FREQ_SPAN * unit53(le64(okm + 32));
            sp->phase = TWO_PI * unit53(le64(okm + 40));
            for (uint32_t b = 0; b < TABLE_IDS; b += 64)
                sp->bits[b / 64] = member_word(&sp->tok, b, 64);
        } else {
            hm_errf(errmsg, errlen, "key derivation failed");
        }
        OPENSSL_cleanse(okm, sizeof okm);
    }
    if (rc != HM_OK) {
        hm_spectral_free(sp);
        return rc;
    }
    *out = sp;
    return HM_OK;
}

void hm_spectral_free(hm_spectral *sp)
{
    if (sp != NULL)
        OPENSSL_clear_free(sp, sizeof *sp);
}

size_t hm_spectral_spec(const hm_spectral *sp, char *buf, size_t len)
{
    char a[32], tmp[128];
    if (sp == NULL)
        return 0;
    hm_spec_fmt_double(a, sizeof a, sp->amp);
    int n = snprintf(tmp, sizeof tmp, "amp=%s,h=%u,id=%s", a, sp->h, sp->id);
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", tmp);
    return n < 0 ? 0 : (size_t)n;
}

int hm_spectral_param(const hm_spectral *sp, const char *name, double *value)
{
    if (sp == NULL || name == NULL || value == NULL)
        return HM_EINVAL;
    if (strcmp(name, "amp") == 0)
        *value = sp->amp;
    else if (strcmp(name, "h") == 0)
        *value = sp->h;
    else if (strcmp(name, "freq") == 0)
        *value = sp->freq;
    else if (strcmp(name, "tv_bound") == 0)
        *value = tanh(sp->amp / 4);
    else
        return HM_EINVAL;
    return HM_OK;
}

/* ------------------------------------------------------ keyed values */

static inline int member(const hm_spectral *sp, int32_t v)
{
    uint32_t u = (uint32_t)v;
    if (u < TABLE_IDS)
        return (int)((sp->bits[u >> 6] >> (u & 63)) & 1);
    return (int)(member_word(&sp->tok, u, 1) & 1);
}

/* g(w) for the window of row; HM_ERANGE on a negative id. */
static int point_of(const hm_spectral *sp, const hm_row *row, double *g)
{
    uint32_t w[HM_MAX_CONTEXT];
    unsigned char msg[4 * HM_MAX_CONTEXT], tag[16];
    if (row->context == NULL && row->n_context > 0)
        return HM_EINVAL;
    int rc = hm_row_window(row, sp->h, w);
    if (rc != HM_OK)
        return rc;
    for (unsigned i = 0; i < sp->h; i++) {
        msg[4 * i] = (unsigned char)w[i];
        msg[4 * i + 1] = (unsigned char)(w[i] >> 8);
        msg[4 * i + 2] = (unsigned char)(w[i] >> 16);
        msg[4 * i + 3] = (unsigned char)(w[i] >> 24);
    }
    hm_cmac_tag(&sp->cmac, msg, 4 * (size_t)sp->h, tag);
    *g = (double)(le64(tag) >> 11) * 0x1p-53;
    return HM_OK;
}

static double shift_at(const hm_spectral *sp, double g)
{
    return sp->amp * sin(TWO_PI * sp->freq * g + sp->phase);
}

int hm_spectral_point(const hm_spectral *sp, const int32_t *context,
                      size_t n_context, double *g, double *shift)
{
    if (sp == NULL || g == NULL || (context == NULL && n_context > 0))
        return HM_EINVAL;
    hm_row row = {context, n_context, NULL, 0.0f, 0.0};
    int rc = point_of(sp, &row, g);
    if (rc == HM_OK && shift != NULL)
        *shift = shift_at(sp, *g);
    return rc;
}

/* ------------------------------------------------------------ masses */

/* e[i] = e^(l[i] - mx) and e[i] times the mask: two maps that vectorize;
 * the sums are taken by the caller. */
SP_CLONES static void exps(const double *restrict l,
                           const unsigned char *restrict in, size_t n,
                           double mx, double *restrict e,
                           double *restrict es)
{
    for (size_t i = 0; i < n; i++) {
        double x = hm_exp_nonpos(l[i] - mx);
        e[i] = x;
        es[i] = in[i] ? x : 0.0;
    }
}

/* Sums of x and y in eight interleaved lanes each (a reduction the
 * compiler may not reorder by itself): lane i mod 8, in order. */
SP_CLONES static void lanes_sums(const double *restrict x,
                                 const double *restrict y, size_t n,
                                 double *sx, double *sy)
{
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            a[j] += x[i + j];
            b[j] += y[i + j];
        }
    for (; i < n; i++) {
        a[i & 7] += x[i];
        b[i & 7] += y[i];
    }
    *sx = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    *sy = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}

/* The same two sums in one pass over eight-lane vectors (GCC and clang
 * vector extensions; hm_exp_nonpos8 computes what hm_exp_nonpos does, lane
 * by lane), the masks widened from bytes on the way: cheaper for short
 * rows, which then skip two loops' set-up and the arrays. */
SP_CLONES static void masses_short(const double *restrict l,
                                   const unsigned char *restrict in,
                                   size_t n, double mx, double *all,
                                   double *sub)
{
    const hm_v8u byte = {0xFF,
                         0xFF00,
                         0xFF0000,
                         0xFF000000,
                         UINT64_C(0xFF00000000),
                         UINT64_C(0xFF0000000000),
                         UINT64_C(0xFF000000000000),
                         UINT64_C(0xFF00000000000000)};
    hm_v8d a = {0, 0, 0, 0, 0, 0, 0, 0}, b = a;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t u;
        memcpy(&u, in + i, sizeof u);
        hm_v8d x = hm_exp_nonpos8(hm_v8d_load(l + i) - mx);
        a += x;
        b += (hm_v8d)((hm_v8i)x & (hm_v8i)((byte & u) != 0)); /* or +0 */
    }
    double as[8], bs[8];
    memcpy(as, &a, sizeof as);
    memcpy(bs, &b, sizeof bs);
    for (; i < n; i++) {
        double x = hm_exp_nonpos(l[i] - mx);
        as[i & 7] += x;
        bs[i & 7] += in[i] ? x : 0.0;
    }
    *all = ((as[0] + as[1]) + (as[2] + as[3])) +
           ((as[4] + as[5]) + (as[6] + as[7]));
    *sub = ((bs[0] + bs[1]) + (bs[2] + bs[3])) +
           ((bs[4] + bs[5]) + (bs[6] + bs[7]));
}

/* Sums of e^(l - mx) over all n values and over those whose mask is 1,
 * each in eight lanes (lane i mod 8, in order), so either way gives the
 * same bits.  Long rows take the plain loops GCC vectorizes eight
 * vectors deep: on a core of its own the one-pass loop ran up to 15%
 * slower there (as fast on a shared one), and 40% faster at k = 20. */
static void masses(const double *l, const unsigned char *in, size_t n,
                   double mx, double *all, double *sub)
{
    double e[HM_SPECTRAL_MAX], es[HM_SPECTRAL_MAX];
    if (n < 128) {
        masses_short(l, in, n, mx, all, sub);
        return;
    }
    exps(l, in, n, mx, e, es);
    lanes_sums(e, es, n, all, sub);
}

/* Checks of a row, without early exits so that it vectorizes: bit 0 a
 * negative id, bit 1 a value that is NaN, positive or +inf (not <= 0);
 * the maximum value and the OR of the ids. */
SP_CLONES static unsigned check_row(const int32_t *restrict ids,
                                    const double *restrict l, size_t n,
                                    double *mx, uint32_t *or_ids)
{
    int32_t lo = 0;
    uint32_t hi = 0;
    for (size_t i = 0; i < n; i++) {
        lo = ids[i] < lo ? ids[i] : lo;
        hi |= (uint32_t)ids[i];
    }
    /* eight lanes: a max the compiler may not reorder by itself (any
     * order gives the same maximum; a bad value fails the row).  Arrays
     * of lanes, not vector types: without AVX-512, GCC 12 takes the
     * comparisons and selects of 512-bit vector types apart lane by lane
     * (the x86-64-v3 clone was scalar code through the stack). */
    double mm[8];
    int64_t bad[8];
    for (int j = 0; j < 8; j++) {
        mm[j] = -INFINITY;
        bad[j] = 0;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double x = l[i + j];
            mm[j] = x > mm[j] ? x : mm[j];
            bad[j] |= !(x <= 0.0);
        }
    double m = -INFINITY;
    int64_t b = 0;
    for (; i < n; i++) {
        m = l[i] > m ? l[i] : m;
        b |= !(l[i] <= 0);
    }
    for (int j = 0; j < 8; j++) {
        m = mm[j] > m ? mm[j] : m;
        b |= bad[j];
    }
    *mx = m;
    *or_ids = hi;
    return (lo < 0) | (b != 0) << 1;
}

SP_CLONES static void lookup(const uint64_t *restrict bits,
                             const int32_t *restrict ids, size_t n,
                             unsigned char *restrict in)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)ids[i];
        in[i] = (unsigned char)((bits[u >> 6] >> (u & 63)) & 1);
    }
}

/* Tests set this to take the portable loops on AVX-512 CPUs. */
int hm_sp_portable = 0;

/* The membership of a row: a byte per id (portable loops), or a bit per
 * id (AVX-512's, spectral_wide.c: byte i / 8, bit i mod 8). */
typedef struct mask {
    int wide;
    unsigned char in[HM_SPECTRAL_MAX];
} mask;

/* Validate and gather the mask and the maximum; HM_EINVAL / HM_ERANGE.
 * On the CPUs whose AVX-512 hardening takes (hm_lp_wide_ok), one pass
 * that gathers the bits of ids in the table as it checks. */
static int scan(const hm_spectral *sp, const int32_t *ids,
                const double *l, size_t n, mask *m, double *mx)
{
    uint32_t hi;
    unsigned bad;
    m->wide = !hm_sp_portable && hm_lp_wide_ok();
    if (m->wide)
        bad = hm_sp_wide_scan(sp->bits, TABLE_IDS, ids, l, n, mx, &hi, m->in);
    else
        bad = check_row(ids, l, n, mx, &hi);
    if (bad & 1)
        return HM_ERANGE;
    if (bad)
        return HM_EINVAL;
    if (hi < TABLE_IDS) {
        if (!m->wide) /* (the wide scan gathered the bits) */
            lookup(sp->bits, ids, n, m->in);
    } else if (m->wide) {
        memset(m->in, 0, (n + 7) / 8);
        for (size_t i = 0; i < n; i++)
            m->in[i / 8] |= (unsigned char)(member(sp, ids[i]) << (i & 7));
    } else {
        for (size_t i = 0; i < n; i++)
            m->in[i] = (unsigned char)member(sp, ids[i]);
    }
    return HM_OK;
}

/* l += d on the subset, - c everywhere, clamped at 0 (-inf stays -inf). */
SP_CLONES static void shift_row(double *restrict l,
                                const unsigned char *restrict in, size_t n,
                                double d, double c)
{
    for (size_t i = 0; i < n; i++) {
        double y = l[i] + (in[i] ? d : 0.0) - c;
        l[i] = y < 0 ? y : 0.0;
    }
}

/* masses of the row, by the mask's loops. */
static void masses_of(const double *l, const mask *m, size_t n, double mx,
                      double *all, double *sub)
{
    if (m->wide)
        hm_sp_wide_masses(l, m->in, n, mx, all, sub);
    else
        masses(l, m->in, n, mx, all, sub);
}

int hm_spectral_apply(const hm_spectral *sp, const hm_row *row,
                      const int32_t *ids, double *logprobs, size_t n)
{
    mask m;
    double mx, all, sub, g;
    if (sp == NULL || row == NULL ||
        (n > 0 && (ids == NULL || logprobs == NULL)))
        return HM_EINVAL;
    if (n > HM_SPECTRAL_MAX)
        return HM_ERANGE;
    int rc = scan(sp, ids, logprobs, n, &m, &mx);
    if (rc == HM_OK)
        rc = point_of(sp, row, &g);
    if (rc != HM_OK || n == 0 || mx == -INFINITY)
        return rc;
    masses_of(logprobs, &m, n, mx, &all, &sub);
    double d = shift_at(sp, g);
    /* The returned mass stays what it was: e^d on S, then divide by
     * (sub e^d + all - sub) / all. */
    double c = log1p(sub / all * expm1(d));
    if (m.wide)
        hm_sp_wide_shift(logprobs, m.in, n, d, c);
    else
        shift_row(logprobs, m.in, n, d, c);
    return HM_OK;
}

int hm_spectral_share(const hm_spectral *sp, const int32_t *ids,
                      const double *logprobs, size_t n, double *share)
{
    mask m;
    double mx, all, sub;
    if (sp == NULL || share == NULL || ids == NULL || logprobs == NULL ||
        n == 0)
        return HM_EINVAL;
    if (n > HM_SPECTRAL_MAX)
        return HM_ERANGE;
    int rc = scan(sp, ids, logprobs, n, &m, &mx);
    if (rc != HM_OK)
        return rc;
    if (mx == -INFINITY)
        return HM_EINVAL;
    masses_of(logprobs, &m, n, mx, &all, &sub);
    *share = sub / all;
    return HM_OK;
}

/* ------------------------------------------------------ Lomb-Scargle */

int hm_lomb_scargle(const double *t, const double *y, size_t n, double freq,
                    double *power)
{
    if (t == NULL || y == NULL || power == NULL || n == 0 ||
        !(freq > 0 && freq < INFINITY))
        return HM_EINVAL;
    double mean = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(t[i]) || !isfinite(y[i]))
            return HM_EINVAL;
        mean += y[i];
    }
    mean /= (double)n;
    const double w = TWO_PI * freq;
    double s2 = 0, c2 = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        s2 += sin(2 * w * t[i]);
        c2 += cos(2 * w * t[i]);
        ss += (y[i] - mean) * (y[i] - mean);
    }
    /* tau makes the cosine and sine terms orthogonal over the sample */
    double tau = atan2(s2, c2) / (2 * w);
    double yc = 0, ys = 0, cc = 0, sn = 0;
    for (size_t i = 0; i < n; i++) {
        double a = w * (t[i] - tau);
        double c = cos(a), s = sin(a), d = y[i] - mean;
        yc += d * c;
        ys += d * s;
        cc += c * c;
        sn += s * s;
    }
    double p = 0;
    if (ss > 0) {
        if (cc > 0)
            p += yc * yc / cc;
        if (sn > 0)
            p += ys * ys / sn;
        p /= ss;
    }
    /* in [0,1] up to rounding */
    *power = p < 0 ? 0 : p > 1 ? 1 : p;
    return HM_OK;
}
