#!/usr/bin/env bash
# Runs every test: unit tests, the log model tests, the sqllogictest files against a real
# server, psql/tokio-postgres integration tests, and the kill -9 restart test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/eddy-target}
cargo test --lib --bins --tests -- --test-threads=2 "$@"
