#!/usr/bin/env bash
# Starts or stops one server under test, in the foreground of its own process (no daemons), on
# loopback only. Every process started here is recorded by PID in DIR and stopped by that PID.
#
#   bench/peers/server.sh start comet|nchan|pushpin DIR   # prints the PIDs to measure (DIR/measure.pids)
#   bench/peers/server.sh stop DIR
#
# COMET_BIN=PATH runs another comet binary; NCHAN_DEFERRED=1 gives nginx's listener `deferred`.
#
# Ports: comet 127.0.0.1:18080, nchan 127.0.0.1:18090, pushpin 127.0.0.1:7999 (control API 5561,
# origin 8091, ZMQ 5560/5562/5563: fixed by pushpin.conf).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
COMET=${COMET_BIN:-$ROOT/target/release/comet}

wait_port() { # host port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1:$2 did not open within $3 s" >&2
    return 1
}

start() {
    local name=$1 dir=$2
    mkdir -p "$dir"
    : > "$dir/all.pids"
    case $name in
    comet)
        # Two worker threads on two cores; history long enough for --rate max bursts; the per-client
        # limits off, since one load generator stands for thousands of clients.
        COMET_MAX_CONNECTIONS_PER_IP=0 COMET_MAX_LONGPOLLS_PER_IP=0 COMET_SUBSCRIBES_PER_SEC_PER_IP=0 COMET_PUBLISHES_PER_SEC=0 \
        COMET_HISTORY_SIZE=${COMET_HISTORY_SIZE:-1024} TOKIO_WORKER_THREADS=2 RUST_LOG=warn \
            "$COMET" serve --listen 127.0.0.1:18080 >"$dir/comet.log" 2>&1 &
        echo $! | tee -a "$dir/all.pids" >"$dir/measure.pids"
        wait_port 127.0.0.1 18080 20
        ;;
    nchan)
        mkdir -p "$dir/logs" "$dir/tmp"/{body,proxy,fastcgi,uwsgi,scgi}
        # NCHAN_DEFERRED=1: nginx's `listen ... deferred` (TCP_DEFER_ACCEPT, as Comet's listener
        # has), for a like-for-like connect storm (S5 in bench/RESULTS.md).
        local deferred=""
        if [ "${NCHAN_DEFERRED:-0}" = 1 ]; then deferred=" deferred"; fi
        sed -e "s#@PREFIX@#$dir#g" -e "s#@PORT@#18090#g" -e "s#backlog=4096;#backlog=4096$deferred;#" \
            "$HERE/nchan.conf" >"$dir/nginx.conf"
        nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/nginx.out" 2>&1 &
        echo $! | tee -a "$dir/all.pids" >"$dir/measure.pids"
        wait_port 127.0.0.1 18090 20
        ;;
    pushpin)
        mkdir -p "$dir/run" "$dir/log"
        sed "s#@PREFIX@#$dir#g" "$HERE/pushpin.conf" >"$dir/pushpin.conf"
        cp "$HERE/pushpin.routes" "$dir/routes"
        python3 "$HERE/pushpin-origin-async.py" 8091 >"$dir/origin.log" 2>&1 &
        echo $! >>"$dir/all.pids"
        echo $! >"$dir/origin.pid"
        pushpin --config "$dir/pushpin.conf" --merge-output >"$dir/pushpin.log" 2>&1 &
        echo $! | tee -a "$dir/all.pids" >"$dir/measure.pids"
        wait_port 127.0.0.1 8091 20
        wait_port 127.0.0.1 7999 30
        wait_port 127.0.0.1 5561 30
        ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
    esac
    cat "$dir/measure.pids"
}

stop() {
    local dir=$1 pid i
    [ -f "$dir/all.pids" ] || return 0
    # Reverse order: pushpin before its origin.
    for pid in $(tac "$dir/all.pids"); do
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$dir/all.pids"
}

case ${1:-} in
start) start "$2" "$3" ;;
stop) stop "$2" ;;
*) echo "usage: $0 start comet|nchan|pushpin DIR | stop DIR" >&2; exit 2 ;;
esac
