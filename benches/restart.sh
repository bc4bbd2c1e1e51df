#!/usr/bin/env bash
# Restart time with a large log (issue 16): start `eddy server` on a data directory holding
# GB gigabytes of log and time it until `psql -c 'SELECT 1'` answers, after a clean shutdown,
# after kill -9, and with the index files deleted (the full scan every start did before
# segment indexes existed).
#
#   benches/restart.sh [GB] [PARTITIONS]      # default 10 GB over 2 partitions
#
# Environment:
#   EDDY_RESTART_DIR      data directory (default /var/tmp/eddy-restart-bench; deleted at the end)
#   EDDY_RESTART_PROFILE  cargo profile of the binary and the filler (default dev; release is
#                         what RESULTS.md normally reports, but costs a long build)
#   EDDY_RESTART_FILL_PROFILE  cargo profile of the filler (default: EDDY_RESTART_PROFILE;
#                         `dev` saves a release build of the dev-dependencies)
#   EDDY_RESTART_RUNS     runs of each kind (default 3)
#   EDDY_RESTART_STATE_ROWS  rows of a table (`lookup_t`, BIGINT key) loaded after the first
#                         start through benches/pull_lookup.py (default 0: no state); 10000000
#                         makes about 0.9 GB of state. Each start then also waits for a
#                         lookup in it to answer. Needs python3 with psycopg and confluent-kafka.
#   CARGO_TARGET_DIR      as cargo uses it
# Needs psql. Keep GB well below the free space of the disk holding EDDY_RESTART_DIR.
set -euo pipefail

gb="${1:-10}"
partitions="${2:-2}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${EDDY_RESTART_DIR:-/var/tmp/eddy-restart-bench}"
profile="${EDDY_RESTART_PROFILE:-dev}"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
bin_dir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
port=25499
kafka_port=29499
state_rows="${EDDY_RESTART_STATE_ROWS:-0}"
runs="${EDDY_RESTART_RUNS:-3}"

cd "$repo_root"
cargo build --profile "$profile" --bin eddy
rm -rf "$data"
trap 'if [ -n "${pid:-}" ]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$data" "$data.server.log"' EXIT
cargo bench --profile "${EDDY_RESTART_FILL_PROFILE:-$profile}" --bench restart_fill -- "$data" "$gb" "$partitions"

# Starts the server in the background ($pid), waits for SELECT 1, prints the seconds taken
# and the server's recovery line.
start_and_time() {
    local started now
    started=$(date +%s.%N)
    EDDY_LOG=info "$bin_dir/eddy" server --data-dir "$data" --pg-listen "127.0.0.1:$port" \
        --kafka-listen "127.0.0.1:$kafka_port" >/dev/null 2>"$data.server.log" &
    pid=$!
    until PGCONNECT_TIMEOUT=1 psql -h 127.0.0.1 -p "$port" -U eddy -d eddy -tAc 'SELECT 1' >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$data.server.log"; exit 1; }
        sleep 0.02
    done
    if [ -n "${lookup_ready:-}" ]; then
        until [ "$(psql -h 127.0.0.1 -p "$port" -U eddy -d eddy -tAc 'SELECT v FROM lookup_t WHERE k = 1' 2>/dev/null)" \
            = value-0000000001 ]; do
            sleep 0.02
        done
    fi
    now=$(date +%s.%N)
    printf '%s\t%.2f s\t%s\t%s\n' "$1" "$(echo "$now - $started" | bc)" \
        "$(grep -o 'log recovered: .*' "$data.server.log" | sed 's/\x1b\[[0-9;]*m//g')" \
        "$(grep -o 'state store [a-z]* in [^:]*' "$data.server.log" | sed 's/\x1b\[[0-9;]*m//g')"
}

stop_clean() {
    kill -TERM "$pid"
    wait "$pid" || true
}

stop_kill9() {
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
}

start_and_time "first start (creates the state store)"
if [ "$state_rows" -gt 0 ]; then
    python3 benches/pull_lookup.py "127.0.0.1:$kafka_port" "$port" "$state_rows" 100
    lookup_ready=1
fi
du -sh "$data/log" "$data/state"
stop_clean
for i in $(seq "$runs"); do
    start_and_time "clean restart #$i"
    stop_clean
done
for i in $(seq "$runs"); do
    start_and_time "before kill -9"
    stop_kill9
    start_and_time "restart after kill -9 #$i"
    stop_clean
done
if [ "$state_rows" -gt 0 ]; then
    for i in $(seq "$runs"); do
        rm -f "$data/state/EDDY-TABLE-FILES"
        start_and_time "state record deleted: every block read at start (the old behaviour) #$i"
        stop_clean
    done
fi
for i in $(seq "$runs"); do
    find "$data/log" -name '*.index' -delete
    rm -f "$data/log/~clean-shutdown"
    start_and_time "full scan, indexes deleted (the old behaviour) #$i"
    stop_clean
done
rm -f "$data.server.log"
