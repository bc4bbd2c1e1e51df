#!/usr/bin/env python3
"""Runs the Nexmark queries in Spark Structured Streaming: the peer figures for issue #7.

The Rust harness (`cargo bench --bench nexmark`) writes the events it sends to Eddy as JSON
Lines under `<events dir>/{person,auction,bid}/`. This script reads those files with Spark's
file source and runs each query the way Eddy runs it, as closely as Structured Streaming can
express it (`NEXMARK_QUERIES` says how, and each query's `note` says where it differs):

- local mode (`local[2]`, both cores), one SparkSession for all queries, one query at a time;
- `trigger(availableNow=True)`: read everything there is, then stop; by default the whole
  file is one micro-batch (Spark's best case for throughput), `--micro-batch-seconds S`
  splits the events into files of S seconds of event time read one per micro-batch;
- the `noop` sink (q4 ends in `foreachBatch`, see `MaxThenAveragePerCategory`);
- a warm-up first: every selected query once over the first 2 seconds of event time,
  counting the rows it emits and checking the count against a Python oracle where one is
  cheap, so the measured runs start with a warm JIT and we know Spark computed something real.

Per query it measures the wall time from `start()` to termination, the CPU the JVM used
(utime + stime from /proc), the JVM's peak RSS during the query (VmHWM, reset through
/proc/<pid>/clear_refs before each query when the kernel allows it; otherwise the session's
peak), and the state Spark reports (`memoryUsedBytes` summed over its stateful operators).
Latency is not measured (null): Spark's micro-batch loop has no per-event latency to compare
with Eddy's end-to-end probe.

Each event type's file(s) must be in event time order, as the Nexmark generator writes them:
the warm-up sample and `--micro-batch-seconds` cut them by `date_time`.

Output: one line per query on stdout and a JSON array (`--out`, default
`target/nexmark/spark.json`) of objects with the keys the report reads (`RESULT_KEYS`).
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENT_TYPES = ("person", "auction", "bid")
RESULT_KEYS = ("query", "mode", "events", "seconds", "events_per_sec", "events_per_sec_per_core",
               "cpu_seconds", "peak_rss_bytes", "state_bytes", "p50_latency_ms", "p99_latency_ms")

# Spark DDL schemas of the harness's JSON Lines files (every field present, no nulls).
SCHEMAS = {
    "person": "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, "
              "state STRING, date_time BIGINT, extra STRING",
    "auction": "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, "
               "reserve BIGINT, date_time BIGINT, expires BIGINT, seller BIGINT, "
               "category BIGINT, extra STRING",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
           "date_time BIGINT, extra STRING",
}

# Eddy's default grace period for windows and WITHIN joins (ksqlDB's: 24 hours). Spark's
# watermark delay plays that part: state older than the watermark is dropped. At 10,000
# events/s of event time no benchmark run reaches it, in Eddy or in Spark.
EDDY_DEFAULT_GRACE = "24 hours"

# Event time covered by the warm-up sample (the first 2 s, about 20,000 events).
WARM_UP_EVENT_TIME_MS = 2_000


class MaxThenAveragePerCategory:
    """q4's two aggregations, run in `foreachBatch` over the streamed join's output.

    Structured Streaming cannot chain them: a stream–stream join is append-only, and an
    aggregation without an event-time window cannot be appended. So the join streams, and each
    micro-batch folds its rows into the running MAX(price) per auction (a checkpointed
    DataFrame carried from batch to batch), then computes AVG(final) per category over it.
    """

    def __init__(self):
        self.max_per_auction = None  # DataFrame (id, category, final), or None before batch 0
        self.average_per_category: list = []  # the last result, [(category, avg_final)]

    def __call__(self, joined, batch_id: int) -> None:
        from pyspark.sql import functions as F
        batch_max = joined.groupBy("id", "category").agg(F.max("price").alias("final"))
        if self.max_per_auction is not None:
            batch_max = (self.max_per_auction.unionByName(batch_max)
                         .groupBy("id", "category").agg(F.max("final").alias("final")))
        self.max_per_auction = batch_max.localCheckpoint(eager=True)
        self.average_per_category = sorted(
            (row[0], row[1]) for row in
            self.max_per_auction.groupBy("category").agg(F.avg("final")).collect())

    def row_count(self) -> int:
        return len(self.average_per_category)


@dataclass
class NexmarkQuery:
    """One Nexmark query as Spark runs it."""
    name: str
    reads: tuple  # the event types it reads, in EVENT_TYPES' names
    sql: str  # over temp views person/auction/bid, each with `ts` = date_time as a timestamp
    output_mode: str  # "append" for stateless queries and joins, "update" for aggregations
    watermark_delay: Optional[str] = None  # withWatermark("ts", delay) on every source it reads
    final_stage: Optional[Callable[[], MaxThenAveragePerCategory]] = None  # q4's foreachBatch
    note: Optional[str] = None  # how it differs from Eddy's query, for the report


BID_COLUMNS = "auction, bidder, price, date_time, extra"
HOT_CHANNEL_ID = ("CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' "
                  "WHEN 'facebook' THEN '2' WHEN 'baidu' THEN '3' "
                  # regexp_extract gives '' where Eddy's gives NULL: keep NULL for no match.
                  "ELSE CASE WHEN url RLIKE '(&|^)channel_id=' "
                  "THEN regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) END END")
TABLE_JOIN_NOTE = ("Spark has no stream-table join whose table is itself fed by a stream: "
                   "this is a stream-stream inner join without watermark, which keeps both "
                   "sides in state (Eddy keeps only the table) and also matches a row with a "
                   "table row that arrives after it")

NEXMARK_QUERIES = [
    NexmarkQuery("q0", ("bid",), f"SELECT {BID_COLUMNS} FROM bid", "append"),
    NexmarkQuery("q1", ("bid",),
                 "SELECT auction, bidder, price * 0.908D AS price, date_time, extra FROM bid",
                 "append"),
    NexmarkQuery("q2", ("bid",), "SELECT auction, price FROM bid WHERE auction % 123 = 0",
                 "append"),
    NexmarkQuery("q3", ("auction", "person"),
                 "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p "
                 "ON a.seller = p.id WHERE a.category = 10 "
                 "AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')",
                 "append", note=TABLE_JOIN_NOTE + " (person_t)"),
    NexmarkQuery("q4", ("bid", "auction"),
                 "SELECT a.id, a.category, b.price FROM bid b JOIN auction a "
                 "ON b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.expires",
                 "append", final_stage=MaxThenAveragePerCategory,
                 note=TABLE_JOIN_NOTE + " (auction_t); MAX per auction and AVG per category "
                 "run in foreachBatch as batch aggregations (the per-auction maxima carried "
                 "across micro-batches), since Structured Streaming cannot chain a "
                 "non-windowed aggregation after a stream-stream join"),
    NexmarkQuery("q5", ("bid",),
                 "SELECT window.start AS window_start, auction, COUNT(*) AS num FROM bid "
                 "GROUP BY window(ts, '10 seconds', '2 seconds'), auction",
                 "update", watermark_delay=EDDY_DEFAULT_GRACE),
    NexmarkQuery("q7", ("bid",),
                 "SELECT window.start AS window_start, MAX(price) AS max_price FROM bid "
                 "GROUP BY window(ts, '10 seconds')",
                 "update", watermark_delay=EDDY_DEFAULT_GRACE),
    NexmarkQuery("q8", ("person", "auction"),
                 "SELECT p.id, p.name, a.reserve FROM person p JOIN auction a "
                 "ON p.id = a.seller "
                 "AND a.ts BETWEEN p.ts - INTERVAL 10 SECONDS AND p.ts + INTERVAL 10 SECONDS",
                 "append", watermark_delay="4 seconds",
                 note="watermark delay 4 s, as Eddy's GRACE PERIOD 4 SECONDS (the standard "
                 "Nexmark watermark)"),
    NexmarkQuery("q11", ("bid",),
                 "SELECT session_window.start AS session_start, bidder, COUNT(*) AS bid_count "
                 "FROM bid GROUP BY session_window(ts, '10 seconds'), bidder",
                 "append", watermark_delay="0 seconds",
                 note="Spark supports session windows only in append mode, so it emits each "
                 "session once when the watermark (delay 0) closes it, where Eddy emits "
                 "every change"),
    NexmarkQuery("q14", ("bid",),
                 "SELECT auction, bidder, 0.908D * price AS price, "
                 "CASE WHEN hour(ts) BETWEEN 8 AND 18 THEN 'dayTime' "
                 "WHEN hour(ts) <= 6 OR hour(ts) >= 20 THEN 'nightTime' "
                 "ELSE 'otherTime' END AS bid_time_type, date_time, extra, "
                 "length(extra) - length(replace(extra, 'c', '')) AS c_counts FROM bid "
                 "WHERE 0.908D * price > 1000000 AND 0.908D * price < 50000000",
                 "append"),
    NexmarkQuery("q17", ("bid",),
                 "SELECT auction, window.start AS day, COUNT(*) AS total_bids, "
                 "MIN(price) AS min_price, MAX(price) AS max_price, AVG(price) AS avg_price, "
                 "SUM(price) AS sum_price FROM bid GROUP BY auction, window(ts, '1 day')",
                 "update", watermark_delay=EDDY_DEFAULT_GRACE),
    NexmarkQuery("q18", ("bid",),
                 "SELECT bidder, auction, max_by(price, date_time) AS price, "
                 "MAX(date_time) AS date_time FROM bid GROUP BY bidder, auction",
                 "update",
                 note="last bid = the bid with the latest date_time (max_by); among bids "
                 "in the same millisecond Spark picks any, Eddy the last to arrive"),
    NexmarkQuery("q19", ("bid",),
                 "SELECT auction, slice(sort_array(collect_list(price), false), 1, 10) "
                 "AS top_prices FROM bid GROUP BY auction",
                 "update",
                 note="Structured Streaming has no row_number() over a stream: the top 10 "
                 "come from collect_list, so Spark's state holds every price of every "
                 "auction, and it emits one array per auction instead of up to 10 rows"),
    NexmarkQuery("q20", ("bid", "auction"),
                 "SELECT b.auction, b.bidder, b.price, b.channel, a.item_name, a.category "
                 "FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10",
                 "append", note=TABLE_JOIN_NOTE + " (auction_t)"),
    NexmarkQuery("q21", ("bid",),
                 "SELECT * FROM (SELECT auction, bidder, price, channel, "
                 f"{HOT_CHANNEL_ID} AS channel_id FROM bid) WHERE channel_id IS NOT NULL",
                 "append"),
    NexmarkQuery("q22", ("bid",),
                 "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, "
                 "split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
                 "append"),
]
QUERIES_BY_NAME = {query.name: query for query in NEXMARK_QUERIES}


# ---------------------------------------------------------------------------------------
# The JVM, measured from /proc


def find_jvm_pid(spark) -> int:
    """The pid of the JVM that pyspark launched (spark-submit execs java, so usually itself)."""
    launched = spark.sparkContext._gateway.proc.pid
    pending = [launched]
    while pending:
        pid = pending.pop(0)
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "java":
                return pid
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    raise RuntimeError(f"no java process under pid {launched}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, field 3 (state) is fields[0]: utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


# ---------------------------------------------------------------------------------------
# Event files: counting, the warm-up sample, the micro-batch split

DATE_TIME = re.compile(r'"date_time":(\d+)')


def event_files(events_dir: str, event_type: str) -> list:
    directory = os.path.join(events_dir, event_type)
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(".json"))


def count_events(events_dir: str) -> dict:
    """Lines per event type: what a query reading that type consumes."""
    counts = {}
    for event_type in EVENT_TYPES:
        lines = 0
        for path in event_files(events_dir, event_type):
            with open(path, "rb") as file:
                lines += sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
        counts[event_type] = lines
    return counts


def first_event_time_ms(events_dir: str) -> int:
    first = []
    for event_type in EVENT_TYPES:
        for path in event_files(events_dir, event_type):
            with open(path) as file:
                line = file.readline()
            if line:
                first.append(int(DATE_TIME.search(line).group(1)))
    return min(first)


def split_by_event_time(events_dir: str, out_dir: str, slice_ms: int, end_ms: Optional[int]):
    """Rewrites the events as one file per `slice_ms` of event time, per event type.

    The files of slice k are written for every type (empty if need be) and stamped with
    modification time k, so a file source reading one file per trigger reads the same event
    time range of every type in the same micro-batch. Events at `end_ms` or later are left
    out (`None`: none are). The generator writes each type in event time order.
    """
    start_ms = first_event_time_ms(events_dir)
    for event_type in EVENT_TYPES:
        os.makedirs(os.path.join(out_dir, event_type))
        slices: dict = {}
        for path in event_files(events_dir, event_type):
            with open(path) as file:
                for line in file:
                    time_ms = int(DATE_TIME.search(line).group(1))
                    if end_ms is not None and time_ms >= end_ms:
                        break
                    slices.setdefault((time_ms - start_ms) // slice_ms, []).append(line)
        for index in range(max(slices, default=0) + 1):
            path = os.path.join(out_dir, event_type, f"part-{index:05d}.json")
            with open(path, "w") as file:
                file.writelines(slices.get(index, []))
            os.utime(path, (1_000_000 + index, 1_000_000 + index))


def read_events(events_dir: str) -> dict:
    """All events as dicts, per type (for the oracles over the small warm-up sample)."""
    events = {}
    for event_type in EVENT_TYPES:
        events[event_type] = []
        for path in event_files(events_dir, event_type):
            with open(path) as file:
                events[event_type].extend(json.loads(line) for line in file)
    return events


def q4_oracle(events: dict) -> list:
    """q4 computed in Python: [(category, AVG of MAX(price) per auction)]."""
    auctions = {a["id"]: a for a in events["auction"]}
    final = {}
    for bid in events["bid"]:
        auction = auctions.get(bid["auction"])
        if auction and auction["date_time"] <= bid["date_time"] <= auction["expires"]:
            final[auction["id"]] = max(final.get(auction["id"], 0), bid["price"])
    per_category: dict = {}
    for auction_id, price in final.items():
        per_category.setdefault(auctions[auction_id]["category"], []).append(price)
    return sorted((category, sum(prices) / len(prices)) for category, prices in per_category.items())


def channel_id_present(bid: dict) -> bool:
    return bid["channel"].lower() in ("apple", "google", "facebook", "baidu") or bool(
        re.search(r"(&|^)channel_id=", bid["url"]))


# Expected row counts on the warm-up sample (one micro-batch), where they are cheap to know.
ROW_COUNT_ORACLES = {
    "q0": lambda e: len(e["bid"]),
    "q2": lambda e: sum(1 for b in e["bid"] if b["auction"] % 123 == 0),
    "q7": lambda e: len({b["date_time"] // 10_000 for b in e["bid"]}),
    "q14": lambda e: sum(1 for b in e["bid"] if 1_000_000 < 0.908 * b["price"] < 50_000_000),
    "q18": lambda e: len({(b["bidder"], b["auction"]) for b in e["bid"]}),
    "q21": lambda e: sum(1 for b in e["bid"] if channel_id_present(b)),
    "q22": lambda e: len(e["bid"]),
}


# ---------------------------------------------------------------------------------------
# Running one query


@dataclass
class QueryRun:
    """What one run of one query measured."""
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    peak_rss_reset: bool  # False: peak_rss_bytes is the session's peak, not this query's
    # numInputRows summed over the micro-batches: the rows Spark's JSON reader passed on, which
    # is fewer than the file holds when it applied a pushed-down WHERE filter while parsing.
    input_rows: int
    micro_batches: int  # micro-batches that read data
    state_bytes: Optional[int]  # None for a query without stateful operators
    output_rows: Optional[int] = None  # only when counted (the warm-up)
    final_result: list = field(default_factory=list)  # q4's averages per category


def register_sources(spark, query: NexmarkQuery, events_dir: str, files_per_trigger: int):
    """Makes the temp views person/auction/bid that the query's SQL reads."""
    for event_type in query.reads:
        reader = spark.readStream.schema(SCHEMAS[event_type])
        if files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", files_per_trigger)
        stream = (reader.json(os.path.join(events_dir, event_type))
                  .selectExpr("*", "timestamp_millis(date_time) AS ts"))
        if query.watermark_delay:
            stream = stream.withWatermark("ts", query.watermark_delay)
        stream.createOrReplaceTempView(event_type)


def run_query(spark, jvm_pid: int, query: NexmarkQuery, events_dir: str, checkpoint_dir: str,
              files_per_trigger: int, count_rows: bool) -> QueryRun:
    """Runs one query to the end of its input; counts its output rows if `count_rows`."""
    register_sources(spark, query, events_dir, files_per_trigger)
    result = spark.sql(query.sql)
    if "ts" in result.columns:
        result = result.drop("ts")
    writer = (result.writeStream.outputMode(query.output_mode)
              .trigger(availableNow=True).option("checkpointLocation", checkpoint_dir))
    final_stage = query.final_stage() if query.final_stage else None
    output_rows = [0]
    if final_stage is not None:
        writer = writer.foreachBatch(final_stage)
    elif count_rows:
        def count_batch(batch, batch_id):
            output_rows[0] += batch.count()
        writer = writer.foreachBatch(count_batch)
    else:
        writer = writer.format("noop")

    # A full GC first lets G1 hand back the heap earlier queries grew, so the peak is this one's.
    spark.sparkContext._jvm.System.gc()
    peak_rss_reset = reset_peak_rss(jvm_pid)
    cpu_before = cpu_seconds(jvm_pid)
    started = time.monotonic()
    streaming_query = writer.start()
    streaming_query.awaitTermination()
    seconds = time.monotonic() - started
    cpu_used = cpu_seconds(jvm_pid) - cpu_before
    peak_rss = peak_rss_bytes(jvm_pid)

    progress = streaming_query.recentProgress
    state_sizes = [sum(operator.get("memoryUsedBytes", 0) for operator in p["stateOperators"])
                   for p in progress if p.get("stateOperators")]
    if final_stage is not None:
        output_rows[0] = final_stage.row_count()
    return QueryRun(
        seconds=seconds, cpu_seconds=cpu_used, peak_rss_bytes=peak_rss,
        peak_rss_reset=peak_rss_reset,
        input_rows=sum(p["numInputRows"] for p in progress),
        micro_batches=sum(1 for p in progress if p["numInputRows"] > 0),
        state_bytes=max(state_sizes) if state_sizes else None,
        output_rows=output_rows[0] if (count_rows or final_stage) else None,
        final_result=final_stage.average_per_category if final_stage else [])


def result_record(query: NexmarkQuery, events: Optional[int], run: Optional[QueryRun],
                  error: Optional[str]) -> dict:
    """The JSON object the report reads, for one query."""
    record = dict.fromkeys(RESULT_KEYS)
    record.update(query=query.name, mode="spark", events=events)
    if run is not None:
        record.update(
            seconds=round(run.seconds, 3),
            events_per_sec=round(events / run.seconds, 1) if run.seconds > 0 else None,
            events_per_sec_per_core=(round(events / run.cpu_seconds, 1)
                                     if run.cpu_seconds > 0 else None),
            cpu_seconds=round(run.cpu_seconds, 3),
            peak_rss_bytes=run.peak_rss_bytes,
            state_bytes=run.state_bytes)
    notes = [query.note] if query.note else []
    if run is not None and not run.peak_rss_reset:
        notes.append("peak RSS is the whole session's")
    if error:
        notes.append(f"did not run: {error}")
    if notes:
        record["note"] = "; ".join(notes)
    return record


# ---------------------------------------------------------------------------------------
# The session: warm-up with checks, then the measured runs


def make_spark_session(shuffle_partitions: int, driver_memory: str):
    from pyspark.sql import SparkSession
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, and no warning
    spark = (SparkSession.builder.master("local[2]").appName("eddy-nexmark")
             .config("spark.driver.memory", driver_memory)
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")  # no progress bars on stderr
             .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
             # Streaming turns adaptive execution off anyway, with a warning per query.
             .config("spark.sql.adaptive.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC")  # hour() as Eddy computes it
             .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def warm_up_and_check(spark, jvm_pid: int, queries: list, sample_dir: str, work_dir: str) -> bool:
    """Runs every query once over the small sample; checks row counts where an oracle is cheap.

    Returns False when a check failed.
    """
    events = read_events(sample_dir)
    print(f"warm-up over {sum(len(v) for v in events.values())} events "
          f"(first {WARM_UP_EVENT_TIME_MS / 1000:g} s of event time), counting output rows:")
    all_ok = True
    for index, query in enumerate(queries):
        try:
            run = run_query(spark, jvm_pid, query, sample_dir,
                            os.path.join(work_dir, f"warm-up-{index}"), 0, count_rows=True)
        except Exception as error:  # the measured run reports it too
            print(f"  {query.name}: failed: {first_line(error)}")
            continue
        check = ""
        if query.name in ROW_COUNT_ORACLES:
            expected = ROW_COUNT_ORACLES[query.name](events)
            ok = run.output_rows == expected
            all_ok &= ok
            check = f", expected {expected}: {'ok' if ok else 'MISMATCH'}"
        elif query.name == "q4":
            expected = q4_oracle(events)
            ok = len(expected) == len(run.final_result) and all(
                c1 == c2 and abs(a1 - a2) < 1e-6 * max(1.0, a2)
                for (c1, a1), (c2, a2) in zip(run.final_result, expected))
            all_ok &= ok
            check = f", averages {'match' if ok else 'DIFFER from'} the Python oracle"
        print(f"  {query.name}: {run.input_rows} rows in, {run.output_rows} rows out "
              f"in {run.seconds:.2f} s{check}")
    return all_ok


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.path.join(os.environ.get("EDDY_NEXMARK_DIR")
                               or os.path.join(REPO_ROOT, "target", "nexmark"))
    parser.add_argument("--events-dir", default=os.path.join(default_dir, "events"),
                        help="directory with person/, auction/, bid/ (default %(default)s)")
    parser.add_argument("--queries",
                        default=os.environ.get("EDDY_NEXMARK_QUERIES")
                        or ",".join(q.name for q in NEXMARK_QUERIES),
                        help="comma-separated (default: env EDDY_NEXMARK_QUERIES, else all)")
    parser.add_argument("--out", default=os.path.join(default_dir, "spark.json"),
                        help="JSON results (default %(default)s)")
    parser.add_argument("--shuffle-partitions", type=int, default=2,
                        help="spark.sql.shuffle.partitions (default 2: one per core)")
    parser.add_argument("--driver-memory", default="8g", help="JVM heap (default %(default)s)")
    parser.add_argument("--micro-batch-seconds", type=float, default=0,
                        help="event time per micro-batch (default 0: all events in one)")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the warm-up and checks")
    args = parser.parse_args()
    names = [name.strip() for name in args.queries.split(",") if name.strip()]
    # A query the harness runs but Spark has no version of still gets a record saying so.
    args.queries = [QUERIES_BY_NAME.get(name) or NexmarkQuery(name, (), "", "append")
                    for name in names]
    for event_type in EVENT_TYPES:
        if not os.path.isdir(os.path.join(args.events_dir, event_type)):
            parser.error(f"no {event_type}/ under {args.events_dir}")
    return args


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # our lines in order with the JVM's
    args = parse_args()
    work_dir = tempfile.mkdtemp(prefix="eddy-nexmark-spark-")
    try:
        return run_benchmark(args, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def run_benchmark(args, work_dir: str) -> int:
    events_per_type = count_events(args.events_dir)
    events_dir, files_per_trigger = args.events_dir, 0
    if args.micro_batch_seconds > 0:
        events_dir, files_per_trigger = os.path.join(work_dir, "micro-batches"), 1
        split_by_event_time(args.events_dir, events_dir,
                            int(args.micro_batch_seconds * 1000), None)

    spark = make_spark_session(args.shuffle_partitions, args.driver_memory)
    import pyspark
    jvm_pid = find_jvm_pid(spark)
    print(f"Spark {spark.version} (pyspark {pyspark.__version__}), local[2], "
          f"shuffle partitions {args.shuffle_partitions}, driver memory {args.driver_memory}, "
          f"JVM pid {jvm_pid}; events {events_per_type} in {args.events_dir}; "
          + (f"micro-batches of {args.micro_batch_seconds:g} s of event time"
             if files_per_trigger else "one micro-batch per query"))

    checks_ok = True
    if not args.no_warm_up:
        sample_dir = os.path.join(work_dir, "warm-up-events")
        split_by_event_time(args.events_dir, sample_dir, WARM_UP_EVENT_TIME_MS,
                            first_event_time_ms(args.events_dir) + WARM_UP_EVENT_TIME_MS)
        checks_ok = warm_up_and_check(spark, jvm_pid, [q for q in args.queries if q.sql],
                                      sample_dir, work_dir)

    records = []
    for query in args.queries:
        events = sum(events_per_type[event_type] for event_type in query.reads)
        run, error = None, None
        if not query.sql:
            error = f"nexmark_spark.py has no Spark version of {query.name}"
            records.append(result_record(query, None, None, error))
            print(format_line(records[-1], None))
            continue
        try:
            run = run_query(spark, jvm_pid, query, events_dir,
                            os.path.join(work_dir, f"run-{query.name}"), files_per_trigger,
                            count_rows=False)
        except Exception as error_raised:
            error = first_line(error_raised)
        record = result_record(query, events, run, error)
        records.append(record)
        print(format_line(record, run))

    spark.stop()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as out:
        json.dump(records, out, indent=1)
        out.write("\n")
    print(f"wrote {args.out}")
    if not checks_ok:
        print("warm-up checks FAILED: see above", file=sys.stderr)
        return 1
    return 0


def format_line(record: dict, run: Optional[QueryRun]) -> str:
    if run is None:
        return f"{record['query']:>4} spark: {record.get('note')}"
    state = f"{record['state_bytes'] / 1e6:.1f} MB" if record["state_bytes"] is not None else "-"
    return (f"{record['query']:>4} spark: {record['events']:>9} events in "
            f"{record['seconds']:7.2f} s = {record['events_per_sec']:>11,.0f} events/s, "
            f"{record['events_per_sec_per_core']:>11,.0f} per core "
            f"(cpu {record['cpu_seconds']:.1f} s), peak RSS "
            f"{record['peak_rss_bytes'] / 2**20:,.0f} MiB, state {state}, "
            f"{run.micro_batches} micro-batch(es), {run.input_rows} rows passed the reader")


if __name__ == "__main__":
    sys.exit(main())
