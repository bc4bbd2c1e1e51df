#!/usr/bin/env bash
# Short fuzz run of the Kafka request decoder (CI: 60 s). cargo-fuzz needs nightly flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/eddy-fuzz-target}
mkdir -p corpus/kafka_request
cargo fuzz run kafka_request corpus/kafka_request -- -max_total_time="${1:-60}" -rss_limit_mb=2048
