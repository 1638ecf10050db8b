# Shared helpers of the CLI test scripts (sourced): counters, ok/bad, expect, finish.
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "  ok    $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL  $1"; [ -n "${2:-}" ] && echo "        $2"; }

# expect NAME CODE SUBSTRING -- command...: checks the exit code and that stdout+stderr contains SUBSTRING
expect() {
    local name=$1 code=$2 sub=$3
    shift 4
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$code" ]; then bad "$name" "exit $rc, expected $code: $out"; return; fi
    case "$out" in *"$sub"*) ok "$name" ;; *) bad "$name" "output lacks '$sub': $out" ;; esac
}

# finish LABEL: print the counts (the last line is the runner's "N passed, N failed") and set the status
finish() {
    echo "$1: $pass passed, $fail failed"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
