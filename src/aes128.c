/*
 * aes128.c - AES-128 block encryption for per-step seeds.
 *
 * Why not EVP: an EVP_CIPHER_CTX carries mutable state, so a context shared
 * by many threads would need a lock or a per-thread copy (an allocation).
 * The hot path needs one block per step from a key that never changes, so
 * the schedule is expanded once and encryption reads it only.  On x86-64
 * with AES-NI the rounds are the CPU's own instructions (constant time);
 * elsewhere OpenSSL's portable AES_encrypt does the work.  Both are
 * checked against EVP AES-128-ECB by the test suite.
 */
#include "internal.h"

#include <string.h>

#include <openssl/aes.h>
#include <openssl/crypto.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define HM_HAVE_NI 1
#include <wmmintrin.h>
#include <emmintrin.h>

__attribute__((target("aes,sse2"))) static __m128i
expand_step(__m128i key, __m128i assist)
{
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

#define HM_EXPAND(i, rcon)                                                 \
    k[i] = expand_step(k[i - 1], _mm_aeskeygenassist_si128(k[i - 1], rcon))

__attribute__((target("aes,sse2"))) static void
expand_ni(hm_aes *aes, const unsigned char key[16])
{
    __m128i k[11];
    k[0] = _mm_loadu_si128((const __m128i *)key);
    HM_EXPAND(1, 0x01);
    HM_EXPAND(2, 0x02);
    HM_EXPAND(3, 0x04);
    HM_EXPAND(4, 0x08);
    HM_EXPAND(5, 0x10);
    HM_EXPAND(6, 0x20);
    HM_EXPAND(7, 0x40);
    HM_EXPAND(8, 0x80);
    HM_EXPAND(9, 0x1b);
    HM_EXPAND(10, 0x36);
    for (int i = 0; i < 11; i++)
        _mm_storeu_si128((__m128i *)aes->u.rk[i], k[i]);
    OPENSSL_cleanse(k, sizeof k);
}

__attribute__((target("aes,sse2"))) static void
encrypt_ni(const hm_aes *aes, const unsigned char in[16],
           unsigned char out[16])
{
    __m128i x = _mm_loadu_si128((const __m128i *)in);
    x = _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)aes->u.rk[0]));
    for (int i = 1; i < 10; i++)
        x = _mm_aesenc_si128(x, _mm_loadu_si128((const __m128i *)aes->u.rk[i]));
    x = _mm_aesenclast_si128(x,
                             _mm_loadu_si128((const __m128i *)aes->u.rk[10]));
    _mm_storeu_si128((__m128i *)out, x);
}

/* Many independent blocks: eight in flight hide the aesenc latency.  The
 * loops are unrolled whole so that x[] and rk[] stay in registers. */
__attribute__((target("aes,sse2"))) static void
encrypt_ni_blocks(const hm_aes *aes, const unsigned char *in,
                  unsigned char *out, size_t n)
{
    __m128i rk[11];
#pragma GCC unroll 11
    for (int i = 0; i < 11; i++)
        rk[i] = _mm_loadu_si128((const __m128i *)aes->u.rk[i]);
    size_t b = 0;
    for (; b + 8 <= n; b += 8) {
        __m128i x[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            x[j] = _mm_xor_si128(
                _mm_loadu_si128((const __m128i *)(in + 16 * (b + j))), rk[0]);
#pragma GCC unroll 9
        for (int r = 1; r < 10; r++)
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                x[j] = _mm_aesenc_si128(x[j], rk[r]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            _mm_storeu_si128((__m128i *)(out + 16 * (b + j)),
                             _mm_aesenclast_si128(x[j], rk[10]));
    }
    for (; b < n; b++)
        encrypt_ni(aes, in + 16 * b, out + 16 * b);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9 ||             \
    defined(__clang__)
#define HM_HAVE_VAES 1
#include <immintrin.h>
/* VAES: four blocks per 512-bit register, four registers in flight. */
__attribute__((target("vaes,avx512f"))) static void
encrypt_vaes_blocks(const hm_aes *aes, const unsigned char *in,
                    unsigned char *out, size_t n)
{
    __m512i rk[11];
#pragma GCC unroll 11
    for (int i = 0; i < 11; i++)
        rk[i] = _mm512_broadcast_i32x4(
            _mm_loadu_si128((const __m128i *)aes->u.rk[i]));
    size_t b = 0;
    for (; b + 16 <= n; b += 16) {
        __m512i x[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            x[j] = _mm512_xor_si512(
                _mm512_loadu_si512((const void *)(in + 16 * (b + 4 * j))),
                rk[0]);
#pragma GCC unroll 9
        for (int r = 1; r < 10; r++)
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                x[j] = _mm512_aesenc_epi128(x[j], rk[r]);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            _mm512_storeu_si512((void *)(out + 16 * (b + 4 * j)),
                                _mm512_aesenclast_epi128(x[j], rk[10]));
    }
    encrypt_ni_blocks(aes, in + 16 * b, out + 16 * b, n - b);
}
#endif
#endif

int hm_aes_force_portable = 0;

void hm_aes_init(hm_aes *aes, const unsigned char key[16])
{
    memset(aes, 0, sizeof *aes);
#ifdef HM_HAVE_NI
    if (!hm_aes_force_portable && __builtin_cpu_supports("aes")) {
        aes->use_ni = 1;
        expand_ni(aes, key);
        return;
    }
#endif
    AES_set_encrypt_key(key, 128, &aes->u.ossl);
}

void hm_aes_encrypt(const hm_aes *aes, const unsigned char in[16],
                    unsigned char out[16])
{
#ifdef HM_HAVE_NI
    if (aes->use_ni) {
        encrypt_ni(aes, in, out);
        return;
    }
#endif
    AES_encrypt(in, out, &aes->u.ossl);
}

void hm_aes_encrypt_blocks(const hm_aes *aes, const unsigned char *in,
                           unsigned char *out, size_t n)
{
#ifdef HM_HAVE_NI
    if (aes->use_ni) {
#ifdef HM_HAVE_VAES
        if (hm_cpu_has_avx512_vaes()) {
            encrypt_vaes_blocks(aes, in, out, n);
            return;
        }
#endif
        encrypt_ni_blocks(aes, in, out, n);
        return;
    }
#endif
    for (size_t b = 0; b < n; b++)
        AES_encrypt(in + 16 * b, out + 16 * b, &aes->u.ossl);
}

void hm_aes_wipe(hm_aes *aes)
{
    OPENSSL_cleanse(aes, sizeof *aes);
}
