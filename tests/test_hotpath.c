/*
 * test_hotpath.c - the mechanics of the hot-path API: dense rows and
 * candidate records choose the same tokens, batches and row strides,
 * explicit and tracked contexts, generation-time masking, caller-owned
 * sequence state, sharing a context between threads, no allocation, and
 * bad input.
 *
 * Every test uses fixed seeds, so a failure reproduces exactly.
 */
#define _GNU_SOURCE 1

#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../src/internal.h"

/* ------------------------------------------------- malloc interposition */

#include "mallochook.h"

/* ------------------------------------------------------------ helpers */

/* llama.cpp's llama_token_data. */
typedef struct llama_rec {
    int32_t id;
    float logit;
    float p;
} llama_rec;

/* Some other engine's record: fields in another order, with padding. */
typedef struct odd_rec {
    float p;
    float logit;
    int64_t pad;
    int32_t id;
} odd_rec;

#define P_SENTINEL 0.125f
#define PAD_SENTINEL INT64_C(0x5a5a5a5a5a5a5a5a)

static const char *const specs[] = {
    "gumbel", "tournament", "kgw", "kgw:h=1+gumbel:h=4",
    "kgw:seeding=selfhash+tournament",
};
#define N_SPECS (sizeof specs / sizeof specs[0])

static const float temps[] = {0.0f, 0.5f, 1.0f, 1.7f};
#define N_TEMPS (sizeof temps / sizeof temps[0])

static float *xmalloc_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static double gauss(uint64_t *s)
{
    double u1 = 1.0 - test_uniform(s); /* (0, 1] */
    double u2 = test_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Random logits.  kind 0: continuous; kind 1: coarse (many exact ties)
 * with about 1% of -INFINITY (tokens masked by a grammar, say); kind 2:
 * eight values only, so that the largest is shared by many tokens. */
static void fill_logits(float *l, size_t n, uint64_t *s, int kind)
{
    for (size_t i = 0; i < n; i++) {
        if (kind == 0) {
            l[i] = (float)(3.0 * gauss(s));
        } else if (kind == 2) {
            l[i] = (float)(test_rand(s) % 8) * 0.75f;
        } else {
            l[i] = (float)(floor(4.0 * gauss(s)) * 0.5);
            if (test_rand(s) % 100 == 0)
                l[i] = -INFINITY;
        }
    }
}

static void fill_context(int32_t *c, size_t n, size_t vocab, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (int32_t)(test_rand(s) % vocab);
}

static int same_float(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static int ctx_has_kgw(const hm_ctx *ctx)
{
    for (unsigned c = 0; c < hm_ctx_channels(ctx); c++)
        if (hm_ctx_channel_scheme(ctx, c) == HM_SCHEME_KGW)
            return 1;
    return 0;
}

static int ctx_sampler(const hm_ctx *ctx)
{
    for (unsigned c = 0; c < hm_ctx_channels(ctx); c++)
        if (hm_ctx_channel_scheme(ctx, c) != HM_SCHEME_KGW)
            return hm_ctx_channel_scheme(ctx, c);
    return 0;
}

static size_t argmax(const float *l, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return best;
}

static int32_t rec_id(const hm_cands *c, size_t i)
{
    int32_t v;
    memcpy(&v, (const char *)c->data + i * c->stride + c->id_offset,
           sizeof v);
    return v;
}

static float rec_logit(const hm_cands *c, size_t i)
{
    float v;
    memcpy(&v, (const char *)c->data + i * c->stride + c->logit_offset,
           sizeof v);
    return v;
}

static void shuffle(void *data, size_t n, size_t size, uint64_t *s)
{
    unsigned char tmp[64];
    unsigned char *d = data;
    ck_assert_uint_le(size, sizeof tmp);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(test_rand(s) % i);
        memcpy(tmp, d + (i - 1) * size, size);
        memcpy(d + (i - 1) * size, d + j * size, size);
        memcpy(d + j * size, tmp, size);
    }
}

/* Larger logit first, then smaller id; -INFINITY last. */
static int cmp_desc(const void *pa, const void *pb)
{
    const llama_rec *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static void llama_from(llama_rec *r, const float *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        r[i].id = (int32_t)i;
        r[i].logit = l[i];
        r[i].p = P_SENTINEL;
    }
}

/* What the dense path did with one row. */
typedef struct expect {
    const float *biased; /* the row after hm_bias_dense */
    unsigned bias_flags;
    int32_t token;
    unsigned flags;
} expect;

/* Bias (a no-op without kgw channels) and select on a copy of raw. */
static void run_dense(const hm_ctx *ctx, const float *raw, size_t V,
                      const hm_row *row, float *work, expect *e)
{
    memcpy(work, raw, V * sizeof *work);
    e->bias_flags = 0xdeadu;
    e->flags = 0xdeadu;
    e->token = -7;
    ck_assert_int_eq(hm_bias_dense(ctx, work, 1, V, V, row, &e->bias_flags),
                     HM_OK);
    if (ctx_has_kgw(ctx)) {
        ck_assert_uint_eq(e->bias_flags & HM_STEP_BIASED, HM_STEP_BIASED);
    } else {
        ck_assert_uint_eq(e->bias_flags, 0);
        ck_assert_mem_eq(work, raw, V * sizeof *work);
    }
    ck_assert_int_eq(
        hm_select_dense(ctx, work, 1, V, V, row, &e->token, &e->flags),
        HM_OK);
    ck_assert_int_ge(e->token, 0);
    ck_assert_int_lt(e->token, (int32_t)V);
    e->biased = work;
}

/* The candidate path on records holding the raw logits must bias them to
 * exactly the dense row's values (per id) and choose the same token. */
static void check_cands(const hm_ctx *ctx, const hm_cands *c,
                        const hm_row *row, const expect *e, const char *what)
{
    unsigned bf = 0xdeadu, f = 0xdeadu;
    int32_t tok = -7;
    size_t idx = (size_t)-1;
    ck_assert_int_eq(hm_bias_cands(ctx, c, row, &bf), HM_OK);
    ck_assert_msg(bf == e->bias_flags, "%s: bias flags %#x, dense %#x", what,
                  bf, e->bias_flags);
    /* (one assertion per call: Check reports every passing one) */
    for (size_t i = 0; i < c->n; i++) {
        int32_t id = rec_id(c, i);
        float l = rec_logit(c, i);
        if (!same_float(l, e->biased[id]))
            ck_abort_msg("%s: biased logit of id %d is %a, dense %a", what,
                         (int)id, (double)l, (double)e->biased[id]);
    }
    ck_assert_int_eq(hm_select_cands(ctx, c, row, &tok, &idx, &f), HM_OK);
    ck_assert_msg(tok == e->token, "%s: cands chose %d, dense %d", what,
                  (int)tok, (int)e->token);
    ck_assert_msg(f == e->flags, "%s: flags %#x, dense %#x", what, f,
                  e->flags);
    ck_assert_uint_lt(idx, c->n);
    ck_assert_int_eq(rec_id(c, idx), tok);
    /* index may be NULL */
    tok = -7;
    ck_assert_int_eq(hm_select_cands(ctx, c, row, &tok, NULL, NULL), HM_OK);
    ck_assert_int_eq(tok, e->token);
}

static void check_llama_p(const llama_rec *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!same_float(r[i].p, P_SENTINEL))
            ck_abort_msg("record %zu: field p was written", i);
}

/* ------------------------------------------- 1. dense == candidates */

START_TEST(test_dense_matches_cands)
{
    static const size_t vocabs[] = {1000, 32000};
    const size_t K = 64; /* truncation, >= tournament topk (40) */
    hm_key *key = test_key(11);
    uint64_t s = 0x1001;
    unsigned n_not_argmax = 0, n_combos = 0;
    size_t vmax = 32000;
    float *raw = xmalloc_floats(vmax), *work = xmalloc_floats(vmax);
    float *trunc = xmalloc_floats(vmax), *work2 = xmalloc_floats(vmax);
    llama_rec *recs = malloc(vmax * sizeof *recs);
    llama_rec *top = malloc(vmax * sizeof *top);
    odd_rec *odd = malloc(vmax * sizeof *odd);
    ck_assert_ptr_nonnull(recs);
    ck_assert_ptr_nonnull(top);
    ck_assert_ptr_nonnull(odd);

    for (size_t sp = 0; sp < N_SPECS; sp++) {
        hm_ctx *ctx = test_ctx(key, specs[sp]);
        double topk = 0;
        if (ctx_sampler(ctx) == HM_SCHEME_TOURNAMENT) {
            unsigned ch = hm_ctx_channels(ctx) - 1;
            ck_assert_int_eq(hm_ctx_channel_param(ctx, ch, "topk", &topk),
                             HM_OK);
            ck_assert(topk <= (double)K);
        }
        for (size_t vi = 0; vi < 2; vi++) {
            size_t V = vocabs[vi];
            for (size_t ti = 0; ti < N_TEMPS; ti++) {
                for (int trial = 0; trial < 4; trial++) {
                    char what[160];
                    int32_t context[12];
                    size_t nc = (size_t)(test_rand(&s) % 12);
                    expect e, et;
                    fill_context(context, nc, V, &s);
                    fill_logits(raw, V, &s, trial < 2 ? 0 : trial - 1);
                    hm_row row = {nc ? context : NULL, nc, NULL, temps[ti],
                                  test_uniform(&s)};
                    snprintf(what, sizeof what, "%s V=%zu T=%g trial %d",
                             specs[sp], V, (double)temps[ti], trial);
                    run_dense(ctx, raw, V, &row, work, &e);
                    n_combos++;
                    if (temps[ti] == 0)
                        ck_assert_uint_eq(e.flags, HM_STEP_GREEDY);
                    if (temps[ti] == 0 && !ctx_has_kgw(ctx))
                        ck_assert_int_eq(e.token, (int32_t)argmax(raw, V));
                    if (temps[ti] > 0 && e.token != (int32_t)argmax(work, V))
                        n_not_argmax++;

                    /* (a) id order */
                    llama_from(recs, raw, V);
                    hm_cands c = HM_CANDS_LLAMA(recs, V);
                    check_cands(ctx, &c, &row, &e, what);
                    check_llama_p(recs, V);
                    /* (b) shuffled */
                    llama_from(recs, raw, V);
                    shuffle(recs, V, sizeof *recs, &s);
                    check_cands(ctx, &c, &row, &e, what);
                    check_llama_p(recs, V);
                    /* (c) sorted by logit, descending (llama.cpp after
                     * its top-k / softmax samplers) */
                    llama_from(recs, raw, V);
                    qsort(recs, V, sizeof *recs, cmp_desc);
                    memcpy(top, recs, K * sizeof *top);
                    check_cands(ctx, &c, &row, &e, what);

                    /* (d) truncated to the K best, all others -inf on the
                     * dense side; records sorted, then shuffled */
                    for (size_t i = 0; i < V; i++)
                        trunc[i] = -INFINITY;
                    for (size_t i = 0; i < K; i++)
                        trunc[top[i].id] = top[i].logit;
                    run_dense(ctx, trunc, V, &row, work2, &et);
                    hm_cands ct = HM_CANDS_LLAMA(top, K);
                    check_cands(ctx, &ct, &row, &et, what);
                    for (size_t i = 0; i < K; i++)
                        top[i].logit = trunc[top[i].id];
                    shuffle(top, K, sizeof *top, &s);
                    check_cands(ctx, &ct, &row, &et, what);
                    check_llama_p(top, K);
                    if (!ctx_has_kgw(ctx) &&
                        (temps[ti] == 0 ||
                         ctx_sampler(ctx) == HM_SCHEME_TOURNAMENT))
                        /* greedy and tournament only look at the top (a
                         * kgw bias could lift a token from outside it) */
                        ck_assert_int_eq(et.token, e.token);

                    /* (e) another record layout, shuffled */
                    for (size_t i = 0; i < V; i++) {
                        odd[i].p = P_SENTINEL;
                        odd[i].logit = raw[i];
                        odd[i].pad = PAD_SENTINEL;
                        odd[i].id = (int32_t)i;
                    }
                    shuffle(odd, V, sizeof *odd, &s);
                    hm_cands co = {odd, V, sizeof *odd,
                                   offsetof(odd_rec, id),
                                   offsetof(odd_rec, logit)};
                    check_cands(ctx, &co, &row, &e, what);
                    for (size_t i = 0; i < V; i++)
                        if (!same_float(odd[i].p, P_SENTINEL) ||
                            odd[i].pad != PAD_SENTINEL)
                            ck_abort_msg("%s: record %zu: p or pad written",
                                         what, i);
                }
            }
        }
        hm_ctx_free(ctx);
    }
    /* Sampling really sampled: not every choice at T > 0 was the argmax. */
    ck_assert_uint_gt(n_not_argmax, n_combos / 20);
    free(raw);
    free(work);
    free(trunc);
    free(work2);
    free(recs);
    free(top);
    free(odd);
    hm_key_free(key);
}
END_TEST

/* The Gumbel race skips candidates by cheap upper bounds; whatever it
 * skips, it must return the exact argmax of the keys (ties to the smaller
 * id).  Brute force over every token with the library's own key function
 * and seeds, keyed (watermarked) and unkeyed (fallback). */
static int32_t ref_gumbel(const hm_ctx *ctx, const float *l, size_t V,
                          const hm_row *row, int keyed)
{
    hm_seed sd;
    float inv_t = 1.0f / row->temperature;
    if (keyed) {
        const hm_channel *ch = &ctx->ch[ctx->sampler];
        uint32_t w[HM_MAX_CONTEXT];
        ck_assert_int_eq(ch->scheme, HM_SCHEME_GUMBEL);
        ck_assert_int_eq(hm_row_window(row, ch->window, w), HM_OK);
        sd = hm_seed_window(&ch->cmac, w, ch->window);
    } else {
        sd = hm_seed_uniform(row->uniform);
    }
    float best = -INFINITY;
    int32_t win = -1;
    for (size_t v = 0; v < V; v++) {
        float k = hm_gumbel_key(hm_mix(sd.a, sd.g, v), l[v], inv_t);
        if (k > best) {
            best = k;
            win = (int32_t)v;
        }
    }
    return win;
}

START_TEST(test_gumbel_race_exact)
{
    static const char *const gspecs[] = {"gumbel", "kgw:h=1+gumbel:h=4",
                                         "kgw"};
    static const float gtemps[] = {0.25f, 1.0f, 1.7f, 8.0f};
    const size_t V = 32000;
    hm_key *key = test_key(22);
    uint64_t s = 0x1101;
    float *raw = xmalloc_floats(V), *work = xmalloc_floats(V);
    llama_rec *recs = malloc(V * sizeof *recs);
    ck_assert_ptr_nonnull(recs);
    for (size_t sp = 0; sp < 3; sp++) {
        hm_ctx *ctx = test_ctx(key, gspecs[sp]);
        int keyed = ctx_sampler(ctx) == HM_SCHEME_GUMBEL;
        for (size_t ti = 0; ti < 4; ti++) {
            for (int trial = 0; trial < 12; trial++) {
                int32_t context[4];
                expect e;
                fill_context(context, 4, V, &s);
                fill_logits(raw, V, &s, trial % 3);
                hm_row row = {context, 4, NULL, gtemps[ti], test_uniform(&s)};
                run_dense(ctx, raw, V, &row, work, &e);
                int32_t want = ref_gumbel(ctx, work, V, &row, keyed);
                ck_assert_msg(e.token == want,
                              "%s T=%g trial %d: race chose %d, brute force "
                              "%d",
                              gspecs[sp], (double)gtemps[ti], trial,
                              (int)e.token, (int)want);
                ck_assert_uint_eq(e.flags, keyed ? HM_STEP_WATERMARKED
                                                 : HM_STEP_FALLBACK);
                llama_from(recs, raw, V);
                shuffle(recs, V, sizeof *recs, &s);
                hm_cands c = HM_CANDS_LLAMA(recs, V);
                check_cands(ctx, &c, &row, &e, gspecs[sp]);
            }
        }
        hm_ctx_free(ctx);
    }
    free(raw);
    free(work);
    free(recs);
    hm_key_free(key);
}
END_TEST

/* ------------------------------------------- 2. batches, row stride */

START_TEST(test_batch_and_stride)
{
    enum { R = 5, V = 1000, STRIDE = 1037 };
    static const float row_t[R] = {1.0f, 0.0f, 0.5f, 1.7f, 1.0f};
    hm_key *key = test_key(12);
    uint64_t s = 0x2002;
    float *batch = xmalloc_floats((size_t)R * STRIDE);
    float *orig = xmalloc_floats((size_t)R * STRIDE);
    float single[V];

    for (size_t sp = 0; sp < N_SPECS; sp++) {
        hm_ctx *ctx = test_ctx(key, specs[sp]);
        for (int trial = 0; trial < 4; trial++) {
            int32_t contexts[R][10];
            hm_row rows[R];
            int32_t tok[R], want[R];
            unsigned bflags[R], flags[R], wbflags, wflags;
            for (size_t r = 0; r < R; r++) {
                size_t nc = r == 4 ? 0 : 1 + (size_t)(test_rand(&s) % 10);
                fill_context(contexts[r], nc, V, &s);
                rows[r] = (hm_row){nc ? contexts[r] : NULL, nc, NULL,
                                   row_t[r], test_uniform(&s)};
                fill_logits(batch + r * STRIDE, V, &s, trial & 1);
                /* padding between rows: garbage that would win if read */
                for (size_t i = V; i < STRIDE; i++)
                    batch[r * STRIDE + i] =
                        (i & 1) ? NAN : (i & 2) ? INFINITY : 1e30f;
            }
            memcpy(orig, batch, (size_t)R * STRIDE * sizeof *batch);
            ck_assert_int_eq(
                hm_bias_dense(ctx, batch, R, V, STRIDE, rows, bflags), HM_OK);
            ck_assert_int_eq(hm_select_dense(ctx, batch, R, V, STRIDE, rows,
                                             tok, flags),
                             HM_OK);
            for (size_t r = 0; r < R; r++) {
                /* the padding was neither read nor written */
                ck_assert_mem_eq(batch + r * STRIDE + V,
                                 orig + r * STRIDE + V,
                                 (STRIDE - V) * sizeof *batch);
                /* one row at a time, compact */
                memcpy(single, orig + r * STRIDE, sizeof single);
                ck_assert_int_eq(
                    hm_bias_dense(ctx, single, 1, V, V, &rows[r], &wbflags),
                    HM_OK);
                ck_assert_uint_eq(wbflags, bflags[r]);
                ck_assert_mem_eq(single, batch + r * STRIDE, sizeof single);
                ck_assert_int_eq(hm_select_dense(ctx, single, 1, V, V,
                                                 &rows[r], &want[r], &wflags),
                                 HM_OK);
                ck_assert_msg(want[r] == tok[r],
                              "%s row %zu: batch chose %d, single %d",
                              specs[sp], r, (int)tok[r], (int)want[r]);
                ck_assert_uint_eq(wflags, flags[r]);
            }
            /* flags may be NULL */
            int32_t tok2[R];
            ck_assert_int_eq(hm_select_dense(ctx, batch, R, V, STRIDE, rows,
                                             tok2, NULL),
                             HM_OK);
            ck_assert_mem_eq(tok2, tok, sizeof tok);
            /* n_rows == 0 touches nothing */
            ck_assert_int_eq(
                hm_select_dense(ctx, batch, 0, V, STRIDE, rows, tok2, NULL),
                HM_OK);
        }
        hm_ctx_free(ctx);
    }
    free(batch);
    free(orig);
    hm_key_free(key);
}
END_TEST

/* ----------------------------------- 3. explicit vs tracked context */

START_TEST(test_explicit_vs_tracked)
{
    enum { V = 1000, STEPS = 30 };
    static const size_t plens[] = {0, 3, 25};
    static const float step_t[] = {1.0f, 0.7f, 0.0f, 1.3f};
    hm_key *key = test_key(13);
    uint64_t s = 0x3003;
    float raw[V], w1[V], w2[V], w3[V];

    for (size_t sp = 0; sp < N_SPECS; sp++) {
        hm_ctx *ctx = test_ctx(key, specs[sp]);
        /* history 0: no masking, the chosen tokens are accepted */
        /* history 1024 with distinct accepted tokens: nothing repeats */
        for (int variant = 0; variant < 2; variant++) {
            hm_seq *seq = NULL;
            ck_assert_int_eq(hm_seq_new(&seq, ctx, variant ? 1024 : 0),
                             HM_OK);
            for (size_t pi = 0; pi < 3; pi++) {
                int32_t hist[64];
                size_t n = plens[pi];
                for (size_t i = 0; i < n; i++)
                    hist[i] = (int32_t)(test_rand(&s) % (V / 2));
                ck_assert_int_eq(hm_seq_reset(seq, n ? hist : NULL, n),
                                 HM_OK);
                for (int step = 0; step < STEPS; step++) {
                    expect et, ee, eb;
                    fill_logits(raw, V, &s, step & 1);
                    float T = step_t[step % 4];
                    double u = test_uniform(&s);
                    hm_row tracked = {NULL, 0, seq, T, u};
                    hm_row explicit_ = {n ? hist : NULL, n, NULL, T, u};
                    hm_row both = {n ? hist : NULL, n, seq, T, u};
                    run_dense(ctx, raw, V, &tracked, w1, &et);
                    run_dense(ctx, raw, V, &explicit_, w2, &ee);
                    run_dense(ctx, raw, V, &both, w3, &eb);
                    ck_assert_mem_eq(w1, w2, sizeof w1);
                    ck_assert_mem_eq(w1, w3, sizeof w1);
                    ck_assert_msg(et.token == ee.token,
                                  "%s plen %zu step %d: tracked %d, "
                                  "explicit %d",
                                  specs[sp], n, step, (int)et.token,
                                  (int)ee.token);
                    ck_assert_int_eq(et.token, eb.token);
                    ck_assert_uint_eq(et.flags, ee.flags);
                    ck_assert_uint_eq(et.flags, eb.flags);
                    ck_assert_uint_eq(et.bias_flags, ee.bias_flags);
                    ck_assert_uint_eq(et.bias_flags, eb.bias_flags);
                    ck_assert_uint_eq(et.flags & HM_STEP_MASKED, 0);
                    int32_t next =
                        variant ? (int32_t)(V / 2 + (size_t)step * 7)
                                : et.token;
                    ck_assert_int_eq(hm_seq_accept(seq, next), HM_OK);
                    hist[n++] = next;
                }
            }
            hm_seq_free(seq);
        }
        hm_ctx_free(ctx);
    }
    hm_key_free(key);
}
END_TEST

/* -------------------------------------------------------- 4. masking */

static void select1(const hm_ctx *ctx, const float *raw, size_t V,
                    const hm_row *row, int32_t *tok, unsigned *flags)
{
    ck_assert_int_eq(hm_select_dense(ctx, raw, 1, V, V, row, tok, flags),
                     HM_OK);
}

START_TEST(test_masking_sampler)
{
    enum { V = 1000 };
    /* The prompt's last window 1 2 3 4 also occurs inside the prompt. */
    static const int32_t prompt[] = {1, 2, 3, 4, 50, 1, 2, 3, 4};
    static const int32_t gen[] = {9, 1, 2, 3, 4};
    static const char *const samplers[] = {"gumbel", "tournament",
                                           "kgw:h=1+gumbel:h=4"};
    hm_key *key = test_key(14), *other = test_key(99);
    hm_ctx *plain = test_ctx(key, "kgw"); /* no sampling channel */
    uint64_t s = 0x4004;
    float raw[V];
    fill_logits(raw, V, &s, 0);

    for (size_t sp = 0; sp < 3; sp++) {
        hm_ctx *ctx = test_ctx(key, samplers[sp]);
        hm_ctx *ctx2 = test_ctx(other, samplers[sp]);
        int gumbel = ctx_sampler(ctx) == HM_SCHEME_GUMBEL;
        for (int history = 0; history < 2; history++) {
            hm_seq *seq = NULL, *seq2 = NULL;
            int32_t t0, t, t2;
            unsigned f, f2;
            /* The history is a direct-mapped table that may evict (as
             * seq.c says); 1024 slots are ample for the ten windows here
             * (64 are not: two of them collide). */
            ck_assert_int_eq(hm_seq_new(&seq, ctx, history ? 1024 : 0), HM_OK);
            ck_assert_int_eq(hm_seq_new(&seq2, ctx2, history ? 1024 : 0),
                             HM_OK);
            ck_assert_int_eq(hm_seq_reset(seq, prompt, 9), HM_OK);
            ck_assert_int_eq(hm_seq_reset(seq2, prompt, 9), HM_OK);
            hm_row row = {NULL, 0, seq, 1.0f, 0.25};
            /* A window inside the prompt is not masked. */
            select1(ctx, raw, V, &row, &t0, &f);
            ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
            for (size_t i = 0; i < 5; i++) {
                ck_assert_int_eq(hm_seq_accept(seq, gen[i]), HM_OK);
                ck_assert_int_eq(hm_seq_accept(seq2, gen[i]), HM_OK);
            }
            /* The window 1 2 3 4 again, now after it was generated from. */
            unsigned n_fallback_tokens = 0;
            int32_t first = -1;
            for (int k = 0; k < 10; k++) {
                double u = (k + 0.5) / 10;
                row.uniform = u;
                select1(ctx, raw, V, &row, &t, &f);
                if (!history) {
                    ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
                    /* gumbel ignores the uniform when watermarking;
                     * tournament draws from its tilted distribution with
                     * it (t0 was drawn with 0.25) */
                    if (gumbel)
                        ck_assert_int_eq(t, t0);
                    continue;
                }
                ck_assert_uint_eq(f, HM_STEP_MASKED | HM_STEP_FALLBACK);
                ck_assert_uint_eq(f & HM_STEP_WATERMARKED, 0);
                /* Unwatermarked: independent of the key. */
                hm_row row2 = {NULL, 0, seq2, 1.0f, u};
                select1(ctx2, raw, V, &row2, &t2, &f2);
                ck_assert_uint_eq(f2, f);
                ck_assert_int_eq(t2, t);
                if (gumbel) {
                    /* ... and the same draw as without a sampling
                     * channel: the caller's uniform decides. */
                    hm_row rp = {NULL, 0, NULL, 1.0f, u};
                    select1(plain, raw, V, &rp, &t2, &f2);
                    ck_assert_uint_eq(f2, HM_STEP_FALLBACK);
                    ck_assert_int_eq(t2, t);
                }
                if (k == 0)
                    first = t;
                else if (t != first)
                    n_fallback_tokens++;
            }
            if (history) {
                /* the masked draws follow the uniform */
                ck_assert_uint_gt(n_fallback_tokens, 0);
                /* the same window without a seq: watermarked again */
                int32_t ctxw[] = {1, 2, 3, 4};
                hm_row rx = {ctxw, 4, NULL, 1.0f, 0.25};
                select1(ctx, raw, V, &rx, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
                ck_assert_int_eq(t, t0);
                /* an explicit context is checked against the seq's
                 * history too */
                hm_row rxs = {ctxw, 4, seq, 1.0f, 0.25};
                select1(ctx, raw, V, &rxs, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_MASKED | HM_STEP_FALLBACK);
                /* greedy stays greedy */
                row.temperature = 0;
                select1(ctx, raw, V, &row, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_GREEDY);
                ck_assert_int_eq(t, (int32_t)argmax(raw, V));
                row.temperature = 1.0f;
                /* a new window is not masked */
                ck_assert_int_eq(hm_seq_accept(seq, 77), HM_OK);
                row.uniform = 0.25;
                select1(ctx, raw, V, &row, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
                /* reset forgets the history */
                ck_assert_int_eq(hm_seq_reset(seq, prompt, 9), HM_OK);
                ck_assert_int_eq(hm_seq_accept(seq, 9), HM_OK);
                ck_assert_int_eq(hm_seq_reset(seq, prompt, 9), HM_OK);
                for (size_t i = 0; i < 5; i++) {
                    if (i > 0) {
                        select1(ctx, raw, V, &row, &t, &f);
                        ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
                    }
                    ck_assert_int_eq(hm_seq_accept(seq, gen[i]), HM_OK);
                }
                select1(ctx, raw, V, &row, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_MASKED | HM_STEP_FALLBACK);
                ck_assert_int_eq(hm_seq_reset(seq, prompt, 9), HM_OK);
                select1(ctx, raw, V, &row, &t, &f);
                ck_assert_uint_eq(f, HM_STEP_WATERMARKED);
                ck_assert_int_eq(t, t0);
            }
            /* the candidate path masks the same way */
            {
                llama_rec recs[V];
                int32_t tc, td;
                unsigned fc, fd;
                size_t idx;
                ck_assert_int_eq(hm_seq_reset(seq, prompt, 9), HM_OK);
                for (size_t i = 0; i < 5; i++)
                    ck_assert_int_eq(hm_seq_accept(seq, gen[i]), HM_OK);
                row.uniform = 0.6;
                llama_from(recs, raw, V);
                hm_cands c = HM_CANDS_LLAMA(recs, V);
                ck_assert_int_eq(hm_select_cands(ctx, &c, &row, &tc, &idx,
                                                 &fc),
                                 HM_OK);
                select1(ctx, raw, V, &row, &td, &fd);
                ck_assert_int_eq(tc, td);
                ck_assert_uint_eq(fc, fd);
                ck_assert_uint_eq(fc, history ? HM_STEP_MASKED |
                                                    HM_STEP_FALLBACK
                                              : HM_STEP_WATERMARKED);
            }
            hm_seq_free(seq);
            hm_seq_free(seq2);
        }
        hm_ctx_free(ctx);
        hm_ctx_free(ctx2);
    }
    hm_ctx_free(plain);
    hm_key_free(key);
    hm_key_free(other);
}
END_TEST

/* kgw bias masking, per channel. */
START_TEST(test_masking_bias)
{
    enum { V = 1000 };
    hm_key *key = test_key(15);
    uint64_t s = 0x4104;
    float raw[V], l[V];
    unsigned f, fs;
    int32_t t;
    fill_logits(raw, V, &s, 0);

    /* kgw h=1 alone */
    hm_ctx *ctx = test_ctx(key, "kgw");
    hm_seq *seq = NULL, *seq0 = NULL;
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 64), HM_OK);
    ck_assert_int_eq(hm_seq_new(&seq0, ctx, 0), HM_OK);
    static const int32_t p7[] = {7};
    ck_assert_int_eq(hm_seq_reset(seq, p7, 1), HM_OK);
    ck_assert_int_eq(hm_seq_reset(seq0, p7, 1), HM_OK);
    hm_row row = {NULL, 0, seq, 1.0f, 0.5};
    hm_row row0 = {NULL, 0, seq0, 1.0f, 0.5};
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_BIASED);
    ck_assert(memcmp(l, raw, sizeof l) != 0);
    ck_assert_int_eq(hm_seq_accept(seq, 7), HM_OK);
    ck_assert_int_eq(hm_seq_accept(seq0, 7), HM_OK);
    /* window [7] again */
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_MASKED);
    ck_assert_mem_eq(l, raw, sizeof l);
    /* the sampling step of a kgw-only context is plain sampling */
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &row, &t, &fs), HM_OK);
    ck_assert_uint_eq(fs & HM_STEP_WATERMARKED, 0);
    ck_assert_uint_eq(fs & HM_STEP_FALLBACK, HM_STEP_FALLBACK);
    {
        llama_rec recs[V];
        llama_from(recs, raw, V);
        hm_cands c = HM_CANDS_LLAMA(recs, V);
        ck_assert_int_eq(hm_bias_cands(ctx, &c, &row, &f), HM_OK);
        ck_assert_uint_eq(f, HM_STEP_MASKED);
        size_t changed = 0;
        for (size_t i = 0; i < V; i++)
            changed += !same_float(recs[i].logit, raw[i]);
        ck_assert_uint_eq(changed, 0);
    }
    /* history 0: never masked */
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row0, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_BIASED);
    hm_seq_free(seq);
    hm_seq_free(seq0);
    hm_ctx_free(ctx);

    /* two channels, two windows: kgw's [13] repeats, gumbel's does not */
    ctx = test_ctx(key, "kgw:h=1+gumbel:h=4");
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 1024), HM_OK);
    static const int32_t p4[] = {10, 11, 12, 13};
    ck_assert_int_eq(hm_seq_reset(seq, p4, 4), HM_OK);
    ck_assert_int_eq(hm_seq_accept(seq, 13), HM_OK);
    row.seq = seq;
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_MASKED);
    ck_assert_mem_eq(l, raw, sizeof l);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &row, &t, &fs), HM_OK);
    ck_assert_uint_eq(fs, HM_STEP_WATERMARKED);
    /* both windows repeat: after 10 11 12 13 | 5 10 11 12 13 kgw's [13]
     * and gumbel's 10 11 12 13 were both recorded (at the accept of 5) */
    ck_assert_int_eq(hm_seq_reset(seq, p4, 4), HM_OK);
    static const int32_t g2[] = {5, 10, 11, 12, 13};
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(hm_seq_accept(seq, g2[i]), HM_OK);
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_MASKED);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &row, &t, &fs), HM_OK);
    ck_assert_uint_eq(fs, HM_STEP_MASKED | HM_STEP_FALLBACK);
    ck_assert_int_eq(hm_seq_accept(seq, 14), HM_OK);
    memcpy(l, raw, sizeof l);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &row, &f), HM_OK);
    ck_assert_uint_eq(f, HM_STEP_BIASED);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &row, &t, &fs), HM_OK);
    ck_assert_uint_eq(fs, HM_STEP_WATERMARKED);
    hm_seq_free(seq);
    hm_ctx_free(ctx);
    hm_key_free(key);
}
END_TEST

/* ------------------------------------ 5. sequence state in caller memory */

/* Is the sampler's window (width w) at the end of tok[0..n) one that an
 * accept at a position >= plen saw? */
static int model_masked(const int32_t *tok, size_t n, size_t plen,
                        unsigned w)
{
    for (size_t p = plen; p < n; p++) {
        int same = 1;
        for (unsigned j = 1; j <= w && same; j++) {
            int64_t a = p >= j ? tok[p - j] : -1;
            int64_t b = n >= j ? tok[n - j] : -1;
            same = a == b;
        }
        if (same)
            return 1;
    }
    return 0;
}

START_TEST(test_seq_memory_and_copy)
{
    enum { V = 1000 };
    static const char *const cspecs[] = {"kgw:h=1+gumbel:h=4", "tournament",
                                         "kgw:seeding=selfhash+tournament"};
    static const int32_t pattern[] = {3, 1, 4, 1, 5, 9, 2, 6};
    /* Large tables, so that no remembered window is evicted and the
     * simple model of masking below is exact. */
    const size_t H = 65536, HBIG = 262144;
    hm_key *key = test_key(16);
    uint64_t s = 0x5005;
    float raw[V], work[V];

    ck_assert_uint_gt(hm_seq_size(0), 0);
    ck_assert_uint_ge(hm_seq_size(1024), hm_seq_size(0) + 1024 * 8);
    ck_assert_uint_ge(hm_seq_size(H), hm_seq_size(1024));

    for (size_t sp = 0; sp < 3; sp++) {
        hm_ctx *ctx = test_ctx(key, cspecs[sp]);
        hm_ctx *ctx_b = test_ctx(key, cspecs[sp]); /* equal, not the same */
        unsigned sampler_ch = hm_ctx_channels(ctx) - 1;
        unsigned w = hm_ctx_channel_window(ctx, sampler_ch);
        size_t sz = hm_seq_size(H);
        uint64_t *mem_src = malloc(sz), *mem_eq = malloc(sz);
        uint64_t small_mem[64];
        hm_seq *src = NULL, *eq = NULL, *big = NULL, *small = NULL,
               *foreign = NULL;
        ck_assert_ptr_nonnull(mem_src);
        ck_assert_ptr_nonnull(mem_eq);

        /* init: size, alignment, arguments */
        ck_assert_int_eq(hm_seq_init(&src, mem_src, sz - 1, ctx, H),
                         HM_ERANGE);
        ck_assert_int_eq(hm_seq_init(&src, mem_src, 0, ctx, H), HM_ERANGE);
        ck_assert_int_eq(hm_seq_init(&src, (char *)mem_src + 4, sz - 8, ctx,
                                     1024),
                         HM_EINVAL);
        ck_assert_int_eq(hm_seq_init(NULL, mem_src, sz, ctx, H), HM_EINVAL);
        ck_assert_int_eq(hm_seq_init(&src, NULL, sz, ctx, H), HM_EINVAL);
        ck_assert_int_eq(hm_seq_init(&src, mem_src, sz, NULL, H), HM_EINVAL);
        ck_assert_int_ne(hm_seq_init(&src, mem_src, SIZE_MAX, ctx,
                                     (size_t)1 << 40),
                         HM_OK);
        ck_assert_int_eq(hm_seq_init(&src, mem_src, sz, ctx, H), HM_OK);
        ck_assert_int_eq(hm_seq_init(&eq, mem_eq, sz, ctx, H), HM_OK);
        ck_assert_int_eq(hm_seq_new(&big, ctx, HBIG), HM_OK);
        ck_assert_uint_ge(sizeof small_mem, hm_seq_size(16));
        ck_assert_int_eq(
            hm_seq_init(&small, small_mem, sizeof small_mem, ctx, 16), HM_OK);
        ck_assert_int_eq(hm_seq_new(&foreign, ctx_b, H), HM_OK);

        /* a prompt and a first cycle of the pattern */
        int32_t tok[64];
        size_t n = 6, plen = 6;
        for (size_t i = 0; i < n; i++)
            tok[i] = 100 + (int32_t)(test_rand(&s) % 900);
        ck_assert_int_eq(hm_seq_reset(src, tok, n), HM_OK);
        for (size_t i = 0; i < 8; i++) {
            ck_assert_int_eq(hm_seq_accept(src, pattern[i]), HM_OK);
            tok[n++] = pattern[i];
        }

        ck_assert_int_eq(hm_seq_copy(eq, src), HM_OK);
        ck_assert_int_eq(hm_seq_copy(big, src), HM_OK);
        ck_assert_int_eq(hm_seq_copy(src, src), HM_OK);
        ck_assert_int_eq(hm_seq_copy(small, src), HM_ERANGE);
        ck_assert_int_eq(hm_seq_copy(foreign, src), HM_EINVAL);
        ck_assert_int_eq(hm_seq_copy(NULL, src), HM_EINVAL);
        ck_assert_int_eq(hm_seq_copy(eq, NULL), HM_EINVAL);
        /* copying into a larger state of history 0 -> 16 works */
        {
            hm_seq *z = NULL;
            ck_assert_int_eq(hm_seq_new(&z, ctx, 0), HM_OK);
            ck_assert_int_eq(hm_seq_copy(small, z), HM_OK);
            ck_assert_int_eq(hm_seq_copy(z, small), HM_ERANGE);
            hm_seq_free(z);
        }

        /* A state of another context is refused by every hot call. */
        {
            hm_row row = {NULL, 0, foreign, 1.0f, 0.5};
            llama_rec recs[8];
            int32_t t;
            fill_logits(work, 8, &s, 0);
            llama_from(recs, work, 8);
            hm_cands c = HM_CANDS_LLAMA(recs, 8);
            ck_assert_int_eq(hm_select_dense(ctx, work, 1, 8, 8, &row, &t,
                                             NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_bias_dense(ctx, work, 1, 8, 8, &row, NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_select_cands(ctx, &c, &row, &t, NULL, NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_bias_cands(ctx, &c, &row, NULL), HM_EINVAL);
            /* but works with its own */
            ck_assert_int_eq(hm_select_dense(ctx_b, work, 1, 8, 8, &row, &t,
                                             NULL),
                             HM_OK);
            /* memory that never was a state */
            uint64_t junk[64];
            memset(junk, 0, sizeof junk);
            hm_seq *bad = (hm_seq *)junk;
            row.seq = bad;
            ck_assert_int_eq(hm_select_dense(ctx, work, 1, 8, 8, &row, &t,
                                             NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_bias_cands(ctx, &c, &row, NULL), HM_EINVAL);
            ck_assert_int_eq(hm_seq_accept(bad, 1), HM_EINVAL);
            ck_assert_int_eq(hm_seq_reset(bad, NULL, 0), HM_EINVAL);
            ck_assert_int_eq(hm_seq_copy(eq, bad), HM_EINVAL);
        }

        /* Two more cycles: the copies behave exactly like the original,
         * and masking follows the windows actually accepted. */
        unsigned n_masked = 0, n_marked = 0;
        for (int step = 0; step < 16; step++) {
            hm_seq *states[3] = {src, eq, big};
            int32_t t[3];
            unsigned bf[3], f[3];
            double u = test_uniform(&s);
            fill_logits(raw, V, &s, 0);
            for (int k = 0; k < 3; k++) {
                hm_row row = {NULL, 0, states[k], 1.0f, u};
                memcpy(work, raw, sizeof work);
                ck_assert_int_eq(
                    hm_bias_dense(ctx, work, 1, V, V, &row, &bf[k]), HM_OK);
                ck_assert_int_eq(hm_select_dense(ctx, work, 1, V, V, &row,
                                                 &t[k], &f[k]),
                                 HM_OK);
            }
            for (int k = 1; k < 3; k++) {
                ck_assert_int_eq(t[k], t[0]);
                ck_assert_uint_eq(f[k], f[0]);
                ck_assert_uint_eq(bf[k], bf[0]);
            }
            int m = model_masked(tok, n, plen, w);
            ck_assert_msg(!!(f[0] & HM_STEP_MASKED) == m,
                          "%s step %d: flags %#x, model says masked=%d",
                          cspecs[sp], step, f[0], m);
            if (m) {
                n_masked++;
                ck_assert_uint_eq(f[0], HM_STEP_MASKED | HM_STEP_FALLBACK);
            } else {
                n_marked++;
                ck_assert_uint_eq(f[0], HM_STEP_WATERMARKED);
            }
            if (ctx_has_kgw(ctx))
                ck_assert_uint_eq(!!(bf[0] & HM_STEP_MASKED),
                                  model_masked(tok, n, plen,
                                               hm_ctx_channel_window(ctx, 0)));
            for (int k = 0; k < 3; k++)
                ck_assert_int_eq(hm_seq_accept(states[k], pattern[step % 8]),
                                 HM_OK);
            tok[n++] = pattern[step % 8];
        }
        ck_assert_uint_gt(n_masked, 4);
        ck_assert_uint_gt(n_marked, 0);

        hm_seq_free(big);
        hm_seq_free(foreign);
        free(mem_src);
        free(mem_eq);
        hm_ctx_free(ctx);
        hm_ctx_free(ctx_b);
    }
    hm_key_free(key);
}
END_TEST

/* ------------------------------------------------- 6. shared context */

enum { TH_V = 4000, TH_JOBS = 200, TH_THREADS = 4, TH_ROUNDS = 3 };

typedef struct job {
    const float *logits;
    int32_t context[8];
    size_t n_context;
    float temperature;
    double uniform;
    int32_t want;
    unsigned want_flags;
} job;

typedef struct worker {
    const hm_ctx *ctx;
    const job *jobs;
    unsigned start;
    unsigned stride; /* coprime with TH_JOBS */
    unsigned mismatches;
    unsigned errors;
    unsigned done;
} worker;

static void *worker_main(void *arg)
{
    worker *wk = arg;
    float *work = malloc(TH_V * sizeof *work);
    llama_rec *recs = malloc(TH_V * sizeof *recs);
    if (work == NULL || recs == NULL) {
        wk->errors++;
        free(work);
        free(recs);
        return NULL;
    }
    for (unsigned round = 0; round < TH_ROUNDS; round++) {
        for (unsigned k = 0; k < TH_JOBS; k++) {
            /* each thread walks the jobs in its own order */
            const job *j = &wk->jobs[(wk->start + k * wk->stride) % TH_JOBS];
            hm_row row = {j->context, j->n_context, NULL, j->temperature,
                          j->uniform};
            int32_t t = -1;
            unsigned f = 0;
            if ((k + round) & 1) {
                memcpy(work, j->logits, TH_V * sizeof *work);
                if (hm_bias_dense(wk->ctx, work, 1, TH_V, TH_V, &row, NULL) !=
                        HM_OK ||
                    hm_select_dense(wk->ctx, work, 1, TH_V, TH_V, &row, &t,
                                    &f) != HM_OK)
                    wk->errors++;
            } else {
                hm_cands c = HM_CANDS_LLAMA(recs, TH_V);
                llama_from(recs, j->logits, TH_V);
                if (hm_bias_cands(wk->ctx, &c, &row, NULL) != HM_OK ||
                    hm_select_cands(wk->ctx, &c, &row, &t, NULL, &f) != HM_OK)
                    wk->errors++;
            }
            if (t != j->want || f != j->want_flags)
                wk->mismatches++;
            wk->done++;
        }
    }
    free(work);
    free(recs);
    return NULL;
}

START_TEST(test_threads_share_ctx)
{
    hm_key *key = test_key(17);
    uint64_t s = 0x6006;
    float *logits = xmalloc_floats((size_t)TH_JOBS * TH_V);
    float *work = xmalloc_floats(TH_V);
    job *jobs = calloc(TH_JOBS, sizeof *jobs);
    ck_assert_ptr_nonnull(jobs);
    for (size_t i = 0; i < TH_JOBS; i++) {
        fill_logits(logits + i * TH_V, TH_V, &s, (int)(i & 1));
        jobs[i].logits = logits + i * TH_V;
        jobs[i].n_context = (size_t)(test_rand(&s) % 9);
        fill_context(jobs[i].context, jobs[i].n_context, TH_V, &s);
        jobs[i].temperature = temps[i % N_TEMPS];
        jobs[i].uniform = test_uniform(&s);
    }
    for (size_t sp = 0; sp < N_SPECS; sp++) {
        hm_ctx *ctx = test_ctx(key, specs[sp]);
        /* single-threaded reference */
        for (size_t i = 0; i < TH_JOBS; i++) {
            hm_row row = {jobs[i].context, jobs[i].n_context, NULL,
                          jobs[i].temperature, jobs[i].uniform};
            expect e;
            run_dense(ctx, jobs[i].logits, TH_V, &row, work, &e);
            jobs[i].want = e.token;
            jobs[i].want_flags = e.flags;
        }
        static const unsigned strides[TH_THREADS] = {1, 3, 7, 199};
        pthread_t th[TH_THREADS];
        worker wk[TH_THREADS];
        for (unsigned t = 0; t < TH_THREADS; t++) {
            wk[t] = (worker){ctx, jobs, 7 * t + 1, strides[t], 0, 0, 0};
            ck_assert_int_eq(pthread_create(&th[t], NULL, worker_main, &wk[t]),
                             0);
        }
        for (unsigned t = 0; t < TH_THREADS; t++)
            ck_assert_int_eq(pthread_join(th[t], NULL), 0);
        for (unsigned t = 0; t < TH_THREADS; t++) {
            ck_assert_uint_eq(wk[t].errors, 0);
            ck_assert_uint_eq(wk[t].done, TH_ROUNDS * TH_JOBS);
            ck_assert_msg(wk[t].mismatches == 0,
                          "%s thread %u: %u results differ from the "
                          "single-threaded ones",
                          specs[sp], t, wk[t].mismatches);
        }
        hm_ctx_free(ctx);
    }
    free(logits);
    free(work);
    free(jobs);
    hm_key_free(key);
}
END_TEST

/* ------------------------------------------------------ 7. no malloc */

#if HOOK_MALLOC
START_TEST(test_hot_path_does_not_allocate)
{
    enum { V = 3000, R = 3, NRC = 4096 };
    static const char *const aspecs[] = {
        "gumbel", "tournament", "kgw", "kgw:h=1+gumbel:h=4",
        "kgw:seeding=selfhash+tournament", "tournament:topk=1024,m=64",
        "kgw:h=16,gamma=0.5+gumbel:h=16"};
    static const int32_t pattern[] = {3, 1, 4, 1, 5, 9, 2, 6};
    hm_key *key = test_key(18);
    uint64_t s = 0x7007;
    float *raw = xmalloc_floats((size_t)R * V);
    float *rows_l = xmalloc_floats((size_t)R * V);
    llama_rec *recs = malloc(V * sizeof *recs);
    int *rcs = malloc(NRC * sizeof *rcs);
    size_t sz = hm_seq_size(256);
    uint64_t *mem = malloc(sz), *mem2 = malloc(sz);
    ck_assert_ptr_nonnull(recs);
    ck_assert_ptr_nonnull(rcs);
    ck_assert_ptr_nonnull(mem);
    ck_assert_ptr_nonnull(mem2);
    fill_logits(raw, (size_t)R * V, &s, 0);

    for (size_t sp = 0; sp < sizeof aspecs / sizeof aspecs[0]; sp++) {
        hm_ctx *ctx = test_ctx(key, aspecs[sp]);
        unsigned nch = hm_ctx_channels(ctx);
        int32_t prompt[5] = {1, 2, 3, 4, 5}, hist[64] = {7, 8, 9};
        int32_t toks[R], tok;
        unsigned flags[R], f;
        size_t idx, k = 0;
        uint64_t x;
        double score;
        hm_seq *seq = NULL, *seq2 = NULL;
        memset(rcs, 0, NRC * sizeof *rcs);

        hook_start();
        rcs[k++] = hm_seq_init(&seq, mem, sz, ctx, 256);
        rcs[k++] = hm_seq_init(&seq2, mem2, sz, ctx, 256);
        rcs[k++] = hm_seq_reset(seq, prompt, 5);
        for (int step = 0; step < 20 && k + 64 < NRC; step++) {
            hm_row rows[R] = {
                {NULL, 0, seq, step % 5 == 4 ? 0.0f : 1.0f, 0.3},
                {hist, 3 + (size_t)step, NULL, 0.8f, 0.7},
                {hist, 3 + (size_t)step, seq2, 1.5f, 0.1},
            };
            memcpy(rows_l, raw, (size_t)R * V * sizeof *raw);
            rcs[k++] = hm_bias_dense(ctx, rows_l, R, V, V, rows, flags);
            rcs[k++] =
                hm_select_dense(ctx, rows_l, R, V, V, rows, toks, flags);
            llama_from(recs, raw, V);
            hm_cands c = HM_CANDS_LLAMA(recs, V);
            rcs[k++] = hm_bias_cands(ctx, &c, &rows[0], &f);
            rcs[k++] = hm_select_cands(ctx, &c, &rows[0], &tok, &idx, &f);
            hm_cands c2 = HM_CANDS_LLAMA(recs + 100, 50);
            rcs[k++] = hm_bias_cands(ctx, &c2, &rows[1], &f);
            rcs[k++] = hm_select_cands(ctx, &c2, &rows[1], &tok, &idx, &f);
            for (unsigned ch = 0; ch < nch; ch++) {
                rcs[k++] = hm_token_prf(ctx, ch, hist, 3 + (size_t)step,
                                        toks[0], &x);
                rcs[k++] = hm_token_score(ctx, ch, hist, 3 + (size_t)step,
                                          toks[1], &score);
            }
            /* repeating tokens: masked steps too */
            rcs[k++] = hm_seq_accept(seq, pattern[step % 8]);
            rcs[k++] = hm_seq_accept(seq2, toks[2]);
            rcs[k++] = hm_seq_copy(seq2, seq);
            hist[3 + step] = toks[1];
            /* error paths allocate nothing either */
            rcs[k++] = hm_select_dense(NULL, rows_l, R, V, V, rows, toks,
                                       flags) == HM_EINVAL
                           ? HM_OK
                           : -100;
            rcs[k++] = hm_seq_accept(seq, -1) == HM_ERANGE ? HM_OK : -100;
        }
        unsigned long n_alloc = hook_stop();
        ck_assert_uint_gt(k, 100);
        for (size_t i = 0; i < k; i++)
            ck_assert_msg(rcs[i] == HM_OK, "%s: call %zu returned %d",
                          aspecs[sp], i, rcs[i]);
        ck_assert_msg(n_alloc == 0,
                      "%s: %lu allocator calls on the hot path", aspecs[sp],
                      n_alloc);
        hm_ctx_free(ctx);
    }

    /* The counter works: allocations in the counted region are seen, from
     * the library and from here. */
    {
        hm_ctx *ctx = test_ctx(key, "gumbel");
        hm_seq *seq = NULL;
        void *(*volatile alloc)(size_t) = malloc;
        hook_start();
        int rc = hm_seq_new(&seq, ctx, 16);
        unsigned long n_lib = hook_stop();
        ck_assert_int_eq(rc, HM_OK);
        ck_assert_uint_ge(n_lib, 1);
        hook_start();
        hm_seq_free(seq);
        void *p = alloc(32);
        unsigned long n_here = hook_stop();
        ck_assert_uint_ge(n_here, 2);
        free(p);
        hm_ctx_free(ctx);
    }
    free(raw);
    free(rows_l);
    free(recs);
    free(rcs);
    free(mem);
    free(mem2);
    hm_key_free(key);
}
END_TEST
#endif

/* ------------------------------------------------------ 8. bad input */

START_TEST(test_bad_input)
{
    enum { V = 64 };
    hm_key *key = test_key(19);
    hm_ctx *ctx = test_ctx(key, "kgw:h=1+gumbel:h=4");
    uint64_t s = 0x8008;
    float l[V], l0[V];
    int32_t t, toks[2];
    unsigned f;
    size_t idx;
    llama_rec recs[V], recs0[V];
    int32_t good[] = {1, 2, 3, 4};
    hm_row row = {good, 4, NULL, 1.0f, 0.5};
    fill_logits(l0, V, &s, 0);
    memcpy(l, l0, sizeof l);
    llama_from(recs, l0, V);
    hm_cands c = HM_CANDS_LLAMA(recs, V);

    /* NULL pointers */
    ck_assert_int_eq(hm_bias_dense(NULL, l, 1, V, V, &row, NULL), HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(NULL, l, 1, V, V, &row, &t, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_bias_dense(ctx, NULL, 1, V, V, &row, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(ctx, NULL, 1, V, V, &row, &t, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, NULL, NULL), HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, NULL, &t, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &row, NULL, NULL),
                     HM_EINVAL);
    ck_assert_mem_eq(l, l0, sizeof l);
    /* no rows at all: nothing to do, nothing read */
    int rc0 = hm_select_dense(ctx, NULL, 0, V, V, NULL, NULL, NULL);
    ck_assert(rc0 == HM_OK || rc0 == HM_EINVAL);
    rc0 = hm_bias_dense(ctx, NULL, 0, V, V, NULL, NULL);
    ck_assert(rc0 == HM_OK || rc0 == HM_EINVAL);

    /* sizes */
    ck_assert_int_eq(hm_bias_dense(ctx, l, 1, 0, V, &row, NULL), HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(ctx, l, 1, 0, V, &row, &t, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_bias_dense(ctx, l, 2, V, V - 1, &row, NULL),
                     HM_EINVAL);
    ck_assert_int_eq(hm_select_dense(ctx, l, 2, V, V - 1, &row, &t, NULL),
                     HM_EINVAL);
    {
        size_t huge = (size_t)INT32_MAX + 1;
        int rc = hm_select_dense(ctx, l, 1, huge, huge, &row, &t, NULL);
        ck_assert(rc == HM_ERANGE || rc == HM_EINVAL);
        rc = hm_bias_dense(ctx, l, 1, huge, huge, &row, NULL);
        ck_assert(rc == HM_ERANGE || rc == HM_EINVAL);
    }
    ck_assert_mem_eq(l, l0, sizeof l);

    /* contexts */
    {
        hm_row r = {NULL, 3, NULL, 1.0f, 0.5};
        ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &r, NULL), HM_EINVAL);
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                         HM_EINVAL);
        ck_assert_int_eq(hm_select_cands(ctx, &c, &r, &t, NULL, NULL),
                         HM_EINVAL);
        int32_t neg[] = {1, 2, 3, -4};
        r.context = neg;
        r.n_context = 4;
        ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &r, NULL), HM_ERANGE);
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                         HM_ERANGE);
        ck_assert_int_eq(hm_bias_cands(ctx, &c, &r, NULL), HM_ERANGE);
        ck_assert_int_eq(hm_select_cands(ctx, &c, &r, &t, NULL, NULL),
                         HM_ERANGE);
        r.temperature = 0; /* greedy still reads the context */
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                         HM_ERANGE);
        /* a negative id in a gumbel window (h=4) but not in kgw's (h=1):
         * bias is fine, select is not */
        int32_t neg2[] = {1, -2, 3, 4};
        hm_row r2 = {neg2, 4, NULL, 1.0f, 0.5};
        memcpy(l, l0, sizeof l);
        ck_assert_int_eq(hm_bias_dense(ctx, l, 1, V, V, &r2, NULL), HM_OK);
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r2, &t, NULL),
                         HM_ERANGE);
        /* older than every window: never read */
        int32_t neg3[] = {-1, 1, 2, 3, 4};
        hm_row r3 = {neg3, 5, NULL, 1.0f, 0.5};
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r3, &t, NULL),
                         HM_OK);
        memcpy(l, l0, sizeof l);
    }

    /* sequence state calls */
    {
        hm_seq *seq = NULL;
        int32_t bad_prompt[] = {1, -1};
        ck_assert_int_eq(hm_seq_new(&seq, ctx, 16), HM_OK);
        ck_assert_int_eq(hm_seq_new(NULL, ctx, 16), HM_EINVAL);
        hm_seq *none = NULL;
        ck_assert_int_eq(hm_seq_new(&none, NULL, 16), HM_EINVAL);
        ck_assert_ptr_null(none);
        ck_assert_int_eq(hm_seq_reset(seq, good, 4), HM_OK);
        hm_row rs = {NULL, 0, seq, 1.0f, 0.5};
        int32_t before, after;
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &rs, &before, NULL),
                         HM_OK);
        ck_assert_int_eq(hm_seq_accept(seq, -5), HM_ERANGE);
        ck_assert_int_eq(hm_seq_accept(NULL, 5), HM_EINVAL);
        ck_assert_int_eq(hm_seq_reset(seq, NULL, 2), HM_EINVAL);
        ck_assert_int_eq(hm_seq_reset(NULL, NULL, 0), HM_EINVAL);
        ck_assert_int_eq(hm_seq_reset(seq, bad_prompt, 2), HM_ERANGE);
        /* the failed calls left the state as it was */
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &rs, &after, NULL),
                         HM_OK);
        ck_assert_int_eq(after, before);
        hm_seq_free(seq);
        hm_seq_free(NULL);
    }

    /* temperature and uniform */
    {
        static const float bad_t[] = {-1.0f, -1e-30f, NAN, INFINITY,
                                      -INFINITY};
        static const double bad_u[] = {-0.1, -1e-300, 1.0, 1.5, NAN,
                                       INFINITY, -INFINITY};
        for (size_t i = 0; i < sizeof bad_t / sizeof bad_t[0]; i++) {
            hm_row r = {good, 4, NULL, bad_t[i], 0.5};
            ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_select_cands(ctx, &c, &r, &t, NULL, NULL),
                             HM_EINVAL);
        }
        for (size_t i = 0; i < sizeof bad_u / sizeof bad_u[0]; i++) {
            hm_row r = {good, 4, NULL, 1.0f, bad_u[i]};
            ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                             HM_EINVAL);
            ck_assert_int_eq(hm_select_cands(ctx, &c, &r, &t, NULL, NULL),
                             HM_EINVAL);
        }
        /* one bad row fails the whole batch */
        hm_row rr[2] = {{good, 4, NULL, 1.0f, 0.5}, {good, 4, NULL, NAN, 0.5}};
        float l2[2 * V];
        memcpy(l2, l0, sizeof l0);
        memcpy(l2 + V, l0, sizeof l0);
        ck_assert_int_eq(hm_select_dense(ctx, l2, 2, V, V, rr, toks, NULL),
                         HM_EINVAL);
        /* edges that are valid */
        hm_row r = {good, 4, NULL, 1.0f, 0.0};
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                         HM_OK);
        r.uniform = nextafter(1.0, 0.0);
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, NULL),
                         HM_OK);
        r.temperature = 1e-30f; /* tiny: behaves as greedy or near it */
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, &f), HM_OK);
        ck_assert_int_eq(t, (int32_t)argmax(l, V));
        r.temperature = 1e30f; /* huge: still a valid token */
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, V, V, &r, &t, &f), HM_OK);
        ck_assert(t >= 0 && t < V);
    }

    /* candidate descriptors */
    {
        hm_cands bad = c;
        memcpy(recs0, recs, sizeof recs);
        ck_assert_int_eq(hm_select_cands(NULL, &c, &row, &t, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_select_cands(ctx, NULL, &row, &t, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_select_cands(ctx, &c, NULL, &t, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_select_cands(ctx, &c, &row, NULL, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_bias_cands(NULL, &c, &row, &f), HM_EINVAL);
        ck_assert_int_eq(hm_bias_cands(ctx, NULL, &row, &f), HM_EINVAL);
        ck_assert_int_eq(hm_bias_cands(ctx, &c, NULL, &f), HM_EINVAL);
        bad.data = NULL;
        ck_assert_int_eq(hm_select_cands(ctx, &bad, &row, &t, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_bias_cands(ctx, &bad, &row, &f), HM_EINVAL);
        bad = c;
        bad.n = 0;
        ck_assert_int_eq(hm_select_cands(ctx, &bad, &row, &t, &idx, &f),
                         HM_EINVAL);
        ck_assert_int_eq(hm_bias_cands(ctx, &bad, &row, &f), HM_EINVAL);
        static const size_t strides[] = {0, 4, 7};
        for (size_t i = 0; i < 3; i++) {
            bad = c;
            bad.stride = strides[i];
            ck_assert_int_eq(hm_select_cands(ctx, &bad, &row, &t, &idx, &f),
                             HM_EINVAL);
            ck_assert_int_eq(hm_bias_cands(ctx, &bad, &row, &f), HM_EINVAL);
        }
        bad = c;
        bad.id_offset = 9; /* id would overlap the next record */
        ck_assert_int_eq(hm_select_cands(ctx, &bad, &row, &t, &idx, &f),
                         HM_EINVAL);
        bad = c;
        bad.logit_offset = 12;
        ck_assert_int_eq(hm_bias_cands(ctx, &bad, &row, &f), HM_EINVAL);
        ck_assert_mem_eq(recs, recs0, sizeof recs);
        /* a negative candidate id: refused before anything is written */
        recs[V - 1].id = -3;
        memcpy(recs0, recs, sizeof recs);
        ck_assert_int_eq(hm_bias_cands(ctx, &c, &row, &f), HM_ERANGE);
        ck_assert_mem_eq(recs, recs0, sizeof recs);
        ck_assert_int_eq(hm_select_cands(ctx, &c, &row, &t, &idx, &f),
                         HM_ERANGE);
        recs[V - 1].id = V - 1;
    }

    /* rows without a finite logit; rows with exactly one */
    for (size_t sp = 0; sp < N_SPECS; sp++) {
        hm_ctx *cx = test_ctx(key, specs[sp]);
        for (size_t ti = 0; ti < N_TEMPS; ti++) {
            hm_row r = {good, 4, NULL, temps[ti], 0.5};
            float inf[V];
            llama_rec ri[V];
            for (size_t i = 0; i < V; i++)
                inf[i] = -INFINITY;
            llama_from(ri, inf, V);
            hm_cands ci = HM_CANDS_LLAMA(ri, V);
            ck_assert_int_eq(hm_bias_dense(cx, inf, 1, V, V, &r, NULL), HM_OK);
            ck_assert_int_eq(hm_bias_cands(cx, &ci, &r, NULL), HM_OK);
            size_t finite = 0;
            for (size_t i = 0; i < V; i++)
                finite += inf[i] != -INFINITY || ri[i].logit != -INFINITY;
            ck_assert_uint_eq(finite, 0);
            ck_assert_msg(hm_select_dense(cx, inf, 1, V, V, &r, &t, NULL) ==
                              HM_EINVAL,
                          "%s T=%g: all -inf row", specs[sp],
                          (double)temps[ti]);
            ck_assert_int_eq(hm_select_cands(cx, &ci, &r, &t, &idx, NULL),
                             HM_EINVAL);
            /* a batch with such a row fails */
            float two[2 * V];
            memcpy(two, l0, sizeof l0);
            memcpy(two + V, inf, sizeof inf);
            hm_row rr[2] = {r, r};
            ck_assert_int_eq(
                hm_select_dense(cx, two, 2, V, V, rr, toks, NULL), HM_EINVAL);
            /* one finite logit: always that token */
            inf[37] = -50.0f;
            ri[5].id = 37;
            ri[5].logit = -50.0f;
            ri[37].id = 5;
            ck_assert_int_eq(hm_select_dense(cx, inf, 1, V, V, &r, &t, NULL),
                             HM_OK);
            ck_assert_int_eq(t, 37);
            ck_assert_int_eq(hm_select_cands(cx, &ci, &r, &t, &idx, NULL),
                             HM_OK);
            ck_assert_int_eq(t, 37);
            ck_assert_uint_eq(idx, 5);
            hm_cands one = HM_CANDS_LLAMA(ri + 5, 1);
            ck_assert_int_eq(hm_select_cands(cx, &one, &r, &t, &idx, NULL),
                             HM_OK);
            ck_assert_int_eq(t, 37);
            ck_assert_uint_eq(idx, 0);
        }
        hm_ctx_free(cx);
    }

    /* tuple values */
    {
        uint64_t x;
        double sc;
        ck_assert_int_eq(hm_token_prf(ctx, 0, good, 4, 5, &x), HM_OK);
        ck_assert_int_eq(hm_token_prf(ctx, 1, good, 4, 5, &x), HM_OK);
        ck_assert_int_eq(hm_token_prf(ctx, 2, good, 4, 5, &x), HM_EINVAL);
        ck_assert_int_eq(hm_token_prf(ctx, UINT_MAX, good, 4, 5, &x),
                         HM_EINVAL);
        ck_assert_int_eq(hm_token_prf(NULL, 0, good, 4, 5, &x), HM_EINVAL);
        ck_assert_int_eq(hm_token_prf(ctx, 0, good, 4, 5, NULL), HM_EINVAL);
        ck_assert_int_eq(hm_token_prf(ctx, 0, NULL, 4, 5, &x), HM_EINVAL);
        ck_assert_int_eq(hm_token_prf(ctx, 0, NULL, 0, 5, &x), HM_OK);
        ck_assert_int_eq(hm_token_prf(ctx, 0, good, 4, -5, &x), HM_ERANGE);
        int32_t neg[] = {1, 2, 3, -4};
        ck_assert_int_eq(hm_token_prf(ctx, 0, neg, 4, 5, &x), HM_ERANGE);
        ck_assert_int_eq(hm_token_score(ctx, 2, good, 4, 5, &sc), HM_EINVAL);
        ck_assert_int_eq(hm_token_score(ctx, 0, good, 4, 5, NULL), HM_EINVAL);
        ck_assert_int_eq(hm_token_score(NULL, 0, good, 4, 5, &sc),
                         HM_EINVAL);
        ck_assert_int_eq(hm_token_score(ctx, 1, good, 4, -1, &sc),
                         HM_ERANGE);
    }

    /* every error code has a message */
    for (int code = HM_OK; code >= HM_ENOTSUP; code--) {
        const char *m = hm_strerror(code);
        ck_assert_ptr_nonnull(m);
        ck_assert_uint_gt(strlen(m), 0);
        for (int other = HM_OK; other > code; other--)
            ck_assert_str_ne(m, hm_strerror(other));
    }
    static const int unknown[] = {1, -10, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *m = hm_strerror(unknown[i]);
        ck_assert_ptr_nonnull(m);
        ck_assert_uint_gt(strlen(m), 0);
        ck_assert_str_ne(m, hm_strerror(HM_OK));
    }

    hm_ctx_free(ctx);
    hm_key_free(key);
}
END_TEST

/* Offsets near SIZE_MAX must not wrap the bounds check of a descriptor
 * (they once did, and the records were read out of bounds). */
START_TEST(test_cands_offset_overflow)
{
    hm_key *key = test_key(20);
    hm_ctx *ctx = test_ctx(key, "gumbel");
    llama_rec recs[4] = {{0, 1, 0}, {1, 2, 0}, {2, 3, 0}, {3, 4, 0}};
    hm_row row = {NULL, 0, NULL, 1.0f, 0.5};
    int32_t t;
    hm_cands c = HM_CANDS_LLAMA(recs, 4);
    c.id_offset = SIZE_MAX - 2;
    ck_assert_int_eq(hm_select_cands(ctx, &c, &row, &t, NULL, NULL),
                     HM_EINVAL);
    c = (hm_cands)HM_CANDS_LLAMA(recs, 4);
    c.logit_offset = SIZE_MAX - 2;
    ck_assert_int_eq(hm_bias_cands(ctx, &c, &row, NULL), HM_EINVAL);
    hm_ctx_free(ctx);
    hm_key_free(key);
}
END_TEST

/* A tiny temperature is greedy: logit/T would overflow to +inf for every
 * large logit and a tie at +inf would pick the wrong token. */
START_TEST(test_tiny_temperature)
{
    static const char *const tspecs[] = {"gumbel", "kgw", "tournament"};
    hm_key *key = test_key(23);
    float l[4] = {50.0f, 100.0f, 20.0f, -5.0f};
    for (size_t sp = 0; sp < 3; sp++) {
        hm_ctx *ctx = test_ctx(key, tspecs[sp]);
        hm_row row = {NULL, 0, NULL, 1e-37f, 0.5};
        int32_t t = -1;
        ck_assert_int_eq(hm_select_dense(ctx, l, 1, 4, 4, &row, &t, NULL),
                         HM_OK);
        ck_assert_msg(t == 1, "%s at T=1e-37 chose %d, not the argmax 1",
                      tspecs[sp], (int)t);
        hm_ctx_free(ctx);
    }
    hm_key_free(key);
}
END_TEST

/* ---------------------------------------------- 9. a large vocabulary */

START_TEST(test_large_vocab)
{
    const size_t V = 200064;
    static const char *const lspecs[] = {"gumbel", "tournament",
                                         "kgw:h=1+gumbel:h=4"};
    hm_key *key = test_key(21);
    uint64_t s = 0x9009;
    float *raw = xmalloc_floats(V), *work = xmalloc_floats(V);
    llama_rec *recs = malloc(V * sizeof *recs);
    int32_t context[] = {199999, 200063, 0, 100000, 7};
    ck_assert_ptr_nonnull(recs);
    for (size_t sp = 0; sp < 3; sp++) {
        hm_ctx *ctx = test_ctx(key, lspecs[sp]);
        for (int k = 0; k < 2; k++) {
            expect e;
            hm_row row = {context, 5, NULL, k ? 0.8f : 1.0f,
                          test_uniform(&s)};
            fill_logits(raw, V, &s, k);
            run_dense(ctx, raw, V, &row, work, &e);
            ck_assert_uint_eq(e.flags, HM_STEP_WATERMARKED);
            llama_from(recs, raw, V);
            shuffle(recs, V, sizeof *recs, &s);
            hm_cands c = HM_CANDS_LLAMA(recs, V);
            check_cands(ctx, &c, &row, &e, lspecs[sp]);
        }
        hm_ctx_free(ctx);
    }
    free(raw);
    free(work);
    free(recs);
    hm_key_free(key);
}
END_TEST

static Suite *hotpath_suite(void)
{
    Suite *s = suite_create("hotpath");
    TCase *tc = tcase_create("paths");
    tcase_add_test(tc, test_dense_matches_cands);
    tcase_add_test(tc, test_gumbel_race_exact);
    tcase_add_test(tc, test_batch_and_stride);
    tcase_add_test(tc, test_explicit_vs_tracked);
    tcase_add_test(tc, test_large_vocab);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("state");
    tcase_add_test(tc, test_masking_sampler);
    tcase_add_test(tc, test_masking_bias);
    tcase_add_test(tc, test_seq_memory_and_copy);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_test(tc, test_threads_share_ctx);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("noalloc");
#if HOOK_MALLOC
    tcase_add_test(tc, test_hot_path_does_not_allocate);
#else
    fputs("hotpath: no-allocation test skipped (AddressSanitizer owns "
          "malloc)\n",
          stderr);
#endif
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_cands_offset_overflow);
    tcase_add_test(tc, test_tiny_temperature);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(hotpath_suite());
}
