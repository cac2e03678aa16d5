/*
 * greenmass_gen.c - writes the JSON Lines of a suspect's top-k
 * log-probabilities that hallmark audit --logprobs reads, for
 * tests/greenmass.sh: a synthetic model's distributions after random
 * contexts, biased through hm_bias_dense with the kgw channel of KEYFILE
 * ("marked": a student distilled from the served distributions) or not
 * ("clean").  Public API only.
 *
 * usage: greenmass_gen KEYFILE SPEC TENANT marked|clean N SEED
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hallmark.h"

#define VOCAB 1000
#define TOPK 20

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    hm_key *key = NULL;
    hm_ctx *ctx = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    if (argc != 7) {
        fprintf(stderr, "usage: greenmass_gen KEYFILE SPEC TENANT "
                        "marked|clean N SEED\n");
        return 2;
    }
    int marked = strcmp(argv[4], "marked") == 0;
    unsigned long n = strtoul(argv[5], NULL, 10);
    uint64_t seed = strtoull(argv[6], NULL, 10);
    if (hm_key_load(&key, argv[1], msg, sizeof msg) != HM_OK ||
        hm_ctx_new(&ctx, key, argv[2], argv[3], msg, sizeof msg) != HM_OK) {
        fprintf(stderr, "greenmass_gen: %s\n", msg);
        return 2;
    }
    static float logits[VOCAB];
    for (unsigned long i = 0; i < n; i++) {
        int32_t c[4];
        for (int j = 0; j < 4; j++)
            c[j] = (int32_t)(rnd(&seed) % VOCAB);
        /* the model: a fixed decay plus noise seeded by the last token */
        uint64_t s = UINT64_C(1469598103934665603) ^ (uint64_t)c[3] * 31u;
        for (int v = 0; v < VOCAB; v++)
            logits[v] = (float)(-0.9 * log1p(v) +
                                2.5 * (double)(rnd(&s) >> 11) * 0x1p-53);
        hm_row row = {c, 4, NULL, 1.0f, 0};
        if (marked && hm_bias_dense(ctx, logits, 1, VOCAB, VOCAB, &row,
                                    NULL) != HM_OK)
            return 2;
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < VOCAB; v++)
            mx = fmax(mx, logits[v]);
        for (int v = 0; v < VOCAB; v++)
            z += exp(logits[v] - mx);
        printf("{\"context\": [%d, %d, %d, %d], \"ids\": [", (int)c[0],
               (int)c[1], (int)c[2], (int)c[3]);
        int ids[TOPK];
        for (int j = 0; j < TOPK; j++) { /* the k best, in order */
            int best = -1;
            for (int v = 0; v < VOCAB; v++) {
                int taken = 0;
                for (int t = 0; t < j; t++)
                    taken |= ids[t] == v;
                if (!taken && (best < 0 || logits[v] > logits[best]))
                    best = v;
            }
            ids[j] = best;
            printf("%s%d", j ? ", " : "", best);
        }
        printf("], \"logprobs\": [");
        for (int j = 0; j < TOPK; j++)
            printf("%s%.17g", j ? ", " : "", logits[ids[j]] - mx - log(z));
        printf("]}\n");
    }
    hm_ctx_free(ctx);
    hm_key_free(key);
    return 0;
}
