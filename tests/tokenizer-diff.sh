#!/bin/bash
# Differential test of hallmark's tokenizer against the reference tokenizers
# (fetched, pinned and checksummed by tokenizer-fetch.sh, never committed):
#   r50k_base p50k_base cl100k_base o200k_base   vs tiktoken@1.0.22 (WASM)
#   llama3 (rank file from llama3-tokenizer-js)   vs llama3-tokenizer-js@1.2.0
#                                                 and @huggingface/tokenizers@0.2.0
#   tokenizer.json of Llama 3 and GPT-2           vs @huggingface/tokenizers@0.2.0,
#     (when hallmark loads tokenizer.json)           llama3-tokenizer-js, tiktoken r50k
# on every State of the Union address, every Brown sample (the raw word/tag
# files and plain text per genre) and generated edge cases.  Any mismatching
# id fails the test, with the first difference explained.
# Exit 0 pass, 1 mismatch, 77 skip (no npm/registry), 99 hard error.
# HM_TOKDIFF_JOBS: parallel hallmark processes (default: the number of CPUs).
# HM_TOKDIFF_KEEP=1 keeps the scratch directory.
set -u
HM_SRCDIR=${HM_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
HM_BUILDDIR=${HM_BUILDDIR:-$HM_SRCDIR}
HM="$HM_BUILDDIR/hallmark"
T=$HM_SRCDIR/tests
CACHE=${HM_TOKCACHE:-${HOME:-/nonexistent}/.cache/hallmark-test}
say() { echo "tokenizer-diff: $*"; }
bytes_of() { xargs -d '\n' cat <"$1" | wc -c; }

start=$(date +%s)
bash "$T/tokenizer-fetch.sh" "$CACHE"
rc=$?
case $rc in
0) ;;
77) say "SKIP: the reference tokenizers and corpora are not available"; exit 77 ;;
*) say "ERROR: tokenizer-fetch.sh failed (exit $rc)"; exit 99 ;;
esac
CACHE=$(cd "$CACHE" && pwd -P) || exit 99
[ -x "$HM" ] || { say "ERROR: $HM is not built"; exit 99; }
JOBS=${HM_TOKDIFF_JOBS:-$(nproc 2>/dev/null || echo 2)}
CHUNK=64
W=$(mktemp -d "${TMPDIR:-/tmp}/hm-tokdiff-XXXXXX") || exit 99
if [ "${HM_TOKDIFF_KEEP:-0}" = 1 ]; then say "scratch directory: $W"
else trap 'rm -rf "$W"' EXIT; fi

RANKS=$CACHE/gpt-tokenizer/package/data
L3PKG=$CACHE/llama3-js/package
HFL3=$CACHE/hf-llama3/package/models/tokenizer.json
HFGPT2=$CACHE/hf-gpt2/package/models/tokenizer.json
fails=0 checks=0

# ---- inputs: one list of files (unique basenames), and subsets of it
mkdir -p "$W/edge" "$W/brown-plain" || exit 99
node "$T/tokedge.js" "$W/edge" || { say "ERROR: tokedge.js failed"; exit 99; }
node "$T/tokedge.js" --brown-plain "$CACHE/brown/package" "$W/brown-plain" ||
    { say "ERROR: tokedge.js --brown-plain failed"; exit 99; }
{
    ls -d "$CACHE"/sotu/package/data/*.txt
    ls -d "$CACHE"/brown/package/c[a-r][0-9][0-9]
    ls -d "$W"/brown-plain/*.txt
    ls -d "$W"/edge/*.txt
} >"$W/all.list" || exit 99
# core: all but the 500 raw Brown files (their text is in brown-plain), for
# the slower references and the less used presets
grep -v '/brown/package/' "$W/all.list" >"$W/core.list"
n_sotu=$(grep -c '/sotu/' "$W/all.list")
n_brown=$(grep -c '/brown/package/' "$W/all.list")
n_plain=$(grep -c '/brown-plain/' "$W/all.list")
n_edge=$(grep -c '/edge/' "$W/all.list")
if [ "$(sed 's,.*/,,' "$W/all.list" | sort | uniq -d | wc -l)" -ne 0 ]; then
    say "ERROR: two inputs share a basename"; exit 99
fi
say "inputs: $n_sotu SOTU addresses, $n_brown raw Brown samples, $n_plain Brown genres as plain text, $n_edge edge cases"
say "  all: $(wc -l <"$W/all.list") files, $(bytes_of "$W/all.list") bytes; core (without the raw Brown samples): $(wc -l <"$W/core.list") files, $(bytes_of "$W/core.list") bytes"

# subset LIST NAME: the files of LIST that contain none of the fixed
# strings of $W/NAME.pat -> $W/NAME.list; the others -> $W/NAME.out
subset() {
    xargs -d '\n' env LC_ALL=C grep -lF -f "$W/$2.pat" -- <"$1" >"$W/$2.out"
    grep -vxF -f "$W/$2.out" -- "$1" >"$W/$2.list"
    [ -s "$W/$2.list" ] || { say "ERROR: no input without $2.pat"; exit 99; }
}

# hm_run OUTDIR SPEC LIST [OPTION...]: hallmark's ids of every file of LIST
# in OUTDIR/<basename>.ids, $JOBS processes at a time, each tokenizing up
# to 64 files (one line of ids per file; each file on its own).  The files
# of a failed run are listed in OUTDIR.fail, its messages in OUTDIR.err.
hm_run() {
    local out=$1 spec=$2 list=$3
    shift 3
    mkdir -p "$out" || exit 99
    : >"$out.fail"; : >"$out.err"
    # shellcheck disable=SC2016
    HM_OPTS="$*" xargs -d '\n' -P "$JOBS" -n "$CHUNK" sh -c '
        hm=$1 out=$2 spec=$3; shift 3
        tmp=$(mktemp "$out.XXXXXX") || exit 1
        if "$hm" tokenize -T "$spec" $HM_OPTS "$@" >"$tmp" 2>"$tmp.err" &&
            [ "$(wc -l <"$tmp")" -eq $# ]; then
            printf "%s\n" "$@" | awk -v out="$out" '"'"'
                NR == FNR { n = $0; sub(/.*\//, "", n); name[NR] = out "/" n ".ids"; next }
                { print > name[FNR]; close(name[FNR]) }'"'"' - "$tmp"
        else
            printf "%s\n" "$@" >>"$out.fail"
            cat "$tmp.err" >>"$out.err"
        fi
        rm -f "$tmp" "$tmp.err"' sh "$HM" "$out" "$spec" <"$list"
}

# ref_run OUTDIR REF LIST: reference ids (REF: a preset or tokenizer.json for
# tokref.js, "llama3-js" for llama3-tokenizer-js).
ref_run() {
    mkdir -p "$1" || exit 99
    if [ "$2" = llama3-js ]; then
        xargs -d '\n' node "$T/llama3-ranks.js" "$L3PKG" encode-to "$1" <"$3"
    else
        xargs -d '\n' node "$T/tokref.js" --cache "$CACHE" --outdir "$1" "$2" <"$3"
    fi
}

# compare NAME REFDIR HMDIR LIST VOCAB: zero mismatching files, or explain.
compare() {
    local name=$1 ref=$2 got=$3 list=$4 vocab=$5 f b nf nb nbad=0 shown=0 toks
    checks=$((checks + 1))
    nf=$(wc -l <"$list")
    nb=$(bytes_of "$list")
    if [ -s "$got.fail" ]; then
        say "FAIL $name: hallmark failed on $(wc -l <"$got.fail") files, e.g.:"
        sed 's/^/  | /' "$got.err" | head -5
        fails=$((fails + 1)); return
    fi
    while IFS= read -r f; do
        b=${f##*/}.ids
        if [ ! -f "$ref/$b" ] || [ ! -f "$got/$b" ]; then
            say "FAIL $name: $f: no ids from $([ -f "$ref/$b" ] && echo hallmark || echo the reference)"
            nbad=$((nbad + 1)); continue
        fi
        cmp -s "$ref/$b" "$got/$b" && continue
        nbad=$((nbad + 1))
        if [ $shown -lt 3 ]; then
            shown=$((shown + 1))
            say "MISMATCH $name: $f"
            node "$T/tokref.js" --cache "$CACHE" --explain "$vocab" "$f" "$ref/$b" "$got/$b" | sed 's/^/  /'
        fi
    done <"$list"
    toks=$(cd "$ref" && sed 's,.*/,,; s,$,.ids,' "$list" | xargs -d '\n' cat 2>/dev/null | wc -w)
    if [ $nbad -ne 0 ]; then
        say "FAIL $name: $nbad of $nf files differ"
        fails=$((fails + 1))
    elif [ "$toks" -eq 0 ] && [ "$nb" -ne 0 ]; then
        say "FAIL $name: the reference gave no tokens at all"
        fails=$((fails + 1))
    else
        say "ok   $name: $nf files, $nb bytes, $toks tokens, 0 mismatches [$(( $(date +%s) - start )) s]"
    fi
}

# ---- the comparison itself must be able to fail: one corrupted id.
mkdir -p "$W/canary/ref" "$W/canary/got" || exit 99
echo "$W/edge/edge-contractions.txt" >"$W/canary.list"
ref_run "$W/canary/ref" cl100k_base "$W/canary.list" || exit 99
sed 's/^\([0-9]*\) \([0-9]*\)/\1 7/' "$W/canary/ref/edge-contractions.txt.ids" >"$W/canary/got/edge-contractions.txt.ids"
: >"$W/canary/got.fail"
(fails=0; compare canary "$W/canary/ref" "$W/canary/got" "$W/canary.list" cl100k_base >"$W/canary.out"; exit $fails)
if [ $? -ne 1 ] || ! grep -q 'first difference at token 1' "$W/canary.out"; then
    say "ERROR: a corrupted reference id went unnoticed:"; cat "$W/canary.out"; exit 99
fi
say "ok   canary: one corrupted id is caught and explained"

# ---- what is compared with what
node "$T/llama3-ranks.js" "$L3PKG" ranks "$W/llama3.tiktoken" ||
    { say "ERROR: llama3-ranks.js failed"; exit 99; }
# llama3-tokenizer-js runs its pattern as a JavaScript RegExp, and
# @huggingface/tokenizers runs ByteLevel's built-in GPT-2 pattern (not a
# Split pattern, which it translates) as one too: JavaScript's \s also
# matches U+FEFF, which Unicode's White_Space (tiktoken's Rust regex, HF's
# Oniguruma, PCRE2) does not.  Inputs with U+FEFF are left out of those
# comparisons (they are compared with tiktoken and with HF's Split pattern).
printf '\xef\xbb\xbf\n' >"$W/l3js.pat"
subset "$W/all.list" l3js
# @huggingface/tokenizers splits out added tokens (<|...|>) found in the
# text: inputs with added-token text are compared with --parse-special.
added_tokens() {
    node -e 'for (const t of JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).added_tokens)
        console.log(t.content)' "$1" || exit 99
}
added_tokens "$HFL3" >"$W/hfl3.pat"
subset "$W/core.list" hfl3
{ added_tokens "$HFGPT2"; printf '\xef\xbb\xbf\n'; } >"$W/hfgpt2.pat"
subset "$W/core.list" hfgpt2
ls -d "$W"/edge/*.txt >"$W/edge.list"
printf '\xef\xbb\xbf\n' >"$W/edge-nobom.pat"
subset "$W/edge.list" edge-nobom
grep -vxF -f "$W/l3js.out" "$W/core.list" >"$W/core-l3js.list"

hf=yes # does hallmark load tokenizer.json?
if ! "$HM" tokenize -T "$HFGPT2" "$W/edge/edge-one-letter.txt" >/dev/null 2>"$W/hf.err"; then
    hf="hallmark does not load tokenizer.json ($(head -1 "$W/hf.err"))"
elif ! "$HM" tokenize --help 2>&1 | grep -q -- --parse-special; then
    hf="hallmark tokenize has no --parse-special"
fi

# ---- the references (slow, single-threaded JavaScript) in two lanes in the
# background, hallmark meanwhile
lane() { # NAME REF-ARGS... ; REF-ARGS separated by ';'
    local name=$1; shift
    while [ $# -gt 0 ]; do
        ref_run "$1" "$2" "$3" || { echo "$2" >"$W/lane-$name.failed"; return 1; }
        shift 3; [ "${1-}" = ";" ] && shift
    done
    return 0
}
lane 1 "$W/ref-cl100k_base" cl100k_base "$W/all.list" \; \
    "$W/ref-l3js" llama3-js "$W/l3js.list" \; \
    "$W/ref-r50k_base" r50k_base "$W/core.list" \; \
    "$W/ref-p50k_base" p50k_base "$W/core.list" &
lane1=$!
if [ "$hf" = yes ]; then set -- \; "$W/ref-hfgpt2" "$HFGPT2" "$W/core.list"; else set --; fi
lane 2 "$W/ref-o200k_base" o200k_base "$W/all.list" \; \
    "$W/ref-hfl3" "$HFL3" "$W/core.list" "$@" &
lane2=$!
for p in cl100k_base o200k_base; do hm_run "$W/hm-$p" "$p=$RANKS/$p.tiktoken" "$W/all.list"; done
hm_run "$W/hm-llama3" "llama3=$W/llama3.tiktoken" "$W/all.list"
for p in r50k_base p50k_base; do hm_run "$W/hm-$p" "$p=$RANKS/$p.tiktoken" "$W/core.list"; done
if [ "$hf" = yes ]; then
    hm_run "$W/hm-hfl3" "$HFL3" "$W/core.list"
    hm_run "$W/hm-hfgpt2" "$HFGPT2" "$W/core.list"
    # added tokens parsed: the edge cases (special-token text among them)
    hm_run "$W/hm-hfl3-sp" "$HFL3" "$W/edge.list" --parse-special
    hm_run "$W/hm-hfgpt2-sp" "$HFGPT2" "$W/edge.list" --parse-special
fi
wait $lane1; r1=$?
wait $lane2; r2=$?
if [ $r1 -ne 0 ] || [ $r2 -ne 0 ]; then
    say "ERROR: a reference failed: $(cat "$W"/lane-*.failed 2>/dev/null | tr '\n' ' ')"; exit 99
fi
say "tokenized ($(( $(date +%s) - start )) s); comparing"

# ---- the comparisons
compare "cl100k_base vs tiktoken (all)" "$W/ref-cl100k_base" "$W/hm-cl100k_base" "$W/all.list" cl100k_base
compare "o200k_base vs tiktoken (all)" "$W/ref-o200k_base" "$W/hm-o200k_base" "$W/all.list" o200k_base
compare "r50k_base vs tiktoken (core)" "$W/ref-r50k_base" "$W/hm-r50k_base" "$W/core.list" r50k_base
compare "p50k_base vs tiktoken (core)" "$W/ref-p50k_base" "$W/hm-p50k_base" "$W/core.list" p50k_base
compare "llama3 vs llama3-tokenizer-js (all)" "$W/ref-l3js" "$W/hm-llama3" "$W/l3js.list" "$W/llama3.tiktoken"
say "     (U+FEFF, not compared with llama3-tokenizer-js: $(sed 's,.*/,,' "$W/l3js.out" | tr '\n' ' '))"
compare "llama3 vs @huggingface/tokenizers (core)" "$W/ref-hfl3" "$W/hm-llama3" "$W/hfl3.list" "$HFL3"
if [ "$hf" = yes ]; then
    compare "llama3 tokenizer.json vs @huggingface/tokenizers (core)" \
        "$W/ref-hfl3" "$W/hm-hfl3" "$W/hfl3.list" "$HFL3"
    compare "llama3 tokenizer.json --parse-special vs @huggingface/tokenizers (edge)" \
        "$W/ref-hfl3" "$W/hm-hfl3-sp" "$W/edge.list" "$HFL3"
    compare "llama3 tokenizer.json vs llama3-tokenizer-js (core)" \
        "$W/ref-l3js" "$W/hm-hfl3" "$W/core-l3js.list" "$HFL3"
    compare "gpt2 tokenizer.json vs @huggingface/tokenizers (core)" \
        "$W/ref-hfgpt2" "$W/hm-hfgpt2" "$W/hfgpt2.list" "$HFGPT2"
    compare "gpt2 tokenizer.json --parse-special vs @huggingface/tokenizers (edge)" \
        "$W/ref-hfgpt2" "$W/hm-hfgpt2-sp" "$W/edge-nobom.list" "$HFGPT2"
    compare "gpt2 tokenizer.json vs tiktoken r50k_base (core)" \
        "$W/ref-r50k_base" "$W/hm-hfgpt2" "$W/core.list" r50k_base
else
    say "SKIPPED the tokenizer.json comparisons: $hf"
fi

# ---- gpt-tokenizer's golden vectors (TestPlans.txt): "EncodingName:",
# "Sample:" (one line) and "Encoded: [ids]" per case.  p50k_edit, an
# encoding hallmark has no preset for, is skipped.
mkdir -p "$W/plans" || exit 99
awk -v dir="$W/plans" '
    /^EncodingName: / { enc = substr($0, 15); next }
    /^Sample: / { sample = substr($0, 9); next }
    /^Sample:$/ { sample = ""; next }
    /^Encoded: / {
        if (enc == "p50k_edit") { skipped++; next }
        n[enc]++
        f = dir "/" enc "-" n[enc] ".txt"
        printf "%s", sample >f; close(f)
        print f >>(dir "/" enc ".list"); close(dir "/" enc ".list")
        ids = substr($0, 10); gsub(/[][,]/, "", ids); gsub(/  +/, " ", ids)
        sub(/^ /, "", ids); sub(/ $/, "", ids)
        print ids >>(dir "/" enc ".want"); close(dir "/" enc ".want")
    }
    END { print skipped + 0 >(dir "/skipped") }' "$RANKS/TestPlans.txt" || exit 99
for p in r50k_base p50k_base cl100k_base o200k_base; do
    checks=$((checks + 1))
    if [ ! -s "$W/plans/$p.list" ]; then
        say "FAIL $p: no TestPlans vectors found"; fails=$((fails + 1)); continue
    fi
    xargs -d '\n' "$HM" tokenize -T "$p=$RANKS/$p.tiktoken" <"$W/plans/$p.list" \
        >"$W/plans/$p.got" 2>"$W/plans/$p.err" || {
        say "FAIL $p: hallmark tokenize failed on the TestPlans samples"
        sed 's/^/  | /' "$W/plans/$p.err"; fails=$((fails + 1)); continue; }
    n=$(wc -l <"$W/plans/$p.want")
    bad=$(paste -d '|' "$W/plans/$p.want" "$W/plans/$p.got" | awk -F'|' '$1 != $2' | wc -l)
    if [ "$bad" -ne 0 ] || [ "$(wc -l <"$W/plans/$p.got")" -ne "$n" ]; then
        say "FAIL $p: $bad of $n TestPlans vectors differ"
        paste -d '|' "$W/plans/$p.list" "$W/plans/$p.want" "$W/plans/$p.got" |
            awk -F'|' '$2 != $3 { print "  | " $1 ": want [" $2 "] got [" $3 "]" }' | head -5
        fails=$((fails + 1))
    else
        say "ok   $p vs gpt-tokenizer TestPlans.txt: $n vectors, 0 mismatches"
    fi
done
say "     (TestPlans: $(cat "$W/plans/skipped") p50k_edit vectors skipped: no preset)"

# ---- a known divergence, reported and not failed: letters added in
# Unicode 15.0-16.0 are unassigned to Debian 12's PCRE2 (Unicode 14) but
# letters to tiktoken 1.0.22 (Unicode 16); see hm_tokenizer_load_tiktoken(3),
# CAVEATS.  An ideograph of CJK Extension H followed by 's.
mkdir -p "$W/known" || exit 99
printf 'x\360\261\215\220'"'"'s' >"$W/known/u15-letter.txt"
kt=$(node "$T/tokref.js" --cache "$CACHE" cl100k_base "$W/known/u15-letter.txt")
kh=$("$HM" tokenize -T "cl100k_base=$RANKS/cl100k_base.tiktoken" "$W/known/u15-letter.txt")
if [ "$kt" = "$kh" ]; then
    say "note: the Unicode 15+ divergence is gone (PCRE2 $(pcre2-config --version 2>/dev/null)): update hm_tokenizer_load_tiktoken(3)"
else
    say "known: Unicode 15+ letters still split otherwise (tiktoken $kt, hallmark $kh), as documented"
fi

# ---- 1 MB without a single split point: time hallmark (tiktoken is far too
# slow there; the edge-nosplit-* files compare 20-30 KB of the same kind).
# Printed, not asserted: timings depend on the machine.
node "$T/tokedge.js" --nosplit 1000000 "$W/nosplit-1M.txt" || exit 99
for spec in "cl100k_base=$RANKS/cl100k_base.tiktoken" "o200k_base=$RANKS/o200k_base.tiktoken" \
    "llama3=$W/llama3.tiktoken"; do
    if ! "$HM" tokenize -T "$spec" --bench 1 "$W/nosplit-1M.txt" >"$W/nosplit.ids" 2>"$W/nosplit.err"; then
        say "FAIL ${spec%%=*}: hallmark failed on 1 MB without a split point"
        sed 's/^/  | /' "$W/nosplit.err"; fails=$((fails + 1)); continue
    fi
    say "time ${spec%%=*}: 1 MB without a split point: $(tail -1 "$W/nosplit.err")" \
        "= $(awk '/MB\/s/ { printf "%.0f", 1000 / $1 }' "$W/nosplit.err") ms (printed for the record; a quadratic merge would take far longer)"
done

say "$checks comparisons, $fails failed, $(( $(date +%s) - start )) s"
[ $fails -eq 0 ] || exit 1
exit 0
