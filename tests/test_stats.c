/*
 * test_stats.c - exact tail probabilities: reference values computed with
 * mpmath (tests/vectors/stats-ref.txt), closed forms, edge cases, and the
 * calibration of p-values under the null.
 */
#include <math.h>

#include "testutil.h"

/* Allowed error in log10 p: 1e-12 relative plus 1e-11 absolute, that is
 * p itself right to about 11 significant digits, however small. */
static double tol(double ref)
{
    return 1e-11 + 1e-12 * fabs(ref);
}

START_TEST(test_reference_values)
{
    FILE *f = test_open_vectors("stats-ref.txt");
    char line[512], kind[16];
    int n_gamma = 0, n_binom = 0, lineno = 0;
    double worst = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#')
            continue;
        double got, ref;
        ck_assert_int_eq(sscanf(line, "%15s", kind), 1);
        if (strcmp(kind, "gamma") == 0) {
            double n, x;
            ck_assert_int_eq(sscanf(line, "gamma %lf %lf %lf", &n, &x, &ref),
                             3);
            got = hm_log10_sf_gamma(n, x);
            n_gamma++;
        } else {
            unsigned long long k, n;
            double p;
            ck_assert_str_eq(kind, "binom");
            ck_assert_int_eq(
                sscanf(line, "binom %llu %llu %lf %lf", &k, &n, &p, &ref), 4);
            got = hm_log10_sf_binom(k, n, p);
            n_binom++;
        }
        ck_assert_msg(fabs(got - ref) <= tol(ref),
                      "stats-ref.txt:%d: got %.17g, want %.17g (%s)", lineno,
                      got, ref, line);
        double e = fabs(got - ref) / tol(ref);
        if (e > worst)
            worst = e;
    }
    fclose(f);
    ck_assert_int_gt(n_gamma, 100);
    ck_assert_int_gt(n_binom, 150);
    printf("stats: %d gamma, %d binom reference values, worst error %.3f of "
           "tolerance\n", n_gamma, n_binom, worst);
}
END_TEST

START_TEST(test_closed_forms)
{
    /* Gamma(1,1) is Exp(1): P[X >= x] = e^-x, far below 1e-308. */
    for (double x = 0.5; x < 5000; x *= 1.7)
        ck_assert_double_eq_tol(hm_log10_sf_gamma(1, x), -x / log(10),
                                tol(x));
    /* Gamma(2,1): (1+x) e^-x. */
    for (double x = 0.25; x < 3000; x *= 2.1)
        ck_assert_double_eq_tol(hm_log10_sf_gamma(2, x),
                                (log1p(x) - x) / log(10), tol(x));
    /* All n successes: p^n.  At least one: 1 - q^n. */
    ck_assert_double_eq_tol(hm_log10_sf_binom(5000, 5000, 0.25),
                            5000 * log10(0.25), tol(3000));
    ck_assert_double_eq_tol(hm_log10_sf_binom(1, 40, 0.5),
                            log10(1 - ldexp(1, -40)), 1e-15);
    ck_assert_double_eq_tol(hm_log10_sf_binom(1, 1000000, 1e-9),
                            log10(-expm1(1e6 * log1p(-1e-9))), 1e-13);
}
END_TEST

START_TEST(test_edges)
{
    ck_assert(isnan(hm_log10_sf_gamma(0, 1)));
    ck_assert(isnan(hm_log10_sf_gamma(-1, 1)));
    ck_assert(isnan(hm_log10_sf_gamma(NAN, 1)));
    ck_assert(isnan(hm_log10_sf_gamma(INFINITY, 1)));
    ck_assert(isnan(hm_log10_sf_gamma(3, NAN)));
    ck_assert_double_eq(hm_log10_sf_gamma(3, 0), 0);
    ck_assert_double_eq(hm_log10_sf_gamma(3, -2), 0);
    ck_assert(isinf(hm_log10_sf_gamma(3, INFINITY)));
    ck_assert(isnan(hm_log10_sf_binom(1, 2, -0.1)));
    ck_assert(isnan(hm_log10_sf_binom(1, 2, 1.5)));
    ck_assert(isnan(hm_log10_sf_binom(1, 2, NAN)));
    ck_assert_double_eq(hm_log10_sf_binom(0, 0, 0.3), 0);
    ck_assert_double_eq(hm_log10_sf_binom(0, 10, 0.3), 0);
    ck_assert(isinf(hm_log10_sf_binom(11, 10, 0.3)));
    ck_assert(isinf(hm_log10_sf_binom(1, 10, 0)));
    ck_assert_double_eq(hm_log10_sf_binom(10, 10, 1), 0);
    /* Very large counts still converge. */
    double l = hm_log10_sf_binom(260000000, 1000000000, 0.25);
    ck_assert(isfinite(l) && l < -100);
    l = hm_log10_sf_gamma(1e9, 1e9 + 1e5);
    ck_assert(isfinite(l) && l < -0.5);
}
END_TEST

/* Tails are monotone and continuous across the switch between the two
 * expansions (series / continued fraction, direct / mirrored). */
START_TEST(test_monotone)
{
    const uint64_t ns[] = {1, 7, 100, 4321, 100000};
    const double ps[] = {0.01, 0.25, 0.5, 0.9};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (size_t j = 0; j < sizeof ps / sizeof *ps; j++) {
            double prev = 0;
            for (uint64_t k = 0; k <= ns[i];
                 k += 1 + ns[i] / 3000) {
                double l = hm_log10_sf_binom(k, ns[i], ps[j]);
                ck_assert_msg(l <= prev + 1e-13 && l <= 0,
                              "binom k=%llu n=%llu p=%g: %.17g after %.17g",
                              (unsigned long long)k,
                              (unsigned long long)ns[i], ps[j], l, prev);
                prev = l;
            }
        }
    const double gs[] = {0.3, 1, 5, 64, 1000, 250000};
    for (size_t i = 0; i < sizeof gs / sizeof *gs; i++) {
        double prev = 0, n = gs[i];
        for (double x = 0; x < 3 * n + 40; x += (3 * n + 40) / 5000) {
            double l = hm_log10_sf_gamma(n, x);
            ck_assert_msg(l <= prev + 1e-13, "gamma n=%g x=%g: %.17g > %.17g",
                          n, x, l, prev);
            prev = l;
        }
    }
}
END_TEST

/* Kolmogorov-Smirnov distance of sorted samples from U(0,1). */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ks_uniform(double *u, size_t n)
{
    double d = 0;
    qsort(u, n, sizeof *u, cmp_double);
    for (size_t i = 0; i < n; i++) {
        double lo = u[i] - (double)i / (double)n;
        double hi = (double)(i + 1) / (double)n - u[i];
        if (lo > d)
            d = lo;
        if (hi > d)
            d = hi;
    }
    return d;
}

/* Under the null, p-values of sums of Exp(1) scores are uniform.  With
 * 4000 samples the KS distance exceeds 0.0258 with probability 1% for
 * uniform p; a biased tail (an off-by-one n, a wrong tail) exceeds it by
 * far.  The seed is fixed, so the result is reproducible. */
START_TEST(test_calibration_gamma)
{
    enum { N = 4000 };
    static double pv[N];
    const int lens[] = {1, 8, 200};
    uint64_t s = 42;
    for (size_t li = 0; li < 3; li++) {
        for (int i = 0; i < N; i++) {
            double sum = 0;
            for (int t = 0; t < lens[li]; t++)
                sum += -log1p(-test_uniform(&s));
            pv[i] = pow(10, hm_log10_sf_gamma(lens[li], sum));
        }
        double d = ks_uniform(pv, N);
        ck_assert_msg(d < 0.0258, "n=%d: KS distance %g", lens[li], d);
    }
    /* The same statistic with the wrong n is detected: the test can fail. */
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int t = 0; t < 8; t++)
            sum += -log1p(-test_uniform(&s));
        pv[i] = pow(10, hm_log10_sf_gamma(9, sum));
    }
    ck_assert_double_gt(ks_uniform(pv, N), 0.05);
}
END_TEST

/* Binomial p-values are discrete, so calibration means P[p <= a] <= a for
 * every level a, with equality at the attainable levels. */
START_TEST(test_calibration_binom)
{
    enum { N = 20000, LEN = 120 };
    static double pv[N];
    uint64_t s = 7;
    const double alphas[] = {0.5, 0.1, 0.01};
    for (int i = 0; i < N; i++) {
        uint64_t k = 0;
        for (int t = 0; t < LEN; t++)
            k += test_uniform(&s) < 0.25;
        pv[i] = pow(10, hm_log10_sf_binom(k, LEN, 0.25));
    }
    for (size_t a = 0; a < 3; a++) {
        /* Exact size of the test at level alpha: sf at the smallest k
         * whose p-value is <= alpha. */
        double size = 0;
        for (uint64_t k = 0; k <= LEN; k++) {
            double p = pow(10, hm_log10_sf_binom(k, LEN, 0.25));
            if (p <= alphas[a]) {
                size = p;
                break;
            }
        }
        ck_assert_double_le(size, alphas[a]);
        int hits = 0;
        for (int i = 0; i < N; i++)
            hits += pv[i] <= alphas[a];
        double frac = (double)hits / N;
        double sd = sqrt(size * (1 - size) / N);
        ck_assert_msg(fabs(frac - size) < 4 * sd + 1e-12,
                      "alpha %g: observed %g, exact size %g", alphas[a], frac,
                      size);
    }
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reference_values);
    tcase_add_test(tc, test_closed_forms);
    tcase_add_test(tc, test_edges);
    tcase_add_test(tc, test_monotone);
    tcase_add_test(tc, test_calibration_gamma);
    tcase_add_test(tc, test_calibration_binom);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(stats_suite());
}
