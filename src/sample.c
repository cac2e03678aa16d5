/*
 * sample.c - the hot path: kgw bias, gumbel and tournament selection, on
 * dense logit rows and on strided candidate records.
 *
 * Nothing here allocates, locks or logs.  Results depend on token ids,
 * never on array positions: candidate records may be truncated or in any
 * order and still choose what the dense call chooses.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define CHUNK 512 /* keys computed per kernel call, on the stack */

/* ------------------------------------------------------------ checks */

static int check_row(const hm_ctx *ctx, const hm_row *row, int selecting)
{
    if (row->context == NULL && row->n_context != 0)
        return HM_EINVAL;
    if (row->seq != NULL &&
        (row->seq->magic != HM_SEQ_MAGIC || row->seq->ctx != ctx))
        return HM_EINVAL;
    if (selecting &&
        (!(row->temperature >= 0) || !isfinite(row->temperature) ||
         !(row->uniform >= 0) || !(row->uniform < 1)))
        return HM_EINVAL;
    return HM_OK;
}

static int check_dense(const hm_ctx *ctx, const void *logits, size_t n_rows,
                       size_t n_vocab, size_t row_stride, const hm_row *rows)
{
    if (ctx == NULL || (n_rows > 0 && (logits == NULL || rows == NULL)))
        return HM_EINVAL;
    if (n_vocab == 0 || n_vocab > INT32_MAX || row_stride < n_vocab)
        return n_vocab > INT32_MAX ? HM_ERANGE : HM_EINVAL;
    return HM_OK;
}

static int check_cands(const hm_ctx *ctx, const hm_cands *c,
                       const hm_row *row)
{
    if (ctx == NULL || c == NULL || row == NULL || c->data == NULL ||
        c->n == 0 || c->id_offset > c->stride ||
        c->stride - c->id_offset < 4 || c->logit_offset > c->stride ||
        c->stride - c->logit_offset < 4)
        return HM_EINVAL;
    return HM_OK;
}

/* ------------------------------------------------- candidate records */

static int32_t cand_id(const hm_cands *c, size_t i)
{
    int32_t id;
    memcpy(&id, (const char *)c->data + i * c->stride + c->id_offset,
           sizeof id);
    return id;
}

static float cand_logit(const hm_cands *c, size_t i)
{
    float l;
    memcpy(&l, (const char *)c->data + i * c->stride + c->logit_offset,
           sizeof l);
    return l;
}

static void cand_set_logit(const hm_cands *c, size_t i, float l)
{
    memcpy((char *)c->data + i * c->stride + c->logit_offset, &l, sizeof l);
}

static int cands_check_ids(const hm_cands *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (cand_id(c, i) < 0)
            return HM_ERANGE;
    return HM_OK;
}

/* -------------------------------------------------- channel windows */

/* The window of channel c at this row, and whether masking applies. */
static int channel_window(const hm_ctx *ctx, unsigned c, const hm_row *row,
                          uint32_t *w, int *masked)
{
    unsigned n = ctx->ch[c].window;
    int rc = hm_row_window(row, n, w);
    *masked = rc == HM_OK && row->seq != NULL &&
              hm_seq_seen(row->seq, c, w, n);
    return rc;
}

/* --------------------------------------------------------------- bias */

int hm_bias_dense(const hm_ctx *ctx, float *logits, size_t n_rows,
                  size_t n_vocab, size_t row_stride, const hm_row *rows,
                  unsigned *flags)
{
    int rc = check_dense(ctx, logits, n_rows, n_vocab, row_stride, rows);
    for (size_t r = 0; rc == HM_OK && r < n_rows; r++)
        rc = check_row(ctx, &rows[r], 0);
    for (size_t r = 0; rc == HM_OK && r < n_rows; r++) {
        unsigned f = 0;
        for (unsigned c = 0; rc == HM_OK && c < ctx->n_channels; c++) {
            const hm_channel *ch = &ctx->ch[c];
            uint32_t w[HM_MAX_CONTEXT];
            int masked;
            hm_kgw_step st;
            if (ch->scheme != HM_SCHEME_KGW)
                continue;
            rc = channel_window(ctx, c, &rows[r], w, &masked);
            if (rc != HM_OK || masked) {
                f |= HM_STEP_MASKED;
                continue;
            }
            hm_kgw_prepare(ch, w, &st);
            hm_k_kgw_dense(&st, ch->green_below, (float)ch->delta,
                           logits + r * row_stride, (uint32_t)n_vocab);
            f |= HM_STEP_BIASED;
        }
        if (flags)
            flags[r] = f;
    }
    return rc;
}

int hm_bias_cands(const hm_ctx *ctx, const hm_cands *cands, const hm_row *row,
                  unsigned *flags)
{
    int rc = check_cands(ctx, cands, row);
    if (rc == HM_OK)
        rc = check_row(ctx, row, 0);
    if (rc == HM_OK)
        rc = cands_check_ids(cands);
    unsigned f = 0;
    for (unsigned c = 0; rc == HM_OK && c < ctx->n_channels; c++) {
        const hm_channel *ch = &ctx->ch[c];
        uint32_t w[HM_MAX_CONTEXT];
        int masked;
        hm_kgw_step st;
        if (ch->scheme != HM_SCHEME_KGW)
            continue;
        rc = channel_window(ctx, c, row, w, &masked);
        if (rc != HM_OK || masked) {
            f |= HM_STEP_MASKED;
            continue;
        }
        hm_kgw_prepare(ch, w, &st);
        float delta = (float)ch->delta;
        for (size_t i = 0; i < cands->n; i++) {
            uint64_t x = hm_kgw_value(&st, (uint32_t)cand_id(cands, i));
            if (x < ch->green_below)
                cand_set_logit(cands, i, cand_logit(cands, i) + delta);
        }
        f |= HM_STEP_BIASED;
    }
    if (flags)
        *flags = f;
    return rc;
}

/* ---------------------------------------------------- races (argmax) */

/* The best of the running (key, id) and one chunk's candidates.  The chunk
 * is keys' ids[i] (or base + i when ids is NULL).  Cheap upper bounds come
 * first: a chunk whose bounds stay below the running best is skipped, and
 * only candidates whose bound reaches it get their exact key, all at once
 * when there are many.  Both ways compute the same bits, so the outcome is
 * the exact argmax whichever way a candidate was reached; ties go to the
 * smaller id. */
typedef struct race {
    float best;
    uint32_t best_id;
    ptrdiff_t win; /* position of the winner in the whole input, or -1 */
} race;

static void race_chunk(race *r, hm_seed s, const uint32_t *ids, uint32_t base,
                       const float *logits, size_t m, float inv_t,
                       size_t offset)
{
    float ub[CHUNK], keys[CHUNK];
    size_t many = 0;
    hm_k_gumbel_bounds(s, ids, base, logits, inv_t, ub, m);
    if (!(hm_k_max(ub, m) >= r->best))
        return;
    for (size_t i = 0; i < m; i++)
        many += ub[i] >= r->best;
    if (many > CHUNK / 16)
        hm_k_gumbel_keys(s, ids, base, logits, inv_t, keys, m);
    for (size_t i = 0; i < m; i++) {
        if (!(ub[i] >= r->best))
            continue;
        uint32_t id = ids ? ids[i] : base + (uint32_t)i;
        float k = many > CHUNK / 16
                      ? keys[i]
                      : hm_gumbel_key(hm_mix(s.a, s.g, id), logits[i], inv_t);
        if (k > r->best ||
            (k == r->best && r->win >= 0 && id < r->best_id)) {
            r->best = k;
            r->best_id = id;
            r->win = (ptrdiff_t)(offset + i);
        }
    }
}

/* A Gumbel-max race over a dense row with noise from seed s: keyed for
 * the gumbel scheme, unkeyed (the caller's uniform) for plain sampling. */
static int32_t race_dense(hm_seed s, const float *logits, uint32_t n,
                          float inv_t)
{
    race r = {-INFINITY, 0, -1};
    for (uint32_t base = 0; base < n; base += CHUNK) {
        size_t m = n - base < CHUNK ? n - base : CHUNK;
        race_chunk(&r, s, NULL, base, logits + base, m, inv_t, base);
    }
    return r.win < 0 ? -1 : (int32_t)r.best_id;
}

/* The same race over n (id, logit) pairs in any order. */
static ptrdiff_t race_pairs(hm_seed s, const uint32_t *ids,
                            const float *logits, size_t n, float inv_t)
{
    race r = {-INFINITY, 0, -1};
    for (size_t base = 0; base < n; base += CHUNK) {
        size_t m = n - base < CHUNK ? n - base : CHUNK;
        race_chunk(&r, s, ids + base, 0, logits + base, m, inv_t, base);
    }
    return r.win;
}

/* Race over candidate records, gathered a chunk at a time. */
static ptrdiff_t race_cands(hm_seed s, const hm_cands *c, float inv_t)
{
    uint32_t ids[CHUNK];
    float logits[CHUNK];
    race r = {-INFINITY, 0, -1};
    for (size_t base = 0; base < c->n; base += CHUNK) {
        size_t m = c->n - base < CHUNK ? c->n - base : CHUNK;
        hm_k_gather(c->data, c->stride, c->id_offset, c->logit_offset, base,
                    m, ids, logits);
        race_chunk(&r, s, ids, 0, logits, m, inv_t, base);
    }
    return r.win;
}

/* ---------------------------------------------------------- top-k set */

typedef struct cand {
    float logit;
    uint32_t id;
    size_t index; /* record position (candidate path) */
} cand;

/* The total order of candidates: larger logit first, then smaller id. */
static int better(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* A bounded min-heap keeping the k best candidates (root = worst). */
typedef struct topk {
    cand *c;
    size_t n, k;
} topk;

static void sift_down(topk *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < t->n && better(&t->c[w], &t->c[l]))
            w = l;
        if (r < t->n && better(&t->c[w], &t->c[r]))
            w = r;
        if (w == i)
            return;
        cand tmp = t->c[i];
        t->c[i] = t->c[w];
        t->c[w] = tmp;
        i = w;
    }
}

static void topk_offer(topk *t, cand x)
{
    if (!(x.logit > -INFINITY)) /* -inf and NaN are excluded */
        return;
    if (t->n < t->k) {
        size_t i = t->n++;
        t->c[i] = x;
        while (i > 0 && better(&t->c[(i - 1) / 2], &t->c[i])) {
            cand tmp = t->c[i];
            t->c[i] = t->c[(i - 1) / 2];
            t->c[(i - 1) / 2] = tmp;
            i = (i - 1) / 2;
        }
    } else if (better(&x, &t->c[0])) {
        t->c[0] = x;
        sift_down(t, 0);
    }
}

/* Canonical order (by id) so that sums run in the same order whatever the
 * input layout.  Shell sort: small sets, no allocation. */
static void sort_by_id(cand *c, size_t n)
{
    static const size_t gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        size_t gap = gaps[g];
        for (size_t i = gap; i < n; i++) {
            cand x = c[i];
            size_t j = i;
            for (; j >= gap && c[j - gap].id > x.id; j -= gap)
                c[j] = c[j - gap];
            c[j] = x;
        }
    }
}

/* ---------------------------------------------------------- tournament */

/* SynthID-style tournament with two candidates per match, computed as the
 * exact distribution it induces: each layer l multiplies p(v) by
 * 1 + g_l(v) - E_p[g_l].  The choice is then drawn from that distribution
 * with the caller's uniform.  Returns the position in set. */
static size_t tournament(const hm_channel *ch, hm_seed key, cand *set,
                         size_t n, float inv_t, double uniform, int keyed)
{
    double p[HM_MAX_TOPK];
    uint64_t x[HM_MAX_TOPK];
    uint32_t ids[HM_MAX_TOPK];
    float logp[HM_MAX_TOPK];
    double mx = -INFINITY, z = 0;

    for (size_t i = 0; i < n; i++)
        mx = set[i].logit > mx ? set[i].logit : mx;
    for (size_t i = 0; i < n; i++) {
        /* +inf logits: the limit distribution, uniform over them */
        p[i] = isinf(mx) ? (set[i].logit == mx ? 1.0 : 0.0)
                         : exp(((double)set[i].logit - mx) * inv_t);
        z += p[i];
        ids[i] = set[i].id;
        x[i] = hm_mix(key.a, key.g, set[i].id);
    }
    for (size_t i = 0; i < n; i++)
        p[i] /= z;
    for (unsigned l = 0; keyed && l < ch->layers; l++) {
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += (double)((x[i] >> l) & 1u) * p[i];
        for (size_t i = 0; i < n; i++)
            p[i] *= 1.0 + (double)((x[i] >> l) & 1u) - s;
    }
    for (size_t i = 0; i < n; i++)
        logp[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
    ptrdiff_t w = race_pairs(hm_seed_uniform(uniform), ids, logp, n, 1.0f);
    return w < 0 ? 0 : (size_t)w;
}

/* --------------------------------------------------------------- select */

/* What one row needs decided before any candidate is looked at. */
typedef struct plan {
    int greedy;
    int masked;
    const hm_channel *ch; /* sampling channel or NULL */
    hm_seed key;
    float inv_t;
} plan;

static int make_plan(const hm_ctx *ctx, const hm_row *row, plan *pl)
{
    memset(pl, 0, sizeof *pl);
    /* Below HM_GREEDY_BELOW, logit/T would overflow for ordinary logits
     * and ties at +inf would decide: such requests are greedy. */
    pl->greedy = row->temperature < HM_GREEDY_BELOW;
    pl->inv_t = pl->greedy ? 1.0f : 1.0f / row->temperature;
    if (ctx->sampler < 0)
        return HM_OK;
    uint32_t w[HM_MAX_CONTEXT];
    int rc = channel_window(ctx, (unsigned)ctx->sampler, row, w, &pl->masked);
    if (rc != HM_OK)
        return rc;
    pl->ch = &ctx->ch[ctx->sampler];
    pl->key = hm_seed_window(&pl->ch->cmac, w, pl->ch->window);
    return HM_OK;
}

static unsigned plan_flags(const plan *pl)
{
    if (pl->greedy)
        return HM_STEP_GREEDY;
    if (pl->ch == NULL)
        return HM_STEP_FALLBACK;
    if (pl->masked)
        return HM_STEP_MASKED | HM_STEP_FALLBACK;
    return HM_STEP_WATERMARKED;
}

static int select_dense_row(const hm_ctx *ctx, const float *l, uint32_t n,
                            const hm_row *row, int32_t *token,
                            unsigned *flags)
{
    plan pl;
    int rc = make_plan(ctx, row, &pl);
    if (rc != HM_OK)
        return rc;
    *flags = plan_flags(&pl);
    int keyed = *flags == HM_STEP_WATERMARKED;
    if (pl.greedy) {
        ptrdiff_t i = hm_k_argmax(l, n);
        *token = (int32_t)i;
    } else if (pl.ch != NULL && pl.ch->scheme == HM_SCHEME_TOURNAMENT) {
        cand heap[HM_MAX_TOPK];
        topk t = {heap, 0, pl.ch->topk};
        for (uint32_t v = 0; v < n; v++)
            if (t.n < t.k || l[v] > heap[0].logit)
                topk_offer(&t, (cand){l[v], v, v});
        if (t.n == 0)
            return HM_EINVAL;
        sort_by_id(heap, t.n);
        size_t w = tournament(pl.ch, pl.key, heap, t.n, pl.inv_t,
                              row->uniform, keyed);
        *token = (int32_t)heap[w].id;
    } else {
        hm_seed s = keyed ? pl.key : hm_seed_uniform(row->uniform);
        *token = race_dense(s, l, n, pl.inv_t);
    }
    return *token < 0 ? HM_EINVAL : HM_OK; /* no finite logit */
}

int hm_select_dense(const hm_ctx *ctx, const float *logits, size_t n_rows,
                    size_t n_vocab, size_t row_stride, const hm_row *rows,
                    int32_t *tokens, unsigned *flags)
{
    int rc = check_dense(ctx, logits, n_rows, n_vocab, row_stride, rows);
    if (rc == HM_OK && n_rows > 0 && tokens == NULL)
        rc = HM_EINVAL;
    for (size_t r = 0; rc == HM_OK && r < n_rows; r++)
        rc = check_row(ctx, &rows[r], 1);
    for (size_t r = 0; rc == HM_OK && r < n_rows; r++) {
        unsigned f = 0;
        rc = select_dense_row(ctx, logits + r * row_stride,
                              (uint32_t)n_vocab, &rows[r], &tokens[r], &f);
        if (flags)
            flags[r] = f;
    }
    return rc;
}

int hm_select_cands(const hm_ctx *ctx, const hm_cands *cands,
                    const hm_row *row, int32_t *token, size_t *index,
                    unsigned *flags)
{
    plan pl;
    int rc = check_cands(ctx, cands, row);
    if (rc == HM_OK && token == NULL)
        rc = HM_EINVAL;
    if (rc == HM_OK)
        rc = check_row(ctx, row, 1);
    if (rc == HM_OK)
        rc = cands_check_ids(cands);
    if (rc == HM_OK)
        rc = make_plan(ctx, row, &pl);
    if (rc != HM_OK)
        return rc;
    unsigned f = plan_flags(&pl);
    int keyed = f == HM_STEP_WATERMARKED;
    ptrdiff_t win = -1;
    if (pl.greedy || (pl.ch != NULL && pl.ch->scheme == HM_SCHEME_TOURNAMENT)) {
        cand heap[HM_MAX_TOPK];
        topk t = {heap, 0, pl.greedy ? 1 : pl.ch->topk};
        for (size_t i = 0; i < cands->n; i++)
            topk_offer(&t, (cand){cand_logit(cands, i),
                                  (uint32_t)cand_id(cands, i), i});
        if (t.n > 0) {
            sort_by_id(heap, t.n);
            size_t w = pl.greedy ? 0
                                 : tournament(pl.ch, pl.key, heap, t.n,
                                              pl.inv_t, row->uniform, keyed);
            win = (ptrdiff_t)heap[w].index;
        }
    } else {
        hm_seed s = keyed ? pl.key : hm_seed_uniform(row->uniform);
        win = race_cands(s, cands, pl.inv_t);
    }
    if (win < 0)
        return HM_EINVAL; /* no finite logit */
    *token = cand_id(cands, (size_t)win);
    if (index)
        *index = (size_t)win;
    if (flags)
        *flags = f;
    return HM_OK;
}
