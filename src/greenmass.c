/*
 * greenmass.c - open-model audits: a suspect's listed probability mass on
 * the green tokens of kgw (lefthash) windows, with conservative bounds.
 *
 * What is stored does not depend on any key: per channel, the distinct
 * windows of the records' contexts and, per window, the sum over its
 * contexts of each listed token's probability.  The keys enter only when a
 * result is asked for, so any number of keys (tenants, self-check keys)
 * share one accumulator, and the order of operations, hence every bit of
 * a result, depends on the records added and their order only.
 *
 * The null model is the tally's (hm_tally_new(3)): under an ideal PRF the
 * green flags of distinct (window, token) pairs are independent
 * Bernoulli(gamma) variables, gamma the exact green probability of the
 * channel.  Contexts sharing a window share its green list, so they are
 * averaged into one term; distinct windows have independent green lists.
 * A term is then a fixed (key-independent) weighted sum of iid Bernoulli
 * variables, and S = sum of terms is such a sum too.  The bounds below
 * hold for any weights, so the averaging rule matters for power only.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define MAX_KEYS 100000
#define NONE ((size_t)-1)

typedef struct gm_window {
    uint64_t n_ctx; /* contexts averaged into this window */
    size_t head;    /* its first pair, or NONE */
} gm_window;

typedef struct gm_pair {
    uint32_t token;
    size_t win;  /* the window */
    size_t next; /* the window's next pair, or NONE */
    double sum;  /* sum over the window's contexts of the probability */
} gm_pair;

/* Open addressing over indices + 1 (0: empty), at most half full. */
typedef struct gm_index {
    size_t *slot;
    size_t mask; /* slots - 1; slot NULL when none yet */
} gm_index;

typedef struct gm_chan {
    unsigned width; /* ids in a window */
    uint32_t *wids; /* width ids per window */
    gm_window *win;
    size_t n_win, cap_win;
    gm_index widx;
    gm_pair *pair;
    size_t n_pair, cap_pair;
    gm_index pidx;
    uint64_t padded, dropped_padded, contexts, listed;
} gm_chan;

struct hm_greenmass {
    const hm_ctx **ctxs;
    size_t n_keys;
    unsigned n_channels;
    unsigned flags;
    uint64_t records, dropped_repeat;
    uint64_t *seen; /* 128-bit context hashes, 2 words per slot */
    size_t seen_mask, n_seen;
    double *prob; /* scratch: the probabilities of the record being added */
    size_t cap_prob;
    gm_chan ch[HM_MAX_CHANNELS];
};

/* ----------------------------------------------------------- hashing */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t pair_hash(size_t win, uint32_t token)
{
    return mix64((uint64_t)win * UINT64_C(0x9E3779B97F4A7C15) ^ token);
}

/* Make room for need more entries (n held): all or nothing. */
static int index_reserve(gm_index *x, size_t n, size_t need,
                         uint64_t (*hash)(const gm_chan *, size_t),
                         const gm_chan *c)
{
    size_t slots = x->slot ? x->mask + 1 : 0;
    if (n + need <= slots / 2)
        return HM_OK;
    size_t ns = slots ? slots : 64;
    while (n + need > ns / 2) {
        if (ns > SIZE_MAX / (4 * sizeof(size_t)))
            return HM_ENOMEM;
        ns *= 2;
    }
    size_t *s = calloc(ns, sizeof *s);
    if (s == NULL)
        return HM_ENOMEM;
    for (size_t i = 0; i < slots; i++) {
        if (x->slot[i] == 0)
            continue;
        size_t j = (size_t)hash(c, x->slot[i] - 1) & (ns - 1);
        while (s[j] != 0)
            j = (j + 1) & (ns - 1);
        s[j] = x->slot[i];
    }
    free(x->slot);
    x->slot = s;
    x->mask = ns - 1;
    return HM_OK;
}

static uint64_t win_hash_at(const gm_chan *c, size_t i)
{
    return XXH3_64bits(c->wids + i * c->width, 4 * (size_t)c->width);
}

static uint64_t pair_hash_at(const gm_chan *c, size_t i)
{
    return pair_hash(c->pair[i].win, c->pair[i].token);
}

static int grow(void **p, size_t *cap, size_t need, size_t elt)
{
    if (need <= *cap)
        return HM_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / (2 * elt))
            return HM_ENOMEM;
        nc *= 2;
    }
    void *q = realloc(*p, nc * elt);
    if (q == NULL)
        return HM_ENOMEM;
    *p = q;
    *cap = nc;
    return HM_OK;
}

/* Room for one more window and n more pairs. */
static int chan_reserve(gm_chan *c, size_t n)
{
    size_t cw = c->cap_win;
    int rc = grow((void **)&c->win, &cw, c->n_win + 1, sizeof *c->win);
    if (rc == HM_OK && cw != c->cap_win) {
        uint32_t *w = realloc(c->wids, cw * c->width * sizeof *w);
        if (w == NULL)
            rc = HM_ENOMEM; /* win grew, cap_win not: retried next time */
        else {
            c->wids = w;
            c->cap_win = cw;
        }
    }
    if (rc == HM_OK)
        rc = index_reserve(&c->widx, c->n_win, 1, win_hash_at, c);
    if (rc == HM_OK)
        rc = grow((void **)&c->pair, &c->cap_pair, c->n_pair + n,
                  sizeof *c->pair);
    if (rc == HM_OK)
        rc = index_reserve(&c->pidx, c->n_pair, n, pair_hash_at, c);
    return rc;
}

/* The window's index, added when new (room reserved). */
static size_t chan_window(gm_chan *c, const uint32_t *w)
{
    size_t bytes = 4 * (size_t)c->width;
    size_t j = (size_t)XXH3_64bits(w, bytes) & c->widx.mask;
    for (;; j = (j + 1) & c->widx.mask) {
        size_t s = c->widx.slot[j];
        if (s == 0)
            break;
        if (memcmp(c->wids + (s - 1) * c->width, w, bytes) == 0)
            return s - 1;
    }
    size_t i = c->n_win++;
    memcpy(c->wids + i * c->width, w, bytes);
    c->win[i].n_ctx = 0;
    c->win[i].head = NONE;
    c->widx.slot[j] = i + 1;
    return i;
}

static void chan_pair_add(gm_chan *c, size_t win, uint32_t token, double p)
{
    size_t j = (size_t)pair_hash(win, token) & c->pidx.mask;
    for (;; j = (j + 1) & c->pidx.mask) {
        size_t s = c->pidx.slot[j];
        if (s == 0)
            break;
        gm_pair *q = &c->pair[s - 1];
        if (q->win == win && q->token == token) {
            q->sum += p;
            return;
        }
    }
    size_t i = c->n_pair++;
    c->pair[i] = (gm_pair){token, win, c->win[win].head, p};
    c->win[win].head = i;
    c->pidx.slot[j] = i + 1;
}

/* The context set: 1 if h is in it; else 0 and *at is its free slot. */
static int seen_find(const hm_greenmass *g, const uint64_t h[2], size_t *at)
{
    size_t j = (size_t)h[0] & g->seen_mask;
    for (;; j = (j + 1) & g->seen_mask) {
        const uint64_t *s = g->seen + 2 * j;
        if (s[0] == 0 && s[1] == 0)
            break;
        if (s[0] == h[0] && s[1] == h[1])
            return 1;
    }
    *at = j;
    return 0;
}

static int seen_reserve(hm_greenmass *g)
{
    size_t slots = g->seen ? g->seen_mask + 1 : 0;
    if (g->n_seen + 1 <= slots / 2)
        return HM_OK;
    size_t ns = slots ? 2 * slots : 64;
    if (ns > SIZE_MAX / 32)
        return HM_ENOMEM;
    uint64_t *s = calloc(ns, 2 * sizeof *s);
    if (s == NULL)
        return HM_ENOMEM;
    for (size_t i = 0; i < slots; i++) {
        const uint64_t *o = g->seen + 2 * i;
        if (o[0] == 0 && o[1] == 0)
            continue;
        size_t j = (size_t)o[0] & (ns - 1);
        while (s[2 * j] != 0 || s[2 * j + 1] != 0)
            j = (j + 1) & (ns - 1);
        s[2 * j] = o[0];
        s[2 * j + 1] = o[1];
    }
    free(g->seen);
    g->seen = s;
    g->seen_mask = ns - 1;
    return HM_OK;
}

/* --------------------------------------------------------- lifecycle */

int hm_greenmass_new(hm_greenmass **out, const hm_ctx *const *ctxs,
                     size_t n_keys, unsigned flags, char *errmsg,
                     size_t errlen)
{
    if (out == NULL || ctxs == NULL || n_keys == 0 ||
        (flags & ~HM_GREENMASS_SKIP_PADDED) != 0)
        return HM_EINVAL;
    *out = NULL;
    if (n_keys > MAX_KEYS) {
        hm_errf(errmsg, errlen, "too many keys (%zu, at most %d)", n_keys,
                MAX_KEYS);
        return HM_ERANGE;
    }
    char spec[HM_SPEC_SIZE];
    int rc = hm_ctx_one_spec(ctxs, n_keys, "an audit", spec, errmsg, errlen);
    if (rc != HM_OK)
        return rc;
    const hm_ctx *c0 = ctxs[0];
    for (unsigned c = 0; c < c0->n_channels; c++) {
        const hm_channel *ch = &c0->ch[c];
        if (ch->scheme != HM_SCHEME_KGW) {
            hm_errf(errmsg, errlen,
                    "channel %u (%s, id=%s): log-probability audits score "
                    "kgw channels only: %s chooses the token with keyed "
                    "uniforms, which the suspect's distribution does not "
                    "carry; give the kgw channels alone (subkeys depend on "
                    "scheme, id and tenant, not on the position in the spec)",
                    c, hm_scheme_name(ch->scheme), ch->id,
                    hm_scheme_name(ch->scheme));
            return HM_ENOTSUP;
        }
        if (ch->seeding != HM_SEEDING_LEFTHASH) {
            hm_errf(errmsg, errlen,
                    "channel %u (kgw, id=%s): seeding=selfhash is not "
                    "supported: its green list depends on the candidate "
                    "(tokens below a keyed min-hash share one list across "
                    "all windows), so per-window terms are not independent; "
                    "log-probability audits need seeding=lefthash",
                    c, ch->id);
            return HM_ENOTSUP;
        }
    }
    hm_greenmass *g = calloc(1, sizeof *g);
    if (g == NULL || (g->ctxs = malloc(n_keys * sizeof *g->ctxs)) == NULL) {
        free(g);
        return HM_ENOMEM;
    }
    memcpy(g->ctxs, ctxs, n_keys * sizeof *g->ctxs);
    g->n_keys = n_keys;
    g->n_channels = c0->n_channels;
    g->flags = flags;
    for (unsigned c = 0; c < g->n_channels; c++)
        g->ch[c].width = c0->ch[c].window;
    *out = g;
    return HM_OK;
}

void hm_greenmass_clear(hm_greenmass *g)
{
    if (g == NULL)
        return;
    for (unsigned c = 0; c < HM_MAX_CHANNELS; c++) {
        gm_chan *ch = &g->ch[c];
        unsigned width = ch->width;
        free(ch->wids);
        free(ch->win);
        free(ch->widx.slot);
        free(ch->pair);
        free(ch->pidx.slot);
        memset(ch, 0, sizeof *ch);
        ch->width = width;
    }
    free(g->seen);
    g->seen = NULL;
    g->seen_mask = 0;
    g->n_seen = 0;
    g->records = g->dropped_repeat = 0;
}

void hm_greenmass_free(hm_greenmass *g)
{
    if (g == NULL)
        return;
    hm_greenmass_clear(g);
    free(g->prob);
    free(g->ctxs);
    free(g);
}

size_t hm_greenmass_keys(const hm_greenmass *g)
{
    return g ? g->n_keys : 0;
}

unsigned hm_greenmass_channels(const hm_greenmass *g)
{
    return g ? g->n_channels : 0;
}

const char *hm_greenmass_bound_name(int bound)
{
    switch (bound) {
    case HM_BOUND_NONE:
        return "none";
    case HM_BOUND_HOEFFDING:
        return "hoeffding";
    case HM_BOUND_BERNSTEIN:
        return "bernstein";
    case HM_BOUND_CHERNOFF:
        return "chernoff";
    default:
        return NULL;
    }
}

/* -------------------------------------------------------------- adding */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* HM_OK when no id is listed twice (ids checked >= 0). */
static int distinct_ids(const int32_t *ids, size_t n)
{
    if (n <= 64) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (ids[i] == ids[j])
                    return HM_EINVAL;
        return HM_OK;
    }
    int32_t *s = malloc(n * sizeof *s);
    if (s == NULL)
        return HM_ENOMEM;
    memcpy(s, ids, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_i32);
    int rc = HM_OK;
    for (size_t i = 1; i < n && rc == HM_OK; i++)
        if (s[i] == s[i - 1])
            rc = HM_EINVAL;
    free(s);
    return rc;
}

int hm_greenmass_add(hm_greenmass *g, const int32_t *context, size_t n_context,
                     const int32_t *ids, const double *logprobs, size_t n)
{
    if (g == NULL || (context == NULL && n_context > 0) ||
        ((ids == NULL || logprobs == NULL) && n > 0))
        return HM_EINVAL;
    for (size_t i = 0; i < n_context; i++)
        if (context[i] < 0)
            return HM_ERANGE;
    int rc = grow((void **)&g->prob, &g->cap_prob, n, sizeof *g->prob);
    if (rc != HM_OK)
        return rc;
    double mass = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(logprobs[i]))
            return HM_EINVAL;
        if (ids[i] < 0 || logprobs[i] > 0)
            return HM_ERANGE;
        g->prob[i] = exp(logprobs[i]);
        mass += g->prob[i];
    }
    if (mass > 1 + HM_GREENMASS_MASS_TOLERANCE)
        return HM_ERANGE;
    rc = distinct_ids(ids, n);
    if (rc != HM_OK)
        return rc;

    /* A repeated context is the same query: it adds nothing. */
    XXH128_hash_t hh = XXH3_128bits(context, n_context * sizeof *context);
    uint64_t h[2] = {hh.low64, hh.high64};
    if (h[0] == 0 && h[1] == 0)
        h[0] = 1;
    size_t at = 0;
    if (g->seen != NULL && seen_find(g, h, &at)) {
        g->records++;
        g->dropped_repeat++;
        return HM_OK;
    }
    /* Reserve everything first, so that nothing changes on failure. */
    rc = seen_reserve(g);
    for (unsigned c = 0; rc == HM_OK && c < g->n_channels; c++)
        rc = chan_reserve(&g->ch[c], n);
    if (rc != HM_OK)
        return rc;
    (void)seen_find(g, h, &at);
    g->seen[2 * at] = h[0];
    g->seen[2 * at + 1] = h[1];
    g->n_seen++;
    g->records++;

    hm_row row = {context, n_context, NULL, 0, 0};
    for (unsigned c = 0; c < g->n_channels; c++) {
        gm_chan *ch = &g->ch[c];
        uint32_t w[HM_MAX_CONTEXT];
        if (hm_row_window(&row, ch->width, w) != HM_OK)
            return HM_ERANGE; /* not reached: ids checked above */
        if (n_context < ch->width) {
            if (g->flags & HM_GREENMASS_SKIP_PADDED) {
                ch->dropped_padded++;
                continue;
            }
            ch->padded++;
        }
        size_t wi = chan_window(ch, w);
        ch->win[wi].n_ctx++;
        ch->contexts++;
        ch->listed += n;
        for (size_t i = 0; i < n; i++)
            chan_pair_add(ch, wi, (uint32_t)ids[i], g->prob[i]);
    }
    return HM_OK;
}

/* ------------------------------------------------------------- results */

/* f(l) = log E[exp(l (S - s))] over the stored weights; f'(l) and f''(l)
 * (may be NULL). */
static double chernoff_f(const gm_chan *c, double gamma, double s, double l,
                         double *d1, double *d2)
{
    double f = -l * s, g1 = -s, g2 = 0, odds = (1 - gamma) / gamma;
    for (size_t i = 0; i < c->n_pair; i++) {
        double q = c->pair[i].sum / (double)c->win[c->pair[i].win].n_ctx;
        double x = l * q, e = exp(-x);
        double pi = 1 / (1 + odds * e); /* tilted green probability */
        /* log(1 - gamma + gamma e^x), x >= 0, without overflow */
        f += x + log(gamma + (1 - gamma) * e);
        g1 += q * pi;
        g2 += q * q * pi * (1 - pi);
    }
    if (d1)
        *d1 = g1;
    if (d2)
        *d2 = g2;
    return f;
}

/* The Chernoff bound with the exact null MGF: min over l >= 0 of f(l),
 * found by safeguarded Newton steps on f'.  Any l gives a valid bound, so
 * the search needs no more precision than the report shows. */
static double chernoff_log(const gm_chan *c, double gamma, double s,
                           double l0)
{
    const double lmax = 1e6;
    double lo = 0, hi = l0 > 0 && isfinite(l0) ? l0 : 1, d1, d2;
    double best = 0; /* f(0) = 0 */
    for (;;) { /* bracket the root of f' */
        double f = chernoff_f(c, gamma, s, hi, &d1, NULL);
        best = fmin(best, f);
        if (d1 >= 0 || hi >= lmax)
            break;
        lo = hi;
        hi = fmin(2 * hi, lmax);
    }
    if (d1 < 0) /* f still falling at lmax */
        return best;
    double l = 0.5 * (lo + hi);
    for (int it = 0; it < 100; it++) {
        double f = chernoff_f(c, gamma, s, l, &d1, &d2);
        best = fmin(best, f);
        if (d1 < 0)
            lo = l;
        else
            hi = l;
        double next = d2 > 0 ? l - d1 / d2 : NAN;
        if (!(next > lo && next < hi))
            next = 0.5 * (lo + hi);
        if (fabs(next - l) <= 1e-12 * l || hi - lo <= 1e-12 * hi)
            break;
        l = next;
    }
    return best;
}

int hm_greenmass_result(const hm_greenmass *g, size_t key, unsigned channel,
                        hm_greenmass_stats *r)
{
    if (g == NULL || r == NULL || key >= g->n_keys ||
        channel >= g->n_channels)
        return HM_EINVAL;
    const hm_channel *kc = &g->ctxs[key]->ch[channel];
    const gm_chan *c = &g->ch[channel];
    memset(r, 0, sizeof *r);
    r->records = g->records;
    r->dropped_repeat = g->dropped_repeat;
    r->padded = c->padded;
    r->dropped_padded = c->dropped_padded;
    r->contexts = c->contexts;
    r->listed = c->listed;
    r->windows = c->n_win;
    r->pairs = c->n_pair;
    double gamma = ldexp((double)kc->green_below, -64);
    r->gamma = gamma;

    double s = 0, mass = 0, range_sq = 0, sq = 0, mmax = 0;
    for (size_t w = 0; w < c->n_win; w++) {
        hm_kgw_step st;
        double m = 0, n_ctx = (double)c->win[w].n_ctx;
        hm_kgw_prepare(kc, c->wids + w * c->width, &st);
        for (size_t i = c->win[w].head; i != NONE; i = c->pair[i].next) {
            double q = c->pair[i].sum / n_ctx;
            m += q;
            sq += q * q;
            if (hm_kgw_value(&st, c->pair[i].token) < kc->green_below)
                s += q;
        }
        mass += m;
        range_sq += m * m;
        mmax = fmax(mmax, m);
    }
    r->mass = mass;
    r->score = s;
    r->expected = gamma * mass;
    r->range_sq = range_sq;
    r->variance = gamma * (1 - gamma) * sq;
    r->max_excess = (1 - gamma) * mmax;
    r->bound = HM_BOUND_NONE;
    /* The excess, less a margin for the rounding of the sums (relative
     * error far below 2^-40), so that the bounds stay upper bounds. */
    double t = s - r->expected - 0x1p-40 * (mass + s);
    if (!(t > 0) || !(range_sq > 0))
        return HM_OK;
    const double ln10 = log(10.0);
    double h = -2 * t * t / range_sq;
    double b = -t * t / (2 * (r->variance + r->max_excess * t / 3));
    double ch = chernoff_log(c, gamma, r->expected + t,
                             r->variance > 0 ? t / r->variance : 1);
    r->log10_p_hoeffding = h / ln10;
    r->log10_p_bernstein = isfinite(b) ? b / ln10 : 0;
    r->log10_p_chernoff = isfinite(ch) ? ch / ln10 : 0;
    r->log10_p = 0;
    if (r->log10_p_hoeffding < r->log10_p) {
        r->log10_p = r->log10_p_hoeffding;
        r->bound = HM_BOUND_HOEFFDING;
    }
    if (r->log10_p_bernstein < r->log10_p) {
        r->log10_p = r->log10_p_bernstein;
        r->bound = HM_BOUND_BERNSTEIN;
    }
    if (r->log10_p_chernoff < r->log10_p) {
        r->log10_p = r->log10_p_chernoff;
        r->bound = HM_BOUND_CHERNOFF;
    }
    return HM_OK;
}
