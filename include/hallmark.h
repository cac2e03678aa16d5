/*
 * hallmark.h - keyed watermarks for served language-model outputs.
 *
 * This is the only public header of libhallmark.  Everything it declares
 * starts with hm_ or HM_.  See libhallmark(3) for an overview and
 * hallmark-prf(7) for the pseudo-random function every value here is built
 * on.
 *
 * Threading contract:
 *   - hm_key and hm_ctx are immutable after creation; one of each may be
 *     used from any number of threads at once.
 *   - hm_seq is per-sequence state: one thread at a time.
 *   - The hot-path calls (hm_bias_*, hm_select_*, hm_seq_accept) allocate
 *     no memory, take no locks and log nothing.
 *
 * Copyright 2026 the hallmark authors.  Licensed under the Apache License,
 * Version 2.0; see COPYING.
 */
#ifndef HALLMARK_H
#define HALLMARK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HM_BUILDING_LIBRARY) && defined(__GNUC__)
#define HM_EXPORT __attribute__((visibility("default")))
#else
#define HM_EXPORT
#endif

#if defined(__GNUC__)
#define HM_WUR __attribute__((warn_unused_result))
#else
#define HM_WUR
#endif

/* ---------------------------------------------------------------- version */

#define HM_VERSION_MAJOR 0
#define HM_VERSION_MINOR 1
#define HM_VERSION_RELEASE 0
#define HM_VERSION_NUMBER \
    (HM_VERSION_MAJOR * 10000 + HM_VERSION_MINOR * 100 + HM_VERSION_RELEASE)
#define HM_VERSION_STRING "0.1.0"

/* Version of the PRF specification implemented (hallmark-prf(7)). */
#define HM_PRF_VERSION 1

HM_EXPORT unsigned hm_version_number(void);
HM_EXPORT const char *hm_version_string(void);
HM_EXPORT unsigned hm_prf_version(void);

/* ----------------------------------------------------------------- errors */

/* Every function that can fail returns HM_OK (0) or one of these. */
#define HM_OK 0
#define HM_EINVAL (-1)   /* invalid argument */
#define HM_ENOMEM (-2)   /* out of memory */
#define HM_EIO (-3)      /* I/O error; errno has the detail */
#define HM_EFORMAT (-4)  /* malformed key file or parameter string */
#define HM_EPERM (-5)    /* key file has group or other permissions */
#define HM_EEXIST (-6)   /* output file exists and overwrite was not asked */
#define HM_ECRYPTO (-7)  /* the crypto library failed */
#define HM_ERANGE (-8)   /* token id, size or parameter out of range */
#define HM_ENOTSUP (-9)  /* not possible on this object (e.g. adding to a
                            loaded or filtered tally) */

/* A static string describing code; never NULL. */
HM_EXPORT const char *hm_strerror(int code);

/* Size of the optional message buffers taken by setup functions.  Any size
 * works; messages longer than the buffer are truncated. */
#define HM_ERRMSG_SIZE 256

/* ------------------------------------------------------------------- keys */

/* A master key: 32 secret bytes.  Opaque; wiped when freed. */
typedef struct hm_key hm_key;

#define HM_KEY_BYTES 32
HM_EXPORT size_t hm_key_bytes(void);

/* Length of a fingerprint string including its terminating NUL:
 * "hmk1-" followed by 32 lower-case hex digits. */
#define HM_FINGERPRINT_SIZE 38

/* Flags for hm_key_save. */
#define HM_KEY_SAVE_FORCE 0x1u /* replace an existing file (atomically) */

/* A fresh random key from the operating system's CSPRNG. */
HM_EXPORT HM_WUR int hm_key_generate(hm_key **key);

/* A key from HM_KEY_BYTES bytes (test vectors, key escrow). */
HM_EXPORT HM_WUR int hm_key_from_bytes(hm_key **key,
                                       const unsigned char *bytes,
                                       size_t len);

/* Load a key file.  Refuses files with any permission bit for group or
 * others (HM_EPERM) and malformed files (HM_EFORMAT); on failure a message naming
 * the file, the line and the problem goes to errmsg when it is not NULL.
 * The key material is never written to errmsg. */
HM_EXPORT HM_WUR int hm_key_load(hm_key **key, const char *path,
                                 char *errmsg, size_t errlen);

/* Write a key file with mode 0600.  Refuses to replace an existing file
 * (HM_EEXIST) unless flags has HM_KEY_SAVE_FORCE; the file appears
 * complete or not at all. */
HM_EXPORT HM_WUR int hm_key_save(const hm_key *key, const char *path,
                                 unsigned flags, char *errmsg, size_t errlen);

/* The key's public fingerprint, a one-way function of the key that names it
 * in reports.  out must hold HM_FINGERPRINT_SIZE bytes. */
HM_EXPORT HM_WUR int hm_key_fingerprint(const hm_key *key, char *out,
                                        size_t outlen);

/* Wipe and free.  hm_key_free(NULL) does nothing. */
HM_EXPORT void hm_key_free(hm_key *key);

/* ------------------------------------------------------- schemes, context */

#define HM_SCHEME_GUMBEL 1     /* Aaronson / Gumbel-max sampling */
#define HM_SCHEME_KGW 2        /* green-list logit bias */
#define HM_SCHEME_TOURNAMENT 3 /* SynthID-style tournament sampling */

#define HM_SEEDING_LEFTHASH 0
#define HM_SEEDING_SELFHASH 1

#define HM_MAX_CHANNELS 4
#define HM_MAX_CONTEXT 16     /* largest context width h */
#define HM_MAX_TOPK 1024      /* largest tournament candidate set */

/* A shared watermarking context: the subkeys of one tenant for every
 * channel named in spec, and the channels' parameters.  Immutable and
 * thread-safe once created.
 *
 * spec names one or more channels joined by '+', each
 *     SCHEME[:NAME=VALUE[,NAME=VALUE...]]
 * for example "gumbel", "kgw:gamma=0.25,delta=2,h=1" or
 * "kgw:h=1+gumbel:h=4".  See hm_ctx_new(3) for every parameter and its
 * default.  tenant selects the per-tenant subkeys (NULL or "" is the
 * default tenant).  On failure a message goes to errmsg when not NULL. */
typedef struct hm_ctx hm_ctx;

HM_EXPORT HM_WUR int hm_ctx_new(hm_ctx **ctx, const hm_key *key,
                                const char *spec, const char *tenant,
                                char *errmsg, size_t errlen);
HM_EXPORT void hm_ctx_free(hm_ctx *ctx);

/* The canonical parameter string (every parameter spelled out), as reports
 * record it.  Returns the length it needs, excluding the NUL; writes at
 * most len bytes including the NUL. */
HM_EXPORT size_t hm_ctx_spec(const hm_ctx *ctx, char *buf, size_t len);

HM_EXPORT unsigned hm_ctx_channels(const hm_ctx *ctx);
/* Scheme of a channel (HM_SCHEME_*), or 0 when channel is out of range. */
HM_EXPORT int hm_ctx_channel_scheme(const hm_ctx *ctx, unsigned channel);
/* Number of preceding tokens the channel's PRF reads. */
HM_EXPORT unsigned hm_ctx_channel_window(const hm_ctx *ctx, unsigned channel);

/* A numeric parameter of a channel by name: "h", "window", "gamma",
 * "delta", "m", "topk", "seeding" (HM_SEEDING_*) or "green" (the exact
 * probability that a token is green, for kgw).  HM_EINVAL when the scheme
 * has no such parameter. */
HM_EXPORT HM_WUR int hm_ctx_channel_param(const hm_ctx *ctx, unsigned channel,
                                          const char *name, double *value);

/* ------------------------------------------------- per-sequence state */

/* Per-sequence state: the last tokens of the sequence and a bounded
 * history of context windows already watermarked (generation-time
 * masking).  Owned by the caller, used by one thread at a time. */
typedef struct hm_seq hm_seq;

/* Default number of remembered windows. */
#define HM_SEQ_HISTORY_DEFAULT 1024

/* Bytes needed for a state remembering history windows (0 disables
 * masking; the table is rounded up to a power of two).  0 when history
 * exceeds 2^24.  The memory must be aligned for uint64_t. */
HM_EXPORT size_t hm_seq_size(size_t history);

/* Initialise a state in caller memory; no allocation.  Such a state is
 * the caller's: never pass it to hm_seq_free. */
HM_EXPORT HM_WUR int hm_seq_init(hm_seq **seq, void *mem, size_t size,
                                 const hm_ctx *ctx, size_t history);

/* Convenience: allocate and initialise; free with hm_seq_free. */
HM_EXPORT HM_WUR int hm_seq_new(hm_seq **seq, const hm_ctx *ctx,
                                size_t history);
HM_EXPORT void hm_seq_free(hm_seq *seq);

/* Forget everything and start a new sequence after prompt (may be NULL
 * with n == 0).  Prompt windows are context, never masked. */
HM_EXPORT HM_WUR int hm_seq_reset(hm_seq *seq, const int32_t *prompt,
                                  size_t n);

/* Record that token was emitted: remembers the current windows and
 * appends token.  Call once per generated token. */
HM_EXPORT HM_WUR int hm_seq_accept(hm_seq *seq, int32_t token);

/* Copy src into dst (a state made with the same ctx and a history table
 * no smaller than src's after rounding).  For beams and speculative
 * drafts. */
HM_EXPORT HM_WUR int hm_seq_copy(hm_seq *dst, const hm_seq *src);

/* ------------------------------------------------------------ hot path */

/* Temperatures below this are greedy: logit/T would overflow. */
#define HM_GREEDY_BELOW 1e-30f

/* What the library needs to know about one row (one sequence position). */
typedef struct hm_row {
    /* Tokens before this position, oldest first (prompt included).  Only
     * the last few are read.  NULL: take them from seq. */
    const int32_t *context;
    size_t n_context;
    /* Optional sequence state: supplies the context when context is NULL
     * and enables masking of windows seen before.  NULL: no masking. */
    hm_seq *seq;
    /* Sampling temperature for hm_select_*; 0 (or anything below
     * HM_GREEDY_BELOW) means greedy. */
    float temperature;
    /* The caller's uniform in [0,1): drives unwatermarked sampling, and
     * the final draw of a watermarked tournament step (whose keyed
     * g-values reweight the distribution it is drawn from). */
    double uniform;
} hm_row;

/* Strided candidate records, worked on in place: an int32 token id and a
 * float logit at the given byte offsets of each record. */
typedef struct hm_cands {
    void *data;
    size_t n;
    size_t stride;
    size_t id_offset;
    size_t logit_offset;
} hm_cands;

/* llama.cpp's llama_token_data {int32_t id; float logit; float p;}. */
#define HM_CANDS_LLAMA(ptr, count) \
    { (void *)(ptr), (size_t)(count), 12u, 0u, 4u }

/* Flags describing what a step did. */
#define HM_STEP_WATERMARKED 0x01u /* the choice carries the sampling channel */
#define HM_STEP_BIASED 0x02u      /* a kgw channel biased the logits */
#define HM_STEP_MASKED 0x04u      /* window seen before: left unwatermarked */
#define HM_STEP_GREEDY 0x08u      /* temperature 0: argmax, unwatermarked */
#define HM_STEP_FALLBACK 0x10u    /* sampled with the caller's uniform */

/* Add every kgw channel's bias to dense logits in place.  logits holds
 * n_rows rows of n_vocab floats, row r starting at logits + r*row_stride.
 * flags (n_rows entries) may be NULL. */
HM_EXPORT HM_WUR int hm_bias_dense(const hm_ctx *ctx, float *logits,
                                   size_t n_rows, size_t n_vocab,
                                   size_t row_stride, const hm_row *rows,
                                   unsigned *flags);

/* Choose the next token of each row with the context's sampling channel
 * (gumbel or tournament); without one, sample with the caller's uniform.
 * Logits of -INFINITY or NaN are excluded.  tokens (n_rows entries) receives the
 * choices; flags may be NULL. */
HM_EXPORT HM_WUR int hm_select_dense(const hm_ctx *ctx, const float *logits,
                                     size_t n_rows, size_t n_vocab,
                                     size_t row_stride, const hm_row *rows,
                                     int32_t *tokens, unsigned *flags);

/* The same for candidate records: bias in place, or select one.  The
 * records may be truncated or in any order; results depend on token ids
 * only, so they match the dense calls on the same logits.  index (may be
 * NULL) receives the chosen record's position. */
HM_EXPORT HM_WUR int hm_bias_cands(const hm_ctx *ctx, const hm_cands *cands,
                                   const hm_row *row, unsigned *flags);
HM_EXPORT HM_WUR int hm_select_cands(const hm_ctx *ctx,
                                     const hm_cands *cands,
                                     const hm_row *row, int32_t *token,
                                     size_t *index, unsigned *flags);

/* ------------------------------------------------------- tuple values */

/* The channel's raw 64-bit PRF output for token after context (oldest
 * first; shorter than the window means the sequence starts there and the
 * padding rule applies).  This is what hallmark-prf(7) specifies. */
HM_EXPORT HM_WUR int hm_token_prf(const hm_ctx *ctx, unsigned channel,
                                  const int32_t *context, size_t n_context,
                                  int32_t token, uint64_t *out);

/* The batch form of hm_token_prf for whole documents: the values of
 * seq[start..n-1], each after the tokens before it in seq (padded before
 * seq[0]), into out[0..n-start-1]. */
HM_EXPORT HM_WUR int hm_sequence_prf(const hm_ctx *ctx, unsigned channel,
                                     const int32_t *seq, size_t n,
                                     size_t start, uint64_t *out);

/* The sum of hm_token_score over seq[start..n-1], each token after the
 * tokens before it: the fast statistic for one document scored without
 * dedup.  Repeated tuples count every time, so the exact tests of a tally
 * (hm_tally_new) are what reports should use; this is for screening. */
HM_EXPORT HM_WUR int hm_sequence_score(const hm_ctx *ctx, unsigned channel,
                                       const int32_t *seq, size_t n,
                                       size_t start, double *sum);

/* The PRF v1 map from 64 bits to a uniform in (0,1). */
HM_EXPORT double hm_prf_to_unit(uint64_t x);

/* The channel's per-token detection score: gumbel -ln(1-u) (Exp(1) under
 * the null), kgw 1 for green and 0 for red (Bernoulli(gamma)), tournament
 * the number of set g-values (Binomial(m, 1/2)). */
HM_EXPORT HM_WUR int hm_token_score(const hm_ctx *ctx, unsigned channel,
                                    const int32_t *context, size_t n_context,
                                    int32_t token, double *score);

/* -------------------------------------------------------------- detection */

/* A tally scores token sequences for detection under one or more keys at
 * once (e.g. the provider's tenants plus never-deployed self-check keys),
 * all with the same spec.  Per channel, each tuple (context window, token)
 * is scored at most once across everything added (exact dedup); tuples
 * whose window occurs inside the document's prompt are excluded; windows
 * reaching before the start of a document are padded as hallmark-prf(7)
 * says (or dropped with HM_TALLY_SKIP_PADDED).  Tallies merge exactly and
 * save to versioned files, so an audit can be split across processes.
 * Threads: the functions taking a const hm_tally may run at once on one
 * tally that no thread changes; the others need the tally to themselves
 * (one tally per thread, then merge). */
typedef struct hm_tally hm_tally;

#define HM_TALLY_SKIP_PADDED 0x1u /* drop tuples with a padded window */

/* The counts and the test of one key on one channel. */
typedef struct hm_result {
    uint64_t documents;      /* sequences added */
    uint64_t tokens;         /* tokens offered for scoring */
    uint64_t padded;         /* ... of which had a padded window */
    uint64_t dropped_padded; /* dropped: padded window (SKIP_PADDED) */
    uint64_t dropped_prompt; /* dropped: window occurs in the prompt */
    uint64_t dropped_filter; /* dropped: window not in the filter */
    uint64_t dropped_repeat; /* dropped: tuple scored before */
    uint64_t scored;         /* tuples in the test */
    double score;            /* sum of their scores (hm_token_score) */
    double expected;         /* mean of that sum under the null */
    double log10_p;          /* log10 of the exact upper-tail p-value */
} hm_result;

/* ctxs: n_keys contexts created with the same spec (they may differ in
 * key and tenant).  The tally keeps the pointers: the contexts must
 * outlive it. */
HM_EXPORT HM_WUR int hm_tally_new(hm_tally **tally, const hm_ctx *const *ctxs,
                                  size_t n_keys, unsigned flags,
                                  char *errmsg, size_t errlen);
HM_EXPORT void hm_tally_free(hm_tally *tally);
/* Forget every tuple and count (keeps the keys). */
HM_EXPORT void hm_tally_clear(hm_tally *tally);

/* Make room for n_tokens more scored tokens in every channel, so that
 * adding (or merging) that many does not grow the tally's tables on the
 * way: a size hint for large audits, which saves time and memory.  Never
 * changes a result.  HM_ENOMEM when the memory is not there (the tally
 * is unchanged and still usable). */
HM_EXPORT HM_WUR int hm_tally_reserve(hm_tally *tally, size_t n_tokens);

/* Score one document: tokens after prompt (prompt may be NULL when
 * n_prompt is 0).  All or nothing: on error the tally is unchanged.
 * HM_ERANGE for a negative id. */
HM_EXPORT HM_WUR int hm_tally_add(hm_tally *tally, const int32_t *prompt,
                                  size_t n_prompt, const int32_t *tokens,
                                  size_t n_tokens);

/* dst becomes the union of dst and src: the same as one tally that had
 * been given both inputs (so the counts add up even when the tuples
 * overlap, and merging a tally with itself doubles its counts).  Needs the same spec, flags, keys and tenants
 * (HM_EINVAL and a message otherwise). */
HM_EXPORT HM_WUR int hm_tally_merge(hm_tally *dst, const hm_tally *src,
                                    char *errmsg, size_t errlen);

/* The filtered test: give the provider's own served documents (what the
 * suspect may have been trained on) before adding any suspect document;
 * from then on only tuples whose context window occurs among the windows
 * of those documents are scored, the rest are counted in dropped_filter.
 * Filtering on windows, not on (window, token) tuples, keeps the test
 * exact: which windows are kept does not depend on the PRF values the
 * suspect's tokens get there, whereas the tokens the provider served were
 * chosen by them.  Documents without tokens add no window, and a filter
 * without windows is no filter.  HM_ENOTSUP once documents were added, or
 * on a loaded tally.  Tallies merge only with the same filter. */
HM_EXPORT HM_WUR int hm_tally_filter_add(hm_tally *tally,
                                         const int32_t *prompt,
                                         size_t n_prompt,
                                         const int32_t *tokens,
                                         size_t n_tokens);

/* Write the tally to path atomically (a temporary file renamed over it). */
HM_EXPORT HM_WUR int hm_tally_save(const hm_tally *tally, const char *path,
                                   char *errmsg, size_t errlen);
/* Read a tally file.  A loaded tally can be merged, saved and tested but
 * not added to (it holds no keys). */
HM_EXPORT HM_WUR int hm_tally_load(hm_tally **tally, const char *path,
                                   char *errmsg, size_t errlen);

HM_EXPORT size_t hm_tally_keys(const hm_tally *tally);
HM_EXPORT unsigned hm_tally_channels(const hm_tally *tally);
/* Canonical spec, as hm_ctx_spec. */
HM_EXPORT size_t hm_tally_spec(const hm_tally *tally, char *buf, size_t len);
/* Fingerprint and tenant of key i, or NULL when i is out of range. */
HM_EXPORT const char *hm_tally_fingerprint(const hm_tally *tally, size_t i);
HM_EXPORT const char *hm_tally_tenant(const hm_tally *tally, size_t i);

/* The counts and the exact test of key i on channel c (sorting any
 * records that wait first, so HM_ENOMEM is possible). */
HM_EXPORT HM_WUR int hm_tally_result(const hm_tally *tally, size_t key,
                                     unsigned channel, hm_result *result);

/* A never-deployed key for self-checks, derived from a public label and
 * an index (hallmark-prf(7)), so that anyone can recompute it.  Never
 * serve with such a key. */
HM_EXPORT HM_WUR int hm_key_from_label(hm_key **key, const char *label,
                                       uint32_t index);

/* The key fingerprint and tenant a context was made with. */
HM_EXPORT const char *hm_ctx_fingerprint(const hm_ctx *ctx);
HM_EXPORT const char *hm_ctx_tenant(const hm_ctx *ctx);

/* -------------------------------------------------------------- tokenizer */

/* Exact re-tokenization of suspect text: byte-level BPE, either from a
 * tiktoken rank file ("<base64 bytes> <rank>" per line) with a named
 * preset's pre-tokenization pattern and special tokens ("r50k_base",
 * "p50k_base", "cl100k_base", "o200k_base", or "llama3": Llama 3's
 * vocabulary as a rank file, with cl100k's pattern), or from a Hugging Face
 * tokenizer.json (model BPE with a ByteLevel pre-tokenizer; Split steps,
 * both merges formats, ignore_merges, added tokens; anything else is
 * refused with HM_ENOTSUP and a message naming the field).  Immutable and
 * thread-safe once loaded. */
typedef struct hm_tokenizer hm_tokenizer;

HM_EXPORT HM_WUR int hm_tokenizer_load_tiktoken(hm_tokenizer **tok,
                                                const char *preset,
                                                const char *path,
                                                char *errmsg, size_t errlen);
HM_EXPORT HM_WUR int hm_tokenizer_load_hf(hm_tokenizer **tok,
                                          const char *path, char *errmsg,
                                          size_t errlen);
HM_EXPORT void hm_tokenizer_free(hm_tokenizer *tok);
/* The preset's name (or "tokenizer.json"), and the SHA-256 (hex) of the
 * file it was loaded from. */
HM_EXPORT const char *hm_tokenizer_name(const hm_tokenizer *tok);
HM_EXPORT const char *hm_tokenizer_digest(const hm_tokenizer *tok);
/* Largest token id + 1 (special and added tokens included). */
HM_EXPORT size_t hm_tokenizer_vocab(const hm_tokenizer *tok);
/* The bytes of token id (not NUL-terminated). */
HM_EXPORT HM_WUR int hm_tokenizer_piece(const hm_tokenizer *tok, int32_t id,
                                        const unsigned char **bytes,
                                        size_t *len);
/* hm_tokenizer_encode flag: parse special tokens ("<|endoftext|>") out of
 * the text.  Without it they are ordinary text (added tokens of a
 * tokenizer.json that are not special are always parsed, as HF does). */
#define HM_TOKENIZE_SPECIAL 0x1u
/* Token ids of len bytes of text, in *ids (free with hm_tokens_free).
 * Invalid UTF-8 is tokenized byte-wise; *invalid (may be NULL) receives
 * how many bytes were invalid. */
HM_EXPORT HM_WUR int hm_tokenizer_encode(const hm_tokenizer *tok,
                                         const char *text, size_t len,
                                         unsigned flags, int32_t **ids,
                                         size_t *n_ids, size_t *invalid);
HM_EXPORT void hm_tokens_free(int32_t *ids);

/* ------------------------------------------------------------ statistics */

/* log10 of exact upper-tail p-values, accurate far below 1e-300.
 *   hm_log10_sf_gamma:  P[Gamma(n,1) >= x]
 *   hm_log10_sf_binom:  P[Binomial(n,p) >= k]
 * Return NAN for invalid arguments. */
HM_EXPORT double hm_log10_sf_gamma(double n, double x);
HM_EXPORT double hm_log10_sf_binom(uint64_t k, uint64_t n, double p);

/* Family-wise adjustment of m p-values given as log10 (many keys or
 * tenants tested at once): out[i] is the adjusted log10 p of in[i]
 * (in and out may be the same array).  HM_ENOMEM is possible for Holm,
 * which sorts a copy. */
#define HM_ADJUST_BONFERRONI 1 /* min(1, m p) */
#define HM_ADJUST_SIDAK 2      /* 1 - (1-p)^m */
#define HM_ADJUST_HOLM 3       /* step-down Holm-Bonferroni */
HM_EXPORT HM_WUR int hm_log10_adjust(const double *in, double *out, size_t m,
                                     int method);

/* One-sided Kolmogorov-Smirnov test that n p-values are not smaller than
 * uniform: D+ = max(i/n - p_(i)) and log10 P[D+ >= d] under uniformity
 * (exact, Birnbaum-Tingey).  p is sorted in place. */
HM_EXPORT HM_WUR int hm_ks_uniform(double *p, size_t n, double *d_plus,
                                   double *log10_pvalue);

/* ---------------------------------------------- hardened log-probabilities
 * What a server returns as top_logprobs, made hard to extract from: the
 * top k of the model's own distribution (k capped), each log-probability
 * moved by a keyed offset in [-eps, eps] that depends on the key, the
 * context window and the token id (so repeats give identical values and
 * averaging them removes nothing), then rounded to a grid of step quantum.
 * The renormalized returned distribution is within tanh(eta/2) of the true
 * one restricted to the same tokens in total variation, eta = eps +
 * quantum/2.  Pass the row before any watermark bias and before the
 * request's logit bias, penalties and temperature.  Subkeys come from the
 * master key with HKDF info "hallmark/v1/logprobs/ID/TENANT", independent of
 * every watermark channel.  Immutable and thread-safe once created; the
 * calls allocate nothing.  See hm_logprobs_new(3). */
typedef struct hm_logprobs hm_logprobs;

#define HM_LOGPROBS_TOPK_DEFAULT 20   /* cap on returned tokens */
#define HM_LOGPROBS_TOPK_MAX 1024     /* largest cap */
#define HM_LOGPROBS_EPS_DEFAULT 0.0625        /* 2^-4 nats */
#define HM_LOGPROBS_QUANTUM_DEFAULT 0.015625  /* 2^-6 nats */
#define HM_LOGPROBS_WINDOW_DEFAULT 4  /* context ids the offsets read */

/* hm_logprobs_harden flag: leave the records in their input order. */
#define HM_LOGPROBS_KEEP_ORDER 0x1u

/* spec: NULL, "" or NAME=VALUE[,NAME=VALUE...] with topk, eps, quantum, h
 * and id (see hm_logprobs_new(3)); tenant as for hm_ctx_new. */
HM_EXPORT HM_WUR int hm_logprobs_new(hm_logprobs **lp, const hm_key *key,
                                     const char *spec, const char *tenant,
                                     char *errmsg, size_t errlen);
HM_EXPORT void hm_logprobs_free(hm_logprobs *lp);
/* Canonical parameter string; returns the length it needs (as hm_ctx_spec). */
HM_EXPORT size_t hm_logprobs_spec(const hm_logprobs *lp, char *buf,
                                  size_t len);
/* "topk", "eps", "quantum", "h", "max_error" (eta) or "tv_bound". */
HM_EXPORT HM_WUR int hm_logprobs_param(const hm_logprobs *lp,
                                       const char *name, double *value);

/* Dense rows (as hm_select_dense) to the k <= topk best tokens of each row:
 * row r's ids and hardened log-probabilities go to ids + r*k and
 * logprobs + r*k, sorted, and their number (k, or fewer when fewer logits
 * are finite) to n_out[r]. */
HM_EXPORT HM_WUR int hm_logprobs_dense(const hm_logprobs *lp,
                                       const float *logits, size_t n_rows,
                                       size_t n_vocab, size_t row_stride,
                                       const hm_row *rows, size_t k,
                                       int32_t *ids, double *logprobs,
                                       size_t *n_out);

/* Harden n <= topk log-probabilities the host computed itself over the
 * full vocabulary (e.g. on the GPU), in place: sorted by hardened value
 * unless flags has HM_LOGPROBS_KEEP_ORDER. */
HM_EXPORT HM_WUR int hm_logprobs_harden(const hm_logprobs *lp,
                                        const hm_row *row, int32_t *ids,
                                        double *logprobs, size_t n,
                                        unsigned flags);

/* The keyed offset (in [-eps, eps]) of token after context. */
HM_EXPORT HM_WUR int hm_logprobs_offset(const hm_logprobs *lp,
                                        const int32_t *context,
                                        size_t n_context, int32_t token,
                                        double *offset);

/* ------------------------------------------- spectral fingerprint channel
 * (issue 6, point 2; see hm_spectral_new(3).)  A keyed signal in returned
 * log-probabilities that a model distilled from them inherits, after
 * GINSEW (Zhao et al. 2023): a keyed half S of the vocabulary and a keyed
 * point g(w) in [0,1) for each context window w; the log-probabilities of
 * the returned tokens in S are shifted by amp*sin(2*pi*f*g(w) + phi), f and
 * phi secret, and the row is renormalized to its former mass.  The
 * renormalized distribution moves by at most tanh(amp/4) in total
 * variation.  Apply to the true values first, then hm_logprobs_harden.
 * The verifier (hallmark probe) reads a suspect's top-k on probe prompts,
 * takes its share of mass on S per prompt and the Lomb-Scargle power of
 * those shares at f over the points g(w).  Subkeys come from the master key
 * with HKDF info "hallmark/v1/spectral/ID/TENANT".  Immutable and
 * thread-safe once created; apply, point and share allocate nothing. */
typedef struct hm_spectral hm_spectral;

#define HM_SPECTRAL_AMP_DEFAULT 0.25 /* nats: total variation <= 0.0624 */
#define HM_SPECTRAL_WINDOW_DEFAULT 1 /* context ids g(w) reads */
#define HM_SPECTRAL_MAX 1024         /* largest row of apply and share */

/* spec: NULL, "" or NAME=VALUE[,...] with amp (0..1), h (1..16) and id. */
HM_EXPORT HM_WUR int hm_spectral_new(hm_spectral **sp, const hm_key *key,
                                     const char *spec, const char *tenant,
                                     char *errmsg, size_t errlen);
HM_EXPORT void hm_spectral_free(hm_spectral *sp);
/* Canonical parameter string; returns the length it needs. */
HM_EXPORT size_t hm_spectral_spec(const hm_spectral *sp, char *buf,
                                  size_t len);
/* "amp", "h", "freq" (the secret f) or "tv_bound" (tanh(amp/4)). */
HM_EXPORT HM_WUR int hm_spectral_param(const hm_spectral *sp,
                                       const char *name, double *value);
/* Shift n <= HM_SPECTRAL_MAX true log-probabilities of distinct tokens
 * (the top k to be returned) in place, order kept; row supplies the
 * context as for hm_logprobs_harden. */
HM_EXPORT HM_WUR int hm_spectral_apply(const hm_spectral *sp,
                                       const hm_row *row, const int32_t *ids,
                                       double *logprobs, size_t n);
/* The point g(w) in [0,1) of the window of context, and (shift may be
 * NULL) the shift amp*sin(2*pi*f*g + phi) applied there. */
HM_EXPORT HM_WUR int hm_spectral_point(const hm_spectral *sp,
                                       const int32_t *context,
                                       size_t n_context, double *g,
                                       double *shift);
/* The share of S in the mass of n returned tokens: sum over S of e^l
 * divided by the sum over all n. */
HM_EXPORT HM_WUR int hm_spectral_share(const hm_spectral *sp,
                                       const int32_t *ids,
                                       const double *logprobs, size_t n,
                                       double *share);
/* Lomb-Scargle power of samples y at times t at frequency freq (cycles per
 * unit of t), normalized to [0,1]: the share of the variance of y about its
 * mean that the best sinusoid of that frequency explains. */
HM_EXPORT HM_WUR int hm_lomb_scargle(const double *t, const double *y,
                                     size_t n, double freq, double *power);
/* -------------------------------------- end spectral fingerprint channel */
/* ---------------------------------------------------- served-window sketch
 * A compact record of the context windows a server served after, for
 * filtered audits (hm_tally_filter_sketch, hallmark-audit(7)): a blocked
 * Bloom filter of keyed hashes of windows, one 512-bit block per window,
 * sized from an expected number of windows and a target false-positive
 * rate.  Window hashes are AES-CMAC under a subkey derived with HKDF info
 * "hallmark/v1/sketch" (independent of every watermark channel and of the
 * tenant, so that the sketches of tenants merge), so without the key a
 * sketch tells nothing about which windows it holds.  hm_sketch_add may
 * be called from any number of threads at once on one sketch (atomic OR
 * into 64-bit words); it allocates nothing, takes no lock and logs
 * nothing.  See hm_sketch_new(3). */
typedef struct hm_sketch hm_sketch;

#define HM_SKETCH_EXPECTED_DEFAULT 10000000 /* windows per width */
#define HM_SKETCH_FP_DEFAULT 0.001          /* target false-positive rate */
#define HM_SKETCH_WINDOWS_DEFAULT "1/4"     /* kgw's and gumbel's defaults */

/* spec: NULL, "" or NAME=VALUE[,NAME=VALUE...] with expected, fp and
 * windows (widths joined by '/'); tenant is a label recorded in the file. */
HM_EXPORT HM_WUR int hm_sketch_new(hm_sketch **sketch, const hm_key *key,
                                   const char *spec, const char *tenant,
                                   char *errmsg, size_t errlen);
HM_EXPORT void hm_sketch_free(hm_sketch *sketch);
/* Canonical parameter string; returns the length it needs (as hm_ctx_spec). */
HM_EXPORT size_t hm_sketch_spec(const hm_sketch *sketch, char *buf,
                                size_t len);
/* "expected", "fp" (the target), "blocks", "k" (bits per window), "bytes",
 * "count" (estimated distinct windows held), "fp_rate" (the rate of the
 * sketch as it is: the probability that a window never added is reported
 * present, for keyed hashes modelled as random) or "fp_bound" (the rate
 * designed for at the expected count). */
HM_EXPORT HM_WUR int hm_sketch_param(const hm_sketch *sketch,
                                     const char *name, double *value);
HM_EXPORT const char *hm_sketch_tenant(const hm_sketch *sketch);
HM_EXPORT const char *hm_sketch_fingerprint(const hm_sketch *sketch);
/* 1 when the sketch holds windows of width w. */
HM_EXPORT int hm_sketch_has_width(const hm_sketch *sketch, unsigned w);

/* The serving path: record the windows (each configured width) before the
 * token served at row (row->context or row->seq, as hm_select_dense reads
 * them).  Thread-safe, no allocation.  HM_ERANGE for a negative id. */
HM_EXPORT HM_WUR int hm_sketch_add(hm_sketch *sketch, const hm_row *row);
/* Every window before a token of tokens, after prompt (as
 * hm_tally_filter_add reads a document). */
HM_EXPORT HM_WUR int hm_sketch_add_doc(hm_sketch *sketch,
                                       const int32_t *prompt, size_t n_prompt,
                                       const int32_t *tokens,
                                       size_t n_tokens);
/* 1 if the window of width w ending context (padded when shorter) may have
 * been added, 0 if it was not, or a negative HM_* code. */
HM_EXPORT int hm_sketch_query(const hm_sketch *sketch, const int32_t *context,
                              size_t n_context, unsigned w);
/* dst |= src: needs the same key, spec (HM_EINVAL and a message
 * otherwise).  Sketches of different tenants merge; the result's tenant
 * is then "*".  Not atomic with respect to concurrent adds to src. */
HM_EXPORT HM_WUR int hm_sketch_merge(hm_sketch *dst, const hm_sketch *src,
                                     char *errmsg, size_t errlen);
/* Write atomically (a temporary file renamed over path). */
HM_EXPORT HM_WUR int hm_sketch_save(const hm_sketch *sketch, const char *path,
                                    char *errmsg, size_t errlen);
/* Read a sketch file made under key: refuses another key's sketch, a bad
 * checksum, a truncated file and parameters out of range, with "path:
 * problem" in errmsg.  The sizes stored are taken as they are (the
 * checksum is not keyed: "fp_rate" tells what a sketch passes). */
HM_EXPORT HM_WUR int hm_sketch_load(hm_sketch **sketch, const hm_key *key,
                                    const char *path, char *errmsg,
                                    size_t errlen);
/* 1 if path starts with the sketch file magic, 0 if not, -1 unreadable. */
HM_EXPORT int hm_sketch_file_magic(const char *path);
/* SHA-256 (hex) of the sketch's parameters and content, as saved. */
HM_EXPORT HM_WUR int hm_sketch_digest(const hm_sketch *sketch, char *hex,
                                      size_t len);

/* The filtered test with a sketch: like hm_tally_filter_add, a tuple is
 * scored only when its window is in the sketch.  Every channel's window
 * width must be among the sketch's.  The tally keeps the pointer: the
 * sketch must outlive it and not change while it filters. */
HM_EXPORT HM_WUR int hm_tally_filter_sketch(hm_tally *tally,
                                            const hm_sketch *sketch,
                                            char *errmsg, size_t errlen);

/* ------------------------------------- open-model (log-probability) audits
 * (hm_greenmass_new(3)).  When a suspect model
 * exposes log-probabilities, the audit need not wait for sampled tokens:
 * for a kgw channel with lefthash seeding (the green list of a step
 * depends on the window of the last h context ids only), it scores the
 * suspect's probability mass on the green tokens of each window.  Records
 * are what hallmark probe reads: a context and the suspect's listed
 * (top-k) log-probabilities after it.  A record whose whole context was
 * added before is dropped (repeats change nothing); the listed
 * distributions of the contexts that share a window are averaged into one
 * term per window, so that the terms are independent under an ideal PRF
 * (different windows, independent green lists).  Under the null (the
 * suspect independent of the key) term w is G_w = sum_v q_w(v) B_wv with
 * B_wv iid Bernoulli(gamma): mean gamma M_w (M_w its listed mass), range
 * [0, M_w], variance gamma(1-gamma) sum_v q_w(v)^2.  The p-value is an
 * upper bound on P[S >= observed] for S = sum_w G_w: the smallest of the
 * Hoeffding, Bernstein and exact-MGF Chernoff bounds, each valid, so the
 * test is conservative (never exact).  Any number of keys (tenants,
 * self-check keys) share the stored distributions; results are computed
 * when asked for.  Not thread-safe: one accumulator per thread. */
typedef struct hm_greenmass hm_greenmass;

#define HM_GREENMASS_SKIP_PADDED 0x1u /* drop records with a padded window */
/* Listed probabilities may sum to at most 1 + this (rounding). */
#define HM_GREENMASS_MASS_TOLERANCE 1e-3

/* Which bound gave a p-value. */
#define HM_BOUND_NONE 0      /* no excess over the mean: p = 1 */
#define HM_BOUND_HOEFFDING 1 /* exp(-2 t^2 / sum M_w^2) */
#define HM_BOUND_BERNSTEIN 2 /* exp(-t^2 / (2 (sigma^2 + b t / 3))) */
#define HM_BOUND_CHERNOFF 3  /* inf over l >= 0 of E[exp(l (S - s))] */

/* The counts and the test of one key on one channel. */
typedef struct hm_greenmass_stats {
    uint64_t records;        /* records added */
    uint64_t dropped_repeat; /* ... dropped: context added before */
    uint64_t padded;         /* ... with a padded window (scored) */
    uint64_t dropped_padded; /* ... dropped: padded (SKIP_PADDED) */
    uint64_t contexts;       /* records scored */
    uint64_t listed;         /* their listed (token, log-prob) pairs */
    uint64_t windows;        /* distinct windows: independent terms */
    uint64_t pairs;          /* distinct (window, token) pairs */
    double gamma;            /* exact probability that a token is green */
    double mass;             /* sum of M_w over windows */
    double score;            /* S: listed mass on green tokens */
    double expected;         /* E[S] = gamma * mass */
    double range_sq;         /* sum of M_w^2 (Hoeffding) */
    double variance;         /* gamma (1-gamma) sum_w sum_v q_w(v)^2 */
    double max_excess;       /* b = (1-gamma) max M_w (Bernstein) */
    double log10_p_hoeffding;
    double log10_p_bernstein;
    double log10_p_chernoff;
    double log10_p;          /* the smallest of the three */
    int bound;               /* HM_BOUND_* that gave log10_p */
} hm_greenmass_stats;

/* ctxs: n_keys contexts with the same spec, every channel kgw with
 * lefthash seeding (HM_ENOTSUP and a message naming the channel and the
 * reason otherwise).  The accumulator keeps the pointers: the contexts
 * must outlive it. */
HM_EXPORT HM_WUR int hm_greenmass_new(hm_greenmass **gm,
                                      const hm_ctx *const *ctxs,
                                      size_t n_keys, unsigned flags,
                                      char *errmsg, size_t errlen);
HM_EXPORT void hm_greenmass_free(hm_greenmass *gm);
/* Forget every record (keeps the keys). */
HM_EXPORT void hm_greenmass_clear(hm_greenmass *gm);

/* One record: the suspect's n listed log-probabilities (<= 0, distinct
 * ids) after context (oldest first, the whole context: repeats are
 * recognised on it).  All or nothing: on error nothing changes.
 * HM_ERANGE for a negative id, a log-probability above 0 or listed
 * probabilities summing to more than 1 + HM_GREENMASS_MASS_TOLERANCE;
 * HM_EINVAL for NaN or an id listed twice. */
HM_EXPORT HM_WUR int hm_greenmass_add(hm_greenmass *gm,
                                      const int32_t *context,
                                      size_t n_context, const int32_t *ids,
                                      const double *logprobs, size_t n);

HM_EXPORT size_t hm_greenmass_keys(const hm_greenmass *gm);
HM_EXPORT unsigned hm_greenmass_channels(const hm_greenmass *gm);

/* The counts and the bounds of key i on channel c.  Allocates nothing;
 * the cost is a few passes over the stored pairs. */
HM_EXPORT HM_WUR int hm_greenmass_result(const hm_greenmass *gm, size_t key,
                                         unsigned channel,
                                         hm_greenmass_stats *stats);

/* "hoeffding", "bernstein", "chernoff", "none" (HM_BOUND_*), or NULL. */
HM_EXPORT const char *hm_greenmass_bound_name(int bound);

#ifdef __cplusplus
}
#endif
#endif /* HALLMARK_H */
