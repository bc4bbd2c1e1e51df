#!/usr/bin/env bash
# The Nexmark benchmark of issue #7 in one command: Eddy and DataFusion (the Rust harness),
# Spark Structured Streaming over the same events, then the Nexmark section of
# benches/RESULTS.md.
#
#   benches/nexmark.sh                 # all three steps, from any directory
#   benches/nexmark.sh spark report    # only the named steps (eddy, spark, report)
#
# Environment, passed through to the steps:
#   EDDY_NEXMARK_EVENTS       events the harness generates (its default otherwise)
#   EDDY_NEXMARK_QUERIES      comma-separated queries, e.g. q0,q5,q8 (default all)
#   EDDY_NEXMARK_DIR          where events and results go (default <repo>/target/nexmark)
#   EDDY_NEXMARK_SPARK_ARGS   extra nexmark_spark.py flags, e.g. "--micro-batch-seconds 10"
#   EDDY_NEXMARK_PROFILE=1    a perf profile of each query in engine mode (installs linux-perf
#                             with apt-get when missing), summarized in the report
#
# Needs Java 17 for Spark (installed with apt-get when missing and we are root) and installs
# the pinned pyspark when it is missing.
set -euo pipefail

# Spark 4.0 runs on Java 17 and 21 and Python 3.9 or later.
PYSPARK_VERSION=4.0.5

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nexmark_dir="${EDDY_NEXMARK_DIR:-$repo_root/target/nexmark}"
steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=(eddy spark report)
fi

wants() {
    local step
    for step in "${steps[@]}"; do
        [ "$step" = "$1" ] && return 0
    done
    return 1
}

for step in "${steps[@]}"; do
    case "$step" in
        eddy | spark | report) ;;
        *) echo "nexmark.sh: unknown step '$step' (steps: eddy, spark, report)" >&2; exit 2 ;;
    esac
done

ensure_spark_dependencies() {
    if ! command -v java >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless
        else
            echo "nexmark.sh: Spark needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2
            exit 1
        fi
    fi
    if ! python3 -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$PYSPARK_VERSION')" 2>/dev/null; then
        python3 -m pip install --quiet "pyspark==$PYSPARK_VERSION"
    fi
}

if wants eddy; then
    echo "== Eddy engine, end-to-end and DataFusion batch (cargo bench --bench nexmark)"
    if [ "${EDDY_NEXMARK_PROFILE:-0}" != 0 ] && ! command -v perf >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
        else
            echo "nexmark.sh: EDDY_NEXMARK_PROFILE needs perf (apt-get install linux-perf)" >&2
            exit 1
        fi
    fi
    (cd "$repo_root" && cargo bench --bench nexmark)
fi

if wants spark; then
    echo "== Spark Structured Streaming (benches/nexmark_spark.py)"
    ensure_spark_dependencies
    # shellcheck disable=SC2086 # EDDY_NEXMARK_SPARK_ARGS is a list of flags
    nice -n 5 python3 "$repo_root/benches/nexmark_spark.py" \
        --events-dir "$nexmark_dir/events" --out "$nexmark_dir/spark.json" \
        ${EDDY_NEXMARK_SPARK_ARGS:-}
fi

if wants report; then
    echo "== Report (benches/nexmark_report.py)"
    python3 "$repo_root/benches/nexmark_report.py" \
        --results "$nexmark_dir/results.json" --spark "$nexmark_dir/spark.json" \
        --results-md "$repo_root/benches/RESULTS.md"
fi
