#!/usr/bin/env bash
# Build and run every test: installs what it needs, then `make test` (tests/run_all.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
exec bash tests/run_all.sh
