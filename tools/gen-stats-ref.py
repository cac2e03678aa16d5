#!/usr/bin/env python3
"""Reference values for hallmark's exact tail probabilities.

Writes tests/vectors/stats-ref.txt: one case per line,
    gamma N X LOG10_SF      log10 P[Gamma(N,1) >= X]
    binom K N P LOG10_SF    log10 P[Binomial(N,P) >= K]
computed with mpmath at 60 significant digits, independently of the C code
(mpmath's regularized incomplete gamma function; binomial tails by
direct summation).  Inputs are printed with
repr() so the C side reads exactly the same doubles.

Usage: python3 tools/gen-stats-ref.py > tests/vectors/stats-ref.txt
"""
import mpmath as mp

mp.mp.dps = 60


def log10_sf_gamma(n, x):
    q = mp.gammainc(mp.mpf(n), mp.mpf(x), mp.inf, regularized=True)
    return mp.log10(q)


def log10_sf_binom(k, n, p):
    """By direct summation of the binomial terms (not the beta function the
    C code uses), stopping when the terms no longer matter at 60 digits."""
    if k == 0:
        return mp.mpf(0)
    p = mp.mpf(p)
    q = 1 - p

    def term(j):
        return mp.exp(mp.loggamma(n + 1) - mp.loggamma(j + 1)
                      - mp.loggamma(n - j + 1) + j * mp.log(p)
                      + (n - j) * mp.log(q))

    eps = mp.mpf(10) ** (-mp.mp.dps - 5)
    mode = int((n + 1) * p)
    if k > mode:  # upper tail, terms fall from k on
        t, s, j = term(k), mp.mpf(0), k
        while j <= n:
            s += t
            if t < s * eps:
                break
            t *= mp.mpf(n - j) / (j + 1) * p / q
            j += 1
        return mp.log10(s)
    # lower tail P[X <= k-1], terms fall from k-1 down
    t, s, j = term(k - 1), mp.mpf(0), k - 1
    while j >= 0:
        s += t
        if t < s * eps:
            break
        t *= mp.mpf(j) / (n - j + 1) * q / p
        j -= 1
    return mp.log10(1 - s)


def main():
    print("# hallmark exact-tail reference values (tools/gen-stats-ref.py,")
    print("# mpmath %s, %d digits)" % (mp.__version__, mp.mp.dps))
    gam = []
    for n in (1, 2, 3, 7, 10, 50, 200, 1000, 10000, 100000, 1000000):
        for f in (0.05, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0, 10.0):
            gam.append((float(n), float(n * f)))
        gam.append((float(n), float(n + 1)))
        gam.append((float(n), float(n + 3 * n ** 0.5)))
    gam += [(0.5, 0.25), (0.5, 3.0), (0.01, 0.5), (2.5, 1.0), (2.5, 40.0),
            (1.0, 800.0), (1.0, 2000.0), (150.0, 1500.0), (400.0, 3000.0),
            (30.0, 0.001)]
    for n, x in gam:
        print("gamma %r %r %s" % (n, x, mp.nstr(log10_sf_gamma(n, x), 20)))
    bino = []
    for n in (1, 2, 10, 50, 200, 1000, 10000, 100000, 1000000):
        for p in (0.25, 0.5, 0.1):
            for f in (0.0, 0.1, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0):
                k = int(round(n * p * f))
                if k <= n:
                    bino.append((k, n, p))
            bino.append((n, n, p))
            bino.append((int(n * p + 3 * (n * p * (1 - p)) ** 0.5) + 1, n, p))
    bino += [(3000, 3000, 0.25), (900, 1000, 0.25), (5000, 6000, 0.5),
             (1, 1000, 1e-6), (3, 1000000, 1e-7), (40, 60, 0.9),
             (59, 60, 0.9), (60, 60, 0.9), (2, 2, 0.999)]
    seen = set()
    for k, n, p in bino:
        if (k, n, p) in seen or k > n:
            continue
        seen.add((k, n, p))
        print("binom %d %d %r %s" % (k, n, p,
                                     mp.nstr(log10_sf_binom(k, n, p), 20)))


if __name__ == "__main__":
    main()
