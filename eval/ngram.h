/*
 * ngram.h - interpolated modified Kneser-Ney n-gram language model over
 * token ids: the teacher and the students of the distillation experiment
 * (issue 5).  Evaluation code, not part of libhallmark.
 *
 * The model (Chen & Goodman 1998, "An empirical study of smoothing
 * techniques for language modeling", section 3, interpolated modified KN):
 *
 *   P_k(w | h) = max(c_k(hw) - D_k(c_k(hw)), 0) / c_k(h.)
 *              + gamma_k(h) P_{k-1}(w | h'),
 *   gamma_k(h) = (D_k1 N1(h.) + D_k2 N2(h.) + D_k3+ N3+(h.)) / c_k(h.),
 *   P_0(w)     = 1 / V,
 *
 * where h' drops the oldest id of h, c_k(h.) = sum_w c_k(hw), Ni(h.) counts
 * the w with c_k(hw) = i (N3+: >= 3), and D_k(c) is D_k1, D_k2 or D_k3+ for
 * c = 1, 2, >= 3 (0 for c = 0).  c_k is the raw count at the model's order,
 * and the continuation count (the number of distinct ids seen just before
 * the k-gram) at every lower order.  A history never seen at order k has
 * P_k = P_{k-1}.  The discounts of each order come from its count-of-counts
 * n1..n4:  Y = n1/(n1 + 2 n2),  D1 = 1 - 2Y n2/n1,  D2 = 2 - 3Y n3/n2,
 * D3+ = 3 - 4Y n4/n3;  an estimate that is undefined (a zero n_i) or outside
 * (0, i) is replaced by i/2 (so tiny corpora still give a proper model).
 *
 * Documents: each training document is read as if preceded by order-1
 * copies of a begin-of-document id NG_BOS (= V, outside the vocabulary).
 * NG_BOS is context only, never predicted, and there is no end-of-document
 * token: the model predicts ids in [0, V) only.  Queries use the same
 * convention: a context ctx[0..h) is the start of a document, so fewer than
 * order-1 ids are padded with NG_BOS on the left (h = 0: the first token of
 * a document).  Contexts longer than order-1 are fine (only the last
 * order-1 ids matter).
 *
 * Threads: a model is immutable once trained or loaded; every query
 * (ng_prob, ng_logits, ng_logprob) may run concurrently on one model.  A
 * trainer belongs to one thread.
 */
#ifndef HM_EVAL_NGRAM_H
#define HM_EVAL_NGRAM_H

#include <stddef.h>
#include <stdint.h>

#define NG_MIN_ORDER 1
#define NG_MAX_ORDER 6
/* Largest vocabulary (2^24; real tokenizers have at most a few 10^5 ids):
 * bounds the 12 bytes per id a model holds, even for a hostile file. */
#define NG_MAX_VOCAB (INT32_C(1) << 24)
/* Room for any message these functions write. */
#define NG_ERRMSG_SIZE 512

typedef struct ng_model ng_model;
typedef struct ng_trainer ng_trainer;

/* Training, one document at a time.  Returns NULL (message in err) for an
 * order outside [NG_MIN_ORDER, NG_MAX_ORDER], a vocab outside
 * [1, NG_MAX_VOCAB], or no memory. */
ng_trainer *ng_trainer_new(int order, int32_t vocab, char *err, size_t errlen);
/* Count one document of n ids (n = 0 is an empty document, which adds
 * nothing).  0, or -1 with a message: an id outside [0, V) (*bad_index, if
 * not NULL, receives its index; nothing of the document is counted), or
 * no memory or more than 2^32-1 tokens in all (*bad_index = n; after no
 * memory the trainer is only good for ng_trainer_free). */
int ng_trainer_add(ng_trainer *t, const int32_t *ids, size_t n,
                   size_t *bad_index, char *err, size_t errlen);
/* Tokens and (non-empty) documents counted so far. */
uint64_t ng_trainer_tokens(const ng_trainer *t);
uint64_t ng_trainer_docs(const ng_trainer *t);
/* The model of everything added (the trainer may then be freed or used
 * further).  0, or -1 with a message (no tokens, no memory). */
int ng_trainer_finish(ng_trainer *t, ng_model **out, char *err,
                      size_t errlen);
void ng_trainer_free(ng_trainer *t);

/* Convenience: a model from n_docs documents docs[i][0..lens[i]). */
int ng_train(ng_model **out, int order, int32_t vocab,
             const int32_t *const *docs, const size_t *lens, size_t n_docs,
             char *err, size_t errlen);

void ng_free(ng_model *m);

int ng_order(const ng_model *m);
int32_t ng_vocab(const ng_model *m);
/* Distinct k-grams stored at order k (1 <= k <= order), 0 otherwise. */
uint64_t ng_count(const ng_model *m, int k);
/* Discount D_k(c) for c = 1, 2, 3 (3 means 3+). */
double ng_discount(const ng_model *m, int k, int c);
/* Bytes of memory the model holds (approximate, excluding malloc slack). */
size_t ng_memory(const ng_model *m);

/* P(tok | last order-1 ids of ctx[0..h)), in (0, 1]; 0 for tok outside
 * [0, V). */
double ng_prob(const ng_model *m, const int32_t *ctx, size_t h, int32_t tok);
/* The whole next-token distribution as natural-log probabilities:
 * row[w] = ln P(w | ctx) for w in [0, V), in float (within a few ulps of
 * ln ng_prob: the row sums to 1 within ~1e-6).  O(V) plus the ids seen
 * after the context's last id: the shared lower-order part is one
 * vectorised pass over a precomputed float row, then those ids get their
 * own terms.  No allocation. */
void ng_logits(const ng_model *m, const int32_t *ctx, size_t h, float *row);
/* sum_i ln P(ids[i] | ids[0..i)) of one document (natural log). */
double ng_logprob(const ng_model *m, const int32_t *ids, size_t n);
/* exp(-ng_logprob/n) of one document; NAN when n = 0. */
double ng_perplexity(const ng_model *m, const int32_t *ids, size_t n);

/* Save to path atomically (path.tmpXXXXXX, fsync, rename): version 1 of the
 * format below.  0, or -1 with a message naming the file. */
int ng_save(const ng_model *m, const char *path, char *err, size_t errlen);
/* Load and check a saved model: magic, version, size, SHA-256, then every
 * field (ids in range, k-grams sorted and with their suffixes present,
 * discounts in (0, i)).  0, or -1 with a message naming the file. */
int ng_load(ng_model **out, const char *path, char *err, size_t errlen);

/*
 * File format, version 1; integers little-endian, doubles IEEE 754 binary64
 * little-endian.
 *   8 bytes  magic "HMNGRAM\n"
 *   u32      version (1)
 *   u32      order K
 *   u32      vocabulary V (NG_BOS = V)
 *   u32      0 (reserved)
 *   K x u64  number of k-grams n_k stored at order k = 1..K
 *   K x 3 f64  discounts D_k1, D_k2, D_k3+ of order k = 1..K
 *   for k = 1..K: n_k records of k u32 ids (oldest first) and a u32 count
 *            (raw at order K, continuation below), strictly increasing in
 *            lexicographic order of the ids
 *   32 bytes SHA-256 of everything before it
 */
#define NG_FILE_MAGIC "HMNGRAM\n"
#define NG_FILE_VERSION 1

#endif
