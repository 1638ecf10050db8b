# bench/lib.sh: shell helpers shared by the benchmark scripts (sourced; expects PY, TOOLS, DATA).
#   busy_others / wait_quiet   wait until no other process uses more than 0.3 core (QUIET_WAIT seconds at most)
#   monitor PID                log, every 10 s, other processes that used a core while PID runs
#   fashion_mnist              Debian's Fashion-MNIST as fvecs under $DATA/fashion-mnist
#   clustered_set NAME N LOG   seeded clustered N x 1024 set with 1000 queries and exact ground truth
QUIET_WAIT=${QUIET_WAIT:-1800}

# The machine is shared: wait until nothing else uses a core (whole-machine busy time sampled over
# 3 s from /proc/stat; this script itself is idle while it waits), then report the load average.
busy_others() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8; exit}' /proc/stat)
    sleep 3
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8; exit}' /proc/stat)
    # busy fraction of all cores * nproc > 0.3 core
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN{split(a,x," "); split(b,y," ");
        t=y[2]-x[2]; exit !(t > 0 && (y[1]-x[1])/t*n > 0.3)}'
}
wait_quiet() {
    local waited=0
    while [ "$waited" -lt "$QUIET_WAIT" ] && busy_others; do
        sleep 27
        waited=$((waited + 30))
        [ $((waited % 300)) = 0 ] && echo "   (waiting: $(ps -eo pcpu,args --sort=-pcpu | sed -n 2p | cut -c1-100))" >&2
    done
    echo "   (load average $(cut -d' ' -f1-3 /proc/loadavg) after waiting ${waited}s)"
}

# CPU monitor (background): every 10 s, the processes outside this script's process tree that used
# more than 0.3 core, so a measurement disturbed by another job can be spotted afterwards.
monitor() {
    $PY - "$1" <<'PYEOF'
import os, sys, time
root = int(sys.argv[1])
HZ = os.sysconf("SC_CLK_TCK")
def snap():
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
            out[int(p)] = (int(st[1]), int(st[11]) + int(st[12]))   # ppid, utime+stime
        except (OSError, IndexError, ValueError):
            pass
    return out
def mine(pid, s):
    seen = 0
    while pid > 1 and seen < 64:
        if pid == root:
            return True
        pid = s.get(pid, (0, 0))[0]
        seen += 1
    return False
a = snap()
while os.path.exists("/proc/%d" % root):
    time.sleep(10)
    b = snap()
    for pid, (ppid, t) in b.items():
        if pid == os.getpid() or mine(pid, b):
            continue
        dt = (t - a.get(pid, (0, 0))[1]) / HZ / 10.0
        if dt > 0.3:
            try:
                cmd = open("/proc/%d/cmdline" % pid).read().replace("\0", " ")[:140]
            except OSError:
                cmd = "?"
            print("%s other process %d at %.1f cores: %s" % (time.strftime("%H:%M:%S"), pid, dt, cmd), flush=True)
    a = b
PYEOF
}
fashion_mnist() { # IDX gz -> fvecs (train 60,000 x 784 base, test 10,000 x 784 queries), raw pixels
    local src=/usr/share/datasets/fashion-mnist dst=$DATA/fashion-mnist
    if [ ! -f $src/train-images-idx3-ubyte.gz ]; then
        apt-get install -y dataset-fashion-mnist >/dev/null
    fi
    [ -f $dst/query.fvecs ] && return 0
    mkdir -p $dst
    $PY - "$src" "$dst" <<'EOF'
import gzip, sys
import numpy as np
src, dst = sys.argv[1:]
def idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, r, c = np.frombuffer(raw[:16], dtype=">i4")
    assert magic == 2051, magic
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, r * c).astype(np.float32)
def write_fvecs(path, x):
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, 0] = np.array([x.shape[1]], dtype=np.int32).view(np.float32)[0]
    out[:, 1:] = x
    out.tofile(path)
for name, f in (("base", "train-images-idx3-ubyte.gz"), ("query", "t10k-images-idx3-ubyte.gz")):
    x = idx_images("%s/%s" % (src, f))
    write_fvecs("%s/%s.fvecs" % (dst, name), x)
    print("fashion-mnist %s: %d x %d" % (name, x.shape[0], x.shape[1]))
EOF
}

clustered_set() { # name, n, log file
    local d=$DATA/$1
    if [ ! -f $d/groundtruth.ivecs ]; then
        echo "== generating $d ($2 x 1024, 1000 queries)"
        $PY $TOOLS/gen_clustered.py --n $2 --d 1024 --nq 1000 --out $d | tee "$3"
    fi
}
