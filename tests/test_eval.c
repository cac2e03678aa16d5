/*
 * test_eval.c - the pieces of the distillation experiment (eval/evallib.h,
 * eval/evaldata.h): seeded streams, the serving loop (same seeds, same
 * tokens; top-k respected; the library's flags), Clopper-Pearson bounds
 * against exact reference values, per-document false-positive counts
 * against one-key tallies, distinct-n, perplexity and sentence prompts.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evaldata.h"
#include "evallib.h"

/* ------------------------------------------------------------ helpers */

#define V 300 /* vocabulary of the toy model */

static ng_model *toy_model(int order)
{
    /* 40 documents from a sparse random Markov chain: a peaked, realistic
     * row shape (a few likely successors, a long smoothed tail). */
    enum { DOCS = 40, LEN = 400 };
    int32_t *docs[DOCS];
    size_t lens[DOCS];
    ev_rng r = {12345};
    for (int d = 0; d < DOCS; d++) {
        docs[d] = malloc(LEN * sizeof(int32_t));
        int32_t prev = (int32_t)ev_below(&r, V);
        for (int i = 0; i < LEN; i++) {
            /* successor: one of 4 ids tied to prev, or any id rarely */
            uint64_t u = ev_below(&r, 10);
            prev = u < 9 ? (int32_t)((prev * 7 + 13 * (int32_t)(u % 4) + 1) % V)
                         : (int32_t)ev_below(&r, V);
            docs[d][i] = prev;
        }
        lens[d] = LEN;
    }
    ng_model *m = NULL;
    char err[NG_ERRMSG_SIZE];
    ck_assert_msg(ng_train(&m, order, V, (const int32_t *const *)docs, lens,
                           DOCS, err, sizeof err) == 0,
                  "%s", err);
    for (int d = 0; d < DOCS; d++)
        free(docs[d]);
    return m;
}

static hm_ctx *toy_ctx(const char *spec, unsigned char fill)
{
    unsigned char kb[HM_KEY_BYTES];
    memset(kb, fill, sizeof kb);
    hm_key *k = NULL;
    hm_ctx *c = NULL;
    ck_assert_int_eq(hm_key_from_bytes(&k, kb, sizeof kb), HM_OK);
    ck_assert_int_eq(hm_ctx_new(&c, k, spec, NULL, NULL, 0), HM_OK);
    hm_key_free(k);
    return c;
}

/* ------------------------------------------------------------ streams */

START_TEST(test_rng)
{
    /* splitmix64's published first outputs for seed 0 */
    ev_rng r = {0};
    ck_assert_uint_eq(ev_next(&r), UINT64_C(0xe220a8397b1dcdaf));
    ck_assert_uint_eq(ev_next(&r), UINT64_C(0x6e789e6aa1b965f4));
    ck_assert_uint_eq(ev_seed(1, "serve", 3), ev_seed(1, "serve", 3));
    ck_assert_uint_ne(ev_seed(1, "serve", 3), ev_seed(1, "serve", 4));
    ck_assert_uint_ne(ev_seed(1, "serve", 3), ev_seed(2, "serve", 3));
    ck_assert_uint_ne(ev_seed(1, "serve", 3), ev_seed(1, "student", 3));
    size_t idx[50], seen[50] = {0};
    for (size_t i = 0; i < 50; i++)
        idx[i] = i;
    ev_shuffle(&r, idx, 50);
    for (size_t i = 0; i < 50; i++)
        seen[idx[i]]++;
    for (size_t i = 0; i < 50; i++)
        ck_assert_uint_eq(seen[i], 1);
    for (int i = 0; i < 1000; i++) {
        double u = ev_uniform(&r);
        ck_assert(u >= 0 && u < 1);
        ck_assert_uint_lt(ev_below(&r, 7), 7);
    }
}
END_TEST

/* ------------------------------------------------------------ serving */

static void serve(ev_server *sv, const hm_ctx *ctx, uint64_t seed,
                  int32_t *out, size_t n, ev_stepstats *st)
{
    const int32_t prompt[5] = {3, 17, 40, 41, 7};
    memset(st, 0, sizeof *st);
    ck_assert_int_eq(ev_generate(sv, ctx, prompt, 5, n, seed, out, st),
                     HM_OK);
}

START_TEST(test_serving_reproducible)
{
    enum { N = 120 };
    ng_model *m = toy_model(3);
    ev_sampling s = {0.8f, 20};
    ev_server *a = ev_server_new(m, &s, 5 + N), *b = ev_server_new(m, &s, 5 + N);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    const char *specs[] = {NULL, "gumbel", "kgw", "tournament",
                           "kgw:h=1+gumbel:h=4"};
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        hm_ctx *c = specs[k] ? toy_ctx(specs[k], 7) : NULL;
        int32_t x[N], y[N], z[N];
        ev_stepstats sx, sy, sz;
        serve(a, c, 99, x, N, &sx);
        /* another server, after other work: the same tokens */
        serve(b, c, 5, z, N, &sz);
        serve(b, c, 99, y, N, &sy);
        ck_assert_mem_eq(x, y, sizeof x);
        ck_assert_uint_eq(sx.steps, N);
        ck_assert_uint_eq(sx.watermarked, sy.watermarked);
        ck_assert_uint_eq(sx.masked, sy.masked);
        /* another seed: other tokens (except gumbel alone, whose choice
         * the key makes: the uniform matters only on masked steps) */
        if (!specs[k] || !strstr(specs[k], "gumbel"))
            ck_assert_msg(memcmp(x, z, sizeof x) != 0, "%s",
                          specs[k] ? specs[k] : "none");
        if (specs[k] && strstr(specs[k], "gumbel"))
            ck_assert_uint_gt(sx.watermarked, N / 2);
        if (specs[k] && strstr(specs[k], "tournament"))
            ck_assert_uint_gt(sx.watermarked, N / 2);
        if (specs[k] && strstr(specs[k], "kgw"))
            ck_assert_uint_gt(sx.biased, 0);
        if (!specs[k])
            ck_assert_uint_eq(sx.watermarked + sx.biased + sx.masked, 0);
        hm_ctx_free(c);
    }
    ev_server_free(a);
    ev_server_free(b);
    ng_free(m);
}
END_TEST

/* A batched server gives every request the tokens and flags that serving
 * it alone gives: batch sizes 1, 3 and 8, uneven lengths (one empty). */
START_TEST(test_batch_equals_single)
{
    enum { REQ = 11, MAXLEN = 70 };
    ng_model *m = toy_model(3);
    ev_sampling s = {0.9f, 12};
    ev_server *sv = ev_server_new(m, &s, 8 + MAXLEN);
    int32_t pbuf[REQ][8], *outs[REQ], single[REQ][MAXLEN];
    const int32_t *prompts[REQ];
    size_t np[REQ], nout[REQ];
    uint64_t seeds[REQ];
    ev_rng r = {31};
    for (int i = 0; i < REQ; i++) {
        np[i] = 1 + (size_t)ev_below(&r, 8);
        for (size_t j = 0; j < np[i]; j++)
            pbuf[i][j] = (int32_t)ev_below(&r, V);
        prompts[i] = pbuf[i];
        nout[i] = i == 4 ? 0 : 10 + (size_t)ev_below(&r, MAXLEN - 10);
        seeds[i] = ev_seed(3, "batch", (uint64_t)i);
        outs[i] = malloc(MAXLEN * sizeof(int32_t));
    }
    const char *specs[] = {NULL, "gumbel", "kgw", "tournament",
                           "kgw:h=1+gumbel:h=4"};
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        hm_ctx *c = specs[k] ? toy_ctx(specs[k], 3) : NULL;
        ev_stepstats st1[REQ], stb[REQ];
        for (int i = 0; i < REQ; i++) {
            memset(&st1[i], 0, sizeof st1[i]);
            ck_assert_int_eq(ev_generate(sv, c, prompts[i], np[i], nout[i],
                                         seeds[i], single[i], &st1[i]),
                             HM_OK);
        }
        const size_t rows[] = {1, 3, 8};
        for (int q = 0; q < 3; q++) {
            ev_batcher *b = ev_batcher_new(m, &s, 8 + MAXLEN, rows[q]);
            ck_assert_ptr_nonnull(b);
            ck_assert_int_eq(ev_generate_batch(b, c, REQ, prompts, np, nout,
                                               seeds, outs, stb),
                             HM_OK);
            for (int i = 0; i < REQ; i++) {
                ck_assert_msg(memcmp(outs[i], single[i],
                                     nout[i] * sizeof(int32_t)) == 0,
                              "%s, %zu rows: request %d differs",
                              specs[k] ? specs[k] : "none", rows[q], i);
                ck_assert_uint_eq(stb[i].steps, nout[i]);
                ck_assert_uint_eq(stb[i].watermarked, st1[i].watermarked);
                ck_assert_uint_eq(stb[i].biased, st1[i].biased);
                ck_assert_uint_eq(stb[i].masked, st1[i].masked);
            }
            ev_batcher_free(b);
        }
        hm_ctx_free(c);
    }
    for (int i = 0; i < REQ; i++)
        free(outs[i]);
    ev_server_free(sv);
    ng_free(m);
}
END_TEST

/* Every served token is among the top k of the row the host biased. */
START_TEST(test_serving_top_k)
{
    enum { N = 80, K = 5 };
    ng_model *m = toy_model(3);
    ev_sampling s = {1.0f, K};
    ev_server *sv = ev_server_new(m, &s, 5 + N);
    const char *specs[] = {NULL, "kgw", "gumbel", "tournament"};
    float row[V];
    for (size_t k = 0; k < 4; k++) {
        hm_ctx *c = specs[k] ? toy_ctx(specs[k], 9) : NULL;
        int32_t out[N], seq[5 + N] = {3, 17, 40, 41, 7};
        ev_stepstats st;
        serve(sv, c, 1, out, N, &st);
        memcpy(seq + 5, out, sizeof out);
        for (size_t i = 0; i < N; i++) {
            ng_logits(m, seq, 5 + i, row);
            if (c && hm_ctx_channel_scheme(c, 0) == HM_SCHEME_KGW) {
                /* rebuild the step's bias without masking: a masked step
                 * has no bias, so accept either row */
                float biased[V];
                memcpy(biased, row, sizeof row);
                hm_row r = {seq, 5 + i, NULL, 1.0f, 0.5};
                ck_assert_int_eq(
                    hm_bias_dense(c, biased, 1, V, V, &r, NULL), HM_OK);
                int above_b = 0, above_r = 0;
                for (int v = 0; v < V; v++) {
                    above_b += biased[v] > biased[out[i]];
                    above_r += row[v] > row[out[i]];
                }
                ck_assert_msg(above_b < K || above_r < K,
                              "step %zu: token outside the top %d", i, K);
            } else {
                int above = 0;
                for (int v = 0; v < V; v++)
                    above += row[v] > row[out[i]];
                ck_assert_msg(above < K, "%s step %zu: %d ids above",
                              specs[k] ? specs[k] : "none", i, above);
            }
        }
        hm_ctx_free(c);
    }
    ev_server_free(sv);
    ng_free(m);
}
END_TEST

/* The host's own sampler follows softmax(logits/T) over the top k: token
 * frequencies at one fixed context against the exact probabilities. */
START_TEST(test_host_sampler_distribution)
{
    enum { DRAWS = 20000, K = 4 };
    ng_model *m = toy_model(2);
    ev_sampling s = {0.7f, K};
    ev_server *sv = ev_server_new(m, &s, 8);
    const int32_t prompt[1] = {3};
    float row[V];
    ng_logits(m, prompt, 1, row);
    /* the exact distribution */
    int top[K];
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int v = 0; v < V; v++) {
            int used = 0;
            for (int q = 0; q < j; q++)
                used |= top[q] == v;
            if (!used && (best < 0 || row[v] > row[best]))
                best = v;
        }
        top[j] = best;
    }
    double p[K], z = 0;
    for (int j = 0; j < K; j++)
        z += p[j] = exp((double)row[top[j]] / 0.7);
    int cnt[V] = {0};
    for (int d = 0; d < DRAWS; d++) {
        int32_t t;
        ck_assert_int_eq(ev_generate(sv, NULL, prompt, 1, 1,
                                     ev_seed(7, "draw", (uint64_t)d), &t,
                                     NULL),
                         HM_OK);
        cnt[t]++;
    }
    int in_top = 0;
    for (int j = 0; j < K; j++) {
        double e = DRAWS * p[j] / z, sd = sqrt(e * (1 - p[j] / z));
        ck_assert_msg(fabs(cnt[top[j]] - e) < 5 * sd + 1,
                      "id %d: %d draws, expected %.1f", top[j], cnt[top[j]],
                      e);
        in_top += cnt[top[j]];
    }
    ck_assert_int_eq(in_top, DRAWS);
    ev_server_free(sv);
    ng_free(m);
}
END_TEST

/* --------------------------------------------------------- statistics */

START_TEST(test_clopper_pearson)
{
    /* Reference values: exact binomial tails in 40-digit arithmetic
     * (mpmath: bisection of the regularized incomplete beta / the
     * binomial sum), 17 significant digits. */
    static const struct {
        uint64_t x, n;
        double conf, lo, hi;
    } ref[] = {
        {0, 10, 0.95, 0.0, 0.30849710781876082},
        {3, 10, 0.95, 0.066739511177734467, 0.6524528500599973},
        {10, 10, 0.95, 0.69150289218123918, 1.0},
        {1, 2000, 0.99, 2.5062677710778232e-6, 0.0037090983904222351},
        {26, 2000, 0.99, 0.0073892905831365635, 0.021039613024832153},
        {40, 400000, 0.99, 6.3965987436922875e-5, 0.00014840407595372976},
        {0, 400000, 0.99, 0.0, 1.3245705691235807e-5},
        {5, 100, 0.9, 0.019905563662171838, 0.10225337764327451},
        {400, 40000, 0.99, 0.0087644035171142229, 0.011353686620294434},
    };
    for (size_t i = 0; i < sizeof ref / sizeof *ref; i++) {
        double lo, hi;
        ck_assert_int_eq(
            ev_clopper_pearson(ref[i].x, ref[i].n, ref[i].conf, &lo, &hi), 0);
        ck_assert_msg(fabs(lo - ref[i].lo) <= 1e-9 * ref[i].lo + 1e-300,
                      "lo %zu: %.17g vs %.17g", i, lo, ref[i].lo);
        ck_assert_msg(fabs(hi - ref[i].hi) <= 1e-9 * ref[i].hi,
                      "hi %zu: %.17g vs %.17g", i, hi, ref[i].hi);
    }
    double lo, hi;
    ck_assert_int_eq(ev_clopper_pearson(3, 2, 0.99, &lo, &hi), -1);
    ck_assert_int_eq(ev_clopper_pearson(0, 0, 0.99, &lo, &hi), -1);
    ck_assert_int_eq(ev_clopper_pearson(1, 2, 1.0, &lo, &hi), -1);
}
END_TEST

/* P[p <= alpha] under the null by scanning every count (defaults:
 * kgw green = floor(0.25 2^64)/2^64, tournament m = 30). */
static double null_rate_brute(int scheme, uint64_t n, double la)
{
    if (n == 0)
        return la >= 0;
    if (scheme == 0)
        return la >= 0 ? 1 : pow(10, la);
    double p = scheme == 1 ? 0.25 : 0.5;
    uint64_t N = scheme == 1 ? n : 30 * n;
    for (uint64_t k = 0; k <= N; k++) {
        double l = hm_log10_sf_binom(k, N, p);
        if (l <= la)
            return pow(10, l);
    }
    return 0;
}

/* Batched per-document counts equal one tally per (document, key). */
START_TEST(test_fpr_counts)
{
    enum { KEYS = 24, DOCS = 6, LEN = 60 };
    const char *specs[] = {"gumbel", "kgw", "tournament"};
    for (int s = 0; s < 3; s++) {
        hm_ctx *ctxs[KEYS];
        for (int k = 0; k < KEYS; k++) {
            hm_key *key;
            ck_assert_int_eq(hm_key_from_label(&key, "test_eval", (uint32_t)k),
                             HM_OK);
            ck_assert_int_eq(hm_ctx_new(&ctxs[k], key, specs[s], NULL, NULL, 0),
                             HM_OK);
            hm_key_free(key);
        }
        /* alphas chosen so that the counts are neither 0 nor all */
        const double la[3] = {0.0, -0.3, -1.0};
        ck_assert_double_eq(ev_null_rate(ctxs[0], 0, 0, -1.0), 0);
        ck_assert(isnan(ev_null_rate(ctxs[0], 1, 10, -1.0)));
        uint64_t counts[3] = {0, 0, 0}, want[3] = {0, 0, 0};
        double expected[3] = {0, 0, 0}, want_e[3] = {0, 0, 0};
        ev_fpr f = {3, la, counts, expected, 0, 0, 0, 0.0, 0, {0}};
        ev_rng r = {77};
        uint64_t scored = 0;
        double minp = 0;
        for (int d = 0; d < DOCS; d++) {
            int32_t doc[LEN];
            /* the second half repeats the first: dedup matters */
            for (int i = 0; i < LEN; i++)
                doc[i] = i < LEN / 2 ? (int32_t)ev_below(&r, 12)
                                     : doc[i - LEN / 2];
            /* two batches of keys, as hm-eval splits them */
            ck_assert_int_eq(ev_fpr_document(&f, (const hm_ctx *const *)ctxs,
                                             10, 0, doc, LEN),
                             HM_OK);
            ck_assert_int_eq(ev_fpr_document(&f,
                                             (const hm_ctx *const *)ctxs + 10,
                                             KEYS - 10, 0, doc, LEN),
                             HM_OK);
            for (int k = 0; k < KEYS; k++) {
                hm_tally *t;
                hm_result res;
                ck_assert_int_eq(hm_tally_new(&t, (const hm_ctx *const *)&ctxs[k],
                                              1, 0, NULL, 0),
                                 HM_OK);
                ck_assert_int_eq(hm_tally_add(t, NULL, 0, doc, LEN), HM_OK);
                ck_assert_int_eq(hm_tally_result(t, 0, 0, &res), HM_OK);
                hm_tally_free(t);
                scored += res.scored;
                if (res.log10_p < minp)
                    minp = res.log10_p;
                for (int a = 0; a < 3; a++) {
                    want[a] += res.log10_p <= la[a];
                    want_e[a] += null_rate_brute(s, res.scored, la[a]);
                }
            }
        }
        ck_assert_uint_eq(f.trials, DOCS * KEYS);
        ck_assert_uint_eq(f.scored, scored);
        ck_assert_uint_lt(f.scored, (uint64_t)DOCS * KEYS * LEN);
        ck_assert(f.min_log10_p == minp);
        for (int a = 0; a < 3; a++) {
            ck_assert_uint_eq(counts[a], want[a]);
            ck_assert_msg(fabs(expected[a] - want_e[a]) <= 1e-9 * want_e[a],
                          "%s alpha %g: expected %.17g, brute force %.17g",
                          specs[s], la[a], expected[a], want_e[a]);
        }
        ck_assert_uint_eq(counts[0], DOCS * KEYS); /* p <= 1 always */
        for (int k = 0; k < KEYS; k++)
            hm_ctx_free(ctxs[k]);
    }
}
END_TEST

START_TEST(test_distinct)
{
    const int32_t a[] = {1, 2, 1, 2, 1}, b[] = {2, 1}, c[] = {5};
    const int32_t *seqs[] = {a, b, c};
    const size_t lens[] = {5, 2, 1};
    uint64_t tot;
    /* bigrams: 12 21 12 21 | 21 -> 2 distinct of 5 (none across seqs) */
    ck_assert_double_eq_tol(ev_distinct(seqs, lens, 3, 2, &tot), 0.4, 1e-12);
    ck_assert_uint_eq(tot, 5);
    /* trigrams: 121 212 121 -> 2 of 3 */
    ck_assert_double_eq_tol(ev_distinct(seqs, lens, 3, 3, &tot), 2.0 / 3,
                            1e-12);
    ck_assert_uint_eq(tot, 3);
    ck_assert_double_eq_tol(ev_distinct(seqs, lens, 3, 1, &tot), 3.0 / 8,
                            1e-12);
    ck_assert(isnan(ev_distinct(seqs, lens, 3, 4, &tot)) == 0);
    /* 8-grams: two copies of one 9-id run share both of its 8-grams */
    const int32_t l1[] = {1, 2, 3, 4, 5, 6, 7, 8, 9},
                  l2[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const int32_t *ls[] = {l1, l2};
    const size_t ll[] = {9, 10};
    ck_assert_double_eq_tol(ev_distinct(ls, ll, 2, 8, &tot), 3.0 / 5, 1e-12);
    ck_assert_uint_eq(tot, 5);
    ck_assert(isnan(ev_distinct(ls, ll, 2, 9, &tot)));
    ck_assert(isnan(ev_distinct(seqs + 1, lens + 1, 2, 3, &tot)));
    ck_assert_uint_eq(tot, 0);
}
END_TEST

/* With a prompt at least order-1 long, a response's perplexity is the
 * document's log-probability minus the prompt's. */
START_TEST(test_perplexity)
{
    ng_model *m = toy_model(3);
    int32_t doc[30];
    ev_rng r = {5};
    for (int i = 0; i < 30; i++)
        doc[i] = (int32_t)ev_below(&r, V);
    const int32_t *pp[1] = {doc}, *rp[1] = {doc + 10};
    const size_t np[1] = {10}, nr[1] = {20};
    double want = exp(-(ng_logprob(m, doc, 30) - ng_logprob(m, doc, 10)) / 20);
    ck_assert_double_eq_tol(ev_perplexity(m, pp, np, rp, nr, 1), want,
                            1e-9 * want);
    /* no prompt: the response is a document of its own */
    const size_t np0[1] = {0};
    const int32_t *rp0[1] = {doc};
    const size_t nr0[1] = {30};
    want = ng_perplexity(m, doc, 30);
    ck_assert_double_eq_tol(ev_perplexity(m, pp, np0, rp0, nr0, 1), want,
                            1e-9 * want);
    ng_free(m);
}
END_TEST

START_TEST(test_prompts)
{
    char t1[] = "One two three four five six. Seven eight!\n"
                "Nine ten eleven twelve thirteen \"fourteen.\" Fifteen "
                "sixteen seventeen eighteen nineteen twenty\n";
    ev_doc d = {NULL, t1, sizeof t1 - 1, NULL, 0};
    ev_docs docs = {&d, 1};
    size_t n;
    char **p = ev_prompts(&docs, 3, 5, &n);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(p[0], "One two three");
    ck_assert_str_eq(p[1], "Nine ten eleven");
    ck_assert_str_eq(p[2], "Fifteen sixteen seventeen");
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    free(p);
}
END_TEST

/* The requests file replaces its target through a temporary file of its
 * own: a file, directory or link already at PATH.tmp is neither written
 * through nor in the way, and nothing is left next to the target. */
START_TEST(test_write_jsonl_atomic)
{
    char dir[] = "/tmp/hm-eval-XXXXXX", path[64], tmp[80], victim[80];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/served.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    FILE *f = fopen(victim, "w");
    ck_assert_ptr_nonnull(f);
    fputs("keep\n", f);
    fclose(f);
    ck_assert_int_eq(symlink(victim, tmp), 0);

    ev_requests r;
    ck_assert_int_eq(ev_requests_init(&r, 2), 0);
    static const int32_t prompt[] = {1, 2}, a[] = {3}, b[] = {4, 5};
    int32_t *ra = malloc(sizeof a), *rb = malloc(sizeof b);
    ck_assert(ra && rb);
    memcpy(ra, a, sizeof a);
    memcpy(rb, b, sizeof b);
    r.prompt[0] = r.prompt[1] = prompt;
    r.n_prompt[0] = r.n_prompt[1] = 2;
    r.resp[0] = ra;
    r.n_resp[0] = 1;
    r.resp[1] = rb;
    r.n_resp[1] = 2;
    char err[256] = "";
    for (int round = 0; round < 2; round++) { /* create, then replace */
        ck_assert_msg(ev_write_tokens_jsonl(path, &r, err, sizeof err) == 0,
                      "%s", err);
        char got[256] = "";
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        size_t n = fread(got, 1, sizeof got - 1, f);
        fclose(f);
        got[n] = 0;
        ck_assert_str_eq(got,
                         "{\"prompt_tokens\":[1,2],\"tokens\":[3],\"id\":0}\n"
                         "{\"prompt_tokens\":[1,2],\"tokens\":[4,5],\"id\":1}"
                         "\n");
    }
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    f = fopen(victim, "r");
    char keep[16] = "";
    ck_assert_ptr_nonnull(fgets(keep, sizeof keep, f));
    fclose(f);
    ck_assert_str_eq(keep, "keep\n");
    /* the directory holds the target, the victim and the link, no more */
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += e->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(entries, 3);
    ck_assert_int_eq(ev_write_tokens_jsonl("/nonexistent-dir/x.jsonl", &r, err,
                                           sizeof err),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/x.jsonl"));
    ev_requests_free(&r);
    unlink(path);
    unlink(tmp);
    unlink(victim);
    rmdir(dir);
}
END_TEST

static Suite *eval_suite(void)
{
    Suite *s = suite_create("eval");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_rng);
    tcase_add_test(tc, test_serving_reproducible);
    tcase_add_test(tc, test_serving_top_k);
    tcase_add_test(tc, test_batch_equals_single);
    tcase_add_test(tc, test_host_sampler_distribution);
    tcase_add_test(tc, test_clopper_pearson);
    tcase_add_test(tc, test_fpr_counts);
    tcase_add_test(tc, test_distinct);
    tcase_add_test(tc, test_perplexity);
    tcase_add_test(tc, test_prompts);
    tcase_add_test(tc, test_write_jsonl_atomic);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(eval_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
