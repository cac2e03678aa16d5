#!/bin/bash
# CLI tests of hallmark audit --logprobs (open-model audits,
# hm_greenmass_new(3)): a suspect distilled from kgw-biased distributions
# is detected for the right key and tenant only, a clean one is not,
# repeated records change nothing, the report says what bound it used, and
# bad input is reported as FILE:LINE: problem with exit 2 and no report.
set -u
# shellcheck source=tests/clilib.sh
. "$(dirname "$0")/clilib.sh"
GEN="$HM_BUILDDIR/tests/greenmass_gen"

fixed_keys
SPEC=kgw:gamma=0.25,delta=2,h=1
"$GEN" "$T/k" "$SPEC" acme marked 300 1 >"$T/marked.jsonl" || bad "greenmass_gen marked"
"$GEN" "$T/k" "$SPEC" acme clean 300 1 >"$T/clean.jsonl" || bad "greenmass_gen clean"
printf 'acme\nbeta\n' >"$T/tenants"
export SOURCE_DATE_EPOCH=1700000000
A() { "$HM" audit --logprobs --key "$T/k" --scheme "$SPEC" -R 20 "$@"; }

expect 0 "audit --logprobs --help" -- "$HM" audit --logprobs --help
contains "$T/out" "usage: hallmark audit --logprobs" "logprobs usage"
expect 0 "audit --help names --logprobs" -- "$HM" audit --help
contains "$T/out" "--logprobs" "audit usage"

expect 1 "marked, tenants" -- A --tenants "$T/tenants" -o "$T/r" "$T/marked.jsonl"
contains "$T/out" "watermark detected" "marked verdict"
contains "$T/r.json" '"mode": "logprobs"' "report mode"
contains "$T/r.json" '"bound": "chernoff"' "report names the bound"
contains "$T/r.json" 'conservative' "report says conservative"
contains "$T/r.json" '"gamma": 0.25' "report gamma"
contains "$T/r.json" "$(sha256sum "$T/marked.jsonl" | cut -d' ' -f1)" "report input SHA-256"
contains "$T/r.json" '"fingerprint": "hmk1-' "report key fingerprint"
contains "$T/r.json" '"windows": ' "report windows"
contains "$T/r.json" '"calibrated": true' "self-check calibrated"
contains "$T/r.html" "Chernoff" "HTML report"
python3 - "$T/r.json" <<'PY' && ok || bad "marked: acme detected, beta not"
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["tenant"]: x for x in r["tenants"]}
assert t["acme"]["detected"] and t["acme"]["log10_p_adjusted"] < -10, t["acme"]
assert not t["beta"]["detected"] and t["beta"]["log10_p"] > -3, t["beta"]
assert r["counts"][0]["records"] == 300
PY
grep -q "$(grep -v '^#' "$T/k" | sed -n 2p)" "$T/r.json" "$T/r.html" "$T/out" "$T/err" &&
    bad "key material in the report" || ok

expect 1 "marked, default tenant too" -- A --tenants "$T/tenants" --default-tenant -o "$T/rd" "$T/marked.jsonl"
python3 - "$T/rd.json" <<'PY' && ok || bad "--default-tenant: three tenants, the default first, acme detected"
import json, sys
r = json.load(open(sys.argv[1]))
names = [x["tenant"] for x in r["tenants"]]
assert names == ["", "acme", "beta"], names
assert r["tenants"][1]["detected"] and not r["tenants"][0]["detected"]
PY
expect 0 "clean" -- A --tenants "$T/tenants" -o "$T/c" "$T/clean.jsonl"
contains "$T/out" "no evidence" "clean verdict"
expect 0 "other key" -- "$HM" audit --logprobs --key "$T/other" --scheme "$SPEC" -R 0 -o "$T/o" "$T/marked.jsonl"

# Repeats change nothing: the same file twice, and shuffled duplicates.
expect 1 "once" -- A --tenants "$T/tenants" -o "$T/once" "$T/marked.jsonl"
expect 1 "twice" -- A --tenants "$T/tenants" -o "$T/twice" "$T/marked.jsonl" - <"$T/marked.jsonl"
python3 - "$T/once.json" "$T/twice.json" <<'PY' && ok || bad "repeated records changed the result"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["tenants"] == b["tenants"], (a["tenants"], b["tenants"])
assert b["counts"][0]["dropped_repeat"] == 300 + a["counts"][0]["dropped_repeat"]
PY

# The schemes it cannot score are refused, with the reason.
expect 2 "gumbel refused" -- "$HM" audit --logprobs --key "$T/k" --scheme gumbel -o "$T/g" "$T/marked.jsonl"
contains "$T/err" "kgw channels only" "gumbel reason"
expect 2 "selfhash refused" -- "$HM" audit --logprobs --key "$T/k" --scheme kgw:seeding=selfhash,h=4 -o "$T/g" "$T/marked.jsonl"
contains "$T/err" "selfhash" "selfhash reason"
expect 2 "filter refused" -- A --filter "$T/clean.jsonl" -o "$T/g" "$T/marked.jsonl"
contains "$T/err" "does not apply" "filter message"
expect 2 "tokenizer refused" -- A --tokenizer cl100k_base -o "$T/g" "$T/marked.jsonl"
absent "$T/g.json" "no report on refusal"

# Bad input: FILE:LINE: problem, exit 2, no report.
badcase() { # DESCRIPTION LINE2 EXPECTED-MESSAGE [OPTIONS]
    { head -n 1 "$T/marked.jsonl"; printf '%s\n' "$2"; } >"$T/bad.jsonl"
    rm -f "$T/b.json" "$T/b.html"
    expect 2 "$1" -- A ${4:-} -o "$T/b" "$T/bad.jsonl"
    contains "$T/err" "bad.jsonl:2: .*$3" "$1 message"
    absent "$T/b.json" "$1: report"
    [ -s "$T/out" ] && bad "$1: output on error" || ok
}
badcase "invalid json" '{"context": [1' "invalid JSON"
badcase "not an object" '[1, 2]' "not a JSON object"
badcase "no context" '{"ids": [1], "logprobs": [-1]}' "'context' must be"
badcase "no logprobs" '{"context": [1], "ids": [1]}' "'ids' and 'logprobs'"
badcase "length mismatch" '{"context": [1], "ids": [1, 2], "logprobs": [-1]}' "'ids' has 2 entries"
badcase "empty top-k" '{"context": [1], "ids": [], "logprobs": []}' "no top-k entries"
badcase "negative id" '{"context": [1], "ids": [-3], "logprobs": [-1]}' "'ids'\\[0\\] is not a token id"
badcase "bad context id" '{"context": [1, 2.5], "ids": [3], "logprobs": [-1]}' "'context'\\[1\\] is not a token id"
badcase "positive logprob" '{"context": [1], "ids": [3], "logprobs": [0.5]}' "log-probabilities are <= 0"
badcase "string logprob" '{"context": [1], "ids": [3], "logprobs": ["a"]}' "is not a number"
badcase "NaN logprob" '{"context": [1], "ids": [3], "logprobs": [NaN]}' "invalid JSON"
badcase "huge logprob" '{"context": [1], "ids": [3], "logprobs": [-1e999]}' "invalid JSON"
badcase "duplicate id" '{"context": [1], "ids": [3, 3], "logprobs": [-1, -2]}' "appears twice in 'ids'"
badcase "duplicate key" '{"context": [1], "ids": [3], "ids": [4], "logprobs": [-1]}' "invalid JSON"
badcase "mass above 1" '{"context": [1], "ids": [3, 4], "logprobs": [-0.1, -1]}' "sum to 1.2"
badcase "id beyond vocabulary" '{"context": [1], "ids": [3000], "logprobs": [-1]}' "unknown token id 3000" "--vocab-size 1000"
expect 2 "missing file" -- A -o "$T/b" "$T/nope.jsonl"
expect 2 "no -o" -- A "$T/marked.jsonl"
expect 2 "bad scheme" -- A --scheme kgw:h=99 -o "$T/b" "$T/marked.jsonl"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
