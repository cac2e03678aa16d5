/*
 * score.c - per-tuple PRF values and detection scores.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#include <openssl/crypto.h>

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
        *score = (double)hm_popcount64(x & mask);
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
    if (p0 >= width) { /* no padding: the ids as they are (checked >= 0) */
        memcpy(ids, seq + p0 - width, (width + m) * sizeof *ids);
        return;
    }
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
    enum { CHUNK = 1024 };
    if (ctx == NULL || channel >= ctx->n_channels || start > n ||
        (seq == NULL && n > 0) || (out == NULL && n > start))
        return HM_EINVAL;
    const hm_channel *ch = &ctx->ch[channel];
    unsigned w = ch->window;
    int32_t any = 0; /* the sign bit of any id read; vectorises */
    for (size_t i = start > w ? start - w : 0; i < n; i++)
        any |= seq[i];
    if (any < 0)
        return HM_ERANGE;
    uint32_t ids[HM_MAX_CONTEXT + CHUNK + 16] = {0};
    hm_seed seeds[CHUNK];
    unsigned char pad[16];
    int selfhash =
        ch->scheme == HM_SCHEME_KGW && ch->seeding == HM_SEEDING_SELFHASH;
    int wide = !selfhash && w <= 4 && ch->cmac.aes.use_ni &&
               hm_k_prf_windows_ok();
    if (wide)
        hm_cmac_pad(&ch->cmac, w, pad);
    for (size_t p0 = start; p0 < n; p0 += CHUNK) {
        size_t m = n - p0 < CHUNK ? n - p0 : CHUNK;
        /* The ids in place when no padding is needed and the kernel's
         * over-read stays inside seq; a copy otherwise. */
        const uint32_t *src = ids;
        if (p0 >= w && p0 + m + 16 <= n)
            src = (const uint32_t *)(const void *)(seq + p0 - w);
        else
            chunk_ids(seq, p0, m, w, ids);
        if (selfhash) {
            for (size_t i = 0; i < m; i++)
                out[p0 - start + i] = hm_channel_value(ch, src + i, src[w + i]);
            continue;
        }
        size_t done = wide ? hm_k_prf_windows(ch->cmac.aes.u.rk, pad, w, src,
                                              m, out + (p0 - start))
                           : 0;
        hm_seed_windows(&ch->cmac, src + done, w, 1, m - done, seeds);
        for (size_t i = done; i < m; i++)
            out[p0 - start + i] =
                hm_mix(seeds[i - done].a, seeds[i - done].g, src[w + i]);
    }
    if (wide)
        OPENSSL_cleanse(pad, sizeof pad);
    return HM_OK;
}

int hm_sequence_score(const hm_ctx *ctx, unsigned channel, const int32_t *seq,
                      size_t n, size_t start, double *sum)
{
    enum { CHUNK = 1024 }; /* x stays in L1 */
    uint64_t x[CHUNK];
    if (sum == NULL || ctx == NULL || channel >= ctx->n_channels)
        return HM_EINVAL;
    const hm_channel *ch = &ctx->ch[channel];
    uint64_t mask = ch->layers >= 64 ? ~UINT64_C(0)
                                     : (UINT64_C(1) << ch->layers) - 1;
    double s = 0;
    uint64_t count = 0;
    *sum = 0;
    /* each chunk's windows reach back into seq, so chunks are exact */
    for (size_t p0 = start; p0 < n || p0 == start; p0 += CHUNK) {
        size_t end = n - p0 < CHUNK ? n : p0 + CHUNK;
        int rc = hm_sequence_prf(ctx, channel, seq, end, p0, x);
        if (rc != HM_OK)
            return rc;
        size_t m = end - p0;
        if (ch->scheme == HM_SCHEME_GUMBEL)
            s += hm_k_gumbel_sum(x, m);
        else if (ch->scheme == HM_SCHEME_KGW)
            count += hm_k_count_below(x, m, ch->green_below);
        else
            count += hm_k_popcount_sum(x, m, mask);
        if (end == n)
            break;
    }
    *sum = ch->scheme == HM_SCHEME_GUMBEL ? s : (double)count;
    return HM_OK;
}
