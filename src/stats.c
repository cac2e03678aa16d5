/*
 * stats.c - exact upper-tail p-values in log space.
 *
 * The detection scores of hallmark's schemes have exact null distributions:
 * a sum of n gumbel scores is Gamma(n, 1), a count of green tokens is
 * Binomial(n, gamma), a count of tournament g-values is Binomial(n*m, 1/2).
 * Audits need their tails far below the smallest double (1e-308), so every
 * quantity here is a logarithm until the end.
 *
 * Method (Numerical Recipes' incomplete gamma and beta functions, with the
 * front factors computed as in Loader's "Fast and accurate computation of
 * binomial probabilities", 2000, so that no lgamma differences cancel):
 *   Q(a, x)  = 1 - P(a, x): P by its power series when x < a + 1, Q by its
 *              continued fraction (modified Lentz) otherwise.
 *   I_p(k, n-k+1) = P[Bin(n,p) >= k]: the continued fraction when
 *              p < (k+1)/(n+3), else one minus the mirrored tail.
 * No allocation, no global state (lgamma_r, not lgamma): thread-safe.
 */
#define _DEFAULT_SOURCE 1 /* lgamma_r */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#define LN_SQRT_2PI 0.918938533204672741780329736406
#define LN_10 2.30258509299404568401799145468
#define TINY 1e-300

static double lgam(double x)
{
    int sign;
    return lgamma_r(x, &sign);
}

/* stirlerr(n) = ln Gamma(n+1) - (n+1/2) ln n + n - ln sqrt(2 pi). */
static double stirlerr(double n)
{
    static const double s0 = 1.0 / 12, s1 = 1.0 / 360, s2 = 1.0 / 1260,
                        s3 = 1.0 / 1680, s4 = 1.0 / 1188;
    if (n <= 15)
        return lgam(n + 1) - (n + 0.5) * log(n) + n - LN_SQRT_2PI;
    double nn = 1 / (n * n);
    if (n > 500)
        return (s0 - (s1 - s2 * nn) * nn) / n;
    return (s0 - (s1 - (s2 - (s3 - s4 * nn) * nn) * nn) * nn) / n;
}

/* bd0(x, m) = x ln(x/m) + m - x, accurate when x is close to m. */
static double bd0(double x, double m)
{
    if (fabs(x - m) < 0.1 * (x + m)) {
        double v = (x - m) / (x + m);
        double s = (x - m) * v;
        double ej = 2 * x * v;
        v *= v;
        for (int j = 1; j < 1000; j++) {
            ej *= v;
            double s1 = s + ej / (2 * j + 1);
            if (s1 == s)
                return s1;
            s = s1;
        }
        return s;
    }
    return x * log(x / m) + m - x;
}

/* ln of x^a e^-x / Gamma(a+1), a > 0, x > 0. */
static double log_poisson(double a, double x)
{
    if (a < 10 || x < 1e-10 * a)
        return a * log(x) - x - lgam(a + 1);
    return -stirlerr(a) - bd0(a, x) - LN_SQRT_2PI - 0.5 * log(a);
}

/* ln of C(n,k) p^k q^(n-k), 0 < k <= n, 0 < p < 1. */
static double log_binom_pmf(double k, double n, double p, double q)
{
    if (k == n)
        return n * log(p);
    double lc = stirlerr(n) - stirlerr(k) - stirlerr(n - k) -
                bd0(k, n * p) - bd0(n - k, n * q);
    return lc - LN_SQRT_2PI - 0.5 * (log(k) + log1p(-k / n));
}

static size_t iteration_cap(double scale)
{
    return (size_t)(10000 + 100 * sqrt(scale));
}

/* ln Q(a, x) by the continued fraction, x >= a + 1. */
static double log_q_cf(double a, double x)
{
    double b = x + 1 - a, c = 1 / TINY, d = 1 / b, h = d;
    size_t cap = iteration_cap(a + x);
    for (size_t i = 1; i < cap; i++) {
        double an = -(double)i * ((double)i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < TINY)
            d = TINY;
        c = b + an / c;
        if (fabs(c) < TINY)
            c = TINY;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) <= DBL_EPSILON)
            return log(a) + log_poisson(a, x) + log(h);
    }
    return NAN;
}

/* ln P(a, x) by the power series, x < a + 1. */
static double log_p_series(double a, double x)
{
    double ap = a, del = 1, sum = 1;
    size_t cap = iteration_cap(a + x);
    for (size_t i = 0; i < cap; i++) {
        ap += 1;
        del *= x / ap;
        sum += del;
        if (del < sum * DBL_EPSILON)
            return log_poisson(a, x) + log(sum);
    }
    return NAN;
}

/* ln(1 - e^l) for l <= 0, without cancellation. */
static double log1mexp(double l)
{
    return l > -M_LN2 ? log(-expm1(l)) : log1p(-exp(l));
}

double hm_log10_sf_gamma(double n, double x)
{
    if (!(n > 0) || !isfinite(n) || isnan(x))
        return NAN;
    if (x <= 0)
        return 0;
    if (isinf(x))
        return -INFINITY;
    double l = x < n + 1 ? log1mexp(log_p_series(n, x)) : log_q_cf(n, x);
    return l / LN_10;
}

/* ln of I_p(k, n-k+1) = P[Bin(n,p) >= k] by the continued fraction,
 * 1 <= k <= n, p < (k+1)/(n+3). */
static double log_sf_binom_cf(double k, double n, double p, double q)
{
    double a = k, b = n - k + 1;
    double qab = a + b, qap = a + 1, qam = a - 1;
    double c = 1, d = 1 - qab * p / qap;
    if (fabs(d) < TINY)
        d = TINY;
    d = 1 / d;
    double h = d;
    size_t cap = iteration_cap(n);
    for (size_t m = 1; m < cap; m++) {
        double m2 = 2.0 * (double)m;
        double aa = (double)m * (b - (double)m) * p / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        if (fabs(d) < TINY)
            d = TINY;
        c = 1 + aa / c;
        if (fabs(c) < TINY)
            c = TINY;
        d = 1 / d;
        h *= d * c;
        aa = -(a + (double)m) * (qab + (double)m) * p /
             ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        if (fabs(d) < TINY)
            d = TINY;
        c = 1 + aa / c;
        if (fabs(c) < TINY)
            c = TINY;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) <= DBL_EPSILON)
            /* x^a (1-x)^b / (a B(a,b)) = pmf(k) * q */
            return log_binom_pmf(k, n, p, q) + log(q) + log(h);
    }
    return NAN;
}

double hm_log10_sf_binom(uint64_t k, uint64_t n, double p)
{
    if (!(p >= 0 && p <= 1))
        return NAN;
    if (k == 0)
        return 0;
    if (k > n || p == 0)
        return -INFINITY;
    if (p == 1)
        return 0;
    double dk = (double)k, dn = (double)n, q = 1 - p;
    double l;
    if (p < (dk + 1) / (dn + 3))
        l = log_sf_binom_cf(dk, dn, p, q);
    else /* 1 - P[Bin(n,q) >= n-k+1] */
        l = log1mexp(log_sf_binom_cf(dn - dk + 1, dn, q, p));
    return l / LN_10;
}

/* ---------------------------------------------------- multiple testing */

typedef struct ranked {
    double l;
    size_t i;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* log10 of 1 - (1 - p)^m with p = 10^l. */
static double sidak(double l, double m)
{
    double p = pow(10, l);
    if (p * m < 1e-12) /* then m p (1 - O(m p)) */
        return l + log10(m);
    return log1mexp(m * log1p(-p)) / LN_10;
}

int hm_log10_adjust(const double *in, double *out, size_t m, int method)
{
    if ((m > 0 && (in == NULL || out == NULL)) ||
        (method != HM_ADJUST_BONFERRONI && method != HM_ADJUST_SIDAK &&
         method != HM_ADJUST_HOLM))
        return HM_EINVAL;
    for (size_t i = 0; i < m; i++)
        if (!(in[i] <= 0))
            return HM_EINVAL;
    if (method == HM_ADJUST_BONFERRONI || method == HM_ADJUST_SIDAK) {
        for (size_t i = 0; i < m; i++) {
            double a = method == HM_ADJUST_SIDAK ? sidak(in[i], (double)m)
                                                 : in[i] + log10((double)m);
            out[i] = a < 0 ? a : 0;
        }
        return HM_OK;
    }
    ranked *r = malloc((m ? m : 1) * sizeof *r);
    if (r == NULL)
        return HM_ENOMEM;
    for (size_t i = 0; i < m; i++) {
        r[i].l = in[i];
        r[i].i = i;
    }
    qsort(r, m, sizeof *r, cmp_ranked);
    double run = -INFINITY;
    for (size_t j = 0; j < m; j++) {
        double a = r[j].l + log10((double)(m - j));
        if (a > run)
            run = a;
        out[r[j].i] = run < 0 ? run : 0;
    }
    free(r);
    return HM_OK;
}

/* ------------------------------------------------------------ KS test */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ln P[D+_n >= d] under uniformity (Birnbaum & Tingey 1951):
 * d sum_{j=0}^{floor(n(1-d))} C(n,j) (1-d-j/n)^(n-j) (d+j/n)^(j-1). */
static double log_ks_plus(size_t n, double d)
{
    if (d <= 0)
        return 0;
    if (d >= 1)
        return -INFINITY;
    double dn = (double)n, acc = -INFINITY;
    size_t top = (size_t)floor(dn * (1 - d));
    for (size_t j = 0; j <= top && j <= n; j++) {
        double dj = (double)j, a = 1 - d - dj / dn;
        if (a <= 0 && n > j)
            continue;
        double t = lgam(dn + 1) - lgam(dj + 1) - lgam(dn - dj + 1) +
                   (n > j ? (dn - dj) * log(a) : 0) +
                   (dj - 1) * log(d + dj / dn);
        if (t > acc)
            acc = t + log1p(exp(acc - t));
        else
            acc = acc + log1p(exp(t - acc));
    }
    double l = log(d) + acc;
    return l < 0 ? l : 0;
}

int hm_ks_uniform(double *p, size_t n, double *d_plus, double *log10_pvalue)
{
    if (p == NULL || n == 0 || d_plus == NULL || log10_pvalue == NULL)
        return HM_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!(p[i] >= 0 && p[i] <= 1))
            return HM_EINVAL;
    qsort(p, n, sizeof *p, cmp_double);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)(i + 1) / (double)n - p[i];
        if (e > d)
            d = e;
    }
    *d_plus = d;
    *log10_pvalue = log_ks_plus(n, d) / LN_10;
    return HM_OK;
}
