#!/usr/bin/env python3
"""Writes the Nexmark section of benches/RESULTS.md from the benchmark's JSON results (issue #7).

Inputs, each a JSON array of objects with the keys `query`, `mode`, `events`, `seconds`,
`events_per_sec`, `events_per_sec_per_core`, `cpu_seconds`, `peak_rss_bytes`, `state_bytes`,
`p50_latency_ms`, `p99_latency_ms` and an optional `note`:

- `results.json` from `cargo bench --bench nexmark`: modes `engine` (Eddy's dataflow alone),
  `end-to-end` (through Kafka produce and the sink) and `datafusion-batch` (DataFusion over the
  same events in one pass, the batch limit);
- `spark.json` from `benches/nexmark_spark.py`: mode `spark`.

The section goes between `<!-- nexmark:begin -->` and `<!-- nexmark:end -->` (appended at the
end of the file when the markers are missing); the rest of RESULTS.md is left as it is. Any
query or mode may be missing: its cells read "–".
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN_MARKER = "<!-- nexmark:begin -->"
END_MARKER = "<!-- nexmark:end -->"
MODES = ("engine", "end-to-end", "datafusion-batch", "spark")
MISSING = "–"

# Issue #7's throughput targets: events/s per core, Eddy engine mode.
PER_CORE_TARGETS = {
    "q0": 1_000_000, "q1": 1_000_000, "q2": 1_000_000,
    "q3": 400_000, "q8": 400_000,
    "q5": 200_000,
    "q4": 150_000, "q7": 150_000,
}
SPARK_RATIO_TARGET = 10.0  # every query: Eddy engine per core ≥ 10 × Spark per core
END_TO_END_P99_TARGET_MS = 10.0  # end-to-end p99 at 10,000 events/s


def load_records(path: str) -> list:
    """The records in `path`, or [] (with a warning) when it is missing or unreadable."""
    try:
        with open(path) as file:
            records = json.load(file)
    except (OSError, ValueError) as error:
        print(f"warning: no results from {path}: {error}", file=sys.stderr)
        return []
    if not isinstance(records, list):
        print(f"warning: {path} is not a JSON array; ignored", file=sys.stderr)
        return []
    return [record for record in records if isinstance(record, dict)
            and record.get("query") and record.get("mode")]


def query_order(name: str):
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 1 << 30, name)


class Results:
    """All records, found by (query, mode)."""

    def __init__(self, records: list):
        # Latency runs (mode "latency") are kept apart: one per offered rate.
        self.latency = [record for record in records if record["mode"] == "latency"]
        self.by_key = {(record["query"], record["mode"]): record for record in records
                       if record["mode"] != "latency"}
        self.queries = sorted({record["query"] for record in records}, key=query_order)

    def get(self, query: str, mode: str, key: str):
        value = self.by_key.get((query, mode), {}).get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def notes(self) -> list:
        return [(query, mode, self.by_key[(query, mode)]["note"])
                for query in self.queries for mode in MODES
                if self.by_key.get((query, mode), {}).get("note")]


# ---------------------------------------------------------------------------------------
# Formatting


def rate(value) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def ratio(numerator, denominator) -> Optional[float]:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def times(value: Optional[float]) -> str:
    if value is None:
        return MISSING
    return f"{value:.1f}×" if value < 100 else f"{value:,.0f}×"


def mebibytes(value) -> str:
    return MISSING if value is None else f"{value / 2**20:,.0f} MiB"


def state_size(value) -> str:
    if value is None:
        return MISSING
    return f"{value / 2**20:,.1f} MiB" if value >= 2**20 else f"{value / 1024:,.0f} KiB"


def milliseconds(value) -> str:
    return MISSING if value is None else f"{value:,.2f}"


def table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


# ---------------------------------------------------------------------------------------
# The machine


def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "unknown memory"
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                    break
    except OSError:
        pass
    java = "Java not found"
    try:
        java_output = subprocess.run(["java", "-version"], capture_output=True, text=True,
                                     timeout=30).stderr.splitlines()
        java = java_output[0].replace('"', "") if java_output else java
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        pyspark = f"pyspark {metadata.version('pyspark')}"
    except metadata.PackageNotFoundError:
        pyspark = "pyspark not installed"
    return (f"{len(os.sched_getaffinity(0))} cores ({model}), {memory}, Linux {platform.release()}, "
            f"Python {platform.python_version()}, {pyspark}, {java}; "
            f"measured {datetime.date.today().isoformat()}.")


# ---------------------------------------------------------------------------------------
# The section


def throughput_table(results: Results) -> list:
    rows = []
    for query in results.queries:
        engine = results.get(query, "engine", "events_per_sec")
        engine_core = results.get(query, "engine", "events_per_sec_per_core")
        spark = results.get(query, "spark", "events_per_sec")
        spark_core = results.get(query, "spark", "events_per_sec_per_core")
        datafusion = results.get(query, "datafusion-batch", "events_per_sec")
        events = next((results.get(query, mode, "events") for mode in MODES
                       if results.get(query, mode, "events") is not None), None)
        rows.append([
            query, rate(events), rate(engine), rate(engine_core),
            rate(results.get(query, "end-to-end", "events_per_sec")),
            rate(datafusion), rate(spark), rate(spark_core),
            times(ratio(engine_core, spark_core)), times(ratio(engine, spark)),
            times(ratio(engine, datafusion)),
        ])
    return table(["query", "events", "Eddy engine ev/s", "per core", "Eddy end-to-end ev/s",
                  "DataFusion batch ev/s", "Spark ev/s", "Spark per core",
                  "Eddy/Spark per core", "Eddy/Spark wall", "Eddy/DataFusion"], rows)


def resources_table(results: Results) -> list:
    rows = []
    for query in results.queries:
        rows.append([
            query,
            mebibytes(results.get(query, "engine", "peak_rss_bytes")),
            mebibytes(results.get(query, "end-to-end", "peak_rss_bytes")),
            mebibytes(results.get(query, "spark", "peak_rss_bytes")),
            state_size(results.get(query, "engine", "state_bytes")),
            state_size(results.get(query, "spark", "state_bytes")),
        ])
    return table(["query", "Eddy engine peak RSS", "Eddy end-to-end peak RSS",
                  "Spark peak RSS", "Eddy state", "Spark state"], rows)


def latency_table(results: Results) -> list:
    rows = []
    for record in results.latency:
        number = lambda key: record.get(key) if isinstance(record.get(key), (int, float)) else None
        rows.append([
            record["query"], rate(number("rate")), rate(number("events")),
            milliseconds(number("p50_latency_ms")), milliseconds(number("p99_latency_ms")),
            rate(number("events_per_sec_per_core")), mebibytes(number("peak_rss_bytes")),
        ])
    return table(["query", "offered bids/s", "records", "p50 ms", "p99 ms",
                  "records per server CPU second", "peak RSS"], rows)


def p99_at(results: Results, query: str, offered: float) -> Optional[float]:
    """The p99 of `query`'s latency run at the offered rate `offered`."""
    for record in results.latency:
        if record["query"] == query and record.get("rate") == offered:
            value = record.get("p99_latency_ms")
            return value if isinstance(value, (int, float)) else None
    return None


def verdict(value: Optional[float], target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**not met**"


def targets_table(results: Results) -> list:
    rows = []
    for query in results.queries:
        engine_core = results.get(query, "engine", "events_per_sec_per_core")
        target = PER_CORE_TARGETS.get(query)
        spark_ratio = ratio(engine_core, results.get(query, "spark", "events_per_sec_per_core"))
        p99 = p99_at(results, query, 10_000)
        rows.append([
            query,
            rate(target) if target else MISSING, rate(engine_core),
            verdict(engine_core, target) if target else MISSING,
            times(spark_ratio), verdict(spark_ratio, SPARK_RATIO_TARGET),
            milliseconds(p99), verdict(p99, END_TO_END_P99_TARGET_MS, higher_is_better=False),
        ])
    return table(["query", "target ev/s per core", "Eddy engine per core", "throughput",
                  "Eddy/Spark per core", "≥ 10× Spark", "p99 ms at 10,000/s", "p99 ≤ 10 ms"],
                 rows)


def profiles(directory: str, queries: list, top: int = 8) -> list:
    """The top of each query's `perf` profile (`profile-<query>.txt`, written by the harness
    with EDDY_NEXMARK_PROFILE=1), as a list of lines; [] when there are none."""
    lines = []
    for query in queries:
        path = os.path.join(directory, f"profile-{query}.txt")
        try:
            with open(path) as file:
                text = file.read().splitlines()
        except OSError:
            continue
        samples = next((l.strip("# ").strip() for l in text if l.startswith("# Samples")), "")
        entries = []
        for line in (l for l in text if not l.startswith("#")):
            parts = line.split()
            if len(parts) < 4 or not parts[0].endswith("%"):
                continue
            symbol = " ".join(parts[3:]).rstrip(" -")
            if len(symbol) > 90:
                symbol = symbol[:87] + "..."
            entries.append(f"{parts[0]} {symbol} ({parts[1]})")
            if len(entries) == top:
                break
        if entries:
            lines.append(f"- **{query}** ({samples}): " + "; ".join(f"`{e}`" for e in entries))
    return lines


def section(results: Results, events_env: str, queries_env: str, profile_lines: list) -> str:
    lines = [
        BEGIN_MARKER,
        "## Nexmark (issue #7), side by side with Spark Structured Streaming and DataFusion",
        "",
        "Written by `benches/nexmark_report.py`; do not edit between the markers.",
        "",
        f"Machine: {machine_line()}",
        "",
        "```sh",
        f"{events_env}{queries_env}benches/nexmark.sh   # runs all of the below",
        "cargo bench --bench nexmark            # Eddy engine, end-to-end, DataFusion batch;"
        " writes the events and target/nexmark/results.json",
        "nice -n 5 python3 benches/nexmark_spark.py --events-dir target/nexmark/events"
        "   # writes target/nexmark/spark.json",
        "python3 benches/nexmark_report.py       # this section",
        "```",
        "",
        "Modes: **engine** is Eddy's dataflow alone over events already in its log, a fresh "
        "server per run, the median of `EDDY_NEXMARK_RUNS` runs (default 3; the notes give the "
        "range); "
        "**end-to-end** adds the Kafka produce and the sink, with latency from produce to "
        "result; **DataFusion batch** runs the same query once over all events as a batch "
        "(the limit of a one-pass engine); **Spark** is Structured Streaming 4 in local mode "
        "(`local[2]`, `spark.sql.shuffle.partitions` = 2, 8 GiB heap) over the same events as "
        "JSON Lines files, `trigger(availableNow=True)`, `noop` sink, one query at a time in "
        "one session after a warm-up run of every query over the first 2 s of event time "
        "(whose row counts are checked against Python where that is cheap). "
        "Per core = events ÷ CPU seconds of the process (Eddy's, or Spark's JVM: the Python "
        "driver is not counted); the ratios divide Eddy engine by the peer.",
        "",
        "### Throughput",
        "",
        *throughput_table(results),
        "",
        "### Memory, state and latency",
        "",
        *resources_table(results),
        "",
        "Latency (Eddy, mode `latency`): q0 with a push query open "
        "(`COPY (SELECT extra FROM nx_q0 EMIT CHANGES) TO STDOUT`), bids produced with "
        "librdkafka (acks=all, linger 5 ms) at a fixed rate, each tagged; latency is from the "
        "record's produce acknowledgement to its row arriving on the push query.",
        "",
        *latency_table(results),
        "",
        "Spark's peak RSS is the JVM's VmHWM during the query, reset after a full GC before "
        "each query; its heap only grows, so later queries carry what earlier ones left. "
        "Spark's state is `memoryUsedBytes` summed over its stateful operators "
        "(the HDFS-backed in-memory state store). Spark's latency is not measured: its "
        "micro-batches have no per-event latency to compare.",
        "",
        "### Targets (issue #7)",
        "",
        "Per core, engine mode: q0, q1, q2 ≥ 1,000,000 events/s; q3, q8 ≥ 400,000; "
        "q5 ≥ 200,000; q4, q7 ≥ 150,000; every query ≥ 10× Spark (per core); "
        "end-to-end p99 ≤ 10 ms at 10,000 events/s.",
        "",
        *targets_table(results),
        "",
        "### Where the time goes (engine mode)",
        "",
        "`perf record -a -F 1999` while each query runs (`EDDY_NEXMARK_PROFILE=1`), samples of "
        "the server process only, top symbols by share (call graphs, by DWARF unwinding: "
        "`EDDY_NEXMARK_PROFILE=graph`, then `perf report -i target/nexmark/perf-<query>.data`). "
        "`[k]` entries are the kernel: writing the output topic "
        "(`copy_folio_from_iter_atomic`), reading the input (`_copy_to_iter`), fresh pages "
        "(`clear_page_erms`).",
        "",
        *(profile_lines or ["- No profiles: run the harness with `EDDY_NEXMARK_PROFILE=1`."]),
        "",
        "### Notes",
        "",
        "- With its default flags Spark reads all the events of a query in one micro-batch "
        "(`--micro-batch-seconds` splits them): Spark's best case for throughput. Its JSON reader applies pushed-down `WHERE` "
        "filters (q3, q20) while parsing.",
    ]
    for query, mode, note in results.notes():
        lines.append(f"- {query} ({mode}): {note}")
    if not results.queries:
        lines.append("- No results were found: run `benches/nexmark.sh`.")
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def replace_section(document: str, new_section: str) -> str:
    """`document` with the text between the markers (markers included) replaced."""
    begin = document.find(BEGIN_MARKER)
    end = document.find(END_MARKER, begin + 1) if begin >= 0 else -1
    if begin < 0 or end < 0:
        separator = "" if document.endswith("\n\n") or not document else (
            "\n" if document.endswith("\n") else "\n\n")
        return document + separator + new_section
    tail = document[end + len(END_MARKER):]
    return document[:begin] + new_section.rstrip("\n") + tail


def main() -> int:
    nexmark_dir = os.environ.get("EDDY_NEXMARK_DIR") or os.path.join(REPO_ROOT, "target", "nexmark")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(nexmark_dir, "results.json"),
                        help="Eddy harness results (default %(default)s)")
    parser.add_argument("--spark", default=os.path.join(nexmark_dir, "spark.json"),
                        help="Spark results (default %(default)s)")
    parser.add_argument("--results-md", default=os.path.join(REPO_ROOT, "benches", "RESULTS.md"),
                        help="file to update (default %(default)s)")
    args = parser.parse_args()

    results = Results(load_records(args.results) + load_records(args.spark))
    events_env = (f"EDDY_NEXMARK_EVENTS={os.environ['EDDY_NEXMARK_EVENTS']} "
                  if os.environ.get("EDDY_NEXMARK_EVENTS") else "")
    queries_env = (f"EDDY_NEXMARK_QUERIES={os.environ['EDDY_NEXMARK_QUERIES']} "
                   if os.environ.get("EDDY_NEXMARK_QUERIES") else "")
    try:
        with open(args.results_md) as file:
            document = file.read()
    except FileNotFoundError:
        document = ""
    with open(args.results_md, "w") as file:
        profile_lines = profiles(os.path.dirname(os.path.abspath(args.results)), results.queries)
        file.write(replace_section(document, section(results, events_env, queries_env, profile_lines)))
    print(f"wrote the Nexmark section of {args.results_md}: {len(results.queries)} queries, "
          f"{len(results.by_key)} results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
