/*
 * score.c - per-tuple PRF values and detection scores.
 */
#include "internal.h"

#include <math.h>

int hm_token_prf(const hm_ctx *ctx, unsigned channel, const int32_t *context,
                 size_t n_context, int32_t token, uint64_t *out)
{
    uint32_t w[HM_MAX_CONTEXT];
    if (ctx == NULL || out == NULL || channel >= ctx->n_channels ||
        (context == NULL && n_context != 0))
        return HM_EINVAL;
    if (token < 0)
        return HM_ERANGE;
    hm_row row = {context, n_context, NULL, 0, 0};
    const hm_channel *ch = &ctx->ch[channel];
    int rc = hm_row_window(&row, ch->window, w);
    if (rc == HM_OK)
        *out = hm_channel_value(ch, w, (uint32_t)token);
    return rc;
}

int hm_token_score(const hm_ctx *ctx, unsigned channel, const int32_t *context,
                   size_t n_context, int32_t token, double *score)
{
    uint64_t x;
    if (score == NULL)
        return HM_EINVAL;
    int rc = hm_token_prf(ctx, channel, context, n_context, token, &x);
    if (rc != HM_OK)
        return rc;
    const hm_channel *ch = &ctx->ch[channel];
    switch (ch->scheme) {
    case HM_SCHEME_GUMBEL:
        /* -ln(1-u), with 1-u formed exactly from the complement bits. */
        *score = -log(((double)(~x >> 12) + 0.5) * 0x1p-52);
        break;
    case HM_SCHEME_KGW:
        *score = x < ch->green_below ? 1.0 : 0.0;
        break;
    default: {
        uint64_t mask = ch->layers >= 64 ? ~UINT64_C(0)
                                         : (UINT64_C(1) << ch->layers) - 1;
        *score = (double)__builtin_popcountll(x & mask);
        break;
    }
    }
    return HM_OK;
}

/* Windows of a chunk of positions: ids[0..width+m-1] holds the width ids
 * before position p0 (padded before the sequence) and the m ids from p0. */
static void chunk_ids(const int32_t *seq, size_t p0, size_t m, unsigned width,
                      uint32_t *ids)
{
    for (size_t i = 0; i < width + m; i++) {
        size_t back = width - (i < width ? i : width); /* > 0 before p0 */
        if (i < width)
            ids[i] = p0 >= back ? (uint32_t)seq[p0 - back] : HM_PAD_ID;
        else
            ids[i] = (uint32_t)seq[p0 + i - width];
    }
}

int hm_sequence_prf(const hm_ctx *ctx, unsigned channel, const int32_t *seq,
                    size_t n, size_t start, uint64_t *out)
{
    enum { CHUNK = 256 };
    if (ctx == NULL || channel >= ctx->n_channels || start > n ||
        (seq == NULL && n > 0) || (out == NULL && n > start))
        return HM_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (seq[i] < 0)
            return HM_ERANGE;
    const hm_channel *ch = &ctx->ch[channel];
    unsigned w = ch->window;
    uint32_t ids[HM_MAX_CONTEXT + CHUNK];
    hm_seed seeds[CHUNK];
    for (size_t p0 = start; p0 < n; p0 += CHUNK) {
        size_t m = n - p0 < CHUNK ? n - p0 : CHUNK;
        chunk_ids(seq, p0, m, w, ids);
        if (ch->scheme == HM_SCHEME_KGW && ch->seeding == HM_SEEDING_SELFHASH) {
            for (size_t i = 0; i < m; i++)
                out[p0 - start + i] = hm_channel_value(ch, ids + i, ids[w + i]);
            continue;
        }
        hm_seed_windows(&ch->cmac, ids, w, 1, m, seeds);
        for (size_t i = 0; i < m; i++)
            out[p0 - start + i] = hm_mix(seeds[i].a, seeds[i].g, ids[w + i]);
    }
    return HM_OK;
}
