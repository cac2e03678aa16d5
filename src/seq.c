/*
 * seq.c - per-sequence state: the last tokens and the masking history.
 *
 * Masking (a window already watermarked in this sequence is not
 * watermarked again) keeps repeated n-grams from skewing the text and keeps
 * detection tuples independent.  The history is a direct-mapped table of
 * window hashes: a newer window may evict an older one, which bounds memory
 * and only means that a long-forgotten window is watermarked again.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define HISTORY_MAX ((size_t)1 << 24)

static size_t slots_for(size_t history)
{
    size_t s = 1;
    if (history == 0)
        return 0;
    while (s < history)
        s <<= 1;
    return s;
}

size_t hm_seq_size(size_t history)
{
    if (history > HISTORY_MAX)
        return 0;
    return sizeof(struct hm_seq) + slots_for(history) * sizeof(uint64_t);
}

static void seq_clear(hm_seq *seq)
{
    seq->n_tokens = 0;
    for (int i = 0; i < HM_MAX_CONTEXT; i++)
        seq->last[i] = HM_PAD_ID;
    if (seq->slots)
        memset(seq->table, 0, seq->slots * sizeof(uint64_t));
}

int hm_seq_init(hm_seq **out, void *mem, size_t size, const hm_ctx *ctx,
                size_t history)
{
    if (out == NULL || mem == NULL || ctx == NULL ||
        ((uintptr_t)mem % _Alignof(uint64_t)) != 0 || history > HISTORY_MAX)
        return HM_EINVAL;
    if (size < hm_seq_size(history))
        return HM_ERANGE;
    hm_seq *seq = mem;
    seq->magic = HM_SEQ_MAGIC;
    seq->ctx = ctx;
    seq->slots = slots_for(history);
    seq_clear(seq);
    *out = seq;
    return HM_OK;
}

int hm_seq_new(hm_seq **out, const hm_ctx *ctx, size_t history)
{
    if (out == NULL || ctx == NULL || history > HISTORY_MAX)
        return HM_EINVAL;
    size_t size = hm_seq_size(history);
    void *mem = malloc(size);
    if (mem == NULL)
        return HM_ENOMEM;
    int rc = hm_seq_init(out, mem, size, ctx, history);
    if (rc != HM_OK)
        free(mem);
    return rc;
}

void hm_seq_free(hm_seq *seq)
{
    if (seq == NULL)
        return;
    seq->magic = 0;
    free(seq);
}

static int seq_ok(const hm_seq *seq)
{
    return seq != NULL && seq->magic == HM_SEQ_MAGIC;
}

static void seq_push(hm_seq *seq, uint32_t token)
{
    memmove(seq->last, seq->last + 1,
            (HM_MAX_CONTEXT - 1) * sizeof seq->last[0]);
    seq->last[HM_MAX_CONTEXT - 1] = token;
    seq->n_tokens++;
}

int hm_seq_reset(hm_seq *seq, const int32_t *prompt, size_t n)
{
    if (!seq_ok(seq) || (prompt == NULL && n > 0))
        return HM_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (prompt[i] < 0)
            return HM_ERANGE;
    seq_clear(seq);
    size_t start = n > HM_MAX_CONTEXT ? n - HM_MAX_CONTEXT : 0;
    for (size_t i = start; i < n; i++)
        seq_push(seq, (uint32_t)prompt[i]);
    seq->n_tokens = n;
    return HM_OK;
}

static uint64_t window_hash(unsigned channel, const uint32_t *w, unsigned n)
{
    uint64_t h = XXH3_64bits_withSeed(w, n * sizeof *w, channel + 1u);
    return h ? h : 1u;
}

int hm_seq_seen(const hm_seq *seq, unsigned channel, const uint32_t *w,
                unsigned n)
{
    if (seq->slots == 0)
        return 0;
    uint64_t h = window_hash(channel, w, n);
    return seq->table[h & (seq->slots - 1)] == h;
}

int hm_seq_accept(hm_seq *seq, int32_t token)
{
    if (!seq_ok(seq))
        return HM_EINVAL;
    if (token < 0)
        return HM_ERANGE;
    const hm_ctx *ctx = seq->ctx;
    for (unsigned c = 0; seq->slots && c < ctx->n_channels; c++) {
        unsigned n = ctx->ch[c].window;
        const uint32_t *w = seq->last + HM_MAX_CONTEXT - n;
        uint64_t h = window_hash(c, w, n);
        seq->table[h & (seq->slots - 1)] = h;
    }
    seq_push(seq, (uint32_t)token);
    return HM_OK;
}

int hm_seq_copy(hm_seq *dst, const hm_seq *src)
{
    if (!seq_ok(dst) || !seq_ok(src) || dst->ctx != src->ctx)
        return HM_EINVAL;
    if (dst->slots < src->slots)
        return HM_ERANGE;
    if (dst == src)
        return HM_OK;
    dst->n_tokens = src->n_tokens;
    memcpy(dst->last, src->last, sizeof dst->last);
    if (dst->slots == src->slots) {
        if (src->slots)
            memcpy(dst->table, src->table, src->slots * sizeof(uint64_t));
        return HM_OK;
    }
    /* A larger table: re-place every remembered hash. */
    memset(dst->table, 0, dst->slots * sizeof(uint64_t));
    for (size_t i = 0; i < src->slots; i++)
        if (src->table[i])
            dst->table[src->table[i] & (dst->slots - 1)] = src->table[i];
    return HM_OK;
}

int hm_row_window(const hm_row *row, unsigned n, uint32_t *w)
{
    if (row->context != NULL) {
        size_t have = row->n_context < n ? row->n_context : n;
        size_t pad = n - have;
        const int32_t *src = row->context + row->n_context - have;
        for (size_t i = 0; i < pad; i++)
            w[i] = HM_PAD_ID;
        for (size_t i = 0; i < have; i++) {
            if (src[i] < 0)
                return HM_ERANGE;
            w[pad + i] = (uint32_t)src[i];
        }
        return HM_OK;
    }
    if (row->seq != NULL) {
        if (!seq_ok(row->seq))
            return HM_EINVAL;
        memcpy(w, row->seq->last + HM_MAX_CONTEXT - n, n * sizeof *w);
        return HM_OK;
    }
    for (unsigned i = 0; i < n; i++)
        w[i] = HM_PAD_ID;
    return HM_OK;
}
