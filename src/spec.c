/*
 * spec.c - the channel parameter string ("kgw:h=1+gumbel:h=4").
 */
#define _GNU_SOURCE 1 /* strtod_l, uselocale */
#include "internal.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *hm_scheme_name(int scheme)
{
    switch (scheme) {
    case HM_SCHEME_GUMBEL:
        return "gumbel";
    case HM_SCHEME_KGW:
        return "kgw";
    case HM_SCHEME_TOURNAMENT:
        return "tournament";
    default:
        return NULL;
    }
}

static int scheme_from_name(const char *s, size_t n)
{
    for (int sc = HM_SCHEME_GUMBEL; sc <= HM_SCHEME_TOURNAMENT; sc++) {
        const char *name = hm_scheme_name(sc);
        if (strlen(name) == n && memcmp(name, s, n) == 0)
            return sc;
    }
    return 0;
}

/* Defaults from the literature: Kirchenbauer et al. (gamma 0.25, delta 2,
 * LeftHash h=1, SelfHash h=4), Aaronson / Fernandez et al. (h=4),
 * SynthID-Text (30 layers, n-gram of 5 so h=4, top-k 40). */
static void channel_defaults(hm_channel *ch, int scheme)
{
    memset(ch, 0, sizeof *ch);
    ch->scheme = scheme;
    strcpy(ch->id, "main");
    ch->h = scheme == HM_SCHEME_KGW ? 1 : 4;
    ch->gamma = 0.25;
    ch->delta = 2.0;
    ch->seeding = HM_SEEDING_LEFTHASH;
    ch->layers = 30;
    ch->topk = 40;
}

/* Plain decimal spellings only: no spaces, signs on integers, hex. */
static int plain_number(const char *v, const char *allowed)
{
    if (!(*v >= '0' && *v <= '9') && !(*v == '.' && v[1] >= '0' && v[1] <= '9'))
        return 0;
    return strspn(v, allowed) == strlen(v);
}

int hm_spec_uint(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    if (!plain_number(v, "0123456789"))
        return -1;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end != '\0' || v[0] == '-' || x < lo || x > hi)
        return -1;
    *out = (unsigned)x;
    return 0;
}

int hm_spec_double(const char *v, double *out)
{
    char *end;
    if (!plain_number(v, "0123456789.eE+-"))
        return -1;
    errno = 0;
    /* Numbers are spelled the C way whatever the program's locale. */
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c == (locale_t)0)
        return -1;
    double x = strtod_l(v, &end, c);
    freelocale(c);
    if (errno || end == v || *end != '\0' || !isfinite(x))
        return -1;
    *out = x;
    return 0;
}

int hm_spec_id_ok(const char *v, size_t max)
{
    size_t n = strlen(v);
    if (n == 0 || n >= max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Apply one NAME=VALUE to ch; returns 0 or -1 with errmsg set. */
static int set_param(hm_channel *ch, const char *name, const char *val,
                     int *h_given, char *errmsg, size_t errlen)
{
    const char *sn = hm_scheme_name(ch->scheme);
    int kgw = ch->scheme == HM_SCHEME_KGW;
    int tour = ch->scheme == HM_SCHEME_TOURNAMENT;

    if (strcmp(name, "id") == 0) {
        if (!hm_spec_id_ok(val, sizeof ch->id))
            goto bad_value;
        strcpy(ch->id, val);
    } else if (strcmp(name, "h") == 0) {
        if (hm_spec_uint(val, 1, HM_MAX_CONTEXT, &ch->h) != 0)
            goto bad_value;
        *h_given = 1;
    } else if (kgw && strcmp(name, "gamma") == 0) {
        if (hm_spec_double(val, &ch->gamma) != 0 || !(ch->gamma >= 0x1p-32) ||
            !(ch->gamma <= 1 - 0x1p-32))
            goto bad_value;
    } else if (kgw && strcmp(name, "delta") == 0) {
        if (hm_spec_double(val, &ch->delta) != 0 || ch->delta < 0 ||
            ch->delta > 1000)
            goto bad_value;
    } else if (kgw && strcmp(name, "seeding") == 0) {
        if (strcmp(val, "lefthash") == 0)
            ch->seeding = HM_SEEDING_LEFTHASH;
        else if (strcmp(val, "selfhash") == 0)
            ch->seeding = HM_SEEDING_SELFHASH;
        else
            goto bad_value;
    } else if (tour && strcmp(name, "m") == 0) {
        if (hm_spec_uint(val, 1, 64, &ch->layers) != 0)
            goto bad_value;
    } else if (tour && strcmp(name, "topk") == 0) {
        if (hm_spec_uint(val, 1, HM_MAX_TOPK, &ch->topk) != 0)
            goto bad_value;
    } else {
        hm_errf(errmsg, errlen, "unknown parameter '%s' for scheme %s", name,
                sn);
        return -1;
    }
    return 0;
bad_value:
    hm_errf(errmsg, errlen, "bad value '%s' for %s parameter '%s'", val, sn,
            name);
    return -1;
}

static int parse_channel(hm_channel *ch, char *text, char *errmsg,
                         size_t errlen)
{
    char *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    int scheme = scheme_from_name(text, n);
    int h_given = 0;
    if (scheme == 0) {
        hm_errf(errmsg, errlen,
                "unknown scheme '%.*s' (expected gumbel, kgw or tournament)",
                (int)n, text);
        return -1;
    }
    channel_defaults(ch, scheme);
    if (colon != NULL) {
        char seen[8][16];
        unsigned n_seen = 0;
        char *kv = colon + 1;
        for (;;) {
            char *comma = strchr(kv, ',');
            if (comma != NULL)
                *comma = '\0';
            char *eq = strchr(kv, '=');
            if (*kv == '\0') {
                hm_errf(errmsg, errlen, "empty parameter in %s channel",
                        hm_scheme_name(scheme));
                return -1;
            }
            if (eq == NULL || eq == kv) {
                hm_errf(errmsg, errlen, "expected NAME=VALUE, found '%s'", kv);
                return -1;
            }
            *eq = '\0';
            for (unsigned i = 0; i < n_seen; i++)
                if (strcmp(seen[i], kv) == 0) {
                    hm_errf(errmsg, errlen, "parameter '%s' given twice", kv);
                    return -1;
                }
            if (set_param(ch, kv, eq + 1, &h_given, errmsg, errlen) != 0)
                return -1;
            if (n_seen < 8 && strlen(kv) < sizeof seen[0])
                strcpy(seen[n_seen++], kv);
            if (comma == NULL)
                break;
            kv = comma + 1;
        }
    }
    if (scheme == HM_SCHEME_KGW && ch->seeding == HM_SEEDING_SELFHASH) {
        if (!h_given)
            ch->h = 4;
        if (ch->h < 2) {
            hm_errf(errmsg, errlen, "selfhash needs h >= 2");
            return -1;
        }
        ch->window = ch->h - 1; /* the token itself completes the window */
    } else {
        ch->window = ch->h;
    }
    if (scheme == HM_SCHEME_KGW)
        ch->green_below = (uint64_t)ldexp(ch->gamma, 64);
    return 0;
}

int hm_spec_parse(hm_ctx *ctx, const char *spec, char *errmsg, size_t errlen)
{
    char buf[1024];
    if (spec == NULL || *spec == '\0') {
        hm_errf(errmsg, errlen, "empty scheme specification");
        return HM_EFORMAT;
    }
    if (strlen(spec) >= sizeof buf) {
        hm_errf(errmsg, errlen, "scheme specification too long");
        return HM_EFORMAT;
    }
    strcpy(buf, spec);
    ctx->n_channels = 0;
    ctx->sampler = -1;
    ctx->max_window = 0;
    for (char *part = buf, *next; part != NULL; part = next) {
        char *plus = strchr(part, '+');
        next = plus ? plus + 1 : NULL;
        if (plus != NULL)
            *plus = '\0';
        if (*part == '\0') {
            hm_errf(errmsg, errlen, "empty channel in '%s'", spec);
            return HM_EFORMAT;
        }
        if (ctx->n_channels == HM_MAX_CHANNELS) {
            hm_errf(errmsg, errlen, "more than %d channels",
                    HM_MAX_CHANNELS);
            return HM_EFORMAT;
        }
        hm_channel *ch = &ctx->ch[ctx->n_channels];
        if (parse_channel(ch, part, errmsg, errlen) != 0)
            return HM_EFORMAT;
        for (unsigned i = 0; i < ctx->n_channels; i++) {
            if (ctx->ch[i].scheme == ch->scheme &&
                strcmp(ctx->ch[i].id, ch->id) == 0) {
                hm_errf(errmsg, errlen,
                        "two %s channels with id '%s': give each its own id=",
                        hm_scheme_name(ch->scheme), ch->id);
                return HM_EFORMAT;
            }
        }
        if (ch->scheme != HM_SCHEME_KGW) {
            if (ctx->sampler >= 0) {
                hm_errf(errmsg, errlen,
                        "at most one sampling channel (gumbel or tournament)");
                return HM_EFORMAT;
            }
            ctx->sampler = (int)ctx->n_channels;
        }
        if (ch->window > ctx->max_window)
            ctx->max_window = ch->window;
        ctx->n_channels++;
    }
    if (ctx->n_channels == 0) {
        hm_errf(errmsg, errlen, "empty scheme specification");
        return HM_EFORMAT;
    }
    return HM_OK;
}

/* NAME=VALUE[,NAME=VALUE...]: each pair to set(obj, ...), which returns 0
 * or -1 with errmsg set; what names the parameters in messages. */
int hm_spec_params(const char *spec, const char *what,
                   int (*set)(void *obj, const char *name, const char *val,
                              char *errmsg, size_t errlen),
                   void *obj, char *errmsg, size_t errlen)
{
    char buf[512];
    if (strlen(spec) >= sizeof buf) {
        hm_errf(errmsg, errlen, "%s parameter string too long", what);
        return HM_EFORMAT;
    }
    strcpy(buf, spec);
    for (char *p = buf; *p != '\0';) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        char *eq = strchr(p, '=');
        if (eq == NULL || eq == p || eq[1] == '\0') {
            hm_errf(errmsg, errlen, "expected NAME=VALUE, got '%s'", p);
            return HM_EFORMAT;
        }
        *eq = '\0';
        if (set(obj, p, eq + 1, errmsg, errlen) != 0)
            return HM_EFORMAT;
        if (comma == NULL)
            break;
        p = comma + 1;
        if (*p == '\0') {
            hm_errf(errmsg, errlen, "trailing ',' in %s parameters", what);
            return HM_EFORMAT;
        }
    }
    return HM_OK;
}

/* Shortest decimal that reads back as the same double, without '+'
 * (which joins channels): "1e+03" is written "1e03". */
void hm_spec_fmt_double(char *out, size_t n, double x)
{
    /* The C locale for this thread only, so that the decimal point is
     * '.' whatever the host program's locale (uselocale is per thread). */
    locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t old = c != (locale_t)0 ? uselocale(c) : (locale_t)0;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, x);
        if (strtod(out, NULL) == x)
            break;
    }
    if (c != (locale_t)0) {
        uselocale(old);
        freelocale(c);
    }
    char *plus = strchr(out, '+');
    if (plus != NULL)
        memmove(plus, plus + 1, strlen(plus));
}

size_t hm_ctx_spec(const hm_ctx *ctx, char *buf, size_t len)
{
    char out[HM_SPEC_SIZE], g[32], d[32];
    size_t n = 0;
    if (ctx == NULL)
        return 0;
    out[0] = '\0';
    for (unsigned i = 0; i < ctx->n_channels; i++) {
        const hm_channel *ch = &ctx->ch[i];
        int w = 0;
        const char *sep = i ? "+" : "";
        switch (ch->scheme) {
        case HM_SCHEME_KGW:
            hm_spec_fmt_double(g, sizeof g, ch->gamma);
            hm_spec_fmt_double(d, sizeof d, ch->delta);
            w = snprintf(out + n, sizeof out - n,
                         "%skgw:id=%s,h=%u,gamma=%s,delta=%s,seeding=%s", sep,
                         ch->id, ch->h, g, d,
                         ch->seeding == HM_SEEDING_SELFHASH ? "selfhash"
                                                            : "lefthash");
            break;
        case HM_SCHEME_TOURNAMENT:
            w = snprintf(out + n, sizeof out - n,
                         "%stournament:id=%s,h=%u,m=%u,topk=%u", sep, ch->id,
                         ch->h, ch->layers, ch->topk);
            break;
        default:
            w = snprintf(out + n, sizeof out - n, "%sgumbel:id=%s,h=%u", sep,
                         ch->id, ch->h);
            break;
        }
        if (w < 0 || (size_t)w >= sizeof out - n) {
            /* cannot happen with today's limits (4 channels, ids of 31
             * bytes); if it did, the length says the spec did not fit */
            n = sizeof out;
            break;
        }
        n += (size_t)w;
    }
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", out);
    return n;
}

int hm_ctx_one_spec(const hm_ctx *const *ctxs, size_t n, const char *what,
                    char spec[HM_SPEC_SIZE], char *errmsg, size_t errlen)
{
    char s[HM_SPEC_SIZE];
    for (size_t i = 0; i < n; i++) {
        if (ctxs[i] == NULL)
            return HM_EINVAL;
        if (hm_ctx_spec(ctxs[i], i ? s : spec, sizeof s) >= sizeof s)
            return HM_ERANGE;
        if (i > 0 && strcmp(s, spec) != 0) {
            hm_errf(errmsg, errlen,
                    "key %zu has spec '%s', key 0 has '%s': %s needs one "
                    "spec",
                    i, s, spec, what);
            return HM_EINVAL;
        }
    }
    return HM_OK;
}
