/*
 * evallib.c - randomness, the serving loop, confidence intervals,
 * false-positive tallies and diversity for the distillation experiment.
 * See evallib.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <xxhash.h>

#include "atomicfile.h"
#include "evaldata.h"
#include "evallib.h"

/* ------------------------------------------------------------ randomness */

uint64_t ev_next(ev_rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

double ev_uniform(ev_rng *r)
{
    return (double)(ev_next(r) >> 11) * 0x1p-53;
}

uint64_t ev_below(ev_rng *r, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = ev_next(r);
    while (x >= lim);
    return x % n;
}

uint64_t ev_seed(uint64_t base, const char *tag, uint64_t index)
{
    /* XXH64 is stable across versions and platforms (xxHash >= 0.8). */
    uint64_t in[2] = {base, index};
    uint64_t h = XXH64(tag, strlen(tag), 0);
    return XXH64(in, sizeof in, h);
}

void ev_shuffle(ev_rng *r, size_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ev_below(r, i), t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* --------------------------------------------------------------- serving */

struct ev_server {
    const ng_model *m;
    ev_sampling s;
    size_t vocab, max_tokens;
    float *row;       /* the model's row, then biased */
    float *trunc;     /* the row after top-k: -INFINITY elsewhere */
    int32_t *heap;    /* ids of the current top k (a min-heap) */
    int32_t *seqbuf;  /* prompt + response so far */
    void *seqmem;     /* one hm_seq, made afresh for each request */
    size_t seqsize;
};

ev_server *ev_server_new(const ng_model *m, const ev_sampling *s,
                         size_t max_tokens)
{
    ev_server *sv = calloc(1, sizeof *sv);
    if (!sv)
        return NULL;
    sv->m = m;
    sv->s = *s;
    sv->vocab = (size_t)ng_vocab(m);
    if (sv->s.top_k == 0 || sv->s.top_k > sv->vocab)
        sv->s.top_k = (unsigned)sv->vocab;
    sv->max_tokens = max_tokens;
    sv->row = malloc(sv->vocab * sizeof *sv->row);
    sv->trunc = malloc(sv->vocab * sizeof *sv->trunc);
    sv->heap = malloc(sv->s.top_k * sizeof *sv->heap);
    sv->seqbuf = malloc((max_tokens ? max_tokens : 1) * sizeof *sv->seqbuf);
    if (!sv->row || !sv->trunc || !sv->heap || !sv->seqbuf)
        goto fail;
    sv->seqsize = hm_seq_size(HM_SEQ_HISTORY_DEFAULT);
    sv->seqmem = aligned_alloc(64, (sv->seqsize + 63) / 64 * 64);
    if (!sv->seqmem)
        goto fail;
    return sv;
fail:
    ev_server_free(sv);
    return NULL;
}

void ev_server_free(ev_server *sv)
{
    if (!sv)
        return;
    free(sv->row);
    free(sv->trunc);
    free(sv->heap);
    free(sv->seqbuf);
    free(sv->seqmem);
    free(sv);
}

/* Heap order: a is "worse" than b when its logit is smaller, or equal with
 * a larger id (ties go to the smaller id, as in libhallmark). */
static int worse(const float *row, int32_t a, int32_t b)
{
    return row[a] < row[b] || (row[a] == row[b] && a > b);
}

static void sift_down(const float *row, int32_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(row, h[l], h[w]))
            w = l;
        if (r < n && worse(row, h[r], h[w]))
            w = r;
        if (w == i)
            return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The k best ids of row into h[0..k) (unordered). */
static void top_k(const float *row, size_t vocab, int32_t *h, size_t k)
{
    for (size_t i = 0; i < k; i++)
        h[i] = (int32_t)i;
    for (size_t i = k / 2; i-- > 0;)
        sift_down(row, h, k, i);
    /* v is larger than every id in the heap, so it replaces the worst
     * only with a strictly larger logit: one compare per id, rarely taken */
    float thr = row[h[0]];
    size_t v = k;
    for (; v + 64 <= vocab; v += 64) {
        /* a block with nothing above the threshold (almost every block)
         * costs one vectorised count */
        int above = 0;
        for (size_t j = 0; j < 64; j++)
            above += row[v + j] > thr;
        if (!above)
            continue;
        for (size_t j = v; j < v + 64; j++)
            if (row[j] > thr) {
                h[0] = (int32_t)j;
                sift_down(row, h, k, 0);
                thr = row[h[0]];
            }
    }
    for (; v < vocab; v++)
        if (row[v] > thr) {
            h[0] = (int32_t)v;
            sift_down(row, h, k, 0);
            thr = row[h[0]];
        }
}

static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The host's own sampler over the k ids of h: softmax(row / T) by inverse
 * CDF in id order (so the result depends on ids, not heap positions). */
static int32_t host_sample(const float *row, int32_t *h, size_t k, float temp,
                           double u)
{
    qsort(h, k, sizeof *h, cmp_id);
    if (temp < HM_GREEDY_BELOW) {
        int32_t best = h[0];
        for (size_t i = 1; i < k; i++)
            if (worse(row, best, h[i]))
                best = h[i];
        return best;
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < k; i++)
        if (row[h[i]] > mx)
            mx = row[h[i]];
    double z = 0;
    for (size_t i = 0; i < k; i++)
        z += exp(((double)row[h[i]] - mx) / temp);
    double target = u * z, c = 0;
    for (size_t i = 0; i < k; i++) {
        c += exp(((double)row[h[i]] - mx) / temp);
        if (target < c)
            return h[i];
    }
    return h[k - 1];
}

int ev_generate(ev_server *sv, const hm_ctx *ctx, const int32_t *prompt,
                size_t n_prompt, size_t n, uint64_t seed, int32_t *out,
                ev_stepstats *st)
{
    if (n_prompt + n > sv->max_tokens)
        return HM_ERANGE;
    memcpy(sv->seqbuf, prompt, n_prompt * sizeof *prompt);
    ev_rng rng = {seed};
    hm_seq *seq = NULL;
    int rc;
    if (ctx && ((rc = hm_seq_init(&seq, sv->seqmem, sv->seqsize, ctx,
                                  HM_SEQ_HISTORY_DEFAULT)) != HM_OK ||
                (rc = hm_seq_reset(seq, prompt, n_prompt)) != HM_OK))
        return rc;
    size_t len = n_prompt, k = sv->s.top_k, V = sv->vocab;
    for (size_t i = 0; i < n; i++) {
        double u = ev_uniform(&rng);
        ng_logits(sv->m, sv->seqbuf, len, sv->row);
        int32_t tok;
        if (!ctx) {
            top_k(sv->row, V, sv->heap, k);
            tok = host_sample(sv->row, sv->heap, k, sv->s.temperature, u);
        } else {
            /* explicit per-row context, as a batched server passes it;
             * the state adds masking (and must follow the same tokens) */
            hm_row r = {sv->seqbuf, len, seq, sv->s.temperature, u};
            unsigned fb = 0, fs = 0;
            if ((rc = hm_bias_dense(ctx, sv->row, 1, V, V, &r, &fb)) !=
                HM_OK)
                return rc;
            const float *sel = sv->row;
            if (k < V) {
                top_k(sv->row, V, sv->heap, k);
                for (size_t v = 0; v < V; v++)
                    sv->trunc[v] = -INFINITY;
                for (size_t j = 0; j < k; j++)
                    sv->trunc[sv->heap[j]] = sv->row[sv->heap[j]];
                sel = sv->trunc;
            }
            if ((rc = hm_select_dense(ctx, sel, 1, V, V, &r, &tok,
                                      &fs)) != HM_OK)
                return rc;
            if ((rc = hm_seq_accept(seq, tok)) != HM_OK)
                return rc;
            if (st) {
                st->watermarked += (fs & HM_STEP_WATERMARKED) != 0;
                st->biased += (fb & HM_STEP_BIASED) != 0;
                st->masked += ((fb | fs) & HM_STEP_MASKED) != 0;
            }
        }
        if (st)
            st->steps++;
        out[i] = tok;
        sv->seqbuf[len++] = tok;
    }
    return HM_OK;
}

/* ----------------------------------------------------------- batching */

struct ev_batcher {
    const ng_model *m;
    ev_sampling s;
    size_t vocab, max_tokens, max_rows;
    float *rows, *trunc; /* max_rows x vocab, row r at r * vocab */
    int32_t *heap;
    int32_t **seqbuf;    /* per slot: prompt + response so far */
    void **seqmem;
    size_t seqsize;
    hm_row *hrow;
    unsigned *fb, *fs;
    int32_t *tok;
    /* per slot: request index, length, tokens still to make, stream */
    size_t *req, *len, *left;
    ev_rng *rng;
    hm_seq **seq;
    size_t *slot_of;    /* active row j -> slot */
};

ev_batcher *ev_batcher_new(const ng_model *m, const ev_sampling *s,
                           size_t max_tokens, size_t max_rows)
{
    ev_batcher *b = calloc(1, sizeof *b);
    if (!b || max_rows == 0)
        goto fail;
    b->m = m;
    b->s = *s;
    b->vocab = (size_t)ng_vocab(m);
    if (b->s.top_k == 0 || b->s.top_k > b->vocab)
        b->s.top_k = (unsigned)b->vocab;
    b->max_tokens = max_tokens ? max_tokens : 1;
    b->max_rows = max_rows;
    size_t R = max_rows, V = b->vocab;
    b->rows = malloc(R * V * sizeof *b->rows);
    b->trunc = malloc(R * V * sizeof *b->trunc);
    b->heap = malloc(b->s.top_k * sizeof *b->heap);
    b->seqbuf = calloc(R, sizeof *b->seqbuf);
    b->seqmem = calloc(R, sizeof *b->seqmem);
    b->hrow = calloc(R, sizeof *b->hrow);
    b->fb = calloc(R, sizeof *b->fb);
    b->fs = calloc(R, sizeof *b->fs);
    b->tok = calloc(R, sizeof *b->tok);
    b->req = calloc(R, sizeof *b->req);
    b->len = calloc(R, sizeof *b->len);
    b->left = calloc(R, sizeof *b->left);
    b->rng = calloc(R, sizeof *b->rng);
    b->seq = calloc(R, sizeof *b->seq);
    b->slot_of = calloc(R, sizeof *b->slot_of);
    if (!b->rows || !b->trunc || !b->heap || !b->seqbuf || !b->seqmem ||
        !b->hrow || !b->fb || !b->fs || !b->tok || !b->req || !b->len ||
        !b->left || !b->rng || !b->seq || !b->slot_of)
        goto fail;
    b->seqsize = hm_seq_size(HM_SEQ_HISTORY_DEFAULT);
    for (size_t r = 0; r < R; r++)
        if (!(b->seqbuf[r] = malloc(b->max_tokens * sizeof(int32_t))) ||
            !(b->seqmem[r] = aligned_alloc(64, (b->seqsize + 63) / 64 * 64)))
            goto fail;
    return b;
fail:
    ev_batcher_free(b);
    return NULL;
}

void ev_batcher_free(ev_batcher *b)
{
    if (!b)
        return;
    for (size_t r = 0; r < b->max_rows; r++) {
        if (b->seqbuf)
            free(b->seqbuf[r]);
        if (b->seqmem)
            free(b->seqmem[r]);
    }
    free(b->rows);
    free(b->trunc);
    free(b->heap);
    free(b->seqbuf);
    free(b->seqmem);
    free(b->hrow);
    free(b->fb);
    free(b->fs);
    free(b->tok);
    free(b->req);
    free(b->len);
    free(b->left);
    free(b->rng);
    free(b->seq);
    free(b->slot_of);
    free(b);
}

/* Put request i into slot r. */
static int batch_start(ev_batcher *b, const hm_ctx *ctx, size_t r, size_t i,
                       const int32_t *prompt, size_t n_prompt, size_t n_out,
                       uint64_t seed)
{
    int rc;
    if (n_prompt + n_out > b->max_tokens)
        return HM_ERANGE;
    memcpy(b->seqbuf[r], prompt, n_prompt * sizeof *prompt);
    b->req[r] = i;
    b->len[r] = n_prompt;
    b->left[r] = n_out;
    b->rng[r].s = seed;
    b->seq[r] = NULL;
    if (ctx && ((rc = hm_seq_init(&b->seq[r], b->seqmem[r], b->seqsize, ctx,
                                  HM_SEQ_HISTORY_DEFAULT)) != HM_OK ||
                (rc = hm_seq_reset(b->seq[r], prompt, n_prompt)) != HM_OK))
        return rc;
    return HM_OK;
}

int ev_generate_batch(ev_batcher *b, const hm_ctx *ctx, size_t n,
                      const int32_t *const *prompts, const size_t *n_prompts,
                      const size_t *n_out, const uint64_t *seeds,
                      int32_t *const *outs, ev_stepstats *st)
{
    size_t V = b->vocab, k = b->s.top_k, next = 0, used = 0;
    int rc;
    /* slots 0..used-1 hold requests; empty ones are refilled or dropped */
    for (;;) {
        while (used < b->max_rows && next < n) {
            if ((rc = batch_start(b, ctx, used, next, prompts[next],
                                  n_prompts[next], n_out[next],
                                  seeds[next])) != HM_OK)
                return rc;
            if (st)
                memset(&st[next], 0, sizeof st[next]);
            next++;
            used++;
        }
        /* drop finished slots (n_out 0), moving the last slot in */
        size_t act = 0;
        for (size_t r = 0; r < used; r++)
            if (b->left[r] > 0)
                b->slot_of[act++] = r;
        if (act == 0) {
            if (next >= n)
                return HM_OK;
            used = 0;
            continue;
        }
        /* one step for every active row, in one contiguous block */
        for (size_t j = 0; j < act; j++) {
            size_t r = b->slot_of[j];
            double u = ev_uniform(&b->rng[r]);
            ng_logits(b->m, b->seqbuf[r], b->len[r], b->rows + j * V);
            b->hrow[j] = (hm_row){b->seqbuf[r], b->len[r], b->seq[r],
                                  b->s.temperature, u};
        }
        if (ctx) {
            if ((rc = hm_bias_dense(ctx, b->rows, act, V, V, b->hrow,
                                    b->fb)) != HM_OK)
                return rc;
            const float *sel = b->rows;
            if (k < V) {
                for (size_t j = 0; j < act; j++) {
                    const float *row = b->rows + j * V;
                    float *tr = b->trunc + j * V;
                    top_k(row, V, b->heap, k);
                    for (size_t v = 0; v < V; v++)
                        tr[v] = -INFINITY;
                    for (size_t q = 0; q < k; q++)
                        tr[b->heap[q]] = row[b->heap[q]];
                }
                sel = b->trunc;
            }
            if ((rc = hm_select_dense(ctx, sel, act, V, V, b->hrow, b->tok,
                                      b->fs)) != HM_OK)
                return rc;
        } else
            for (size_t j = 0; j < act; j++) {
                const float *row = b->rows + j * V;
                top_k(row, V, b->heap, k);
                b->tok[j] = host_sample(row, b->heap, k, b->s.temperature,
                                        b->hrow[j].uniform);
            }
        for (size_t j = 0; j < act; j++) {
            size_t r = b->slot_of[j], i = b->req[r];
            int32_t t = b->tok[j];
            if (ctx && (rc = hm_seq_accept(b->seq[r], t)) != HM_OK)
                return rc;
            outs[i][n_out[i] - b->left[r]] = t;
            b->seqbuf[r][b->len[r]++] = t;
            b->left[r]--;
            if (st) {
                st[i].steps++;
                if (ctx) {
                    st[i].watermarked += (b->fs[j] & HM_STEP_WATERMARKED) != 0;
                    st[i].biased += (b->fb[j] & HM_STEP_BIASED) != 0;
                    st[i].masked +=
                        ((b->fb[j] | b->fs[j]) & HM_STEP_MASKED) != 0;
                }
            }
        }
        /* compact: keep unfinished slots at the front, refill the rest */
        size_t keep = 0;
        for (size_t r = 0; r < used; r++)
            if (b->left[r] > 0) {
                if (keep != r) {
                    int32_t *tb = b->seqbuf[keep];
                    void *tm = b->seqmem[keep];
                    b->seqbuf[keep] = b->seqbuf[r];
                    b->seqmem[keep] = b->seqmem[r];
                    b->seqbuf[r] = tb;
                    b->seqmem[r] = tm;
                    b->req[keep] = b->req[r];
                    b->len[keep] = b->len[r];
                    b->left[keep] = b->left[r];
                    b->rng[keep] = b->rng[r];
                    b->seq[keep] = b->seq[r];
                }
                keep++;
            }
        used = keep;
    }
}

/* ------------------------------------------------------------ requests */

typedef struct pool_job {
    ev_job_fn fn;
    void *arg;
    size_t n;
    size_t next;
    pthread_mutex_t mu;
    int worker;
} pool_job;

static void *pool_main(void *p)
{
    pool_job *j = p;
    pthread_mutex_lock(&j->mu);
    int w = j->worker++;
    pthread_mutex_unlock(&j->mu);
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->n)
            return NULL;
        j->fn(j->arg, i, w);
    }
}

void ev_parallel_for(size_t n, int threads, ev_job_fn fn, void *arg)
{
    pool_job j = {fn, arg, n, 0, PTHREAD_MUTEX_INITIALIZER, 0};
    pthread_t th[64];
    int k = 1;
    if (threads > 64)
        threads = 64;
    while (k < threads && pthread_create(&th[k], NULL, pool_main, &j) == 0)
        k++;
    pool_main(&j);
    for (int i = 1; i < k; i++)
        pthread_join(th[i], NULL);
}

int ev_requests_init(ev_requests *r, size_t n)
{
    size_t m = n ? n : 1;
    r->n = n;
    r->prompt = calloc(m, sizeof *r->prompt);
    r->n_prompt = calloc(m, sizeof *r->n_prompt);
    r->prompt_text = calloc(m, sizeof *r->prompt_text);
    r->resp = calloc(m, sizeof *r->resp);
    r->n_resp = calloc(m, sizeof *r->n_resp);
    r->ctx = calloc(m, sizeof *r->ctx);
    r->seed = calloc(m, sizeof *r->seed);
    r->st = calloc(m, sizeof *r->st);
    if (!r->prompt || !r->n_prompt || !r->prompt_text || !r->resp ||
        !r->n_resp || !r->ctx || !r->seed || !r->st) {
        ev_requests_free(r);
        return -1;
    }
    return 0;
}

void ev_requests_free(ev_requests *r)
{
    if (r->resp)
        for (size_t i = 0; i < r->n; i++)
            free(r->resp[i]);
    free(r->prompt);
    free(r->n_prompt);
    free(r->prompt_text);
    free(r->resp);
    free(r->n_resp);
    free(r->ctx);
    free(r->seed);
    free(r->st);
    memset(r, 0, sizeof *r);
}

uint64_t ev_requests_tokens(const ev_requests *r)
{
    uint64_t s = 0;
    for (size_t i = 0; i < r->n; i++)
        s += r->n_resp[i];
    return s;
}

ev_stepstats ev_requests_stats(const ev_requests *r)
{
    ev_stepstats s = {0, 0, 0, 0};
    for (size_t i = 0; i < r->n; i++) {
        s.steps += r->st[i].steps;
        s.watermarked += r->st[i].watermarked;
        s.biased += r->st[i].biased;
        s.masked += r->st[i].masked;
    }
    return s;
}

typedef struct serve_job {
    ev_requests *r;
    ev_batcher **bt;
    pthread_mutex_t mu;
    int rc;
} serve_job;

static void serve_chunk(void *arg, size_t c, int w)
{
    serve_job *g = arg;
    ev_requests *r = g->r;
    size_t i = c * EV_SERVE_ROWS,
           end = i + EV_SERVE_ROWS < r->n ? i + EV_SERVE_ROWS : r->n;
    while (i < end) {
        size_t j = i + 1;
        while (j < end && r->ctx[j] == r->ctx[i])
            j++;
        int rc = ev_generate_batch(g->bt[w], r->ctx[i], j - i, r->prompt + i,
                                   r->n_prompt + i, r->n_resp + i,
                                   r->seed + i, r->resp + i, r->st + i);
        if (rc != HM_OK) {
            pthread_mutex_lock(&g->mu);
            if (g->rc == HM_OK)
                g->rc = rc;
            pthread_mutex_unlock(&g->mu);
        }
        i = j;
    }
}

int ev_serve(const ng_model *m, const ev_sampling *s, ev_requests *r,
             int threads)
{
    size_t maxlen = 0;
    ev_batcher *bt[64] = {NULL};
    serve_job g = {r, bt, PTHREAD_MUTEX_INITIALIZER, HM_OK};
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    for (size_t i = 0; i < r->n; i++) {
        free(r->resp[i]);
        r->resp[i] = malloc((r->n_resp[i] ? r->n_resp[i] : 1) *
                            sizeof(int32_t));
        if (!r->resp[i])
            return HM_ENOMEM;
        if (r->n_prompt[i] + r->n_resp[i] > maxlen)
            maxlen = r->n_prompt[i] + r->n_resp[i];
    }
    for (int w = 0; w < threads; w++)
        if (!(bt[w] = ev_batcher_new(m, s, maxlen, EV_SERVE_ROWS)))
            g.rc = HM_ENOMEM;
    if (g.rc == HM_OK)
        ev_parallel_for((r->n + EV_SERVE_ROWS - 1) / EV_SERVE_ROWS, threads,
                        serve_chunk, &g);
    for (int w = 0; w < threads; w++)
        ev_batcher_free(bt[w]);
    return g.rc;
}

ng_model *ev_train(int order, int32_t vocab, const ev_docs *docs,
                   const size_t *idx, size_t n_idx, const ev_requests *r,
                   const size_t *pick, size_t n_pick, char *err,
                   size_t errlen)
{
    ng_model *m = NULL;
    int32_t *buf = NULL;
    size_t cap = 0;
    ng_trainer *t = ng_trainer_new(order, vocab, err, errlen);
    if (!t)
        return NULL;
    for (size_t i = 0; i < n_idx; i++) {
        const ev_doc *d = &docs->d[idx[i]];
        if (ng_trainer_add(t, d->ids, d->n, NULL, err, errlen) != 0) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, " (%s)", d->name);
            goto done;
        }
    }
    for (size_t k = 0; k < n_pick; k++) {
        size_t i = pick[k], len = r->n_prompt[i] + r->n_resp[i];
        if (len > cap) {
            free(buf);
            if (!(buf = malloc((cap = len) * sizeof *buf))) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
        }
        memcpy(buf, r->prompt[i], r->n_prompt[i] * sizeof *buf);
        memcpy(buf + r->n_prompt[i], r->resp[i], r->n_resp[i] * sizeof *buf);
        if (ng_trainer_add(t, buf, len, NULL, err, errlen) != 0)
            goto done;
    }
    if (ng_trainer_finish(t, &m, err, errlen) != 0)
        m = NULL;
done:
    free(buf);
    ng_trainer_free(t);
    return m;
}

/* Write the lines from line(r, i, ...) to path, atomically. */
typedef char *(*line_fn)(const ev_requests *r, size_t i,
                         const hm_tokenizer *tok);

static int write_jsonl(const char *path, const ev_requests *r,
                       const hm_tokenizer *tok, line_fn line, char *err,
                       size_t errlen)
{
    ev_atomic a;
    int ok = 1;
    if (ev_atomic_open(&a, path, err, errlen) != 0)
        return -1;
    for (size_t i = 0; ok && i < r->n; i++) {
        char *l = line(r, i, tok);
        if (!l) {
            snprintf(err, errlen, "%s: record %zu cannot be written as JSON",
                     path, i);
            ok = 0;
        } else {
            fputs(l, a.f);
            fputc('\n', a.f);
            free(l);
        }
    }
    return ev_atomic_close(&a, ok, err, errlen);
}

/* o[name] = the ids as an array; 1 on success. */
static int ids_json(json_t *o, const char *name, const int32_t *ids,
                    size_t n)
{
    json_t *a = json_array();
    for (size_t j = 0; a && j < n; j++)
        if (json_array_append_new(a, json_integer(ids[j])) != 0) {
            json_decref(a);
            return 0;
        }
    return a && json_object_set_new(o, name, a) == 0;
}

static char *tokens_line(const ev_requests *r, size_t i,
                         const hm_tokenizer *tok)
{
    (void)tok;
    json_t *o = json_object();
    char *line = NULL;
    if (o && ids_json(o, "prompt_tokens", r->prompt[i], r->n_prompt[i]) &&
        ids_json(o, "tokens", r->resp[i], r->n_resp[i]) &&
        json_object_set_new(o, "id", json_integer((json_int_t)i)) == 0)
        line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return line;
}

static char *text_line(const ev_requests *r, size_t i,
                       const hm_tokenizer *tok)
{
    char *t = ev_detokenize(tok, r->resp[i], r->n_resp[i]), *line = NULL;
    json_t *o = t ? json_pack("{s:s,s:s,s:I}", "prompt", r->prompt_text[i],
                              "text", t, "id", (json_int_t)i)
                  : NULL;
    if (o)
        line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    free(t);
    return line;
}

int ev_write_tokens_jsonl(const char *path, const ev_requests *r, char *err,
                          size_t errlen)
{
    return write_jsonl(path, r, NULL, tokens_line, err, errlen);
}

int ev_write_text_jsonl(const char *path, const ev_requests *r,
                        const hm_tokenizer *tok, char *err, size_t errlen)
{
    return write_jsonl(path, r, tok, text_line, err, errlen);
}

/* ------------------------------------------------------------ statistics */

/* P[Bin(n,p) >= k] (log10 from libhallmark; 1 for k = 0). */
static double sf_binom(uint64_t k, uint64_t n, double p)
{
    return k == 0 ? 1.0 : pow(10.0, hm_log10_sf_binom(k, n, p));
}

/* The p in (0,1) where f(p) = target for f increasing in p, by bisection
 * on log p (the bounds of small proportions span many decades). */
static double solve_increasing(double (*f)(uint64_t, uint64_t, double),
                               uint64_t k, uint64_t n, double target)
{
    double lo = -745.0, hi = 0.0; /* ln p */
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if (f(k, n, exp(mid)) < target)
            lo = mid;
        else
            hi = mid;
    }
    return exp(0.5 * (lo + hi));
}

int ev_clopper_pearson(uint64_t x, uint64_t n, double conf, double *lo,
                       double *hi)
{
    if (n == 0 || x > n || !(conf > 0 && conf < 1))
        return -1;
    double a = (1 - conf) / 2;
    /* lower: P[Bin(n,p) >= x] = a;  upper: P[Bin(n,p) >= x+1] = 1 - a,
     * i.e. P[Bin(n,p) <= x] = a.  Both tails increase with p. */
    *lo = x == 0 ? 0.0 : solve_increasing(sf_binom, x, n, a);
    *hi = x == n ? 1.0 : solve_increasing(sf_binom, x + 1, n, 1 - a);
    return 0;
}

double ev_null_rate(const hm_ctx *ctx, unsigned channel, uint64_t n,
                    double log10_alpha)
{
    int scheme = hm_ctx_channel_scheme(ctx, channel);
    double p, m;
    if (n == 0)
        return log10_alpha >= 0 ? 1.0 : 0.0;
    if (scheme == HM_SCHEME_GUMBEL)
        return log10_alpha >= 0 ? 1.0 : pow(10.0, log10_alpha);
    if (scheme == HM_SCHEME_KGW) {
        if (hm_ctx_channel_param(ctx, channel, "green", &p) != HM_OK)
            return NAN;
    } else if (scheme == HM_SCHEME_TOURNAMENT) {
        if (hm_ctx_channel_param(ctx, channel, "m", &m) != HM_OK)
            return NAN;
        n *= (uint64_t)m;
        p = 0.5;
    } else
        return NAN;
    /* the p-value P[Bin >= k] falls as k grows: bisect for k* */
    if (log10_alpha >= 0)
        return 1.0;
    if (hm_log10_sf_binom(n, n, p) > log10_alpha)
        return 0.0;
    uint64_t lo = 0, hi = n; /* sf(lo) > alpha >= sf(hi) */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (hm_log10_sf_binom(mid, n, p) <= log10_alpha)
            hi = mid;
        else
            lo = mid;
    }
    return pow(10.0, hm_log10_sf_binom(hi, n, p));
}

int ev_fpr_document(ev_fpr *f, const hm_ctx *const *ctxs, size_t n_keys,
                    unsigned channel, const int32_t *tokens, size_t n)
{
    hm_tally *t = NULL;
    int rc = hm_tally_new(&t, ctxs, n_keys, 0, NULL, 0);
    if (rc != HM_OK)
        return rc;
    if ((rc = hm_tally_reserve(t, n)) != HM_OK ||
        (rc = hm_tally_add(t, NULL, 0, tokens, n)) != HM_OK)
        goto out;
    for (size_t k = 0; k < n_keys; k++) {
        hm_result r;
        if ((rc = hm_tally_result(t, k, channel, &r)) != HM_OK)
            goto out;
        f->trials++;
        f->scored += r.scored;
        if (r.scored == 0)
            f->empty++;
        if (r.log10_p < f->min_log10_p)
            f->min_log10_p = r.log10_p;
        if (f->memo_n != r.scored + 1) { /* +1: 0 means no memo */
            for (size_t a = 0; a < f->n_alpha && a < 8; a++)
                f->memo_rate[a] = ev_null_rate(ctxs[k], channel, r.scored,
                                               f->log10_alpha[a]);
            f->memo_n = r.scored + 1;
        }
        for (size_t a = 0; a < f->n_alpha; a++) {
            if (r.log10_p <= f->log10_alpha[a])
                f->counts[a]++;
            if (f->expected && a < 8)
                f->expected[a] += f->memo_rate[a];
        }
    }
out:
    hm_tally_free(t);
    return rc;
}

/* Open-addressing set of n-grams (hashes of up to 8 ids, exact compare). */
typedef struct gram {
    int32_t id[8];
    int used;
} gram;

double ev_distinct(const int32_t *const *seqs, const size_t *lens,
                   size_t n_seqs, int n, uint64_t *total)
{
    uint64_t all = 0, distinct = 0;
    if (n < 1 || n > 8) {
        *total = 0;
        return NAN;
    }
    for (size_t s = 0; s < n_seqs; s++)
        if (lens[s] >= (size_t)n)
            all += lens[s] - (size_t)n + 1;
    *total = all;
    if (all == 0)
        return NAN;
    size_t cap = 16;
    while (cap < 2 * all)
        cap *= 2;
    gram *tab = calloc(cap, sizeof *tab);
    if (!tab)
        return NAN;
    for (size_t s = 0; s < n_seqs; s++)
        for (size_t i = 0; i + (size_t)n <= lens[s]; i++) {
            gram g = {{0, 0, 0, 0, 0, 0, 0, 0}, 1};
            memcpy(g.id, seqs[s] + i, (size_t)n * sizeof(int32_t));
            size_t h = (size_t)XXH64(g.id, sizeof g.id, 0) & (cap - 1);
            while (tab[h].used && memcmp(tab[h].id, g.id, sizeof g.id))
                h = (h + 1) & (cap - 1);
            if (!tab[h].used) {
                tab[h] = g;
                distinct++;
            }
        }
    free(tab);
    return (double)distinct / (double)all;
}

double ev_perplexity(const ng_model *m, const int32_t *const *prompts,
                     const size_t *n_prompts, const int32_t *const *resps,
                     const size_t *n_resps, size_t n)
{
    double lp = 0;
    uint64_t toks = 0;
    int32_t buf[64];
    int order = ng_order(m);
    for (size_t d = 0; d < n; d++)
        for (size_t i = 0; i < n_resps[d]; i++) {
            /* the last order-1 ids before resps[d][i], prompt included */
            size_t h = 0, need = (size_t)order - 1;
            size_t from_resp = i < need ? i : need;
            size_t from_prompt = need - from_resp;
            if (from_prompt > n_prompts[d])
                from_prompt = n_prompts[d];
            memcpy(buf, prompts[d] + n_prompts[d] - from_prompt,
                   from_prompt * sizeof *buf);
            h = from_prompt;
            memcpy(buf + h, resps[d] + i - from_resp,
                   from_resp * sizeof *buf);
            h += from_resp;
            lp += log(ng_prob(m, buf, h, resps[d][i]));
            toks++;
        }
    return toks ? exp(-lp / (double)toks) : NAN;
}
