#!/bin/bash
# Man pages: every page passes 'mandoc -Tlint -W warning', and every C
# program in the EXAMPLES section of a section-3 page compiles with
# -Wall -Wextra -Werror against the public header, links against the
# built library and runs successfully.
#
# A program is the text of a '.Bd -literal' ... '.Ed' block under
# '.Sh EXAMPLES', unescaped as mandoc renders it: '\e' is a backslash,
# '\&' is nothing and '\-' is a minus sign.  Any other escape in such a
# block is an error, so that what is compiled is what readers see.
set -u
HM_SRCDIR=${HM_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
HM_BUILDDIR=${HM_BUILDDIR:-$HM_SRCDIR}
CC=${CC:-cc}
LIBDIR=$HM_BUILDDIR/.libs
T=$(mktemp -d "${TMPDIR:-/tmp}/hm-man-XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
pages=0 programs=0 pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
show() { sed 's/^/  | /' "$1"; }

shopt -s nullglob
all=("$HM_SRCDIR"/man/*.[137])
sec3=("$HM_SRCDIR"/man/*.3)
if [ ${#sec3[@]} -eq 0 ]; then
    bad "no section-3 pages in $HM_SRCDIR/man"
fi

# ------------------------------------------------------------------ lint
if command -v mandoc >/dev/null 2>&1; then
    for page in "${all[@]}"; do
        pages=$((pages + 1))
        if mandoc -Tlint -W warning "$page" >"$T/lint" 2>&1 && [ ! -s "$T/lint" ]; then
            ok
        else
            bad "mandoc -Tlint -W warning ${page#"$HM_SRCDIR"/}"
            show "$T/lint"
        fi
    done
else
    bad "mandoc is not installed: cannot lint the man pages (apt-get install mandoc)"
fi

# -------------------------------------------------------------- examples
# extract PAGE PREFIX: write each literal block of EXAMPLES to PREFIX-N.c
# and print the number of blocks; exit 1 with a message on stderr when a
# block has an escape or a request other than the three above.
extract() {
    awk -v prefix="$2" '
        function fail(msg) { print FILENAME ":" FNR ": " msg > "/dev/stderr"; bad = 1; exit 1 }
        function unescape(s,    out, i, c, n) {
            out = ""
            for (i = 1; i <= length(s); i++) {
                c = substr(s, i, 1)
                if (c != "\\") { out = out c; continue }
                n = substr(s, ++i, 1)
                if (n == "e") out = out "\\"
                else if (n == "-") out = out "-"
                else if (n == "&") { }
                else fail("unsupported escape \\" n " in an example")
            }
            return out
        }
        /^\.Sh[ \t]/ { in_ex = ($0 ~ /^\.Sh[ \t]+EXAMPLES[ \t]*$/); next }
        !in_ex { next }
        inblock && /^\.Ed([ \t]|$)/ { inblock = 0; close(file); next }
        inblock && /^\.\\"/ { next }
        inblock && /^[.\047]/ { fail("request inside an example: " $0) }
        inblock { print unescape($0) > file; next }
        /^\.Bd[ \t]+-literal/ { n++; inblock = 1; file = prefix "-" n ".c"; printf "" > file; next }
        END {
            if (bad) exit 1
            if (inblock) { print FILENAME ": unterminated .Bd -literal in EXAMPLES" > "/dev/stderr"; exit 1 }
            print n + 0
        }' "$1"
}

san=$(sed -n 's/^SAN_FLAGS = //p' "$HM_BUILDDIR/Makefile" 2>/dev/null)
# A library built with sanitizers from CFLAGS instead of
# --enable-sanitizers needs them in the examples too (the ASan runtime
# must come first).
for f in $(sed -n 's/^CFLAGS = //p' "$HM_BUILDDIR/Makefile" 2>/dev/null); do
    case $f in -fsanitize=*) san="$san $f" ;; esac
done
if [ ! -e "$LIBDIR/libhallmark.so" ]; then
    bad "$LIBDIR/libhallmark.so not found: build the library first (HM_BUILDDIR=$HM_BUILDDIR)"
else
    export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    for page in "${sec3[@]}"; do
        name=$(basename "$page")
        if ! n=$(extract "$page" "$T/$name" 2>"$T/err"); then
            bad "$name: cannot extract EXAMPLES"
            show "$T/err"
            continue
        fi
        if [ "$n" -eq 0 ]; then
            bad "$name: no C program in EXAMPLES"
            continue
        fi
        for i in $(seq 1 "$n"); do
            src="$T/$name-$i.c" exe="$T/$name-$i"
            programs=$((programs + 1))
            # shellcheck disable=SC2086 # CC and SAN_FLAGS may hold flags
            if ! $CC -std=c99 -Wall -Wextra -Werror $san -I"$HM_SRCDIR/include" \
                -o "$exe" "$src" -L"$LIBDIR" -lhallmark -lm >"$T/cc" 2>&1; then
                bad "$name: example $i does not compile"
                show "$T/cc"
                continue
            fi
            (cd "$T" && exec timeout 120 "$exe") </dev/null >"$T/run" 2>&1
            rc=$?
            if [ "$rc" -eq 0 ]; then
                ok
            else
                bad "$name: example $i exited with status $rc"
                show "$T/run"
            fi
        done
    done
fi

echo "man-examples: $pages pages linted, $programs example programs;" \
    "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
