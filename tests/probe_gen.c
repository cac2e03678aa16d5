/*
 * probe_gen.c - writes the JSON Lines a suspect answers hallmark probe
 * with, for tests/probe.sh: a simulated student (tests/spectral_sim.h)
 * distilled from values served with the spectral channel of KEYFILE
 * ("marked") or without it ("clean").  Public API only.
 *
 * usage: probe_gen KEYFILE marked|clean N_PROBES SEED
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hallmark.h"
#include "spectral_sim.h"

int main(int argc, char **argv)
{
    hm_key *key = NULL;
    hm_spectral *sp = NULL;
    hm_logprobs *lp = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    if (argc != 5) {
        fprintf(stderr, "usage: probe_gen KEYFILE marked|clean N SEED\n");
        return 2;
    }
    sim_cfg c = SIM_DEFAULT;
    c.n_probes = strtoul(argv[3], NULL, 10);
    int marked = strcmp(argv[2], "marked") == 0;
    if (hm_key_load(&key, argv[1], msg, sizeof msg) != HM_OK ||
        hm_spectral_new(&sp, key, NULL, NULL, msg, sizeof msg) != HM_OK ||
        hm_logprobs_new(&lp, key, NULL, NULL, msg, sizeof msg) != HM_OK) {
        fprintf(stderr, "probe_gen: %s\n", msg);
        return 2;
    }
    int32_t *ctx = malloc(c.n_probes * sizeof *ctx);
    int32_t *ids = malloc(c.n_probes * c.k * sizeof *ids);
    double *lps = malloc(c.n_probes * c.k * sizeof *lps);
    if (ctx == NULL || ids == NULL || lps == NULL ||
        sim_student(marked ? sp : NULL, lp, &c, strtoull(argv[4], NULL, 10),
                    ctx, ids, lps) != HM_OK)
        return 2;
    for (size_t p = 0; p < c.n_probes; p++) {
        /* a prompt of a few tokens ending in the window */
        printf("{\"context\": [101, 7, %d], \"ids\": [", (int)ctx[p]);
        for (unsigned j = 0; j < c.k; j++)
            printf("%s%d", j ? ", " : "", (int)ids[p * c.k + j]);
        printf("], \"logprobs\": [");
        for (unsigned j = 0; j < c.k; j++)
            printf("%s%.17g", j ? ", " : "", lps[p * c.k + j]);
        printf("]}\n");
    }
    free(ctx);
    free(ids);
    free(lps);
    hm_logprobs_free(lp);
    hm_spectral_free(sp);
    hm_key_free(key);
    return 0;
}
