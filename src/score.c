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
