/*
 * evallib.h - the pieces of the distillation experiment (issue 5) that
 * hm-eval drives and that a small in-process demo can reuse: a seeded
 * random stream, a host's sampling loop over an n-gram model served
 * through libhallmark's public API, exact binomial confidence intervals,
 * per-document false-positive tallies and diversity counts.  Evaluation
 * code, not part of libhallmark.
 */
#ifndef HM_EVAL_EVALLIB_H
#define HM_EVAL_EVALLIB_H

#include <stddef.h>
#include <stdint.h>

#include "hallmark.h"
#include "ngram.h"

/* ------------------------------------------------------------ randomness */

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, every seed good.
 * The experiment derives one stream per (purpose, index) with ev_seed. */
typedef struct ev_rng {
    uint64_t s;
} ev_rng;

uint64_t ev_next(ev_rng *r);
/* A uniform double in [0, 1) with 53 random bits. */
double ev_uniform(ev_rng *r);
/* A uniform integer in [0, n), n >= 1 (rejection: no modulo bias). */
uint64_t ev_below(ev_rng *r, uint64_t n);
/* A stream seed from a base seed, a purpose tag and an index. */
uint64_t ev_seed(uint64_t base, const char *tag, uint64_t index);
/* Fisher-Yates shuffle of n indices. */
void ev_shuffle(ev_rng *r, size_t *idx, size_t n);

/* --------------------------------------------------------------- serving */

/* The host's sampling settings.  top_k 0 keeps the whole vocabulary. */
typedef struct ev_sampling {
    float temperature;
    unsigned top_k;
} ev_sampling;

/* What serving one response did (flags of every step, summed). */
typedef struct ev_stepstats {
    uint64_t steps;
    uint64_t watermarked; /* HM_STEP_WATERMARKED */
    uint64_t biased;      /* HM_STEP_BIASED */
    uint64_t masked;      /* HM_STEP_MASKED */
} ev_stepstats;

/* Scratch memory of one serving thread: a logit row, the top-k heap, the
 * context buffer and an hm_seq arena.  Made for one model; each request
 * names its own ctx (one per tenant, say).  One thread at a time. */
typedef struct ev_server ev_server;

ev_server *ev_server_new(const ng_model *m, const ev_sampling *s,
                         size_t max_tokens);
void ev_server_free(ev_server *sv);

/* Generate n tokens after prompt[0..n_prompt) into out, as a host serves a
 * request under ctx (NULL: unwatermarked): the model's full log-probability row, every kgw channel's bias
 * (hm_bias_dense), the top-k truncation (other logits -INFINITY), then
 * hm_select_dense with the request's temperature, one fresh uniform per
 * step from a stream seeded with seed, and hm_seq_accept.  Without a ctx
 * the host samples itself: softmax(logits / T) over the top k by inverse
 * CDF with the same uniform.  n_prompt + n must not exceed the
 * max_tokens given to ev_server_new.  0, or an HM_* error code. */
int ev_generate(ev_server *sv, const hm_ctx *ctx, const int32_t *prompt,
                size_t n_prompt,
                size_t n, uint64_t seed, int32_t *out,
                ev_stepstats *st);

/* The same loop over a batch, as a batched server (vLLM-style) runs it:
 * up to max_rows requests in lock-step, one dense row each in one
 * contiguous block per step, every row with its explicit context and its
 * own hm_seq, one hm_bias_dense and one hm_select_dense call per step for
 * the whole block; a finished request's slot takes the next one.  All
 * requests of a call share ctx.  Request i gets n_out[i] tokens in outs[i]
 * and st[i] (may be NULL): exactly what ev_generate gives it with the same
 * seed.  One thread at a time per batcher. */
typedef struct ev_batcher ev_batcher;

ev_batcher *ev_batcher_new(const ng_model *m, const ev_sampling *s,
                           size_t max_tokens, size_t max_rows);
void ev_batcher_free(ev_batcher *b);
int ev_generate_batch(ev_batcher *b, const hm_ctx *ctx, size_t n,
                      const int32_t *const *prompts, const size_t *n_prompts,
                      const size_t *n_out, const uint64_t *seeds,
                      int32_t *const *outs, ev_stepstats *st);

/* ------------------------------------------------------------ requests */

/* fn(arg, i, worker) for i in [0, n) on up to threads threads (at most
 * 64; the caller's thread is one of them); worker in [0, threads) names
 * the calling thread's scratch memory.  Every i runs even when threads
 * cannot be started: the others take their share. */
typedef void (*ev_job_fn)(void *arg, size_t i, int worker);
void ev_parallel_for(size_t n, int threads, ev_job_fn fn, void *arg);

/* A set of requests and their responses: request i has its prompt (ids
 * and text, both borrowed), the number of tokens to generate, its ctx
 * (NULL: unwatermarked; borrowed) and its seed; ev_serve fills resp[i]
 * (owned) and st[i]. */
typedef struct ev_requests {
    size_t n;
    const int32_t **prompt;
    size_t *n_prompt;
    const char **prompt_text;
    int32_t **resp;
    size_t *n_resp;
    const hm_ctx **ctx;
    uint64_t *seed;
    ev_stepstats *st;
} ev_requests;

/* 0, or -1 on no memory (then *r is empty). */
int ev_requests_init(ev_requests *r, size_t n);
void ev_requests_free(ev_requests *r);
uint64_t ev_requests_tokens(const ev_requests *r);
ev_stepstats ev_requests_stats(const ev_requests *r);

/* Serve every request of r from model m as a batched host does:
 * consecutive requests with the same ctx go through ev_generate_batch in
 * lock-step blocks of EV_SERVE_ROWS rows, on threads threads.  The tokens
 * are those of serving each request alone.  HM_OK or an HM_* code. */
#define EV_SERVE_ROWS 8
int ev_serve(const ng_model *m, const ev_sampling *s, ev_requests *r,
             int threads);

/* A model of the given order over vocab ids, trained on the documents
 * docs->d[idx[i]] (i < n_idx; docs may be NULL when n_idx is 0) and on
 * the conversations pick[k] (k < n_pick) of r, each its prompt and
 * response as one document, as a student learns served responses.  NULL
 * with a message in err on failure. */
struct ev_docs;
ng_model *ev_train(int order, int32_t vocab, const struct ev_docs *docs,
                   const size_t *idx, size_t n_idx, const ev_requests *r,
                   const size_t *pick, size_t n_pick, char *err,
                   size_t errlen);

/* Every request of r as a JSON Lines record {"prompt_tokens": [...],
 * "tokens": [...], "id": i} (what a provider logs), or as {"prompt": ...,
 * "text": ..., "id": i} with the response decoded by tok (what a suspect's
 * API returns; invalid UTF-8 becomes U+FFFD).  The file is written
 * atomically.  0, or -1 with a message in err. */
int ev_write_tokens_jsonl(const char *path, const ev_requests *r, char *err,
                          size_t errlen);
int ev_write_text_jsonl(const char *path, const ev_requests *r,
                        const hm_tokenizer *tok, char *err, size_t errlen);

/* ------------------------------------------------------------ statistics */

/* Exact (Clopper-Pearson) two-sided confidence interval of level conf
 * (e.g. 0.99) for a binomial proportion with x successes in n trials:
 * each tail has probability (1-conf)/2.  lo = 0 when x = 0, hi = 1 when
 * x = n.  0, or -1 for x > n, n = 0 or conf outside (0, 1). */
int ev_clopper_pearson(uint64_t x, uint64_t n, double conf, double *lo,
                       double *hi);

/* Per-document false-positive counts: each document tested on its own
 * (fresh dedup) under every key of a batch of never-deployed keys, one
 * channel; counts[a] += the number of (document, key) pairs with
 * log10 p <= log10_alpha[a], and expected[a] += the exact probability of
 * that under the null hypothesis for the pair's number of scored tuples
 * (ev_null_rate): alpha for gumbel, less for the discrete binomial tests
 * of kgw and tournament.  ctxs are n_keys contexts of one spec (e.g. from
 * hm_key_from_label).  min_log10_p is lowered to the smallest log10 p
 * seen (start it at 0).  0, or an HM_* error code. */
typedef struct ev_fpr {
    size_t n_alpha;    /* at most 8 */
    const double *log10_alpha;
    uint64_t *counts;  /* n_alpha entries */
    double *expected;  /* n_alpha entries */
    uint64_t trials;   /* (document, key) pairs tested */
    uint64_t empty;    /* ... of which had no scored tuple (p = 1) */
    uint64_t scored;   /* tuples scored, over all keys */
    double min_log10_p;
    /* memo of ev_null_rate for the last number of tuples */
    uint64_t memo_n;
    double memo_rate[8];
} ev_fpr;

/* P[p <= alpha] under the null hypothesis for a test of channel of ctx
 * over n scored tuples: 0 for n = 0; alpha for gumbel (a continuous
 * test); for kgw P[Bin(n, green) >= k*] and for tournament
 * P[Bin(n m, 1/2) >= k*], k* the smallest count whose p-value is <=
 * alpha (0 when there is none).  NAN on a bad channel. */
double ev_null_rate(const hm_ctx *ctx, unsigned channel, uint64_t n,
                    double log10_alpha);

int ev_fpr_document(ev_fpr *f, const hm_ctx *const *ctxs, size_t n_keys,
                    unsigned channel, const int32_t *tokens, size_t n);

/* Distinct n-grams (n <= 8) over a set of token sequences: distinct
 * n-grams within the sequences (never across their boundaries) divided by
 * all n-grams; *total receives the number of n-grams.  NAN with none. */
double ev_distinct(const int32_t *const *seqs, const size_t *lens,
                   size_t n_seqs, int n, uint64_t *total);

/* Per-token perplexity of responses under a model, each response scored
 * after its prompt: exp(-sum ln P(resp_i | prompt, resp_<i) / tokens). */
double ev_perplexity(const ng_model *m, const int32_t *const *prompts,
                     const size_t *n_prompts, const int32_t *const *resps,
                     const size_t *n_resps, size_t n);

#endif
