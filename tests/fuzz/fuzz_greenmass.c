/*
 * fuzz_greenmass.c - fuzz target for the open-model audit's accumulator
 * (hm_greenmass_add / hm_greenmass_result) on arbitrary caller data.  The
 * input is a sequence of records: one byte of context length (low 3 bits),
 * that many little-endian int16 context ids, one byte of listed length
 * (low 5 bits), then per listed token an int16 id and 8 raw bytes read as
 * a double log-probability (any bit pattern: NaN, infinities, positive).
 * Every call must return a documented code, a record either counts whole
 * or not at all, adding a record a second time changes nothing but the
 * repeat count, and every result is a finite log10 p <= 0 no larger than
 * any of its three bounds.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int16_t rd16(const uint8_t *p)
{
    return (int16_t)(uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static void check_result(const hm_greenmass *gm, hm_greenmass_stats *st)
{
    for (size_t k = 0; k < hm_greenmass_keys(gm); k++) {
        if (hm_greenmass_result(gm, k, 0, &st[k]) != HM_OK)
            abort();
        const hm_greenmass_stats *s = &st[k];
        if (!(s->log10_p <= 0) || !isfinite(s->log10_p) ||
            s->log10_p > s->log10_p_hoeffding ||
            s->log10_p > s->log10_p_bernstein ||
            s->log10_p > s->log10_p_chernoff ||
            hm_greenmass_bound_name(s->bound) == NULL ||
            s->contexts + s->dropped_repeat + s->dropped_padded !=
                s->records ||
            !(s->score <= s->mass * (1 + 1e-9) + 1e-12) ||
            !(s->score >= 0))
            abort();
    }
}

/* Field by field (the struct may have padding). */
static int same(const hm_greenmass_stats *a, const hm_greenmass_stats *b)
{
    return a->records == b->records &&
           a->dropped_repeat == b->dropped_repeat &&
           a->padded == b->padded && a->dropped_padded == b->dropped_padded &&
           a->contexts == b->contexts && a->listed == b->listed &&
           a->windows == b->windows && a->pairs == b->pairs &&
           a->gamma == b->gamma && a->mass == b->mass &&
           a->score == b->score && a->expected == b->expected &&
           a->range_sq == b->range_sq && a->variance == b->variance &&
           a->max_excess == b->max_excess &&
           a->log10_p_hoeffding == b->log10_p_hoeffding &&
           a->log10_p_bernstein == b->log10_p_bernstein &&
           a->log10_p_chernoff == b->log10_p_chernoff &&
           a->log10_p == b->log10_p && a->bound == b->bound;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hm_ctx *ctxs[2];
    if (ctxs[0] == NULL) {
        hm_key *key = NULL;
        if (hm_key_from_label(&key, "fuzz-greenmass", 0) != HM_OK ||
            hm_ctx_new(&ctxs[0], key, "kgw:h=2", NULL, NULL, 0) != HM_OK ||
            hm_ctx_new(&ctxs[1], key, "kgw:h=2", "acme", NULL, 0) != HM_OK)
            abort();
        hm_key_free(key);
    }
    hm_greenmass *gm = NULL;
    if (hm_greenmass_new(&gm, (const hm_ctx *const *)ctxs, 2,
                         size && (data[0] & 0x80) ? HM_GREENMASS_SKIP_PADDED
                                                  : 0,
                         NULL, 0) != HM_OK)
        abort();
    hm_greenmass_stats before[2], after[2];
    int32_t ctx[8], ids[32];
    double lp[32];
    size_t i = 0, added = 0;
    while (i < size) {
        size_t nc = data[i++] & 7u;
        if (i + 2 * nc + 1 > size)
            break;
        for (size_t j = 0; j < nc; j++, i += 2)
            ctx[j] = rd16(data + i);
        size_t n = data[i++] & 31u;
        if (i + 10 * n > size)
            break;
        for (size_t j = 0; j < n; j++, i += 10) {
            ids[j] = rd16(data + i);
            memcpy(&lp[j], data + i + 2, sizeof lp[j]);
        }
        check_result(gm, before);
        int rc = hm_greenmass_add(gm, ctx, nc, ids, lp, n);
        if (rc != HM_OK && rc != HM_EINVAL && rc != HM_ERANGE)
            abort();
        check_result(gm, after);
        if (rc != HM_OK &&
            (!same(&before[0], &after[0]) || !same(&before[1], &after[1])))
            abort(); /* a refused record changed the state */
        if (rc == HM_OK && after[0].records != before[0].records + 1)
            abort();
        if (rc == HM_OK && after[0].contexts == before[0].contexts + 1) {
            added++;
            /* the same record again: only the repeat count moves */
            if (hm_greenmass_add(gm, ctx, nc, ids, lp, n) != HM_OK)
                abort();
            check_result(gm, before);
            for (int k = 0; k < 2; k++) {
                after[k].records++;
                after[k].dropped_repeat++;
                if (!same(&before[k], &after[k]))
                    abort();
            }
        }
    }
    (void)added;
    hm_greenmass_free(gm);
    return 0;
}
