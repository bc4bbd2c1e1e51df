#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test Eddy:
# clang/libclang (RocksDB's bindgen, and its C++ compiler: run-server.sh, test.sh and CI build RocksDB with clang++), a C++ compiler, psql and kcat; with --test also
# the Python clients the tests drive (psycopg, psycopg2, asyncpg, confluent-kafka, kafka-python,
# SQLAlchemy, pgcli) and, for the JDBC test, a Java runtime and pgjdbc; openssl makes the TLS
# test's certificate.
set -euo pipefail
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
# The JDBC test: a Java runtime and pgjdbc (/usr/share/java/postgresql.jar).
if [ "${1:-}" = "--test" ]; then
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
  [ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ] && ! python3 -c "import psycopg, psycopg2, asyncpg, confluent_kafka, kafka, sqlalchemy, pgcli, httpx, h2, requests, prometheus_client, fastavro, authlib, jsonschema, google.protobuf" >/dev/null 2>&1; then
  echo "setup: installing the Python clients the tests use (psycopg, psycopg2, asyncpg, confluent-kafka, kafka-python, sqlalchemy, pgcli, httpx, requests, prometheus-client)"
  pkgs=("psycopg[binary]==3.3.9" "psycopg2-binary==2.9.13" "asyncpg==0.32.0" "confluent-kafka[avro,json,protobuf,schemaregistry]==2.16.1" "kafka-python==3.0.12" "SQLAlchemy==2.1.9" "pgcli==4.7.1" "httpx[http2]==0.29.0" "requests==2.34.2" "prometheus-client==0.26.0" "setuptools" "wheel")
  python3 -m pip install -q "${pkgs[@]}" || python3 -m pip install -q --break-system-packages "${pkgs[@]}"
fi
# ksqlDB's Python client (PyPI `ksql` 0.10.2): its setup.py imports pip and its declared
# dependencies pin a dead HTTP/2 library, so it is installed alone, built in this environment
# (with the setuptools and wheel installed above).
if [ "${1:-}" = "--test" ] && ! python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('ksql') is None)" >/dev/null 2>&1; then
  echo "setup: installing the ksql client (ksqlDB's REST API)"
  python3 -m pip install -q --no-deps --no-build-isolation "ksql==0.10.2" || python3 -m pip install -q --break-system-packages --no-deps --no-build-isolation "ksql==0.10.2"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing the Rust toolchain (rustup)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
