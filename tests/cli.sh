#!/bin/bash
# CLI tests: exit codes, messages, key-file safety and the demo.
set -u
# shellcheck source=tests/clilib.sh
. "$(dirname "$0")/clilib.sh"

expect 0 "--help" -- "$HM" --help
contains "$T/out" "keygen" "--help lists commands"
expect 0 "--version" -- "$HM" --version
contains "$T/out" "PRF v1" "--version names the PRF"
expect 2 "no command" -- "$HM"
expect 2 "unknown command" -- "$HM" frobnicate
contains "$T/err" "unknown command 'frobnicate'" "unknown command message"
for c in keygen fingerprint demo tokenize; do
    expect 0 "$c --help" -- "$HM" "$c" --help
    contains "$T/out" "usage: hallmark $c" "$c --help usage"
    expect 2 "$c bad option" -- "$HM" "$c" --no-such-option
done

# keygen: mode 0600, fingerprint printed, key never printed.
expect 0 "keygen" -- "$HM" keygen -o "$T/k"
fp=$(cut -d' ' -f1 "$T/out")
case "$fp" in hmk1-????????????????????????????????) ok ;; *) bad "fingerprint format: $fp" ;; esac
[ "$(stat -c %a "$T/k")" = 600 ] && ok || bad "key mode $(stat -c %a "$T/k")"
keyhex=$(grep -v '^#' "$T/k" | sed -n 2p)
[ ${#keyhex} -eq 64 ] && ok || bad "key line length ${#keyhex}"
grep -q "$keyhex" "$T/out" "$T/err" && bad "key material printed" || ok
expect 2 "keygen refuses to overwrite" -- "$HM" keygen -o "$T/k"
contains "$T/err" "file exists" "overwrite message"
[ "$(grep -v '^#' "$T/k" | sed -n 2p)" = "$keyhex" ] && ok || bad "key changed by refused keygen"
expect 0 "keygen --force" -- "$HM" keygen --force -o "$T/k"
[ "$(grep -v '^#' "$T/k" | sed -n 2p)" != "$keyhex" ] && ok || bad "--force kept the old key"
fp2=$(cut -d' ' -f1 "$T/out")
expect 2 "keygen without -o" -- "$HM" keygen
expect 2 "keygen to stdout" -- "$HM" keygen -o -
expect 2 "keygen into a missing directory" -- "$HM" keygen -o "$T/none/k"
ls "$T" | grep -q tmp && bad "temporary file left behind" || ok

# fingerprint: matches keygen, refuses open permissions and bad files.
expect 0 "fingerprint" -- "$HM" fingerprint "$T/k"
[ "$(cut -d' ' -f1 "$T/out")" = "$fp2" ] && ok || bad "fingerprint differs from keygen's"
chmod 644 "$T/k"
expect 2 "fingerprint of a 0644 key" -- "$HM" fingerprint "$T/k"
contains "$T/err" "$T/k: permissions 0644" "permission message names the file"
contains "$T/err" "chmod 600" "permission message says the fix"
chmod 600 "$T/k"
printf 'hallmark-key v1\nnot-hex\n' >"$T/bad"; chmod 600 "$T/bad"
expect 2 "malformed key" -- "$HM" fingerprint "$T/bad"
contains "$T/err" "$T/bad:2: key must be 64 hex digits" "malformed key message"
expect 2 "missing key" -- "$HM" fingerprint "$T/absent"
contains "$T/err" "$T/absent: No such file" "missing key message"
expect 2 "fingerprint without file" -- "$HM" fingerprint

# demo --synthetic: our text is detected, the innocent text is not (400
# tokens: the kgw channel, h=1 with masking, needs them to stay far below
# 1e-6).  The demo on real text is tests/demo.sh.
expect 0 "demo" -- "$HM" demo --synthetic --tokens 400
for s in kgw gumbel tournament; do
    line=$(grep "^$s " "$T/out")
    ours=$(echo "$line" | awk '{print $4}')
    theirs=$(echo "$line" | awk '{print $5}')
    awk -v p="$ours" 'BEGIN{exit !(p < -6)}' && ok || bad "demo $s: log10 p $ours on served text"
    awk -v p="$theirs" 'BEGIN{exit !(p > -6 && p <= 0)}' && ok || bad "demo $s: log10 p $theirs on innocent text"
done
expect 2 "demo bad tokens" -- "$HM" demo --synthetic --tokens 0
expect 2 "demo --tokens without --synthetic" -- "$HM" demo --tokens 100
contains "$T/err" "belong to --synthetic or -o" "demo option message"
expect 2 "demo --quick --synthetic" -- "$HM" demo --quick --synthetic
expect 2 "demo --rho out of range" -- "$HM" demo --rho 0.9
expect 2 "demo --seed negative" -- "$HM" demo --synthetic --seed -1

# tokenize: ids and pieces with the committed mini vocabulary
MINI="r50k_base=$HM_SRCDIR/tests/vectors/tok-mini.tiktoken"
printf 'hello abab' >"$T/text"
expect 0 "tokenize" -- "$HM" tokenize --tokenizer "$MINI" "$T/text"
[ "$(cat "$T/out")" = "269 32 273" ] && ok || bad "tokenize ids: $(cat "$T/out")"
expect 0 "tokenize --pieces" -- "$HM" tokenize -T "$MINI" --pieces - <"$T/text"
contains "$T/out" "$(printf '273\tabab')" "tokenize pieces"
printf 'ab\377' >"$T/bin"
expect 0 "tokenize invalid UTF-8" -- "$HM" tokenize -T "$MINI" "$T/bin"
contains "$T/err" "1 bytes of invalid UTF-8" "invalid UTF-8 counted"
expect 2 "tokenize unknown preset" -- "$HM" tokenize -T "gpt9=$HM_SRCDIR/tests/vectors/tok-mini.tiktoken" "$T/text"
contains "$T/err" "unknown tokenizer preset 'gpt9'" "unknown preset message"
expect 2 "tokenize missing rank file" -- "$HM" tokenize -T "cl100k_base=$T/none" "$T/text"
contains "$T/err" "$T/none: No such file" "missing rank file message"
expect 2 "tokenize preset without a directory" -- env -u HALLMARK_TOKENIZERS "$HM" tokenize -T cl100k_base "$T/text"
contains "$T/err" "HALLMARK_TOKENIZERS" "preset lookup message"
expect 2 "tokenize without --tokenizer" -- "$HM" tokenize "$T/text"
: >"$T/empty"
expect 0 "tokenize several files" -- "$HM" tokenize -T "$MINI" "$T/text" "$T/empty" "$T/text"
[ "$(cat "$T/out")" = "$(printf '269 32 273\n\n269 32 273')" ] && ok || bad "several files: $(cat "$T/out")"
expect 0 "tokenize --pieces several files" -- "$HM" tokenize -T "$MINI" -p "$T/text" "$T/text"
[ "$(grep -c '^$' "$T/out")" = 1 ] && ok || bad "several files' pieces: $(cat "$T/out")"
expect 2 "tokenize a missing second file" -- "$HM" tokenize -T "$MINI" "$T/text" "$T/none"
contains "$T/err" "$T/none: No such file" "missing input message"

# tokenize: the same vocabulary as a Hugging Face tokenizer.json, and
# special tokens only with --parse-special
HFJ="$HM_SRCDIR/tests/vectors/tok-mini.json"
printf 'hello abab<|endoftext|>' >"$T/special"
expect 0 "tokenize tokenizer.json" -- "$HM" tokenize --tokenizer "$HFJ" "$T/text"
[ "$(cat "$T/out")" = "269 32 273" ] && ok || bad "tokenizer.json ids: $(cat "$T/out")"
expect 0 "tokenize special as text" -- "$HM" tokenize -T "$HFJ" "$T/special"
[ "$(cat "$T/out")" = "269 32 273 60 124 101 110 100 111 102 116 101 120 116 124 62" ] && ok || bad "special as text: $(cat "$T/out")"
expect 0 "tokenize --parse-special" -- "$HM" tokenize -T "$HFJ" --parse-special "$T/special"
[ "$(cat "$T/out")" = "269 32 273 282" ] && ok || bad "parse special: $(cat "$T/out")"
expect 0 "tokenize --parse-special preset" -- "$HM" tokenize -T "cl100k_base=$HM_SRCDIR/tests/vectors/tok-mini.tiktoken" --parse-special "$T/special"
[ "$(cat "$T/out")" = "269 32 273 100257" ] && ok || bad "preset special: $(cat "$T/out")"
printf '{"model": {"type": "Unigram", "vocab": []}, "pre_tokenizer": {"type": "ByteLevel"}}' >"$T/uni.json"
expect 2 "tokenize unsupported tokenizer.json" -- "$HM" tokenize -T "$T/uni.json" "$T/text"
contains "$T/err" "model.type 'Unigram' is not supported" "unsupported model message"
printf '{"model": \n [' >"$T/broken.json"
expect 2 "tokenize broken tokenizer.json" -- "$HM" tokenize -T "$T/broken.json" "$T/text"
contains "$T/err" "broken.json:2:" "broken JSON names the line"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
