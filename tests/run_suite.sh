#!/usr/bin/env bash
# Run the unit tests, the CLI tests and the fuzz-corpus replay from one build directory.
# Usage: tests/run_suite.sh BUILD_DIR [label]. Prints each runner's output; exit 1 on any failure.
set -u
B=$1
label=${2:-$B}
rc=0
echo "== [$label] unit tests"
"$B/unit_tests" || rc=1
echo "== [$label] CLI tests"
bash tests/cli/test_cli.sh "$B/chrysalis" || rc=1
echo "== [$label] merge CLI tests"
bash tests/cli/test_merge_cli.sh "$B/chrysalis" || rc=1
echo "== [$label] embed CLI tests"
bash tests/cli/test_embed_cli.sh "$B/chrysalis" || rc=1
echo "== [$label] config and index CLI tests"
bash tests/cli/test_config_cli.sh "$B/chrysalis" || rc=1
echo "== [$label] lock CLI tests"
bash tests/cli/test_lock_cli.sh "$B/chrysalis" || rc=1
echo "== [$label] fuzz corpus replay"
"$B/fuzz_replay" tests/fuzz/corpus || rc=1
exit $rc
