/*
 * prf.c - PRF v1: AES-CMAC step seeds and the candidate mixer.
 *
 * The normative description is man/hallmark-prf.7; test vectors in
 * tests/vectors/prf-v1.txt were computed independently of this file.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>

static uint64_t load_le64(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
#endif
}

/* Doubling in GF(2^128) as RFC 4493 derives K1 and K2. */
static void cmac_double(const unsigned char in[16], unsigned char out[16])
{
    unsigned carry = in[0] >> 7;
    for (int i = 0; i < 15; i++)
        out[i] = (unsigned char)((in[i] << 1) | (in[i + 1] >> 7));
    out[15] = (unsigned char)((in[15] << 1) ^ (carry ? 0x87 : 0));
}

void hm_cmac_init(hm_cmac *c, const unsigned char key[16])
{
    static const unsigned char zero[16];
    unsigned char l[16];
    hm_aes_init(&c->aes, key);
    hm_aes_encrypt(&c->aes, zero, l);
    cmac_double(l, c->k1);
    cmac_double(c->k1, c->k2);
    OPENSSL_cleanse(l, sizeof l);
}

void hm_cmac_tag(const hm_cmac *c, const unsigned char *msg, size_t len,
             unsigned char tag[16])
{
    unsigned char x[16] = {0};
    size_t full = len == 0 ? 0 : (len - 1) / 16; /* blocks before the last */
    for (size_t b = 0; b < full; b++) {
        for (int i = 0; i < 16; i++)
            x[i] ^= msg[16 * b + i];
        hm_aes_encrypt(&c->aes, x, x);
    }
    size_t rest = len - 16 * full;
    const unsigned char *sub = rest == 16 ? c->k1 : c->k2;
    for (size_t i = 0; i < 16; i++) {
        unsigned char m = i < rest ? msg[16 * full + i]
                                   : (unsigned char)(i == rest ? 0x80 : 0);
        x[i] ^= (unsigned char)(m ^ sub[i]);
    }
    hm_aes_encrypt(&c->aes, x, tag);
}

void hm_cmac_wipe(hm_cmac *c)
{
    OPENSSL_cleanse(c, sizeof *c);
}

/* SplitMix64's rule for increments: too few bit transitions make a weak
 * Weyl sequence, so flip alternate bits (keeps the increment odd). */
static inline __attribute__((always_inline)) uint64_t
fix_gamma(uint64_t g)
{
    g |= 1u;
    if (hm_popcount64(g ^ (g >> 1)) < 24)
        g ^= UINT64_C(0xAAAAAAAAAAAAAAAA);
    return g;
}

hm_seed hm_seed_from_bytes(const unsigned char b[16])
{
    hm_seed s;
    s.a = load_le64(b);
    s.g = fix_gamma(load_le64(b + 8));
    return s;
}

hm_seed hm_seed_window(const hm_cmac *c, const uint32_t *w, size_t n)
{
    unsigned char msg[4 * HM_MAX_CONTEXT];
    unsigned char tag[16];
    for (size_t i = 0; i < n; i++) {
        msg[4 * i] = (unsigned char)w[i];
        msg[4 * i + 1] = (unsigned char)(w[i] >> 8);
        msg[4 * i + 2] = (unsigned char)(w[i] >> 16);
        msg[4 * i + 3] = (unsigned char)(w[i] >> 24);
    }
    hm_cmac_tag(c, msg, 4 * n, tag);
    return hm_seed_from_bytes(tag);
}

void hm_cmac_pad(const hm_cmac *c, unsigned width, unsigned char pad[16])
{
    const unsigned char *sub = width == 4 ? c->k1 : c->k2;
    memset(pad, 0, 16);
    if (width < 4)
        pad[4 * width] = 0x80;
    for (int i = 0; i < 16; i++)
        pad[i] ^= sub[i];
}

void hm_seed_windows(const hm_cmac *c, const uint32_t *ids, unsigned width,
                     size_t stride, size_t n, hm_seed *out)
{
    enum { BATCH = 128 };
    uint64_t blk[BATCH][2];
    if (width > 4) { /* more than one CMAC block: one window at a time */
        for (size_t i = 0; i < n; i++)
            out[i] = hm_seed_window(c, ids + i * stride, width);
        return;
    }
    /* One block: the ids (little-endian), padded 10* unless exactly 16
     * bytes, XOR K1 or K2 (RFC 4493), then one AES encryption. */
    unsigned char padb[16];
    const unsigned char *sub = width == 4 ? c->k1 : c->k2;
    memset(padb, 0, sizeof padb);
    if (width < 4)
        padb[4 * width] = 0x80;
    for (int i = 0; i < 16; i++)
        padb[i] ^= sub[i];
    const uint64_t pad0 = load_le64(padb), pad1 = load_le64(padb + 8);
    for (size_t base = 0; base < n; base += BATCH) {
        size_t m = n - base < BATCH ? n - base : BATCH;
        const uint32_t *w = ids + base * stride;
        switch (width) { /* constant widths: straight-line loads */
        case 4:
            for (size_t i = 0; i < m; i++, w += stride) {
                blk[i][0] = pad0 ^ ((uint64_t)w[1] << 32 | w[0]);
                blk[i][1] = pad1 ^ ((uint64_t)w[3] << 32 | w[2]);
            }
            break;
        case 3:
            for (size_t i = 0; i < m; i++, w += stride) {
                blk[i][0] = pad0 ^ ((uint64_t)w[1] << 32 | w[0]);
                blk[i][1] = pad1 ^ w[2];
            }
            break;
        case 2:
            for (size_t i = 0; i < m; i++, w += stride) {
                blk[i][0] = pad0 ^ ((uint64_t)w[1] << 32 | w[0]);
                blk[i][1] = pad1;
            }
            break;
        default:
            for (size_t i = 0; i < m; i++, w += stride) {
                blk[i][0] = pad0 ^ w[0];
                blk[i][1] = pad1;
            }
            break;
        }
        /* the block bytes are the little-endian words */
        unsigned char *bytes = (unsigned char *)blk;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        for (size_t i = 0; i < m; i++)
            for (int h = 0; h < 2; h++) {
                uint64_t x = blk[i][h];
                for (int b = 0; b < 8; b++)
                    bytes[16 * i + 8 * h + b] = (unsigned char)(x >> (8 * b));
            }
#endif
        hm_aes_encrypt_blocks(&c->aes, bytes, bytes, m);
        for (size_t i = 0; i < m; i++)
            out[base + i] = hm_seed_from_bytes(bytes + 16 * i);
    }
    OPENSSL_cleanse(padb, sizeof padb);
}

hm_seed hm_seed_uniform(double u)
{
    /* Not secret: only spreads the caller's randomness over token ids. */
    uint64_t bits = (uint64_t)(u * 9007199254740992.0); /* u * 2^53 */
    hm_seed s;
    s.a = hm_mix(UINT64_C(0x243F6A8885A308D3), UINT64_C(0x9E3779B97F4A7C15),
                 bits);
    s.g = fix_gamma(hm_mix(s.a, UINT64_C(0x9E3779B97F4A7C15), bits));
    return s;
}

double hm_prf_to_unit(uint64_t x)
{
    /* 52 bits so that both u and 1-u are exact doubles. */
    return ((double)(x >> 12) + 0.5) * 0x1p-52;
}

void hm_kgw_prepare(const hm_channel *ch, const uint32_t *w, hm_kgw_step *st)
{
    st->selfhash = ch->seeding == HM_SEEDING_SELFHASH;
    if (!st->selfhash) {
        st->ctx_seed = hm_seed_window(&ch->cmac, w, ch->window);
        st->min_hash = 0;
        return;
    }
    /* Anchored min-hash: the window token with the smallest keyed hash
     * seeds the green list, unless the candidate hashes lower still. */
    st->hash_seed = ch->s_hash;
    st->self_seed = ch->s_self;
    uint32_t best = w[0];
    uint64_t best_h = hm_mix(ch->s_hash.a, ch->s_hash.g, w[0]);
    for (unsigned i = 1; i < ch->window; i++) {
        uint64_t hv = hm_mix(ch->s_hash.a, ch->s_hash.g, w[i]);
        if (hv < best_h) {
            best_h = hv;
            best = w[i];
        }
    }
    st->min_hash = best_h;
    st->anchor = best;
    st->ctx_seed = hm_seed_window(&ch->cmac, &best, 1);
}

uint64_t hm_channel_value(const hm_channel *ch, const uint32_t *w, uint32_t v)
{
    if (ch->scheme == HM_SCHEME_KGW) {
        hm_kgw_step st;
        hm_kgw_prepare(ch, w, &st);
        return hm_kgw_value(&st, v);
    }
    hm_seed s = hm_seed_window(&ch->cmac, w, ch->window);
    return hm_mix(s.a, s.g, v);
}
