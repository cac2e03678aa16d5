#!/bin/bash
# The public header on its own: it compiles alone and twice in C99, C11
# and (when a C++ compiler exists) C++11 with warnings as errors, and
# every name it declares at file scope starts with hm_ or HM_ (apart from
# its include guard, HALLMARK_H).
set -u
HM_SRCDIR=${HM_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
CC=${CC:-cc}
CXX=${CXX:-g++}
HEADER=$HM_SRCDIR/include/hallmark.h
T=$(mktemp -d "${TMPDIR:-/tmp}/hm-header-XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
pass=0 fail=0 skipped=""

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
show() { sed 's/^/  | /' "$1"; }

if [ ! -f "$HEADER" ]; then
    echo "FAIL: $HEADER not found"
    exit 1
fi

# --------------------------------------------------------- compilation
printf '#include <hallmark.h>\n' >"$T/alone.c"
printf '#include <hallmark.h>\n#include <hallmark.h>\n' >"$T/twice.c"
# The macros in use, so that their expansions are compiled too.
cat >"$T/use.c" <<'EOF'
#include <hallmark.h>

struct record {
    int32_t id;
    float logit;
    float p;
};

int hm_test_use(struct record *r, size_t n);

int hm_test_use(struct record *r, size_t n)
{
    hm_cands c = HM_CANDS_LLAMA(r, n);
    char msg[HM_ERRMSG_SIZE];
    char fp[HM_FINGERPRINT_SIZE];
    unsigned flags = HM_STEP_WATERMARKED | HM_STEP_BIASED | HM_STEP_MASKED |
                     HM_STEP_GREEDY | HM_STEP_FALLBACK | HM_KEY_SAVE_FORCE;
    (void)msg;
    (void)fp;
    return (int)(c.stride + flags) + HM_VERSION_NUMBER + HM_PRF_VERSION +
           HM_OK + HM_EINVAL + HM_ENOMEM + HM_EIO + HM_EFORMAT + HM_EPERM +
           HM_EEXIST + HM_ECRYPTO + HM_ERANGE + HM_ENOTSUP + HM_KEY_BYTES +
           HM_SCHEME_GUMBEL + HM_SCHEME_KGW + HM_SCHEME_TOURNAMENT +
           HM_SEEDING_LEFTHASH + HM_SEEDING_SELFHASH + HM_MAX_CHANNELS +
           HM_MAX_CONTEXT + HM_MAX_TOPK + HM_SEQ_HISTORY_DEFAULT +
           (int)sizeof HM_VERSION_STRING;
}
EOF

compile() { # LANGUAGE-DESCRIPTION SOURCE COMPILER FLAGS...
    local what=$1 src=$2
    shift 2
    if "$@" -I"$HM_SRCDIR/include" -c -o "$T/out.o" "$src" >"$T/cc" 2>&1; then
        ok
    else
        bad "$what: $(basename "$src") does not compile cleanly"
        show "$T/cc"
    fi
}

CFLAGS_STRICT="-Wall -Wextra -Werror -pedantic -Wstrict-prototypes -Wundef -Wshadow"
for std in c99 c11; do
    for f in alone twice use; do
        # shellcheck disable=SC2086
        compile "$CC -std=$std" "$T/$f.c" $CC -std=$std $CFLAGS_STRICT
    done
done

if command -v "${CXX%% *}" >/dev/null 2>&1; then
    for f in alone twice use; do
        cp "$T/$f.c" "$T/$f.cc"
        # shellcheck disable=SC2086
        compile "$CXX -std=c++11" "$T/$f.cc" $CXX -std=c++11 -Wall -Wextra -Werror -pedantic
    done
else
    skipped=" (C++ skipped: no $CXX)"
fi

# ------------------------------------------------------------ namespace
# Macros: every #define, in any branch of a conditional.
sed -n 's/^[[:space:]]*#[[:space:]]*define[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' \
    "$HEADER" >"$T/names"
# Everything else the C compiler sees at file scope: preprocess the header
# without its own #include lines (so that the system headers' names stay
# out), then take the name each declaration introduces.
sed 's/^[[:space:]]*#[[:space:]]*include.*//' "$HEADER" >"$T/bare.h"
# shellcheck disable=SC2086
if $CC -E -P -x c "$T/bare.h" >"$T/pre" 2>"$T/cc"; then
    awk '
        { text = text " " $0 }
        END {
            # Attributes hold parentheses that are not declarators.
            while (match(text, /__attribute__[ \t]*\(\([^()]*(\([^()]*\))*[^()]*\)\)/))
                text = substr(text, 1, RSTART - 1) " " substr(text, RSTART + RLENGTH)
            # Split into top-level statements; drop brace bodies, except
            # that an enum body declares its constants.
            depth = 0; stmt = ""; body = ""
            for (i = 1; i <= length(text); i++) {
                c = substr(text, i, 1)
                if (c == "{") { depth++; if (depth == 1) { body = ""; continue } }
                if (c == "}") {
                    depth--
                    if (depth == 0) {
                        if (stmt ~ /(^|[^A-Za-z0-9_])enum([^A-Za-z0-9_]|$)/) {
                            n = split(body, items, ",")
                            for (j = 1; j <= n; j++)
                                if (match(items[j], /[A-Za-z_][A-Za-z0-9_]*/))
                                    print substr(items[j], RSTART, RLENGTH)
                        }
                        stmt = stmt " "
                        continue
                    }
                }
                if (depth > 0) { body = body c; continue }
                if (c == ";") { declare(stmt); stmt = ""; continue }
                stmt = stmt c
            }
        }
        function declare(s,    rest, name) {
            # struct, union and enum tags
            rest = s
            while (match(rest, /(struct|union|enum)[ \t]+[A-Za-z_][A-Za-z0-9_]*/)) {
                name = substr(rest, RSTART, RLENGTH)
                sub(/^(struct|union|enum)[ \t]+/, "", name)
                print name
                rest = substr(rest, RSTART + RLENGTH)
            }
            if (match(s, /\([ \t]*\*[ \t]*[A-Za-z_][A-Za-z0-9_]*/)) {
                # a pointer to a function: the name after "(*"
                name = substr(s, RSTART, RLENGTH)
                sub(/^\([ \t]*\*[ \t]*/, "", name)
                print name
                return
            }
            if (s ~ /\(/) {
                # a function: the name before the first parenthesis
                s = substr(s, 1, index(s, "(") - 1)
            }
            if (match(s, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)) {
                name = substr(s, RSTART, RLENGTH)
                sub(/[ \t]+$/, "", name)
                if (name !~ /^(struct|union|enum)$/) # not anonymous
                    print name
            }
        }' "$T/pre" >"$T/decls" || bad "cannot parse the preprocessed header"
    cat "$T/decls" >>"$T/names"
    # The parser must at least find a function and a type.
    if ! grep -qx hm_strerror "$T/decls" || ! grep -qx hm_ctx "$T/decls"; then
        bad "namespace check: declarations not found in $HEADER; the check is broken"
    fi
else
    bad "cannot preprocess $HEADER"
    show "$T/cc"
fi
decls=$(sort -u "$T/names" | grep -c .)
outside=$(sort -u "$T/names" | grep -v -e '^hm_' -e '^HM_' -e '^HALLMARK_H$' | tr '\n' ' ')
if [ "$decls" -lt 10 ]; then
    bad "namespace check found only $decls names in $HEADER; the check is broken"
elif [ -n "$outside" ]; then
    bad "hallmark.h declares names outside hm_/HM_: $outside"
else
    ok
fi

# What the shared library exports: declared names only (a build without
# the shared library, or without nm, skips this).
LIB=${HM_BUILDDIR:-.}/.libs/libhallmark.so
if [ -f "$LIB" ] && command -v nm >/dev/null 2>&1; then
    nm -D --defined-only "$LIB" | awk '$2 ~ /^[TWDBRV]$/ {print $3}' |
        sed 's/@.*//' | sort -u >"$T/exported"
    nexp=$(grep -c . "$T/exported")
    extra=$(grep -vxF -f <(sort -u "$T/names") "$T/exported" | tr '\n' ' ')
    if [ "$nexp" -lt 10 ]; then
        bad "only $nexp symbols exported by $LIB; the check is broken"
    elif [ -n "$extra" ]; then
        bad "$LIB exports names hallmark.h does not declare: $extra"
    else
        ok
    fi
else
    skipped="$skipped (exports not checked: no $LIB)"
fi

echo "header: $pass passed, $fail failed, $decls names checked$skipped"
[ "$fail" -eq 0 ]
