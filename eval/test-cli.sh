#!/bin/bash
# hm-ngram: train, ppl, sample, bench on a small synthetic corpus; errors
# as FILE:LINE: problem with exit status 2.
set -u
# shellcheck source=tests/clilib.sh
. "$(dirname "$0")/../tests/clilib.sh"
NG="$HM_BUILDDIR/eval/hm-ngram"

expect 0 "--help" -- "$NG" --help
contains "$T/out" "hm-ngram train" "--help lists train"
expect 2 "no command" -- "$NG"
expect 2 "unknown command" -- "$NG" frobnicate
contains "$T/err" "unknown command 'frobnicate'" "unknown command message"

# A corpus with structure: each line counts up from a random start.
awk 'BEGIN { srand(1); for (d = 0; d < 300; d++) { s = int(rand() * 50);
     line = ""; for (i = 0; i < 40; i++) line = line (i ? " " : "") (s + i) % 50;
     print line } }' >"$T/train.ids"
head -20 "$T/train.ids" >"$T/test.ids"
expect 0 "train" -- "$NG" train -o "$T/m.ngm" --order 3 --vocab 60 "$T/train.ids"
contains "$T/out" "12000 tokens in 300 documents" "train summary"
ls "$T" | grep -q tmp && bad "temporary file left behind" || ok
expect 0 "ppl" -- "$NG" ppl "$T/m.ngm" "$T/test.ids"
contains "$T/out" "tokens 800 docs 20" "ppl counts"
ppl=$(sed 's/.*perplexity //' "$T/out")
awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 1.5) }' && ok ||
    bad "perplexity of a deterministic sequence: $ppl"
expect 0 "sample" -- "$NG" sample "$T/m.ngm" --seed 3 -n 30
[ "$(wc -w <"$T/out")" -eq 30 ] && ok || bad "sample: not 30 ids"
cp "$T/out" "$T/s1"
expect 0 "sample again" -- "$NG" sample "$T/m.ngm" --seed 3 -n 30
cmp -s "$T/out" "$T/s1" && ok || bad "sample: same seed, different ids"
expect 0 "bench" -- "$NG" bench "$T/m.ngm" --rows 50
contains "$T/out" "us/row" "bench output"

# Errors: FILE:LINE: problem, exit 2.
printf '1 2 3\n4 x 5\n' >"$T/bad.ids"
expect 2 "non-number" -- "$NG" train -o "$T/b.ngm" --order 3 --vocab 60 "$T/bad.ids"
contains "$T/err" "bad.ids:2: expected a token id" "non-number message"
absent "$T/b.ngm" "model after a failed train"
printf '1 2 3\n\n4 60\n' >"$T/bad.ids"
expect 2 "id too large" -- "$NG" train -o "$T/b.ngm" --order 3 --vocab 60 "$T/bad.ids"
contains "$T/err" "bad.ids:3: id 60 outside the vocabulary" "range message"
expect 2 "ppl: id too large" -- "$NG" ppl "$T/m.ngm" "$T/bad.ids"
contains "$T/err" "bad.ids:3:" "ppl range message"
expect 2 "train without --vocab" -- "$NG" train -o "$T/b.ngm" --order 3 "$T/train.ids"
expect 2 "train --order 9" -- "$NG" train -o "$T/b.ngm" --order 9 --vocab 60 "$T/train.ids"
expect 2 "missing input" -- "$NG" train -o "$T/b.ngm" --order 3 --vocab 60 "$T/none"
contains "$T/err" "none: No such file" "missing input message"
head -c 100 "$T/m.ngm" >"$T/cut.ngm"
expect 2 "truncated model" -- "$NG" ppl "$T/cut.ngm" "$T/test.ids"
contains "$T/err" "cut.ngm: truncated" "truncated model message"
expect 2 "no such model" -- "$NG" sample "$T/none.ngm"
contains "$T/err" "none.ngm" "missing model message"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
