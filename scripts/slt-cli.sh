#!/usr/bin/env bash
# Runs every sql-tests/*.slt file with the sqllogictest CLI (sqllogictest-bin), each against
# a fresh `eddy server`, through the engine given as $1 (default postgres-extended: prepared
# statements, binary results). Usage: scripts/slt-cli.sh [postgres|postgres-extended] [EDDY_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-postgres-extended}
bin=${2:-${CARGO_TARGET_DIR:-target}/debug/eddy}
command -v sqllogictest >/dev/null 2>&1 || cargo install sqllogictest-bin --version 0.29.1 --locked
failed=0
for f in sql-tests/*.slt; do
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" server --data-dir "$dir" --pg-listen "127.0.0.1:$port" --kafka-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  # A file may name the engine it needs: the CLI's extended engine cannot read bytea or json.
  file_engine=$engine
  if grep -q '^# slt-cli engine: postgres$' "$f"; then
    file_engine=postgres
    echo "slt-cli: $f uses the simple-protocol engine (bytea and json results)"
  fi
  if ! sqllogictest --engine "$file_engine" --host 127.0.0.1 --port "$port" --db eddy --user eddy "$f"; then
    echo "slt-cli: $f failed with the $file_engine engine" >&2
    failed=1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
exit $failed
