#!/bin/bash
# Replay the fuzz corpora (plus seeded mutations) through the fuzz targets.
set -u
HM_SRCDIR=${HM_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
HM_BUILDDIR=${HM_BUILDDIR:-$HM_SRCDIR}
status=0
for t in spec keyfile tokenizer sketch greenmass tally input; do
    if ! "$HM_BUILDDIR/tests/fuzz_$t" "$HM_SRCDIR/tests/fuzz/corpus/$t"; then
        echo "FAIL: fuzz_$t"
        status=1
    fi
done
exit $status
