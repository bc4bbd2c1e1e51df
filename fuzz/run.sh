#!/usr/bin/env bash
# Short fuzz runs (CI: 60 s in all, shared by the twelve targets): the Kafka request
# decoder, the record-batch checks and decoder, bounded decompression of compressed batches,
# the DELIMITED, JSON, AVRO and PROTOBUF value decoders (and JSON into AVRO), rows as state stores them,
# the SQL dialect layer, the Postgres client input Eddy reads itself (SCRAM, Bind parameters),
# the consumer-group protocol bytes a REST Proxy consumer reads, and JSON Schemas (the REST
# Proxy's record check, the registry's compatibility differences).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/eddy-fuzz-target}
total=${1:-60}
targets=(kafka_request record_batch decompress delimited json_record stored_row sql_dialect pg_messages avro_record group_protocol json_schema protobuf_message)
share=$(( total / ${#targets[@]} > 1 ? total / ${#targets[@]} : 1 ))
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  # corpus/ grows locally (ignored by git); seeds/ is the kept corpus.
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$share" -rss_limit_mb=2048
done
