#!/usr/bin/env bash
# Runs every test: unit tests; the integration tests against the real server (sqllogictest
# files, psql/psycopg/asyncpg/SQLAlchemy/pgcli, rdkafka/kcat/confluent-kafka/kafka-python,
# the differential harness, crash, corruption, disk-full and chaos tests); then the slt files
# again through the sqllogictest CLI's postgres-extended engine (prepared statements, binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/eddy-target}
# RocksDB's C++ compiled by clang++, as scripts/run-server.sh does: a quarter less CPU than
# g++ (benches/RESULTS.md, "Build time"). Set it yourself to choose another compiler; a change
# of compiler rebuilds RocksDB once.
if [ -z "${CXX_x86_64_unknown_linux_gnu:-}" ] && command -v clang++ >/dev/null 2>&1; then
  export CXX_x86_64_unknown_linux_gnu=clang++
fi
cargo test --lib --bins --tests -- --test-threads=2 "$@"
scripts/slt-cli.sh postgres-extended "$CARGO_TARGET_DIR/debug/eddy"
