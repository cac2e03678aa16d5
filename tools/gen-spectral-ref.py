#!/usr/bin/env python3
"""Reference values of the Lomb-Scargle power of hm_lomb_scargle(3)
(hm_spectral_new(3)), computed independently of the library's formula:
the power is the share of the variance of y about its mean explained by
the least-squares fit of a*cos(2 pi f t) + b*sin(2 pi f t) to the centred
samples, solved from the 2x2 normal equations in 50-digit decimal
arithmetic (sine and cosine by their Taylor series).  The library computes
it with Lomb's time offset tau instead; the two agree exactly in real
arithmetic.  Prints one line per case: f, then the power to 17 digits."""
from decimal import Decimal as D, getcontext

getcontext().prec = 50
PI = D("3.14159265358979323846264338327950288419716939937510")


def sincos(x):
    two_pi = 2 * PI
    x = x - two_pi * int(x / two_pi)
    s, c, term, k = D(0), D(0), D(1), 0
    # term = x^k / k!
    while True:
        if k % 4 == 0:
            c += term
        elif k % 4 == 1:
            s += term
        elif k % 4 == 2:
            c -= term
        else:
            s -= term
        k += 1
        term = term * x / k
        if abs(term) < D("1e-45") and k > 10:
            return s, c


def power(t, y, f):
    n = len(t)
    mean = sum(y) / n
    d = [v - mean for v in y]
    cs = [sincos(2 * PI * f * ti) for ti in t]
    scc = sum(c * c for s, c in cs)
    sss = sum(s * s for s, c in cs)
    ssc = sum(s * c for s, c in cs)
    yc = sum(di * c for di, (s, c) in zip(d, cs))
    ys = sum(di * s for di, (s, c) in zip(d, cs))
    det = scc * sss - ssc * ssc
    a = (yc * sss - ys * ssc) / det
    b = (ys * scc - yc * ssc) / det
    explained = a * yc + b * ys
    return explained / sum(di * di for di in d)


T = ["0.03125", "0.15625", "0.28125", "0.4375", "0.5625", "0.71875",
     "0.90625"]
Y = ["0.25", "0.875", "0.5", "0.125", "0.625", "0.9375", "0.3125"]
t = [D(v) for v in T]
y = [D(v) for v in Y]
for f in ["1", "2.5", "17.25", "40"]:
    print(f, "%.17g" % float(power(t, y, D(f))))
