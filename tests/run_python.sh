#!/usr/bin/env bash
# The Python package's tests: builds python/chrysalis in place over BUILD's static library
# (`make python`), runs pytest on python/tests with Debian's /usr/bin/python3, and ends with the
# line "N passed, N failed" that tests/run_all.sh sums. Usage: tests/run_python.sh [BUILD]
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
PY=${PYTHON:-/usr/bin/python3}
echo "== Python package (pytest, $PY)"
if ! make -s MODE=release BUILD="$BUILD" PYTHON="$PY" python $BUILD/chrysalis >/dev/null; then
    echo "python build failed"
    echo "0 passed, 1 failed"
    exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
CHRYS_CLI="$BUILD/chrysalis" PYTHONPATH=python "$PY" -m pytest -q -p no:cacheprovider python/tests 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
last=$(grep -E '[0-9]+ (passed|failed|error)' "$out" | tail -1)
num() { echo "$last" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
p=$(num passed)
f=$(( $(num failed) + $(num error) + $(num errors) ))
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
echo "$p passed, $f failed"
[ "$rc" -eq 0 ]
