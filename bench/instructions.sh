#!/usr/bin/env bash
# Instructions the Comet server executes per delivered message, counted by callgrind: repeatable
# where CPU seconds on this shared 2-core machine are not (two runs of one binary can differ by
# 10 %). Each measurement runs the server under `valgrind --tool=callgrind` twice, with a small
# fixed load for SHORT and then LONG seconds of publishing, and divides the difference in
# instructions by the difference in deliveries, so connection setup and start-up cancel out.
# User space only: the kernel's share (the send itself) is not counted.
#
#   bench/instructions.sh [--transport T] [-n N] [--rate R] [BIN...]
#
# BIN defaults to target/release/comet; give several to compare builds. Needs valgrind
# (`apt-get install -y valgrind`). Port 127.0.0.1:18080; every process started is stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRANSPORT=websocket N=500 RATE=5 SHORT=10 LONG=20
BINS=()
while [ $# -gt 0 ]; do
    case $1 in
    --transport) TRANSPORT=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    -h | --help) sed -n 2,12p "$0"; exit 0 ;;
    *) BINS+=("$1"); shift ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/target/release/comet")
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }
GEN="$ROOT/target/release/comet"
[ -x "$GEN" ] || (cd "$ROOT" && cargo build --release -p comet)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# run BIN SECONDS: prints "instructions deliveries"
run() {
    local bin=$1 secs=$2 out="$WORK/cg.$RANDOM" pid i
    COMET_MAX_CONNECTIONS_PER_IP=0 COMET_SUBSCRIBES_PER_SEC_PER_IP=0 COMET_PUBLISHES_PER_SEC=0 \
    TOKIO_WORKER_THREADS=2 RUST_LOG=warn \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --listen 127.0.0.1:18080 \
        >"$WORK/server.log" 2>&1 &
    pid=$!
    for ((i = 0; i < 150; i++)); do
        if (exec 3<>/dev/tcp/127.0.0.1/18080) 2>/dev/null; then break; fi
        sleep 0.2
    done
    "$GEN" bench --server comet --addr 127.0.0.1:18080 --transport "$TRANSPORT" -n "$N" --channels 1 \
        --rate "$RATE" --publishers 1 --duration "$secs" --drain 3 --connect-concurrency 16 \
        --json "$WORK/bench.json" >/dev/null
    kill -INT "$pid"
    wait "$pid" || true
    python3 - "$out" "$WORK/bench.json" <<'PY'
import json, re, sys
total = None
for line in open(sys.argv[1]):
    m = re.match(r"(?:summary|totals):\s*(\d+)", line)
    if m:
        total = int(m.group(1))
d = json.load(open(sys.argv[2]))
assert d["lost"] == 0 and d["duplicated"] == 0, "lost or duplicated messages"
print(total, d["delivered"])
PY
}

printf '%-40s %12s %12s %14s\n' binary "Ir short" "Ir long" "Ir/delivery"
for bin in "${BINS[@]}"; do
    read -r ir1 d1 < <(run "$bin" "$SHORT")
    read -r ir2 d2 < <(run "$bin" "$LONG")
    per=$(python3 -c "print(f'{($ir2 - $ir1) / ($d2 - $d1):.0f}')")
    name=$bin
    [ ${#name} -le 40 ] || name="…${name: -39}"
    printf '%-40s %12s %12s %14s\n' "$name" "$ir1" "$ir2" "$per"
done
echo "($TRANSPORT, $N subscribers on one channel, $RATE publishes/s, ${SHORT} s vs ${LONG} s)"
