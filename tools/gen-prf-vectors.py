#!/usr/bin/env python3
"""Compute hallmark PRF v1 test vectors independently of the C library.

HKDF-SHA256 and AES-CMAC come from the openssl command-line tool; the
mixer, the uniform map and the scheme rules are written out here from
hallmark-prf(7).  Output: tests/vectors/prf-v1.txt (run from the top):

    python3 tools/gen-prf-vectors.py > tests/vectors/prf-v1.txt
"""
import math
import subprocess

M64 = (1 << 64) - 1
PAD = 0xFFFFFFFF
SALT = "hallmark-prf-v1"


def hkdf(master_hex, info, n):
    out = subprocess.run(
        ["openssl", "kdf", "-keylen", str(n), "-kdfopt", "digest:SHA256",
         "-kdfopt", "hexkey:" + master_hex, "-kdfopt", "salt:" + SALT,
         "-kdfopt", "info:" + info, "HKDF"],
        check=True, capture_output=True, text=True).stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def cmac(key, msg):
    out = subprocess.run(
        ["openssl", "mac", "-cipher", "AES-128-CBC", "-macopt",
         "hexkey:" + key.hex(), "CMAC"],
        input=msg, check=True, capture_output=True).stdout
    return bytes.fromhex(out.decode().strip())


def seed(b16):
    a = int.from_bytes(b16[:8], "little")
    g = int.from_bytes(b16[8:16], "little") | 1
    if bin(g ^ (g >> 1)).count("1") < 24:
        g ^= 0xAAAAAAAAAAAAAAAA
    return a, g


def mix(s, c):
    a, g = s
    z = (a + (c + 1) * g) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def window(context, n):
    w = list(context[-n:]) if n else []
    return [PAD] * (n - len(w)) + w


def enc(ids):
    return b"".join(i.to_bytes(4, "little") for i in ids)


class Channel:
    def __init__(self, master_hex, scheme, cid, tenant, h, seeding=None):
        okm = hkdf(master_hex, f"hallmark/v1/{scheme}/{cid}/{tenant}", 48)
        self.k, self.s_hash, self.s_self = okm[:16], seed(okm[16:32]), seed(okm[32:48])
        self.scheme, self.h, self.seeding = scheme, h, seeding
        self.okm = okm

    def value(self, context, token):
        if self.scheme == "kgw" and self.seeding == "selfhash":
            w = window(context, self.h - 1)
            hashes = [mix(self.s_hash, t) for t in w]
            m = min(hashes)
            s = w[hashes.index(m)]
            if mix(self.s_hash, token) < m:
                return mix(self.s_self, token)
            return mix(seed(cmac(self.k, enc([s]))), token)
        return mix(seed(cmac(self.k, enc(window(context, self.h)))), token)


def unit(x):
    return ((x >> 12) + 0.5) * 2.0 ** -52


MASTER = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
MASTER2 = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff"
CONTEXTS = [[], [7], [100, 200], [1, 2, 3, 4], [50256, 11, 13, 198, 9906, 0],
            [5, 5, 5, 5, 5], [2**31 - 1, 0, 128255, 17]]
TOKENS = [0, 1, 13, 198, 50256, 128255, 2**31 - 1]
CHANNELS = [
    ("gumbel:h=4", "gumbel", "main", 4, None),
    ("gumbel:h=1,id=alt", "gumbel", "alt", 1, None),
    ("kgw:h=1", "kgw", "main", 1, "lefthash"),
    ("kgw:h=3,gamma=0.5", "kgw", "main", 3, "lefthash"),
    ("kgw:seeding=selfhash", "kgw", "main", 4, "selfhash"),
    ("tournament:h=4", "tournament", "main", 4, None),
    ("gumbel:h=16", "gumbel", "main", 16, None),
]
TENANTS = ["", "acme-corp", "tenant 42/x"]


def main():
    print("# hallmark PRF v1 test vectors, from tools/gen-prf-vectors.py")
    print("# fingerprint MASTER FINGERPRINT")
    print("# okm MASTER SCHEME ID TENANT HEX48  (HKDF output; '-' = empty tenant)")
    print("# value MASTER SPEC TENANT CONTEXT TOKEN X UNIT  (CONTEXT ids, '-' = none)")
    for mk in (MASTER, MASTER2):
        fp = hkdf(mk, "hallmark/v1/fingerprint", 16).hex()
        print(f"fingerprint {mk} hmk1-{fp}")
    for mk in (MASTER, MASTER2):
        for spec, scheme, cid, h, seeding in CHANNELS:
            for tenant in TENANTS:
                ch = Channel(mk, scheme, cid, tenant, h, seeding)
                tname = tenant.replace(" ", "%20") or "-"
                print(f"okm {mk} {scheme} {cid} {tname} {ch.okm.hex()}")
                for i, ctx in enumerate(CONTEXTS):
                    for tok in TOKENS[i % 3::2]:
                        x = mix_value = ch.value(ctx, tok)
                        cs = ",".join(str(t) for t in ctx) or "-"
                        print(f"value {mk} {spec} {tname} {cs} {tok} "
                              f"{x:016x} {unit(mix_value):.17g}")


if __name__ == "__main__":
    main()
