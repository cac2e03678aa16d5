/*
 * ctx.c - the shared watermarking context: channels and their subkeys.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define TENANT_MAX HM_TENANT_MAX

/* The channel's subkeys: HKDF info names the spec version, scheme,
 * channel and tenant (hm_key_derive_for). */
static int channel_keys(hm_channel *ch, const hm_key *key, const char *tenant)
{
    unsigned char okm[48];
    int rc = hm_key_derive_for(key, hm_scheme_name(ch->scheme), ch->id,
                               tenant, okm, sizeof okm);
    if (rc == HM_OK) {
        hm_cmac_init(&ch->cmac, okm);
        ch->s_hash = hm_seed_from_bytes(okm + 16);
        ch->s_self = hm_seed_from_bytes(okm + 32);
    }
    OPENSSL_cleanse(okm, sizeof okm);
    return rc;
}

int hm_ctx_new(hm_ctx **out, const hm_key *key, const char *spec,
               const char *tenant, char *errmsg, size_t errlen)
{
    if (out == NULL || key == NULL || spec == NULL)
        return HM_EINVAL;
    *out = NULL;
    if (tenant == NULL)
        tenant = "";
    if (strlen(tenant) >= TENANT_MAX) {
        hm_errf(errmsg, errlen, "tenant id longer than %d bytes",
                TENANT_MAX - 1);
        return HM_EINVAL;
    }
    hm_ctx *ctx = OPENSSL_zalloc(sizeof *ctx);
    if (ctx == NULL)
        return HM_ENOMEM;
    int rc = hm_spec_parse(ctx, spec, errmsg, errlen);
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, ctx->fingerprint,
                                sizeof ctx->fingerprint);
    memcpy(ctx->tenant, tenant, strlen(tenant) + 1);
    for (unsigned i = 0; rc == HM_OK && i < ctx->n_channels; i++)
        rc = channel_keys(&ctx->ch[i], key, tenant);
    if (rc != HM_OK) {
        if (rc == HM_ECRYPTO)
            hm_errf(errmsg, errlen, "key derivation failed");
        hm_ctx_free(ctx);
        return rc;
    }
    *out = ctx;
    return HM_OK;
}

void hm_ctx_free(hm_ctx *ctx)
{
    if (ctx == NULL)
        return;
    OPENSSL_clear_free(ctx, sizeof *ctx);
}

unsigned hm_ctx_channels(const hm_ctx *ctx)
{
    return ctx ? ctx->n_channels : 0;
}

int hm_ctx_channel_scheme(const hm_ctx *ctx, unsigned channel)
{
    if (ctx == NULL || channel >= ctx->n_channels)
        return 0;
    return ctx->ch[channel].scheme;
}

unsigned hm_ctx_channel_window(const hm_ctx *ctx, unsigned channel)
{
    if (ctx == NULL || channel >= ctx->n_channels)
        return 0;
    return ctx->ch[channel].window;
}

int hm_ctx_channel_param(const hm_ctx *ctx, unsigned channel,
                         const char *name, double *value)
{
    if (ctx == NULL || name == NULL || value == NULL ||
        channel >= ctx->n_channels)
        return HM_EINVAL;
    const hm_channel *ch = &ctx->ch[channel];
    int kgw = ch->scheme == HM_SCHEME_KGW;
    int tour = ch->scheme == HM_SCHEME_TOURNAMENT;
    if (strcmp(name, "h") == 0)
        *value = ch->h;
    else if (strcmp(name, "window") == 0)
        *value = ch->window;
    else if (kgw && strcmp(name, "gamma") == 0)
        *value = ch->gamma;
    else if (kgw && strcmp(name, "delta") == 0)
        *value = ch->delta;
    else if (kgw && strcmp(name, "seeding") == 0)
        *value = ch->seeding;
    else if (kgw && strcmp(name, "green") == 0)
        *value = ldexp((double)ch->green_below, -64);
    else if (tour && strcmp(name, "m") == 0)
        *value = ch->layers;
    else if (tour && strcmp(name, "topk") == 0)
        *value = ch->topk;
    else
        return HM_EINVAL;
    return HM_OK;
}

const char *hm_ctx_fingerprint(const hm_ctx *ctx)
{
    return ctx ? ctx->fingerprint : NULL;
}

const char *hm_ctx_tenant(const hm_ctx *ctx)
{
    return ctx ? ctx->tenant : NULL;
}
