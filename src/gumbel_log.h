/*
 * gumbel_log.h - the gumbel score -ln(1 - u) of a PRF value, by hallmark's
 * own logarithm.
 *
 * A tally's gumbel statistic is a sum of scores s = -ln(n 2^-53), where
 * n = 2 (NOT x >> 12) + 1 is odd and below 2^53 (hm_tally_new(3)).  libm's
 * log is neither the same on every machine (glibc picks an FMA variant at
 * run time, and other libms round differently) nor bounded by any written
 * contract, so that a tally's sum could differ between an auditor's
 * machine and a third party's, and could not be shown to be at most the
 * exact sum.  This logarithm uses only binary64 additions, subtractions
 * and multiplications (no fused multiply-add: the library is built with
 * -ffp-contract=off), integer arithmetic and a table made by
 * tools/gen-gumbel-log.py, so every machine computes the same bits, in
 * vector lanes or not.
 *
 * Write n = 2^e m with m in [1, 2).  The top 8 bits of m's fraction pick
 * a 9-bit integer C with |m C / 512 - 1| < 2^-8, so that
 * R = (m 2^52) C - 2^61 is an integer of magnitude below 2^53 (at most
 * 2^52.55), and r = R 2^-61 = m C / 512 - 1 is exact.  Then
 *
 *     s = (52 - e) ln 2 + ln(C / 256) - ln(1 + r),
 *
 * with ln 2 and ln(C / 256) as sums of two doubles (the first part of
 * ln 2 has 46 bits, so that its product by 52 - e is exact), the sum of
 * their first parts formed exactly (Knuth's two-sum; the second parts
 * are added with roundings near 2^-96), and ln(1 + r) by its Taylor series to
 * r^7, whose remainder is below 2^-69.  Every rounding but the last is
 * below 2^-68 in all (the last is at most half an ulp, 2^-53 s), so the
 * result s' is within 2^-53 s' + 2^-68 of s; the test against
 * tests/vectors/gumbel-log-ref.txt (mpmath, 60 digits) checks it.
 *
 * hm_gumbel_score_low lowers s' by more than that bound, by 2^-50 s' +
 * 2^-66: what the tally sums is then never above the exact score.
 */
#ifndef HM_GUMBEL_LOG_H
#define HM_GUMBEL_LOG_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "gumbel_table.h"

/* The exact two-sums need binary64 evaluation: on x87 arithmetic
 * (FLT_EVAL_METHOD 2, i386 without -mfpmath=sse) they are not exact and
 * the bits would differ from every other machine's. */
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "gumbel_log.h needs binary64 evaluation (FLT_EVAL_METHOD 0): build with -msse2 -mfpmath=sse"
#endif

static inline __attribute__((always_inline)) double
hm_gumbel_score(uint64_t x)
{
    uint64_t n = ((~x >> 12) << 1) | 1;
    double dn = (double)(int64_t)n; /* exact: n < 2^53 */
    uint64_t b;
    memcpy(&b, &dn, sizeof b);
    double k = (double)(1075 - (int64_t)(b >> 52)); /* 52 - e */
    uint64_t frac = b & ((UINT64_C(1) << 52) - 1);
    uint64_t j = frac >> 44;
    uint64_t m = frac | (UINT64_C(1) << 52);
    double r = (double)((int64_t)(m * (uint64_t)GL_C[j]) -
                        (INT64_C(1) << 61)) * 0x1p-61;
    /* (52 - e) ln 2 + ln(C / 256) = s0 + lo */
    double a = k * GL_L2H, dh = GL_DH[j];
    double s0 = a + dh, bv = s0 - a;
    double lo = ((a - (s0 - bv)) + (dh - bv)) + (k * GL_L2L + GL_DL[j]);
    /* minus r = t + lo2 */
    double t = s0 - r, bt = t - s0;
    double lo2 = (s0 - (t - bt)) + (-r - bt);
    /* ln(1 + r) - r = r^2 p(r) */
    double p = -0.5 + r * (0x1.5555555555555p-2 +
               r * (-0.25 + r * (0x1.999999999999ap-3 +
               r * (-0x1.5555555555555p-3 + r * 0x1.2492492492492p-3))));
    return t + ((lo + lo2) - r * r * p);
}

static inline __attribute__((always_inline)) double
hm_gumbel_score_low(uint64_t x)
{
    return hm_gumbel_score(x) * (1 - 0x1p-50) - 0x1p-66;
}

/* Add x's lowered score, cut to a multiple of 2^-64, to three sums: *ip
 * its integer part, *fh the first 32 bits of its fraction, *fl the next
 * 32, each converted below 2^32, exactly. */
static inline __attribute__((always_inline)) void
hm_gumbel_parts_add(uint64_t x, uint64_t *ip, uint64_t *fh, uint64_t *fl)
{
    double v = hm_gumbel_score_low(x);
    double di = (double)(int64_t)v;
    double y = (v - di) * 0x1p32;
    double yi = (double)(int64_t)y;
    *ip += (uint64_t)(int64_t)di;
    *fh += (uint64_t)(int64_t)yi;
    *fl += (uint64_t)(int64_t)((y - yi) * 0x1p32);
}

#endif
