#!/bin/bash
# CLI tests of verify, audit and merge: verdicts and exit codes, reports,
# exact merging of split audits, and every kind of bad input.
set -u
# shellcheck source=tests/clilib.sh
. "$(dirname "$0")/clilib.sh"

SPEC=kgw:h=1+gumbel:h=4
# Fixed keys and seeds: every outcome below is deterministic, so no
# statistical check can fail by chance on one run and pass on the next.
fixed_keys
expect 0 "serve ours" -- "$HM" demo --key "$T/k" --scheme $SPEC --documents 6 --tokens 80 -o "$T/ours.jsonl"
expect 0 "serve theirs" -- "$HM" demo --key "$T/other" --scheme $SPEC --documents 6 --tokens 80 -o "$T/theirs.jsonl"
expect 0 "serve tenant" -- "$HM" demo --key "$T/k" --scheme $SPEC --tenant acme --documents 4 --tokens 80 --seed 9 -o "$T/acme.jsonl"

head -n 2 "$T/ours.jsonl" >"$T/p1f.jsonl"
for c in verify audit merge; do
    expect 0 "$c --help" -- "$HM" $c --help
    contains "$T/out" "usage: hallmark $c" "$c usage"
    expect 2 "$c bad option" -- "$HM" $c --bogus
done

# ---- verify: one verdict per document, exit 1 when any is watermarked
expect 1 "verify ours" -- "$HM" verify --key "$T/k" --scheme $SPEC "$T/ours.jsonl"
[ "$(grep -c WATERMARKED "$T/out")" -eq 6 ] && ok || bad "verify: not every served document detected"
contains "$T/out" "hmk1-" "verify names the key fingerprint"
expect 0 "verify innocent" -- "$HM" verify --key "$T/k" --scheme $SPEC "$T/theirs.jsonl"
[ "$(grep -c 'no evidence' "$T/out")" -eq 6 ] && ok || bad "verify: innocent text flagged"
expect 0 "verify wrong tenant" -- "$HM" verify --key "$T/k" --scheme $SPEC --tenant other "$T/acme.jsonl"
expect 1 "verify right tenant" -- "$HM" verify --key "$T/k" --scheme $SPEC --tenant acme "$T/acme.jsonl"
expect 1 "verify --json from stdin" -- "$HM" verify --json --key "$T/k" --scheme kgw:h=1 --scheme gumbel:h=4 - <"$T/ours.jsonl"
[ "$(wc -l <"$T/out")" -eq 6 ] && ok || bad "verify --json: one line per document"
contains "$T/out" '"detected":true' "verify --json verdict"
contains "$T/out" '"dropped_repeat":' "verify --json counts"
contains "$T/out" '"prf_version":1' "verify --json versions"
grep -q "$(grep -v '^#' "$T/k" | sed -n 2p)" "$T/out" "$T/err" && bad "key material printed" || ok
expect 0 "verify --alpha tiny" -- "$HM" verify --alpha 1e-300 --key "$T/k" --scheme $SPEC "$T/ours.jsonl"

# ---- bad input: file:line: problem, exit 2, nothing on stdout
printf '{"tokens": [1, 2, 3]}\n{"tokens": [1, 2,\n' >"$T/broken.jsonl"
expect 2 "malformed JSON" -- "$HM" verify --key "$T/k" "$T/ours.jsonl" "$T/broken.jsonl"
contains "$T/err" "$T/broken.jsonl:2: invalid JSON" "malformed JSON message"
[ -s "$T/out" ] && bad "output printed despite an error" || ok
printf '{"tokens": [1, 2, 99999]}\n' >"$T/oov.jsonl"
expect 2 "unknown token id" -- "$HM" verify --key "$T/k" --vocab-size 8192 "$T/oov.jsonl"
contains "$T/err" "oov.jsonl:1: 'tokens'\[2\]: unknown token id 99999" "unknown id message"
printf '{"tokens": [1, -2]}\n' >"$T/neg.jsonl"
expect 2 "negative token id" -- "$HM" verify --key "$T/k" "$T/neg.jsonl"
contains "$T/err" "neg.jsonl:1: 'tokens'\\[1\\] is not a token id (0 to 2^31-1)" "negative id message"
printf '{"prompt_tokens": [1, "x"], "tokens": [1]}\n' >"$T/str.jsonl"
expect 2 "token id not an integer" -- "$HM" verify --key "$T/k" "$T/str.jsonl"
contains "$T/err" "str.jsonl:1: 'prompt_tokens'\\[1\\] is not a token id" "non-integer id message"
printf '[1, 2]\n' >"$T/arr.jsonl"
expect 2 "record not an object" -- "$HM" verify --key "$T/k" "$T/arr.jsonl"
printf '{"text": "hello"}\n' >"$T/text.jsonl"
expect 2 "text without tokenizer" -- "$HM" verify --key "$T/k" "$T/text.jsonl"
contains "$T/err" "text.jsonl:1: 'text' records need --tokenizer" "text message"
printf '{"prompt": "hi", "tokens": [1]}\n' >"$T/ptext.jsonl"
expect 2 "prompt text without tokenizer" -- "$HM" verify --key "$T/k" "$T/ptext.jsonl"
contains "$T/err" "ptext.jsonl:1: 'prompt' text needs a tokenizer" "prompt text message"
printf '{"tokens": [1], "tokens": [2]}\n' >"$T/dup.jsonl"
expect 2 "duplicate field" -- "$HM" verify --key "$T/k" "$T/dup.jsonl"
expect 2 "missing input" -- "$HM" verify --key "$T/k" "$T/absent.jsonl"
contains "$T/err" "$T/absent.jsonl: No such file" "missing input message"
expect 2 "missing key" -- "$HM" verify --key "$T/absent" "$T/ours.jsonl"
cp "$T/k" "$T/open"; chmod 644 "$T/open"
expect 2 "world-readable key" -- "$HM" verify --key "$T/open" "$T/ours.jsonl"
contains "$T/err" "permissions 0644" "permission message"
printf 'hallmark-key v1\nzz\n' >"$T/badkey"; chmod 600 "$T/badkey"
expect 2 "malformed key" -- "$HM" verify --key "$T/badkey" "$T/ours.jsonl"
contains "$T/err" "$T/badkey:2:" "malformed key message"
expect 2 "bad scheme" -- "$HM" verify --key "$T/k" --scheme nope "$T/ours.jsonl"
expect 2 "bad alpha" -- "$HM" verify --key "$T/k" --alpha 2 "$T/ours.jsonl"
expect 2 "no key" -- "$HM" verify "$T/ours.jsonl"
expect 2 "no input" -- "$HM" verify --key "$T/k"
printf '\n\n{"tokens": []}\n' >"$T/empty.jsonl"
expect 0 "blank lines and empty records" -- "$HM" verify --key "$T/k" "$T/empty.jsonl"

# ---- audit: report files, verdict, self-check, tenants
expect 1 "audit ours" -- "$HM" audit --key "$T/k" --scheme $SPEC -o "$T/rep" "$T/ours.jsonl" "$T/theirs.jsonl"
for f in rep.json rep.html; do [ -s "$T/$f" ] && ok || bad "audit wrote no $f"; done
contains "$T/rep.json" '"verdict": "watermark detected"' "audit verdict"
contains "$T/rep.json" "$(sha256sum "$T/ours.jsonl" | cut -d' ' -f1)" "audit records input SHA-256"
contains "$T/rep.json" '"fingerprint": "hmk1-' "audit records the fingerprint"
contains "$T/rep.json" '"prf_version": 1' "audit records the PRF version"
contains "$T/rep.json" '"calibrated": true' "audit self-check"
contains "$T/rep.json" '"dropped_repeat"' "audit counts"
contains "$T/rep.html" "<svg" "HTML plots"
grep -q "$(grep -v '^#' "$T/k" | sed -n 2p)" "$T/rep.json" "$T/rep.html" && bad "key material in report" || ok
expect 0 "audit innocent" -- "$HM" audit --key "$T/k" --scheme $SPEC -o "$T/inn.json" "$T/theirs.jsonl"
contains "$T/inn.json" '"verdict": "no evidence"' "innocent verdict"
printf '# tenants\nalpha\nacme\n\nbeta\n' >"$T/tenants"
expect 1 "audit tenants" -- "$HM" audit --key "$T/k" --scheme $SPEC --tenants "$T/tenants" --self-check 8 -o "$T/ten" "$T/acme.jsonl"
tr -d ' \n' <"$T/ten.json" >"$T/ten.flat"
contains "$T/ten.flat" '"tenant":"acme","channels"' "tenant listed"
grep -o '"tenant":"[a-z]*"[^]]*][^}]*"detected":[a-z]*' "$T/ten.flat" | sed 's/.*"tenant":"\([a-z]*\)".*"detected":\([a-z]*\)/\1 \2/' >"$T/det"
[ "$(grep -c true "$T/det")" -eq 1 ] && grep -q "acme true" "$T/det" && ok || { bad "tenant attribution"; cat "$T/det"; }
# --default-tenant: the keys served without a tenant id, next to the list
expect 1 "audit default tenant" -- "$HM" audit --key "$T/k" --scheme $SPEC --tenants "$T/tenants" --default-tenant --self-check 8 -o "$T/tend" "$T/ours.jsonl"
tr -d ' \n' <"$T/tend.json" >"$T/tend.flat"
contains "$T/tend.flat" '"tenants":\[{"tenant":"","channels"' "default tenant first"
grep -o '"tenant":"[a-z]*"[^]]*][^}]*"detected":[a-z]*' "$T/tend.flat" | sed 's/.*"tenant":"\([a-z]*\)".*"detected":\([a-z]*\)/<\1> \2/' >"$T/detd"
[ "$(wc -l <"$T/detd")" -eq 4 ] && [ "$(grep -c true "$T/detd")" -eq 1 ] && grep -q "<> true" "$T/detd" && ok || { bad "default tenant attribution"; cat "$T/detd"; }
printf 'a\na\n' >"$T/duptenants"
expect 2 "duplicate tenant" -- "$HM" audit --key "$T/k" --tenants "$T/duptenants" -o "$T/x" "$T/ours.jsonl"
contains "$T/err" "duptenants:2: duplicate tenant 'a'" "duplicate tenant message"
# an error leaves no report, and an old report is kept whole
cp "$T/rep.json" "$T/keep.json"
expect 2 "audit with a bad input" -- "$HM" audit --key "$T/k" --scheme $SPEC -o "$T/rep" "$T/ours.jsonl" "$T/broken.jsonl"
cmp -s "$T/rep.json" "$T/keep.json" && ok || bad "failed audit touched the old report"
expect 2 "audit bad input, new name" -- "$HM" audit --key "$T/k" -o "$T/none" "$T/broken.jsonl"
absent "$T/none.json" "failed audit"; absent "$T/none.html" "failed audit"
ls "$T" | grep -q 'tmp-' && bad "temporary files left behind" || ok
expect 2 "audit without -o" -- "$HM" audit --key "$T/k" "$T/ours.jsonl"

# ---- the filtered test scores only tuples the provider served
expect 1 "audit --filter" -- "$HM" audit --key "$T/k" --scheme $SPEC --filter "$T/p1f.jsonl" -o "$T/filt" "$T/ours.jsonl" "$T/theirs.jsonl"
contains "$T/filt.json" '"kind": "filter"' "filter input recorded"
grep -q '"dropped_filter": 0,' "$T/filt.json" && bad "filter dropped nothing" || ok
printf '{"tokens": []}\n' >"$T/emptyf.jsonl"
expect 2 "audit --filter without tokens" -- "$HM" audit --key "$T/k" --filter "$T/emptyf.jsonl" -o "$T/x" "$T/ours.jsonl"
contains "$T/err" "no tokens" "empty filter message"
expect 2 "audit --filter missing" -- "$HM" audit --key "$T/k" --filter "$T/nope.jsonl" -o "$T/x" "$T/ours.jsonl"
absent "$T/x.json" "failed filtered audit"

# ---- selfhash detection stays calibrated on repetitive innocent text
expect 0 "serve selfhash innocent" -- "$HM" demo --key "$T/other" --scheme kgw:seeding=selfhash --documents 20 --tokens 100 -o "$T/sh.jsonl"
expect 0 "audit selfhash innocent" -- "$HM" audit --key "$T/k" --scheme kgw:seeding=selfhash --self-check 64 -o "$T/sh" "$T/sh.jsonl"
contains "$T/sh.json" '"calibrated": true' "selfhash self-check"
contains "$T/sh.json" '"verdict": "no evidence"' "selfhash innocent verdict"
expect 0 "verify selfhash innocent" -- "$HM" verify --key "$T/k" --scheme kgw:seeding=selfhash "$T/sh.jsonl"
expect 0 "serve selfhash ours" -- "$HM" demo --key "$T/k" --scheme kgw:seeding=selfhash --documents 5 --tokens 100 -o "$T/sh2.jsonl"
expect 1 "audit selfhash ours" -- "$HM" audit --key "$T/k" --scheme kgw:seeding=selfhash -o "$T/sh2" "$T/sh2.jsonl"

# ---- text: plain files and 'text' fields through --tokenizer
MINI="r50k_base=$HM_SRCDIR/tests/vectors/tok-mini.tiktoken"
printf 'hello abab cab hello' >"$T/plain.txt"
expect 0 "verify plain text" -- "$HM" verify --key "$T/k" --tokenizer "$MINI" "$T/plain.txt"
contains "$T/out" "tokenizer r50k_base" "verify names the tokenizer"
grep -q "plain.txt  *6 " "$T/out" && ok || { bad "plain text: 6 tokens"; cat "$T/out"; }
printf '{"id": "t1", "prompt": "hello", "text": " abab cab"}\n' >"$T/text.jsonl"
expect 0 "verify text records" -- "$HM" verify --json --key "$T/k" --tokenizer "$MINI" "$T/text.jsonl"
contains "$T/out" '"tokens":4' "text record tokenized"
contains "$T/out" '"tokenizer":"r50k_base"' "verify --json tokenizer"
printf '{"text": 5}\n' >"$T/badtext.jsonl"
expect 2 "text must be a string" -- "$HM" verify --key "$T/k" --tokenizer "$MINI" "$T/badtext.jsonl"
contains "$T/err" "badtext.jsonl:1:" "bad text message"
expect 0 "audit plain text" -- "$HM" audit --key "$T/k" --tokenizer "$MINI" --self-check 4 -o "$T/txt" "$T/plain.txt"
tr -d ' \n' <"$T/txt.json" >"$T/txt.flat"
contains "$T/txt.flat" '"tokenizer":{"name":"r50k_base","sha256":"'"$(sha256sum "$HM_SRCDIR/tests/vectors/tok-mini.tiktoken" | cut -d' ' -f1)" "audit records the tokenizer"
contains "$T/txt.flat" '"kind":"text"' "audit records a text input"
expect 2 "bad tokenizer" -- "$HM" verify --key "$T/k" --tokenizer "nope=$T/none" "$T/plain.txt"
# the same through the tokenizer.json of the same vocabulary: same counts
HFJ="$HM_SRCDIR/tests/vectors/tok-mini.json"
expect 0 "verify plain text, tokenizer.json" -- "$HM" verify --key "$T/k" --tokenizer "$HFJ" "$T/plain.txt"
grep -q "plain.txt  *6 " "$T/out" && ok || { bad "tokenizer.json plain text: 6 tokens"; cat "$T/out"; }
expect 0 "audit --parse-special" -- "$HM" audit --key "$T/k" --tokenizer "$HFJ" --parse-special --self-check 4 -o "$T/txs" "$T/plain.txt"
tr -d ' \n' <"$T/txs.json" >"$T/txs.flat"
contains "$T/txs.flat" '"tokenizer":{"name":"tokenizer.json","sha256":"'"$(sha256sum "$HFJ" | cut -d' ' -f1)"'","parse_special":true}' "audit records tokenizer.json and parse_special"

# ---- merge: split audits merge to exactly the whole
head -n 3 "$T/ours.jsonl" >"$T/p1.jsonl"; tail -n +3 "$T/ours.jsonl" >"$T/p2.jsonl"  # line 3 in both
cat "$T/theirs.jsonl" >>"$T/p2.jsonl"
A="--key $T/k --scheme $SPEC --self-check 4"
expect 1 "audit whole" -- "$HM" audit $A --save-tally "$T/whole.tally" -o "$T/w" "$T/p1.jsonl" "$T/p2.jsonl"
expect 1 "audit part 1" -- "$HM" audit $A --save-tally "$T/t1" -o "$T/r1" "$T/p1.jsonl"
expect 1 "audit part 2" -- "$HM" audit $A --save-tally "$T/t2" -o "$T/r2" "$T/p2.jsonl"
expect 0 "merge" -- "$HM" merge -o "$T/merged.tally" "$T/t2" "$T/t1"
cmp -s "$T/merged.tally" "$T/whole.tally" && ok || bad "merged tally differs from the whole audit's"
expect 1 "audit from tallies" -- "$HM" audit $A -o "$T/fromtally" "$T/t1" "$T/t2"
contains "$T/fromtally.json" "$(sha256sum "$T/t1" | cut -d' ' -f1)" "tally input SHA-256"
sed -n '/"counts"/,/"curve"/p' "$T/w.json" >"$T/c1"
sed -n '/"counts"/,/"curve"/p' "$T/fromtally.json" >"$T/c2"
cmp -s "$T/c1" "$T/c2" && ok || { bad "report from merged tallies differs"; diff "$T/c1" "$T/c2" | head; }
"$HM" audit --key "$T/other" --scheme $SPEC --self-check 4 --save-tally "$T/t3" -o "$T/r3" "$T/p1.jsonl" >/dev/null
expect 2 "merge different keys" -- "$HM" merge -o "$T/m2" "$T/t1" "$T/t3"
contains "$T/err" "cannot merge" "merge mismatch message"
absent "$T/m2" "failed merge"
"$HM" audit --key "$T/k" --scheme gumbel --self-check 4 --save-tally "$T/t4" -o "$T/r4" "$T/p1.jsonl" >/dev/null
expect 2 "merge different specs" -- "$HM" merge -o "$T/m2" "$T/t1" "$T/t4"
contains "$T/err" "different specs" "spec mismatch message"
expect 2 "audit tally with other params" -- "$HM" audit $A -o "$T/x" "$T/t4"
head -c 200 "$T/t1" >"$T/trunc"
expect 2 "merge truncated tally" -- "$HM" merge -o "$T/m2" "$T/t1" "$T/trunc"
contains "$T/err" "checksum mismatch" "truncated tally message"
expect 2 "merge missing tally" -- "$HM" merge -o "$T/m2" "$T/t1" "$T/nope"
expect 2 "merge without -o" -- "$HM" merge "$T/t1"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
