#!/usr/bin/env bash
# bench/REPORT.md and bench/report/*.png (make bench-report): builds the CLI and the Python
# package, then runs bench/report.py under the shared heavy lock (one benchmark at a time).
#   bash bench/report.sh            quick, complete (~10 min on 2 cores)
#   bash bench/report.sh --full     the large points (1,000,000 items etc.), by hand
#   bash bench/report.sh --ci --out DIR   tiny sizes into DIR (CI; no lock)
# BUILD (default build/release) is the build folder used.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
make -s -j"$(nproc)" BUILD="$BUILD" MODE=release lib cli python >/dev/null
export CHRYS_CLI="$PWD/$BUILD/chrysalis"
case " $* " in
    *" --ci "*) exec /usr/bin/python3 bench/report.py "$@" ;;
    *) exec flock /tmp/chrys-heavy.lock /usr/bin/python3 bench/report.py "$@" ;;
esac
