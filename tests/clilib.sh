# Shared by the CLI test scripts (sourced): paths, a scratch directory
# removed on exit, and the assertions.  Each script ends with
#   echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]
HM_SRCDIR=${HM_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
HM_BUILDDIR=${HM_BUILDDIR:-$HM_SRCDIR}
HM="$HM_BUILDDIR/hallmark"
T=$(mktemp -d "${TMPDIR:-/tmp}/hm-cli-XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE DESCRIPTION -- COMMAND...: run, keep stdout/stderr in $T/out,err
expect() {
    local want=$1 what=$2
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else
        bad "$what: exit $got, wanted $want"; sed 's/^/  | /' "$T/err"; fi
}
contains() { # FILE PATTERN DESCRIPTION
    if grep -q -- "$2" "$1"; then ok; else
        bad "$3: no '$2' in $(basename "$1")"; sed 's/^/  | /' "$1" | head -20; fi
}
absent() { [ ! -e "$1" ] && ok || bad "$2: $1 exists"; } # FILE DESCRIPTION

# Key files for the tests, mode 0600.  fixed_keys: $T/k and $T/other,
# fixed so that every outcome of the scripts is deterministic.
mkkey() { # FILE HEX
    (umask 077; printf '# test key\nhallmark-key v1\n%s\n' "$2" >"$1")
}
fixed_keys() {
    mkkey "$T/k" 6b1f0c3a9e4d27588102fa3bc6d9e0f11a2b3c4d5e6f708192a3b4c5d6e7f809
    mkkey "$T/other" 0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0
}
