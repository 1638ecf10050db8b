#!/usr/bin/env bash
# Install what chrysalis needs on Debian 12, only if missing. Usage: scripts/deps.sh [test|bench]
#   base:  compiler, make, OpenBLAS, cJSON, libcurl, SQLite (headers; loaded at first use), OpenSSL
#          (the unit tests' SHA-256 oracle)
#   test:  + clang (libFuzzer), python3-numpy, git (.ci/run clones), python3-dev, python3-setuptools,
#          python3-pytest, python3-dask, python3-distributed (the Python package and its tests)
#   bench: + python3-faiss, python3-hnswlib, libhnswlib-dev, python3-matplotlib (anchors, curves)
set -euo pipefail
pkgs=(gcc make libc6-dev libopenblas-dev libcjson-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev)
case "${1:-}" in
    test) pkgs+=(clang python3 python3-numpy git python3-dev python3-setuptools python3-pytest python3-dask python3-distributed) ;;
    bench) pkgs+=(clang python3 python3-numpy python3-faiss python3-hnswlib libhnswlib-dev g++ python3-matplotlib) ;;
esac
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
