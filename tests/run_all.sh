#!/usr/bin/env bash
# Every test, in order: release build with -Werror; the unit tests once per SIMD level
# (CHRYS_SIMD=scalar|avx2|avx512); CLI tests; fuzz replay; the Python package (make python,
# pytest python/tests); the whole suite again under ASan+UBSan; the concurrent tests under TSan;
# a short libFuzzer run when clang is present. Ends with the total line "N passed, N failed"
# summed over every runner.
set -u
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
run() { # run a step, tee its output, remember failure
    "$@" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
set -o pipefail
echo "== build (release, -Werror)"
make -s -j"$JOBS" MODE=release WERROR=-Werror units || exit 1
for level in scalar avx2 avx512; do
    echo "== unit tests, CHRYS_SIMD=$level"
    CHRYS_SIMD=$level run build/release/unit_tests
done
run bash tests/cli/test_cli.sh build/release/chrysalis
run bash tests/cli/test_merge_cli.sh build/release/chrysalis
run bash tests/cli/test_embed_cli.sh build/release/chrysalis
run bash tests/cli/test_config_cli.sh build/release/chrysalis
run bash tests/cli/test_lock_cli.sh build/release/chrysalis
run build/release/fuzz_replay tests/fuzz/corpus
run bash tests/run_python.sh build/release
echo "== build (ASan+UBSan)"
make -s -j"$JOBS" MODE=asan WERROR=-Werror units || exit 1
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 run bash tests/run_suite.sh build/asan asan
echo "== build (TSan) and the concurrent tests under ThreadSanitizer"
make -s -j"$JOBS" MODE=tsan build/tsan/unit_tests || exit 1
# (one OpenBLAS thread: its own pool synchronises in uninstrumented code TSan cannot see; see Makefile)
OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 exitcode=66" run build/tsan/unit_tests concurrent
if command -v clang >/dev/null && [ "${CHRYS_SKIP_FUZZ:-0}" != 1 ]; then
    echo "== libFuzzer (20 s per target)"
    make -s fuzz >/dev/null 2>&1 || { echo "fuzz build failed"; status=1; }
    for t in load jsonl fvecs hnsw; do
        d=$(mktemp -d)
        if build/fuzz/fuzz_$t -max_total_time=20 -max_len=4096 "$d" tests/fuzz/corpus/$t >"$d.log" 2>&1; then
            echo "fuzz_$t: $(tail -1 "$d.log")"
            echo "1 passed, 0 failed" >>"$log"
        else
            echo "fuzz_$t FAILED:"; tail -30 "$d.log"; echo "0 passed, 1 failed" >>"$log"; status=1
        fi
        rm -rf "$d" "$d.log"
    done
fi
# Sum every runner's closing line ("N passed, N failed"), counting only the last line of each runner.
read -r P F < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | awk '{p+=$1; f+=$3} END {print p+0, f+0}')
echo
echo "all suites: $P passed, $F failed"
[ "$status" -eq 0 ] && [ "$F" -eq 0 ] || { echo "$P passed, $((F > 0 ? F : 1)) failed"; exit 1; }
echo "$P passed, $F failed"
