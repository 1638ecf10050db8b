#!/usr/bin/env bash
# CLI tests of configuration (flags > environment > config file > defaults), index specs, the
# planner (Flat below the threshold, IVF above, switched during add and during merge), IVF search
# with --nprobe, and retrain. Usage: tests/cli/test_config_cli.sh path/to/chrysalis.
set -u
BIN=$(cd "$(dirname "${1:-build/release/chrysalis}")" && pwd)/$(basename "${1:-build/release/chrysalis}")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
unset CHRYSALIS_CONFIG CHRYSALIS_INDEX CHRYSALIS_AUTO_THRESHOLD CHRYSALIS_NPROBE FAISS_ENABLED FAISS_THRESHOLD FAISS_INDEX_TYPE FAISS_USE_GPU \
    CHRYSALIS_NLIST FAISS_NLIST
export HOME="$T/home" XDG_CONFIG_HOME="$T/xdg"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$T"
expect "defaults" 0 "auto_threshold   = 1000            (default)" -- "$BIN" config
printf '# chrysalis settings\nindex = IVF16,Flat\nauto_threshold = 300\nnprobe=3\n' > chrysalis.conf
expect "config file" 0 "index            = IVF16,Flat      (config file chrysalis.conf:2)" -- "$BIN" config
expect "environment beats file" 0 "auto_threshold   = 200             (environment FAISS_THRESHOLD)" -- env FAISS_THRESHOLD=200 "$BIN" config
expect "CHRYSALIS_ beats FAISS_" 0 "(environment CHRYSALIS_AUTO_THRESHOLD)" -- env FAISS_THRESHOLD=200 CHRYSALIS_AUTO_THRESHOLD=250 "$BIN" config
expect "FAISS_ENABLED=false means Flat" 0 "effective index for new stores: Flat" -- env FAISS_ENABLED=false "$BIN" config
expect "FAISS_INDEX_TYPE short names" 0 '"index":{"value":"auto","source":"environment FAISS_INDEX_TYPE"}' -- env FAISS_INDEX_TYPE=ivf "$BIN" config --json
expect "FAISS_USE_GPU reported" 0 "no GPU path" -- env FAISS_USE_GPU=true "$BIN" config
expect "invalid env value names the variable" 2 "environment CHRYSALIS_NPROBE: nprobe: expected a non-negative integer, got 'lots'" -- env CHRYSALIS_NPROBE=lots "$BIN" config
printf 'nprobe = 2\nbogus = 1\n' > bad.conf
expect "unknown key names file and line" 2 "bad.conf:2: unknown key 'bogus'" -- "$BIN" --config bad.conf config
printf 'index = IVF,Flat\n' > bad2.conf
expect "bad spec names file and line" 2 "config file bad2.conf:1: index: index spec 'IVF,Flat': a number must follow IVF" -- "$BIN" --config bad2.conf config
expect "flag beats everything" 2 "flag --index: index: index spec 'HNSW1': M must be 2..128" -- "$BIN" build s.chrys x.fvecs --index HNSW1
expect "FAISS_INDEX_TYPE=hnsw" 0 '"index":{"value":"HNSW32","source":"environment FAISS_INDEX_TYPE"}' -- env FAISS_INDEX_TYPE=hnsw "$BIN" config --json
rm -f chrysalis.conf

# data: 3000 clustered vectors of dim 16
/usr/bin/python3 - <<'P'
import numpy as np
rng = np.random.default_rng(5)
c = rng.standard_normal((30, 16)).astype(np.float32)
x = (c[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 16))).astype(np.float32)
def fv(path, a):
    d = np.empty((a.shape[0], a.shape[1] + 1), np.float32); d[:, 0] = np.array([a.shape[1]], np.int32).view(np.float32)[0]; d[:, 1:] = a; d.tofile(path)
fv("a.fvecs", x[:800]); fv("b.fvecs", x[800:]); fv("q.fvecs", x[:20])
P
expect "auto below threshold: Flat" 0 "index:    Flat (auto) (exact)" -- sh -c "'$BIN' build s.chrys a.fvecs -q && '$BIN' info s.chrys"
expect "auto crosses during add: IVF" 0 "plan:     3000 vectors >= threshold 1000: IVF" -- sh -c "'$BIN' add s.chrys b.fvecs -q && '$BIN' info s.chrys"
expect "IVF search finds itself" 0 '"query":0,"hits":[{"id":0,' -- "$BIN" search s.chrys q.fvecs -k 3 --nprobe 4 --json
n=$("$BIN" search s.chrys q.fvecs -k 1 --nprobe 64 --json | grep -c '"hits":\[{"id":')
[ "$n" -eq 20 ] && ok "all queries answered" || bad "all queries answered" "$n"
expect "explicit IVF spec" 0 "index:    IVF32,SQ8 (32 lists" -- sh -c "'$BIN' build i.chrys a.fvecs b.fvecs --index IVF32,SQ8 -q && '$BIN' info i.chrys"
expect "retrain" 0 "retrained IVF32,SQ8 on 3000 vectors" -- "$BIN" retrain i.chrys
expect "retrain a Flat store" 3 "not IVF" -- sh -c "'$BIN' build f.chrys a.fvecs --index Flat -q && '$BIN' retrain f.chrys"
# HNSW: build with parameters, info, search with --ef, SQ8 forms, progress, persistence errors
expect "HNSW build" 0 "index:    HNSW16 (M 16, ef_construction 64," -- sh -c "'$BIN' build h.chrys a.fvecs b.fvecs --index HNSW16 --ef-construction 64 --threads 2 -q && '$BIN' info h.chrys"
expect "HNSW search finds itself" 0 '"query":0,"hits":[{"id":0,' -- "$BIN" search h.chrys q.fvecs -k 3 --ef 16 --json
n=$("$BIN" search h.chrys q.fvecs -k 1 --ef 40 --json | grep -c '"hits":\[{"id":')
[ "$n" -eq 20 ] && ok "HNSW: all queries answered" || bad "HNSW: all queries answered" "$n"
expect "HNSW exact top hit equals Flat" 0 "same" -- sh -c "'$BIN' build fl.chrys a.fvecs b.fvecs --index Flat -q &&
    '$BIN' search fl.chrys q.fvecs -k 1 > f.txt && '$BIN' search h.chrys q.fvecs -k 1 --ef 100 > h.txt && cmp -s f.txt h.txt && echo same"
expect "--sq8 makes HNSW16,SQ8" 0 "HNSW16,SQ8 (M 16, ef_construction 200" -- sh -c "'$BIN' build h8.chrys a.fvecs --index HNSW16 --sq8 -q && '$BIN' info h8.chrys"
expect "RFlat form" 0 "int8 codes walked, float32 re-ranking" -- sh -c "'$BIN' build hr.chrys a.fvecs --index HNSW32,SQ8,RFlat -q && '$BIN' info hr.chrys"
expect "add to an HNSW store" 0 "index:    HNSW16,SQ8" -- sh -c "'$BIN' add h8.chrys b.fvecs -q && '$BIN' info h8.chrys"
expect "search --mmap answers the same" 0 "same" -- sh -c "'$BIN' search hr.chrys q.fvecs -k 5 > m1.txt && '$BIN' search hr.chrys q.fvecs -k 5 --mmap > m2.txt && cmp -s m1.txt m2.txt && echo same"
expect "Flat --sq8: codes only" 0 "index:    SQ8 (int8 codes only, scores approximate)" -- sh -c "'$BIN' build fs.chrys a.fvecs --index Flat --sq8 -q && '$BIN' info fs.chrys"
expect "Flat SQ8 search finds itself" 0 '"query":0,"hits":[{"id":0,' -- "$BIN" search fs.chrys q.fvecs -k 3 --json
expect "--sq8 with auto" 2 "--sq8: index 'auto' has no SQ8 form" -- "$BIN" build z.chrys a.fvecs --sq8
expect "ef_construction from the environment" 0 "ef_construction 33" -- sh -c "CHRYSALIS_EF_CONSTRUCTION=33 '$BIN' build he.chrys a.fvecs --index HNSW8 -q && '$BIN' info he.chrys"
expect "--ef bad value" 2 "flag --ef: ef_search: expected a non-negative integer, got 'many'" -- "$BIN" search h.chrys q.fvecs --ef many
expect "merger refuses codes-only HNSW" 3 "the merger needs float32 entries" -- "$BIN" merge hm.chrys a.fvecs --index HNSW16,SQ8
/usr/bin/python3 - <<'P'
# flip one byte inside the level-0 link section and fix its checksums: only the graph check can tell
import struct, zlib
b = bytearray(open("h.chrys", "rb").read())
n = struct.unpack_from("<I", b, 24)[0]
def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
for i in range(n):
    e = 64 + 32 * i
    tag, flags, off, ln = struct.unpack_from("<4sIQQ", b, e)
    if tag == b"HNL0":
        struct.pack_into("<I", b, off + 4, 0)            # node 0's first link -> itself
        struct.pack_into("<I", b, e + 24, crc32c(b[off:off + ln]))
table = b[64:64 + 32 * n]
struct.pack_into("<I", b, 28, crc32c(table))
struct.pack_into("<I", b, 60, crc32c(b[:60]))
open("bad.chrys", "wb").write(bytes(b))
P
expect "corrupted graph rejected" 4 "bad.chrys: HNSW graph: node 0 level 0 links to itself" -- "$BIN" info bad.chrys
# a flipped bit in the float32 rows: `search --mmap` checks them in its one pass over them and
# fails with the store's checksum error (not a query error), as a load does
/usr/bin/python3 - <<'P'
import struct
b = bytearray(open("fl.chrys", "rb").read())
n = struct.unpack_from("<I", b, 24)[0]
for i in range(n):
    tag, flags, off, ln = struct.unpack_from("<4sIQQ", b, 64 + 32 * i)
    if tag == b"VF32":
        b[off + 4 * 17] ^= 0x04  # the low mantissa byte of row 0's component 17
open("flbad.chrys", "wb").write(bytes(b))
P
expect "search --mmap: damaged rows" 4 "flbad.chrys: section VF32 checksum mismatch" -- "$BIN" search flbad.chrys q.fvecs -k 3 --mmap
expect "search: damaged rows" 4 "flbad.chrys: section VF32 checksum mismatch" -- "$BIN" search flbad.chrys q.fvecs -k 3

# the planner switches during a merge (threshold 500 entries) to its HNSW graph; on this stream
# (random directions, two merges) the decisions are the exact merger's
/usr/bin/python3 - <<'P'
import numpy as np
rng = np.random.default_rng(9)
x = rng.standard_normal((1500, 16)).astype(np.float32)
d = np.empty((1500, 17), np.float32); d[:, 0] = np.array([16], np.int32).view(np.float32)[0]; d[:, 1:] = x; d.tofile("m.fvecs")
P
expect "merge switches index" 0 "plan:     500 vectors >= threshold 500: HNSW32,SQ8,RFlat" -- \
    sh -c "'$BIN' merge m.chrys m.fvecs --auto-threshold 500 -q && '$BIN' info m.chrys"
"$BIN" merge m2.chrys m.fvecs --index Flat -q
"$BIN" export m.chrys --format fvecs -o m.out
"$BIN" export m2.chrys --format fvecs -o m2.out
cmp -s m.out m2.out && ok "merge decisions unchanged by the switch" || bad "merge decisions unchanged by the switch"
# the summary says which path decided: above the switch point the graph, below it (the default
# switch is 20,000 entries) the exact scan, and the JSON summary says the same
expect "summary names the graph above the switch" 0 "index:    HNSW32,SQ8,RFlat, the graph's candidates" -- \
    sh -c "rm -f m3.chrys; '$BIN' merge m3.chrys m.fvecs --auto-threshold 500"
expect "json names the graph above the switch" 0 '"graph":true,"exact":false' -- \
    sh -c "rm -f m3.chrys; '$BIN' merge m3.chrys m.fvecs --auto-threshold 500 --json"
expect "summary names the exact scan by default" 0 "index:    Flat, exact scan (the exact merger's decisions)" -- \
    sh -c "rm -f m3.chrys; '$BIN' merge m3.chrys m.fvecs"
expect "json names the exact scan by default" 0 '"graph":false,"exact":true' -- \
    sh -c "rm -f m3.chrys; '$BIN' merge m3.chrys m.fvecs --json"

# the roadmap's index names (FAISS_INDEX_TYPE=IVFFlat, HNSW, Flat, any case) and nlist from the
# environment, the config file and --nlist; a 1024-d IVF,SQ8 store keeps codes only
expect "config shows IVFFlat as read" 0 "index            = IVFFlat         (environment FAISS_INDEX_TYPE, given as 'ivfflat')" -- \
    env FAISS_INDEX_TYPE=ivfflat "$BIN" config
expect "config resolves IVFFlat + FAISS_NLIST" 0 '"effective_index":"IVF24,Flat","effective_index_means":"IVF, 24 lists (environment FAISS_NLIST)' -- \
    env FAISS_INDEX_TYPE=IVFFlat FAISS_NLIST=24 "$BIN" config --json
expect "CHRYSALIS_NLIST beats FAISS_NLIST" 0 '"nlist":{"value":"20","source":"environment CHRYSALIS_NLIST"}' -- \
    env FAISS_NLIST=24 CHRYSALIS_NLIST=20 "$BIN" config --json
expect "FAISS_INDEX_TYPE=IVFFlat builds IVF (planner's nlist)" 0 "index:    IVF54,Flat (54 lists" -- \
    sh -c "FAISS_INDEX_TYPE=IVFFlat '$BIN' build n1.chrys a.fvecs b.fvecs -q && '$BIN' info n1.chrys"
expect "FAISS_INDEX_TYPE=ivfflat + FAISS_NLIST" 0 "index:    IVF24,Flat (24 lists" -- \
    sh -c "FAISS_INDEX_TYPE=ivfflat FAISS_NLIST=24 '$BIN' build n2.chrys a.fvecs b.fvecs -q && '$BIN' info n2.chrys"
printf 'index = IVFFlat\nnlist = 20\n' > nl.conf
expect "config file nlist" 0 "index:    IVF20,Flat (20 lists" -- \
    sh -c "'$BIN' --config nl.conf build n3.chrys a.fvecs b.fvecs -q && '$BIN' info n3.chrys"
expect "--nlist beats the config file" 0 "index:    IVF18,Flat (18 lists" -- \
    sh -c "'$BIN' --config nl.conf build n4.chrys a.fvecs b.fvecs --nlist 18 -q && '$BIN' info n4.chrys"
expect "--index ivfflat --nlist" 0 "index:    IVF22,Flat (22 lists" -- \
    sh -c "'$BIN' build n5.chrys a.fvecs b.fvecs --index ivfflat --nlist 22 -q && '$BIN' info n5.chrys"
expect "FAISS_INDEX_TYPE=HNSW builds HNSW32" 0 "index:    HNSW32 (M 32," -- \
    sh -c "FAISS_INDEX_TYPE=HNSW '$BIN' build n6.chrys a.fvecs -q && '$BIN' info n6.chrys"
expect "FAISS_INDEX_TYPE=flat builds Flat" 0 "index:    Flat (exact)" -- \
    sh -c "FAISS_INDEX_TYPE=flat '$BIN' build n7.chrys a.fvecs b.fvecs -q && '$BIN' info n7.chrys"
expect "nlist disagreeing with the spec names both" 2 "index IVF16,Flat (flag --index) names 16 lists but nlist is 20 (environment CHRYSALIS_NLIST)" -- \
    env CHRYSALIS_NLIST=20 "$BIN" build n8.chrys a.fvecs --index IVF16,Flat
expect "bad nlist names the flag" 2 "flag --nlist: nlist: expected a list count" -- "$BIN" build n9.chrys a.fvecs --nlist -3
printf 'nlist = lots\n' > nl2.conf
expect "bad nlist names the file line" 2 "config file nl2.conf:1: nlist: expected a list count" -- "$BIN" --config nl2.conf config
expect "bad FAISS_INDEX_TYPE names the variable" 2 "environment FAISS_INDEX_TYPE: index: index spec 'IVFlat': a number must follow IVF" -- \
    env FAISS_INDEX_TYPE=IVFlat "$BIN" config
/usr/bin/python3 - <<'P'
import numpy as np
rng = np.random.default_rng(11)
c = rng.standard_normal((20, 1024)).astype(np.float32)
x = (c[rng.integers(0, 20, 1200)] + 0.3 * rng.standard_normal((1200, 1024))).astype(np.float32)
d = np.empty((1200, 1025), np.float32); d[:, 0] = np.array([1024], np.int32).view(np.float32)[0]; d[:, 1:] = x; d.tofile("w.fvecs")
d[:10].tofile("wq.fvecs")
P
"$BIN" build wf.chrys w.fvecs --index Flat -q
"$BIN" build w8.chrys w.fvecs --index IVF16,SQ8 -q
"$BIN" build wr.chrys w.fvecs --index IVF16,SQ8,RFlat -q
sf=$(stat -c %s wf.chrys); s8=$(stat -c %s w8.chrys); sr=$(stat -c %s wr.chrys)
[ $((s8 * 10)) -le $((sf * 3)) ] && ok "IVF16,SQ8 store <= 0.3x Flat ($s8 / $sf B)" || bad "IVF16,SQ8 store <= 0.3x Flat" "$s8 / $sf"
[ "$sr" -gt "$sf" ] && ok "IVF16,SQ8,RFlat store keeps rows" || bad "IVF16,SQ8,RFlat store keeps rows" "$sr / $sf"
expect "info: IVF,SQ8 codes only" 0 "index:    IVF16,SQ8 (16 lists" -- "$BIN" info w8.chrys
expect "info: IVF,SQ8,RFlat" 0 "index:    IVF16,SQ8,RFlat (16 lists" -- "$BIN" info wr.chrys
expect "IVF,SQ8 search finds itself" 0 '"query":0,"hits":[{"id":0,' -- "$BIN" search w8.chrys wq.fvecs -k 3 --nprobe 4 --json
expect "IVF,SQ8 --mmap answers the same" 0 "same" -- sh -c "'$BIN' search w8.chrys wq.fvecs -k 5 > s1.txt && '$BIN' search w8.chrys wq.fvecs -k 5 --mmap > s2.txt && cmp -s s1.txt s2.txt && echo same"
expect "IVF,SQ8,RFlat top hit equals Flat" 0 "same" -- sh -c "'$BIN' search wf.chrys wq.fvecs -k 1 > f1.txt && '$BIN' search wr.chrys wq.fvecs -k 1 --nprobe 16 > r1.txt && cmp -s f1.txt r1.txt && echo same"
expect "retrain a codes-only IVF,SQ8 store" 0 "retrained IVF16,SQ8 on 1200 vectors" -- "$BIN" retrain w8.chrys
expect "add to a codes-only IVF,SQ8 store" 0 "1210 in store" -- "$BIN" add w8.chrys wq.fvecs
expect "merger refuses codes-only IVF" 3 "the merger needs float32 entries" -- "$BIN" merge im.chrys a.fvecs --index IVF16,SQ8
expect "old IVF,SQ8 store reads as RFlat" 0 "index:    IVF4,SQ8,RFlat (4 lists" -- "$BIN" info "$OLDPWD/tests/golden/store_v1_0_ivf_sq8.chrys"

finish "config cli"
