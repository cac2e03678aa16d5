/*
 * test_prf.c - PRF v1 against independently computed vectors, AES and
 * CMAC against OpenSSL and RFC 4493, the uniform map.
 */
#include "testutil.h"

#include <math.h>

#include <openssl/evp.h>

#include "../src/internal.h"

/* Every line of tests/vectors/prf-v1.txt (made by tools/gen-prf-vectors.py
 * with the openssl CLI for HKDF and CMAC). */
START_TEST(test_vectors)
{
    FILE *f = test_open_vectors("prf-v1.txt");
    char line[1024];
    unsigned n_value = 0, n_okm = 0, n_fp = 0;
    while (fgets(line, sizeof line, f)) {
        char kind[16], mk[65], a[256], b[256], c[512], d[512], e[64],
            g[64], u[64];
        unsigned char mb[32];
        hm_key *key = NULL;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        ck_assert_int_eq(sscanf(line, "%15s %64s", kind, mk), 2);
        test_hex(mk, mb, 32);
        ck_assert_int_eq(hm_key_from_bytes(&key, mb, 32), HM_OK);
        if (strcmp(kind, "fingerprint") == 0) {
            char fp[HM_FINGERPRINT_SIZE];
            ck_assert_int_eq(sscanf(line, "%*s %*s %255s", a), 1);
            ck_assert_int_eq(hm_key_fingerprint(key, fp, sizeof fp), HM_OK);
            ck_assert_str_eq(fp, a);
            n_fp++;
        } else if (strcmp(kind, "okm") == 0) {
            char info[1100], tenant[512];
            unsigned char okm[48], want[48];
            ck_assert_int_eq(
                sscanf(line, "%*s %*s %255s %255s %255s %511s", a, b, c, d),
                4);
            snprintf(tenant, sizeof tenant, "%s", strcmp(c, "-") ? c : "");
            for (char *p; (p = strstr(tenant, "%20"));)
                *p = ' ', memmove(p + 1, p + 3, strlen(p + 3) + 1);
            snprintf(info, sizeof info, "hallmark/v1/%s/%s/%s", a, b, tenant);
            ck_assert_int_eq(hm_key_derive(key, info, okm, 48), HM_OK);
            test_hex(d, want, 48);
            ck_assert_mem_eq(okm, want, 48);
            n_okm++;
        } else {
            char tenant[512];
            int32_t ctx_ids[32];
            size_t n = 0;
            hm_ctx *ctx = NULL;
            uint64_t x, want;
            ck_assert_str_eq(kind, "value");
            ck_assert_int_eq(sscanf(line, "%*s %*s %255s %255s %511s %63s "
                                          "%63s %63s",
                                    a, b, c, e, g, u),
                             6);
            snprintf(tenant, sizeof tenant, "%s", strcmp(b, "-") ? b : "");
            for (char *p; (p = strstr(tenant, "%20"));)
                *p = ' ', memmove(p + 1, p + 3, strlen(p + 3) + 1);
            if (strcmp(c, "-") != 0)
                for (char *tok = strtok(c, ","); tok; tok = strtok(NULL, ","))
                    ctx_ids[n++] = (int32_t)strtol(tok, NULL, 10);
            ck_assert_int_eq(hm_ctx_new(&ctx, key, a, tenant, NULL, 0), HM_OK);
            ck_assert_int_eq(hm_token_prf(ctx, 0, n ? ctx_ids : NULL, n,
                                          (int32_t)strtol(e, NULL, 10), &x),
                             HM_OK);
            want = strtoull(g, NULL, 16);
            ck_assert_msg(x == want, "%s", line);
            ck_assert(hm_prf_to_unit(x) == strtod(u, NULL));
            hm_ctx_free(ctx);
            n_value++;
        }
        hm_key_free(key);
    }
    fclose(f);
    ck_assert_uint_eq(n_fp, 2);
    ck_assert_uint_ge(n_okm, 40);
    ck_assert_uint_ge(n_value, 900);
}
END_TEST

/* Both AES paths agree with EVP AES-128-ECB on random keys and blocks. */
START_TEST(test_aes_matches_openssl)
{
    uint64_t s = 42;
    for (int portable = 0; portable <= 1; portable++) {
        hm_aes_force_portable = portable;
        for (int t = 0; t < 200; t++) {
            unsigned char key[16], in[16], out[16], ref[16];
            int len = 0;
            for (int i = 0; i < 16; i++) {
                key[i] = (unsigned char)test_rand(&s);
                in[i] = (unsigned char)test_rand(&s);
            }
            hm_aes aes;
            hm_aes_init(&aes, key);
            ck_assert_int_eq(aes.use_ni, portable ? 0 : aes.use_ni);
            hm_aes_encrypt(&aes, in, out);
            EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
            ck_assert(EVP_EncryptInit_ex(e, EVP_aes_128_ecb(), NULL, key,
                                         NULL) == 1);
            EVP_CIPHER_CTX_set_padding(e, 0);
            ck_assert(EVP_EncryptUpdate(e, ref, &len, in, 16) == 1);
            EVP_CIPHER_CTX_free(e);
            ck_assert_mem_eq(out, ref, 16);
        }
    }
    hm_aes_force_portable = 0;
}
END_TEST

/* The batched encryption (8-way AES-NI, 16-way VAES, portable) equals
 * one block at a time, for every batch length around the unroll sizes. */
START_TEST(test_aes_blocks)
{
    uint64_t s = 7;
    static unsigned char in[16 * 40], out[16 * 40], one[16];
    unsigned char key[16];
    for (int i = 0; i < 16; i++)
        key[i] = (unsigned char)test_rand(&s);
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)test_rand(&s);
    for (int portable = 0; portable <= 1; portable++) {
        hm_aes_force_portable = portable;
        hm_aes aes;
        hm_aes_init(&aes, key);
        for (size_t n = 0; n <= 40; n++) {
            hm_aes_encrypt_blocks(&aes, in, out, n);
            for (size_t b = 0; b < n; b++) {
                hm_aes_encrypt(&aes, in + 16 * b, one);
                ck_assert_mem_eq(out + 16 * b, one, 16);
            }
        }
        /* in place */
        memcpy(out, in, sizeof in);
        hm_aes_encrypt_blocks(&aes, out, out, 40);
        hm_aes_encrypt(&aes, in + 16 * 39, one);
        ck_assert_mem_eq(out + 16 * 39, one, 16);
    }
    hm_aes_force_portable = 0;
}
END_TEST

/* RFC 4493 section 4 examples. */
START_TEST(test_cmac_rfc4493)
{
    static const char *key = "2b7e151628aed2a6abf7158809cf4f3c";
    static const char *msg =
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    static const struct {
        size_t len;
        const char *tag;
    } ex[] = {{0, "bb1d6929e95937287fa37d129b756746"},
              {16, "070a16b46b4d4144f79bdd9dd04a287c"},
              {40, "dfa66747de9ae63030ca32611497c827"},
              {64, "51f0bebf7e3b9d92fc49741779363cfe"}};
    unsigned char k[16], m[64], tag[16], want[16];
    test_hex(key, k, 16);
    test_hex(msg, m, 64);
    for (int portable = 0; portable <= 1; portable++) {
        hm_aes_force_portable = portable;
        hm_cmac c;
        hm_cmac_init(&c, k);
        for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
            hm_cmac_tag(&c, m, ex[i].len, tag);
            test_hex(ex[i].tag, want, 16);
            ck_assert_mem_eq(tag, want, 16);
        }
    }
    hm_aes_force_portable = 0;
}
END_TEST

/* The uniform map is exact at its ends and symmetric. */
START_TEST(test_unit_map)
{
    ck_assert(hm_prf_to_unit(0) == 0x1p-53);
    ck_assert(hm_prf_to_unit(UINT64_MAX) == 1.0 - 0x1p-53);
    ck_assert(hm_prf_to_unit(UINT64_C(1) << 63) == 0.5 + 0x1p-53);
    uint64_t s = 7;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = test_rand(&s);
        double u = hm_prf_to_unit(x);
        ck_assert(u > 0 && u < 1);
        ck_assert(1.0 - u == hm_prf_to_unit(~x));
    }
}
END_TEST

/* A channel's id, scheme and tenant each change every value. */
START_TEST(test_domain_separation)
{
    hm_key *k = test_key(1);
    const char *specs[] = {"gumbel", "gumbel:id=b", "tournament", "kgw:h=4"};
    const char *tenants[] = {"", "t1"};
    uint64_t seen[8];
    int32_t ctx[4] = {1, 2, 3, 4};
    int n = 0;
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 2; t++) {
            hm_ctx *c = NULL;
            ck_assert_int_eq(hm_ctx_new(&c, k, specs[s], tenants[t], NULL, 0),
                             HM_OK);
            ck_assert_int_eq(hm_token_prf(c, 0, ctx, 4, 5, &seen[n]), HM_OK);
            for (int j = 0; j < n; j++)
                ck_assert(seen[j] != seen[n]);
            n++;
            hm_ctx_free(c);
        }
    hm_key_free(k);
}
END_TEST

/* Padding: a context shorter than the window equals explicit pads only
 * through the library's own rule; negative ids are refused. */
START_TEST(test_padding_and_range)
{
    hm_key *k = test_key(2);
    hm_ctx *c = test_ctx(k, "gumbel:h=4");
    uint64_t a, b;
    int32_t two[2] = {10, 11}, four[4] = {0, 0, 10, 11}, neg[2] = {-1, 3};
    ck_assert_int_eq(hm_token_prf(c, 0, two, 2, 9, &a), HM_OK);
    ck_assert_int_eq(hm_token_prf(c, 0, four, 4, 9, &b), HM_OK);
    ck_assert(a != b);
    ck_assert_int_eq(hm_token_prf(c, 0, neg, 2, 9, &a), HM_ERANGE);
    ck_assert_int_eq(hm_token_prf(c, 0, two, 2, -5, &a), HM_ERANGE);
    ck_assert_int_eq(hm_token_prf(c, 1, two, 2, 5, &a), HM_EINVAL);
    ck_assert_int_eq(hm_token_prf(c, 0, NULL, 2, 5, &a), HM_EINVAL);
    /* Only the last h tokens matter. */
    int32_t long_ctx[6] = {99, 98, 1, 2, 3, 4}, short_ctx[4] = {1, 2, 3, 4};
    ck_assert_int_eq(hm_token_prf(c, 0, long_ctx, 6, 9, &a), HM_OK);
    ck_assert_int_eq(hm_token_prf(c, 0, short_ctx, 4, 9, &b), HM_OK);
    ck_assert(a == b);
    hm_ctx_free(c);
    hm_key_free(k);
}
END_TEST

static Suite *prf_suite(void)
{
    Suite *s = suite_create("prf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vectors);
    tcase_add_test(tc, test_aes_matches_openssl);
    tcase_add_test(tc, test_aes_blocks);
    tcase_add_test(tc, test_cmac_rfc4493);
    tcase_add_test(tc, test_unit_map);
    tcase_add_test(tc, test_domain_separation);
    tcase_add_test(tc, test_padding_and_range);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(prf_suite());
}
