/*
 * sketch.c - the served-window sketch: a keyed, blocked Bloom filter of the
 * context windows a server served after, for filtered audits
 * (hm_sketch_new(3)).
 *
 * A window of width n (ids oldest first, HM_PAD_ID before the start of a
 * sequence) is hashed as T = AES-CMAC(K, LE32(w_1) || ... || LE32(w_n)),
 * K from HKDF info "hallmark/v1/sketch".  The low 64 bits of T pick one of
 * B 512-bit blocks (multiply-high), the high 64 bits give k bit positions
 * in it, 9 bits each (re-mixed every 7 positions), with replacement.
 * Widths differ in message length, so windows of every width share one
 * bit array without colliding more than distinct windows do.
 *
 * With the hashes modelled as a random function, a window never added is
 * reported present with probability exactly (1/B) sum_b (pop_b / 512)^k,
 * pop_b the set bits of block b: the sketch states its own false-positive
 * rate from its content, whatever was added to it.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define SKETCH_MAGIC "hallmark-sketch 1\n"
#define SKETCH_MAGIC_PREFIX "hallmark-sketch "
#define BLOCK_BITS 512u
#define BLOCK_WORDS 8u
#define K_MAX 32u
#define EXPECTED_MAX 4294967295u
#define FP_MIN 1e-9
#define FP_MAX 0.5
#define BLOCKS_MAX (UINT64_C(1) << 34) /* 1 TiB */

struct hm_sketch {
    char fingerprint[HM_FINGERPRINT_SIZE];
    char tenant[HM_TENANT_MAX];
    uint64_t expected; /* served tokens it is sized for */
    double fp;         /* target false-positive rate at that count */
    uint32_t widths;   /* bit w set: windows of width w are recorded */
    unsigned n_widths;
    unsigned k;        /* bits per window */
    uint64_t blocks;   /* 512-bit blocks */
    hm_cmac cmac;
    unsigned char pad[5][16]; /* single-block CMAC pads, widths 1 to 4 */
    uint64_t *bits;    /* blocks * 8 words, 64-byte aligned */
};

/* ------------------------------------------------------------ sizing */

/* P[false positive] of a blocked Bloom filter with n random windows in B
 * blocks of 512 bits, k positions each: the load of the queried block is
 * Binomial(n, 1/B), and with j windows in it a bit is set with
 * probability 1 - (1 - 1/512)^(k j). */
static double blocked_fp(double n, double B, unsigned k)
{
    double p = 1 / B, lam = n * p, sd = sqrt(lam + 1);
    double lo = floor(lam - 40 * sd), hi = ceil(lam + 40 * sd + 40);
    if (lo < 0)
        lo = 0;
    if (hi > n)
        hi = n;
    double l1p = log1p(-1.0 / BLOCK_BITS), sum = 0;
    double lq = B > 1 ? log1p(-p) : 0;
    for (double j = lo; j <= hi; j++) {
        double lpmf = lgamma(n + 1) - lgamma(j + 1) - lgamma(n - j + 1) +
                      j * log(p) + (n - j) * lq;
        if (B == 1)
            lpmf = j == n ? 0 : -INFINITY;
        sum += exp(lpmf) * pow(-expm1((double)k * j * l1p), (double)k);
    }
    return sum;
}

/* The smallest B (within ~1.5%) and its best k with blocked_fp <= fp. */
static void size_for(double n, double fp, uint64_t *blocks, unsigned *k)
{
    const double ln2 = 0.69314718055994531;
    double B = ceil(n * -log(fp) / (ln2 * ln2) / BLOCK_BITS);
    if (B < 1)
        B = 1;
    for (int iter = 0; iter < 400; iter++) {
        unsigned bk = 1;
        double best = 2;
        for (unsigned kk = 1; kk <= K_MAX; kk++) {
            double f = blocked_fp(n, B, kk);
            if (f < best) {
                best = f;
                bk = kk;
            }
        }
        if (best <= fp || B >= (double)BLOCKS_MAX) {
            *blocks = (uint64_t)B;
            *k = bk;
            return;
        }
        B += ceil(B / 64);
    }
    *blocks = (uint64_t)B;
    *k = K_MAX;
}

/* ------------------------------------------------------- parameters */

static int parse_widths(const char *v, uint32_t *mask)
{
    char buf[128];
    if (strlen(v) >= sizeof buf)
        return -1;
    strcpy(buf, v);
    *mask = 0;
    for (char *p = buf;;) {
        char *slash = strchr(p, '/');
        if (slash != NULL)
            *slash = '\0';
        unsigned w;
        if (hm_spec_uint(p, 1, HM_MAX_CONTEXT, &w) != 0 ||
            (*mask & (UINT32_C(1) << w)))
            return -1;
        *mask |= UINT32_C(1) << w;
        if (slash == NULL)
            return 0;
        p = slash + 1;
    }
}

static int set_param(hm_sketch *s, const char *name, const char *val,
                     char *errmsg, size_t errlen)
{
    int ok;
    if (strcmp(name, "expected") == 0) {
        unsigned e;
        ok = hm_spec_uint(val, 1, EXPECTED_MAX, &e) == 0;
        s->expected = e;
    } else if (strcmp(name, "fp") == 0)
        ok = hm_spec_double(val, &s->fp) == 0 && s->fp >= FP_MIN &&
             s->fp <= FP_MAX;
    else if (strcmp(name, "windows") == 0)
        ok = parse_widths(val, &s->widths) == 0;
    else {
        hm_errf(errmsg, errlen, "unknown sketch parameter '%s'", name);
        return -1;
    }
    if (!ok) {
        hm_errf(errmsg, errlen, "bad value '%s' for sketch parameter '%s'",
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

static int parse_spec(hm_sketch *obj, const char *spec, char *errmsg,
                      size_t errlen)
{
    return hm_spec_params(spec, "sketch", set_param_cb, obj, errmsg, errlen);
}

static unsigned count_widths(uint32_t mask)
{
    unsigned n = 0;
    for (; mask; mask &= mask - 1)
        n++;
    return n;
}

size_t hm_sketch_spec(const hm_sketch *s, char *buf, size_t len)
{
    char f[32], w[128] = "", tmp[256];
    if (s == NULL)
        return 0;
    hm_spec_fmt_double(f, sizeof f, s->fp);
    for (unsigned i = 1; i <= HM_MAX_CONTEXT; i++)
        if (s->widths & (UINT32_C(1) << i))
            snprintf(w + strlen(w), sizeof w - strlen(w), "%s%u",
                     w[0] ? "/" : "", i);
    int n = snprintf(tmp, sizeof tmp, "expected=%llu,fp=%s,windows=%s",
                     (unsigned long long)s->expected, f, w);
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", tmp);
    return n < 0 ? 0 : (size_t)n;
}

/* ------------------------------------------------------ life cycle */

static int alloc_bits(hm_sketch *s)
{
    if (s->blocks == 0 || s->blocks > BLOCKS_MAX)
        return HM_ERANGE;
    size_t bytes = (size_t)s->blocks * 64;
    void *p = NULL;
    /* Every add and query is a random cache line: huge pages save the
     * TLB miss on large sketches. */
    const size_t huge = (size_t)2 << 20;
    if (posix_memalign(&p, bytes >= 2 * huge ? huge : 64, bytes) != 0)
        return HM_ENOMEM;
#ifdef MADV_HUGEPAGE
    if (bytes >= 2 * huge)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* advice only */
#endif
    memset(p, 0, bytes);
    s->bits = p;
    return HM_OK;
}

/* Everything but the bits: parameters, key fingerprint, subkey. */
static int sketch_init(hm_sketch **out, const hm_key *key, const char *spec,
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
    hm_sketch *s = OPENSSL_zalloc(sizeof *s);
    if (s == NULL)
        return HM_ENOMEM;
    s->expected = HM_SKETCH_EXPECTED_DEFAULT;
    s->fp = HM_SKETCH_FP_DEFAULT;
    (void)parse_widths(HM_SKETCH_WINDOWS_DEFAULT, &s->widths);
    memcpy(s->tenant, tenant, strlen(tenant) + 1);
    int rc = spec != NULL ? parse_spec(s, spec, errmsg, errlen) : HM_OK;
    s->n_widths = count_widths(s->widths);
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, s->fingerprint, sizeof s->fingerprint);
    if (rc == HM_OK) {
        /* Its own name in the info string, and no tenant: independent of
         * every watermark channel, and the same for every tenant so that
         * the sketches of tenants merge into one. */
        unsigned char okm[16];
        rc = hm_key_derive(key, "hallmark/v1/sketch", okm, sizeof okm);
        if (rc == HM_OK) {
            hm_cmac_init(&s->cmac, okm);
            for (unsigned w = 1; w <= 4; w++)
                hm_cmac_pad(&s->cmac, w, s->pad[w]);
        } else
            hm_errf(errmsg, errlen, "key derivation failed");
        OPENSSL_cleanse(okm, sizeof okm);
    }
    if (rc != HM_OK) {
        hm_sketch_free(s);
        return rc;
    }
    *out = s;
    return HM_OK;
}

int hm_sketch_new(hm_sketch **out, const hm_key *key, const char *spec,
                  const char *tenant, char *errmsg, size_t errlen)
{
    hm_sketch *s = NULL;
    int rc = sketch_init(&s, key, spec, tenant, errmsg, errlen);
    if (rc != HM_OK)
        return rc;
    size_for((double)s->expected * s->n_widths, s->fp, &s->blocks, &s->k);
    rc = alloc_bits(s);
    if (rc != HM_OK) {
        hm_errf(errmsg, errlen, "cannot allocate %llu bytes for the sketch",
                (unsigned long long)s->blocks * 64);
        hm_sketch_free(s);
        return rc;
    }
    *out = s;
    return HM_OK;
}

void hm_sketch_free(hm_sketch *s)
{
    if (s == NULL)
        return;
    free(s->bits);
    OPENSSL_clear_free(s, sizeof *s);
}

const char *hm_sketch_tenant(const hm_sketch *s)
{
    return s ? s->tenant : NULL;
}

const char *hm_sketch_fingerprint(const hm_sketch *s)
{
    return s ? s->fingerprint : NULL;
}

int hm_sketch_has_width(const hm_sketch *s, unsigned w)
{
    return s != NULL && w >= 1 && w <= HM_MAX_CONTEXT &&
           (s->widths & (UINT32_C(1) << w)) != 0;
}

/* ------------------------------------------------------ hashing */

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The block of a window and its bit masks within the block's 8 words. */
static uint64_t locate(const hm_sketch *s, const uint32_t *w, unsigned n,
                       uint64_t mask[BLOCK_WORDS])
{
    unsigned char msg[4 * HM_MAX_CONTEXT], tag[16];
    for (unsigned i = 0; i < n; i++) {
        msg[4 * i] = (unsigned char)w[i];
        msg[4 * i + 1] = (unsigned char)(w[i] >> 8);
        msg[4 * i + 2] = (unsigned char)(w[i] >> 16);
        msg[4 * i + 3] = (unsigned char)(w[i] >> 24);
    }
    if (n <= 4) { /* one CMAC block: the padded ids XOR K1/K2, one AES */
        const unsigned char *pad = s->pad[n];
        for (unsigned i = 0; i < 16; i++)
            tag[i] = (unsigned char)((i < 4 * n ? msg[i] : 0) ^ pad[i]);
        hm_aes_encrypt(&s->cmac.aes, tag, tag);
    } else {
        hm_cmac_tag(&s->cmac, msg, 4 * (size_t)n, tag);
    }
    uint64_t lo = le64(tag), hi = le64(tag + 8), x = hi;
    for (unsigned j = 0; j < BLOCK_WORDS; j++)
        mask[j] = 0;
    for (unsigned i = 0; i < s->k; i++) {
        if (i > 0 && i % 7 == 0)
            x = hm_mix(hi, lo | 1u, i);
        unsigned pos = (unsigned)(x & (BLOCK_BITS - 1));
        x >>= 9;
        mask[pos >> 6] |= UINT64_C(1) << (pos & 63);
    }
#ifdef __SIZEOF_INT128__
    return (uint64_t)(((unsigned __int128)lo * s->blocks) >> 64);
#else
    return lo % s->blocks;
#endif
}

static void put_window(hm_sketch *s, const uint32_t *w, unsigned n)
{
    uint64_t mask[BLOCK_WORDS];
    uint64_t *blk = s->bits + BLOCK_WORDS * locate(s, w, n, mask);
    for (unsigned j = 0; j < BLOCK_WORDS; j++)
        if (mask[j] != 0 &&
            (__atomic_load_n(&blk[j], __ATOMIC_RELAXED) & mask[j]) != mask[j])
            __atomic_fetch_or(&blk[j], mask[j], __ATOMIC_RELAXED);
}

int hm_sketch_has_window(const hm_sketch *s, const uint32_t *w, unsigned n)
{
    uint64_t mask[BLOCK_WORDS];
    const uint64_t *blk = s->bits + BLOCK_WORDS * locate(s, w, n, mask);
    for (unsigned j = 0; j < BLOCK_WORDS; j++)
        if ((__atomic_load_n(&blk[j], __ATOMIC_RELAXED) & mask[j]) != mask[j])
            return 0;
    return 1;
}

int hm_sketch_add(hm_sketch *s, const hm_row *row)
{
    if (s == NULL || row == NULL)
        return HM_EINVAL;
    uint32_t w[HM_MAX_CONTEXT];
    int rc = hm_row_window(row, HM_MAX_CONTEXT, w);
    if (rc != HM_OK)
        return rc;
    for (uint32_t m = s->widths; m; m &= m - 1) {
        unsigned n = (unsigned)__builtin_ctz(m);
        put_window(s, w + HM_MAX_CONTEXT - n, n);
    }
    return HM_OK;
}

int hm_sketch_add_doc(hm_sketch *s, const int32_t *prompt, size_t n_prompt,
                      const int32_t *tokens, size_t n_tokens)
{
    if (s == NULL || (prompt == NULL && n_prompt > 0) ||
        (tokens == NULL && n_tokens > 0))
        return HM_EINVAL;
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0)
            return HM_ERANGE;
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0)
            return HM_ERANGE;
    for (size_t j = 0; j < n_tokens; j++) {
        uint32_t w[HM_MAX_CONTEXT];
        size_t p = n_prompt + j; /* tokens before the j-th served one */
        for (unsigned i = 0; i < HM_MAX_CONTEXT; i++) {
            size_t back = HM_MAX_CONTEXT - i;
            w[i] = p < back              ? HM_PAD_ID
                   : p - back < n_prompt ? (uint32_t)prompt[p - back]
                                         : (uint32_t)tokens[p - back - n_prompt];
        }
        for (uint32_t m = s->widths; m; m &= m - 1) {
            unsigned n = (unsigned)__builtin_ctz(m);
            put_window(s, w + HM_MAX_CONTEXT - n, n);
        }
    }
    return HM_OK;
}

int hm_sketch_query(const hm_sketch *s, const int32_t *context,
                    size_t n_context, unsigned width)
{
    if (s == NULL || (context == NULL && n_context > 0))
        return HM_EINVAL;
    if (!hm_sketch_has_width(s, width))
        return HM_ERANGE;
    hm_row row = {context, n_context, NULL, 0, 0};
    uint32_t w[HM_MAX_CONTEXT];
    if (context == NULL) /* the start of a sequence: all padding */
        for (unsigned i = 0; i < width; i++)
            w[i] = HM_PAD_ID;
    else if (hm_row_window(&row, width, w) != HM_OK)
        return HM_ERANGE;
    return hm_sketch_has_window(s, w, width);
}

/* ------------------------------------------------- content statistics */

static unsigned block_pop(const uint64_t *blk)
{
    unsigned n = 0;
    for (unsigned j = 0; j < BLOCK_WORDS; j++)
        n += hm_popcount64(__atomic_load_n(&blk[j], __ATOMIC_RELAXED));
    return n;
}

/* The exact false-positive rate of the content, and an estimate of the
 * distinct windows behind it (a block with x of 512 bits set holds about
 * -(512/k) ln(1 - x/512) windows; a full block counts as 512/k ln 512). */
static void content_stats(const hm_sketch *s, double *fp_rate, double *count)
{
    double pw[BLOCK_BITS + 1], est[BLOCK_BITS + 1];
    for (unsigned x = 0; x <= BLOCK_BITS; x++) {
        pw[x] = pow((double)x / BLOCK_BITS, (double)s->k);
        est[x] = -(double)BLOCK_BITS / s->k *
                 log(x < BLOCK_BITS ? 1 - (double)x / BLOCK_BITS
                                    : 1.0 / BLOCK_BITS);
    }
    double f = 0, c = 0;
    for (uint64_t b = 0; b < s->blocks; b++) {
        unsigned x = block_pop(s->bits + BLOCK_WORDS * b);
        f += pw[x];
        c += est[x];
    }
    *fp_rate = f / (double)s->blocks;
    *count = c;
}

int hm_sketch_param(const hm_sketch *s, const char *name, double *value)
{
    if (s == NULL || name == NULL || value == NULL)
        return HM_EINVAL;
    double f, c;
    if (strcmp(name, "expected") == 0)
        *value = (double)s->expected;
    else if (strcmp(name, "fp") == 0)
        *value = s->fp;
    else if (strcmp(name, "blocks") == 0)
        *value = (double)s->blocks;
    else if (strcmp(name, "k") == 0)
        *value = s->k;
    else if (strcmp(name, "bytes") == 0)
        *value = (double)s->blocks * 64;
    else if (strcmp(name, "fp_bound") == 0)
        *value = blocked_fp((double)s->expected * s->n_widths,
                            (double)s->blocks, s->k);
    else if (strcmp(name, "fp_rate") == 0) {
        content_stats(s, &f, &c);
        *value = f;
    } else if (strcmp(name, "count") == 0) {
        content_stats(s, &f, &c);
        *value = floor(c + 0.5);
    } else
        return HM_EINVAL;
    return HM_OK;
}

/* ------------------------------------------------------------- merge */

static int same_shape(const hm_sketch *a, const hm_sketch *b, char *errmsg,
                      size_t errlen)
{
    char sa[256], sb[256];
    if (strcmp(a->fingerprint, b->fingerprint) != 0) {
        hm_errf(errmsg, errlen, "different keys: %s and %s", a->fingerprint,
                b->fingerprint);
        return 0;
    }
    hm_sketch_spec(a, sa, sizeof sa);
    hm_sketch_spec(b, sb, sizeof sb);
    if (strcmp(sa, sb) != 0 || a->blocks != b->blocks || a->k != b->k) {
        hm_errf(errmsg, errlen,
                "different parameters: '%s' (%llu blocks, k=%u) and '%s' "
                "(%llu blocks, k=%u)",
                sa, (unsigned long long)a->blocks, a->k, sb,
                (unsigned long long)b->blocks, b->k);
        return 0;
    }
    return 1;
}

int hm_sketch_merge(hm_sketch *dst, const hm_sketch *src, char *errmsg,
                    size_t errlen)
{
    if (dst == NULL || src == NULL)
        return HM_EINVAL;
    if (!same_shape(dst, src, errmsg, errlen))
        return HM_EINVAL;
    for (uint64_t i = 0; i < BLOCK_WORDS * dst->blocks; i++) {
        uint64_t v = __atomic_load_n(&src->bits[i], __ATOMIC_RELAXED);
        if (v != 0)
            __atomic_fetch_or(&dst->bits[i], v, __ATOMIC_RELAXED);
    }
    if (strcmp(dst->tenant, src->tenant) != 0)
        strcpy(dst->tenant, "*");
    return HM_OK;
}

/* ------------------------------------------------------------- files */

/*
 * Format (version 1):
 *   "hallmark-sketch 1\n"
 *   "key FINGERPRINT\n", "tenant HEX\n" (hex of the tenant's bytes, "-"
 *   for the default tenant), "spec SPEC\n" (canonical), "blocks B\n",
 *   "k K\n", "count C\n" (estimated distinct windows, informative),
 *   "data\n";
 *   B * 8 64-bit little-endian words;
 *   a 32-byte SHA-256 of everything before it.
 */

typedef hm_out sink; /* f NULL: digest only */
#define put hm_out_bytes

static void tenant_hex(const char *t, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    for (; t[i]; i++) {
        out[2 * i] = hex[(unsigned char)t[i] >> 4];
        out[2 * i + 1] = hex[(unsigned char)t[i] & 15];
    }
    if (i == 0)
        strcpy(out, "-");
    else
        out[2 * i] = '\0';
}

/* Serialize everything before the trailer into k. */
static void serialize(const hm_sketch *s, sink *k)
{
    char head[2 * HM_TENANT_MAX + 1024], spec[256], th[2 * HM_TENANT_MAX + 2];
    double f, c;
    content_stats(s, &f, &c);
    hm_sketch_spec(s, spec, sizeof spec);
    tenant_hex(s->tenant, th);
    int n = snprintf(head, sizeof head,
                     "%skey %s\ntenant %s\nspec %s\nblocks %llu\nk %u\n"
                     "count %.0f\ndata\n",
                     SKETCH_MAGIC, s->fingerprint, th, spec,
                     (unsigned long long)s->blocks, s->k, c);
    if (n < 0 || (size_t)n >= sizeof head) {
        k->err = 1;
        return;
    }
    put(k, head, (size_t)n);
    unsigned char buf[8 * 512];
    size_t used = 0;
    for (uint64_t i = 0; i < BLOCK_WORDS * s->blocks && !k->err; i++) {
        uint64_t v = __atomic_load_n(&s->bits[i], __ATOMIC_RELAXED);
        for (int b = 0; b < 8; b++)
            buf[used++] = (unsigned char)(v >> (8 * b));
        if (used == sizeof buf) {
            put(k, buf, used);
            used = 0;
        }
    }
    put(k, buf, used);
}

int hm_sketch_digest(const hm_sketch *s, char *hex, size_t len)
{
    if (s == NULL || hex == NULL || len < 65)
        return HM_EINVAL;
    sink k = {NULL, EVP_MD_CTX_new(), 0};
    unsigned char md[32];
    if (k.md == NULL || EVP_DigestInit_ex(k.md, EVP_sha256(), NULL) != 1)
        k.err = 1;
    else {
        serialize(s, &k);
        if (!k.err && EVP_DigestFinal_ex(k.md, md, NULL) != 1)
            k.err = 1;
    }
    EVP_MD_CTX_free(k.md);
    if (k.err)
        return HM_ECRYPTO;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return HM_OK;
}

static int serialize_cb(const void *s, hm_out *o)
{
    serialize(s, o);
    return o->err ? HM_EIO : HM_OK;
}

int hm_sketch_save(const hm_sketch *s, const char *path, char *errmsg,
                   size_t errlen)
{
    if (s == NULL || path == NULL)
        return HM_EINVAL;
    return hm_save_digested(path, serialize_cb, s, errmsg, errlen);
}

int hm_sketch_file_magic(const char *path)
{
    char buf[sizeof SKETCH_MAGIC_PREFIX] = "";
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == sizeof buf - 1 &&
           memcmp(buf, SKETCH_MAGIC_PREFIX, n) == 0;
}

/* One header line "NAME VALUE" into val; the line is also digested. */
static int read_line(FILE *f, EVP_MD_CTX *md, const char *name, char *val,
                     size_t cap, const char *path, char *errmsg,
                     size_t errlen)
{
    char line[2 * HM_TENANT_MAX + 600];
    if (fgets(line, sizeof line, f) == NULL) {
        hm_errf(errmsg, errlen, "%s: truncated header (no '%s')", path, name);
        return HM_EFORMAT;
    }
    size_t n = strlen(line);
    if (n == 0 || (line[n - 1] != '\n' && feof(f))) {
        hm_errf(errmsg, errlen, "%s: truncated header (in '%s')", path, name);
        return HM_EFORMAT;
    }
    EVP_DigestUpdate(md, line, n);
    size_t nl = strlen(name);
    if (n == 0 || line[n - 1] != '\n' || strncmp(line, name, nl) != 0 ||
        (line[nl] != ' ' && line[nl] != '\n')) {
        hm_errf(errmsg, errlen, "%s: expected the header line '%s'", path,
                name);
        return HM_EFORMAT;
    }
    line[n - 1] = '\0';
    const char *v = line[nl] == ' ' ? line + nl + 1 : "";
    if (strlen(v) >= cap) {
        hm_errf(errmsg, errlen, "%s: header line '%s' too long", path, name);
        return HM_EFORMAT;
    }
    strcpy(val, v);
    return HM_OK;
}

static int unhex_tenant(const char *h, char *out)
{
    if (strcmp(h, "-") == 0) {
        out[0] = '\0';
        return 0;
    }
    size_t n = strlen(h);
    if (n == 0 || n % 2 || n / 2 >= HM_TENANT_MAX)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (!strchr("0123456789abcdef", h[2 * i]) ||
            !strchr("0123456789abcdef", h[2 * i + 1]) ||
            sscanf(h + 2 * i, "%2x", &v) != 1 || v == 0)
            return -1;
        out[i] = (char)v;
    }
    out[n / 2] = '\0';
    return 0;
}

static int parse_u64(const char *v, uint64_t *out)
{
    if (*v < '0' || *v > '9' || strspn(v, "0123456789") != strlen(v) ||
        strlen(v) > 19)
        return -1;
    *out = strtoull(v, NULL, 10);
    return 0;
}

int hm_sketch_load(hm_sketch **out, const hm_key *key, const char *path,
                   char *errmsg, size_t errlen)
{
    if (out == NULL || key == NULL || path == NULL)
        return HM_EINVAL;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        return HM_EIO;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    hm_sketch *s = NULL;
    char magic[sizeof SKETCH_MAGIC] = "", fpr[128], th[2 * HM_TENANT_MAX + 2],
         spec[512], v[64], tenant[HM_TENANT_MAX];
    uint64_t blocks = 0, k = 0, count = 0;
    int rc = HM_OK;
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        rc = HM_ECRYPTO;
        goto done;
    }
    if (fread(magic, 1, strlen(SKETCH_MAGIC), f) != strlen(SKETCH_MAGIC) ||
        memcmp(magic, SKETCH_MAGIC_PREFIX, strlen(SKETCH_MAGIC_PREFIX)) != 0) {
        hm_errf(errmsg, errlen, "%s: not a hallmark sketch file", path);
        rc = HM_EFORMAT;
        goto done;
    }
    if (strcmp(magic, SKETCH_MAGIC) != 0) {
        hm_errf(errmsg, errlen, "%s: unsupported sketch file version", path);
        rc = HM_EFORMAT;
        goto done;
    }
    EVP_DigestUpdate(md, magic, strlen(magic));
#define LINE(name, buf)                                                      \
    if ((rc = read_line(f, md, name, buf, sizeof buf, path, errmsg,          \
                        errlen)) != HM_OK)                                   \
        goto done;
    LINE("key", fpr);
    LINE("tenant", th);
    LINE("spec", spec);
    LINE("blocks", v);
    if (parse_u64(v, &blocks) != 0 || blocks == 0 || blocks > BLOCKS_MAX) {
        hm_errf(errmsg, errlen, "%s: bad block count '%s'", path, v);
        rc = HM_EFORMAT;
        goto done;
    }
    LINE("k", v);
    if (parse_u64(v, &k) != 0 || k == 0 || k > K_MAX) {
        hm_errf(errmsg, errlen, "%s: bad k '%s'", path, v);
        rc = HM_EFORMAT;
        goto done;
    }
    LINE("count", v);
    if (parse_u64(v, &count) != 0) {
        hm_errf(errmsg, errlen, "%s: bad count '%s'", path, v);
        rc = HM_EFORMAT;
        goto done;
    }
    LINE("data", v);
#undef LINE
    if (unhex_tenant(th, tenant) != 0) {
        hm_errf(errmsg, errlen, "%s: bad tenant '%s'", path, th);
        rc = HM_EFORMAT;
        goto done;
    }
    rc = sketch_init(&s, key, spec, tenant, errmsg, errlen);
    if (rc != HM_OK) {
        char inner[HM_ERRMSG_SIZE];
        snprintf(inner, sizeof inner, "%s", errmsg ? errmsg : "");
        hm_errf(errmsg, errlen, "%s: bad spec: %s", path, inner);
        goto done;
    }
    s->blocks = blocks;
    s->k = (unsigned)k;
    if ((rc = alloc_bits(s)) != HM_OK) {
        hm_errf(errmsg, errlen, "%s: cannot allocate %llu bytes", path,
                (unsigned long long)blocks * 64);
        goto done;
    }
    unsigned char buf[8 * 512], trailer[32], digest[32];
    uint64_t words = BLOCK_WORDS * blocks;
    for (uint64_t i = 0; i < words;) {
        size_t want = words - i < 512 ? (size_t)(words - i) : 512;
        if (fread(buf, 8, want, f) != want) {
            hm_errf(errmsg, errlen, "%s: truncated (%llu of %llu words)",
                    path, (unsigned long long)i, (unsigned long long)words);
            rc = HM_EFORMAT;
            goto done;
        }
        EVP_DigestUpdate(md, buf, 8 * want);
        for (size_t j = 0; j < want; j++)
            s->bits[i + j] = le64(buf + 8 * j);
        i += want;
    }
    if (fread(trailer, 1, 32, f) != 32) {
        hm_errf(errmsg, errlen, "%s: truncated (no checksum)", path);
        rc = HM_EFORMAT;
        goto done;
    }
    if (fgetc(f) != EOF) {
        hm_errf(errmsg, errlen, "%s: data after the checksum", path);
        rc = HM_EFORMAT;
        goto done;
    }
    if (EVP_DigestFinal_ex(md, digest, NULL) != 1) {
        rc = HM_ECRYPTO;
        goto done;
    }
    if (CRYPTO_memcmp(digest, trailer, 32) != 0) {
        hm_errf(errmsg, errlen, "%s: checksum mismatch (damaged file)", path);
        rc = HM_EFORMAT;
        goto done;
    }
    if (strcmp(fpr, s->fingerprint) != 0) {
        hm_errf(errmsg, errlen, "%s: made with key %s, not %s", path, fpr,
                s->fingerprint);
        rc = HM_EINVAL;
        goto done;
    }
done:
    fclose(f);
    EVP_MD_CTX_free(md);
    if (rc != HM_OK) {
        hm_sketch_free(s);
        return rc;
    }
    *out = s;
    return HM_OK;
}
