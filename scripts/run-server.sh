#!/usr/bin/env bash
# One command for a fresh machine: install what is missing, build, start `eddy server`
# with the embedded defaults (data in ./eddy-data, Postgres wire on 127.0.0.1:5433).
# Extra arguments go to `eddy server`, e.g. scripts/run-server.sh --data-dir /tmp/eddy
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/eddy-target}
# clang++ compiles RocksDB's C++ in a quarter less time than g++ at -O3 (benches/RESULTS.md,
# "Build time"); setup.sh installs it. Should a clang too old for RocksDB fail, g++ builds it.
if [ -z "${CXX_x86_64_unknown_linux_gnu:-}" ] && command -v clang++ >/dev/null 2>&1; then
  if ! CXX_x86_64_unknown_linux_gnu=clang++ cargo build --release --bin eddy; then
    echo "run-server: building RocksDB with clang++ failed; building it with the default C++ compiler"
    cargo build --release --bin eddy
  fi
else
  cargo build --release --bin eddy
fi
exec "$CARGO_TARGET_DIR/release/eddy" server "$@"
