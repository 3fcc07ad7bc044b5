#!/usr/bin/env bash
# Runs the published benchmark in one go: the machine's limits (bench/limits.sh), then
# `sluice bench suite` against a release broker started here on free loopback ports
# with a fresh data directory. Results land in bench/out/: limits.json, results.json
# (settings, machine, figures, targets) and results.md (the tables for RESULTS.md).
#
#   bench/run.sh                 the full matrix, 10 s per measurement (about 10 minutes)
#   bench/run.sh --quick         a short matrix, 3 s per measurement
#   bench/run.sh --seconds 20    longer measurements
#
# Run it on an otherwise idle machine: client and broker share the cores, and any
# other load shows up in the figures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
QUICK=0
SECONDS_EACH=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --seconds) SECONDS_EACH="${2:?--seconds needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 1 ;;
    esac
done
if [[ -z "$SECONDS_EACH" ]]; then
    if [[ "$QUICK" -eq 1 ]]; then SECONDS_EACH=3; else SECONDS_EACH=10; fi
fi

log() { printf '[bench] %s\n' "$*" >&2; }
mkdir -p "$OUT"

log "building the release binary"
(cd "$ROOT" && cargo build --release -p sluice --quiet)
SLUICE="$ROOT/target/release/sluice"

limits_args=(--out "$OUT/limits.json" --dir "$OUT/fio")
[[ "$QUICK" -eq 1 ]] && limits_args+=(--quick)
log "measuring the machine's limits"
bash "$ROOT/bench/limits.sh" "${limits_args[@]}" >/dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
KAFKA_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
DATA="$(mktemp -d "$OUT/data.XXXXXX")"
BROKER_PID=""
cleanup() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT

log "starting the broker on 127.0.0.1:$KAFKA_PORT (data in $DATA)"
"$SLUICE" serve --data-dir "$DATA" \
    --kafka-listen "127.0.0.1:$KAFKA_PORT" --http-listen "127.0.0.1:$HTTP_PORT" --grpc-listen 127.0.0.1:0 \
    --log-level warn >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then break; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$OUT/broker.log" >&2; exit 1; }
    sleep 0.1
done

suite_args=(suite)
[[ "$QUICK" -eq 1 ]] && suite_args+=(--quick)
log "running the suite, $SECONDS_EACH s per measurement"
"$SLUICE" bench --bootstrap "127.0.0.1:$KAFKA_PORT" \
    --limits "$OUT/limits.json" --broker-pid "$BROKER_PID" --data-dir "$DATA" \
    --seconds "$SECONDS_EACH" --output "$OUT/results.json" --markdown "$OUT/results.md" \
    "${suite_args[@]}"
log "done: $OUT/results.json and $OUT/results.md"
