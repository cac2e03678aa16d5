#!/bin/bash
# CLI tests of hallmark probe (spectral fingerprint channel): a student
# distilled from marked values is detected, one from clean values is not,
# the JSON output, and bad input reported as FILE:LINE: problem.
set -u
# shellcheck source=tests/clilib.sh
. "$(dirname "$0")/clilib.sh"
GEN="$HM_BUILDDIR/tests/probe_gen"

fixed_keys

"$GEN" "$T/k" marked 3000 1 >"$T/marked.jsonl" || bad "probe_gen marked"
"$GEN" "$T/k" clean 3000 1 >"$T/clean.jsonl" || bad "probe_gen clean"

expect 0 "probe --help" -- "$HM" probe --help
contains "$T/out" "usage: hallmark probe" "probe usage"
expect 2 "probe bad option" -- "$HM" probe --bogus
expect 2 "probe without key" -- "$HM" probe "$T/marked.jsonl"
expect 2 "probe without files" -- "$HM" probe --key "$T/k"

# Deterministic: fixed keys, seeds and alternate keys.
expect 1 "probe marked" -- "$HM" probe --key "$T/k" --self-check 199 --alpha 0.01 "$T/marked.jsonl"
contains "$T/out" "FINGERPRINT DETECTED" "probe marked verdict"
contains "$T/out" "hmk1-" "probe names the key"
expect 0 "probe clean" -- "$HM" probe --key "$T/k" --self-check 199 --alpha 0.01 "$T/clean.jsonl"
contains "$T/out" "no evidence" "probe clean verdict"
expect 0 "probe other key" -- "$HM" probe --key "$T/other" --self-check 199 --alpha 0.01 "$T/marked.jsonl"
expect 0 "probe other tenant" -- "$HM" probe --key "$T/k" --tenant acme --self-check 199 --alpha 0.01 "$T/marked.jsonl"
expect 1 "probe --json from stdin" -- "$HM" probe --json --key "$T/k" -R 99 --alpha 0.01 - <"$T/marked.jsonl"
contains "$T/out" '"detected":true' "probe --json verdict"
contains "$T/out" '"p_value":0.01' "probe --json p-value"
contains "$T/out" '"keys":99' "probe --json null keys"
[ "$(wc -l <"$T/out")" -eq 1 ] && ok || bad "probe --json: one line"
grep -q "$(grep -v '^#' "$T/k" | sed -n 2p)" "$T/out" "$T/err" && bad "key material printed" || ok

# What a third party needs to reproduce the test: PRF version and each
# input's path, SHA-256 and number of records.
sum=$(sha256sum "$T/marked.jsonl" | cut -d' ' -f1)
recs=$(grep -c . "$T/marked.jsonl")
expect 1 "probe --json inputs" -- "$HM" probe --json --key "$T/k" -R 99 --alpha 0.01 "$T/marked.jsonl"
contains "$T/out" '"prf_version":1' "probe --json PRF version"
contains "$T/out" "\"sha256\":\"$sum\"" "probe --json input digest"
contains "$T/out" "\"records\":$recs}" "probe --json input records"
contains "$T/out" '"listed":' "probe --json listed tokens"
expect 1 "probe text inputs" -- "$HM" probe --key "$T/k" -R 99 --alpha 0.01 "$T/marked.jsonl"
contains "$T/out" "^# hallmark .*, PRF v1, key hmk1-" "probe header PRF version"
contains "$T/out" "^# input .*marked.jsonl: $recs records, sha256 $sum\$" "probe header input"
# An alpha that R alternate keys cannot reach: a warning, the run goes on.
expect 0 "probe unreachable alpha" -- "$HM" probe --key "$T/k" -R 9 --alpha 0.01 "$T/marked.jsonl"
contains "$T/err" "warning: --alpha 0.01 is below 0.1" "probe unreachable alpha warning"

# Calibration of the command itself (test_spectral checks the library's
# statistic): 100 keys, each with its own alternate keys (a label per
# run), on the student distilled from clean values.  Given the data, the
# key and its 19 alternates are 20 independent draws, so p is uniform on
# {1/20, ..., 1} and the runs are independent.  Fixed keys: deterministic.
# Bounds at about 3.5 standard deviations: 100 p-values have mean
# 0.525 +- 0.029 and about 25 +- 4.3 of them are <= 0.25.
for i in $(seq 1 100); do
    mkkey "$T/cal" "$(printf 'cal-%d' "$i" | sha256sum | cut -c1-64)"
    "$HM" probe --json --key "$T/cal" -R 19 --self-check-label "cal-$i" \
        --alpha 0.05 "$T/clean.jsonl" 2>/dev/null |
        sed -n 's/.*"p_value":\([0-9.e-]*\).*/\1/p'
done >"$T/cal.txt"
awk '{ n++; s += $1; low += ($1 <= 0.25 + 1e-9) }
     END { printf "calibration: %d p-values, mean %.3f, %d <= 0.25\n", n, s / n, low;
           exit !(n == 100 && s / n > 0.42 && s / n < 0.63 && low >= 10 && low <= 40) }' \
    "$T/cal.txt" && ok || bad "probe p-values of a clean student not uniform: $(tr '\n' ' ' <"$T/cal.txt")"

# Bad input: FILE:LINE: problem, exit 2, nothing on standard output.
badcase() { # DESCRIPTION LINE2 EXPECTED-MESSAGE
    { head -n 1 "$T/marked.jsonl"; printf '%s\n' "$2"; } >"$T/bad.jsonl"
    expect 2 "$1" -- "$HM" probe --key "$T/k" -R 9 "$T/bad.jsonl"
    contains "$T/err" "bad.jsonl:2: .*$3" "$1 message"
    [ -s "$T/out" ] && bad "$1: output on error" || ok
}
badcase "invalid json" '{"context": [1' "invalid JSON"
badcase "not an object" '[1, 2]' "not a JSON object"
badcase "no context" '{"ids": [1], "logprobs": [-1]}' "'context' must be"
badcase "no ids" '{"context": [1], "logprobs": [-1]}' "'ids' and 'logprobs'"
badcase "length mismatch" '{"context": [1], "ids": [1, 2], "logprobs": [-1]}' "'ids' has 2 entries"
badcase "empty top-k" '{"context": [1], "ids": [], "logprobs": []}' "no top-k entries"
badcase "negative id" '{"context": [1], "ids": [-3], "logprobs": [-1]}' "'ids'\\[0\\] is not a token id"
badcase "bad context id" '{"context": [1, "x"], "ids": [3], "logprobs": [-1]}' "'context'\\[1\\] is not a token id"
badcase "positive logprob" '{"context": [1], "ids": [3], "logprobs": [0.5]}' "log-probabilities are <= 0"
badcase "string logprob" '{"context": [1], "ids": [3], "logprobs": ["a"]}' "is not a number"
badcase "duplicate id" '{"context": [1], "ids": [3, 3], "logprobs": [-1, -2]}' "appears twice in 'ids'"
badcase "mass above 1" '{"context": [9], "ids": [5, 6], "logprobs": [-0.1, -0.2]}' "sum to 1.72.*not log-probabilities of one distribution"
printf '\n{"context": [], "ids": [5], "logprobs": [-0.1]}\n' >"$T/one.jsonl"
expect 2 "one probe" -- "$HM" probe --key "$T/k" -R 9 "$T/one.jsonl"
contains "$T/err" "one.jsonl: 1 probe, at least 2" "one probe message"
: >"$T/empty.jsonl"
expect 2 "empty file" -- "$HM" probe --key "$T/k" -R 9 "$T/empty.jsonl"
contains "$T/err" "empty.jsonl: 0 probes, at least 2" "empty file message"
expect 2 "one probe in two files" -- "$HM" probe --key "$T/k" -R 9 "$T/empty.jsonl" "$T/one.jsonl"
contains "$T/err" "1 probe in the 2 input files" "two files message"
expect 2 "missing file" -- "$HM" probe --key "$T/k" -R 9 "$T/nope.jsonl"
expect 2 "bad spec" -- "$HM" probe --key "$T/k" --spec h=99 -R 9 "$T/marked.jsonl"
expect 2 "bad R" -- "$HM" probe --key "$T/k" -R 0 "$T/marked.jsonl"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
