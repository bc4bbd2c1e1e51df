//! `GET /metrics`: Prometheus's text format (0.0.4). Counters end in `_total`, durations are
//! histograms in seconds, sizes in bytes. Labels are bounded: per Kafka API, per query, per
//! partition up to `MAX_PARTITION_SERIES`, per consumer group and topic up to
//! `MAX_GROUP_SERIES`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kafka_protocol::messages::ApiKey;

use super::HttpState;
use crate::metrics::{self, Histogram, LATENCY_BUCKETS};
use crate::state::CATALOG_CF;

/// Partitions past this many are left out of the per-partition series.
const MAX_PARTITION_SERIES: usize = 2_000;
/// (group, topic) pairs past this many are left out of the lag series.
const MAX_GROUP_SERIES: usize = 1_000;
/// Most bytes of committed group offsets one scrape reads.
const MAX_GROUP_OFFSET_BYTES: usize = 8 << 20;

/// Escapes a label value as the text format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (buckets, count, sum) = h.snapshot();
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in LATENCY_BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

pub async fn metrics(State(state): State<Arc<HttpState>>, Extension(user): Extension<super::User>) -> Response {
    // Topic, group and query names are everyone's business only without passwords.
    if state.auth_required && !state.engine.users.is_superuser(&user.0) {
        return super::error_response(StatusCode::FORBIDDEN, 40301, "/metrics takes a superuser");
    }
    let state2 = state.clone();
    // The store scan and RocksDB properties block: off the async runtime.
    let text = tokio::task::spawn_blocking(move || render(&state2)).await.unwrap_or_default();
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

fn render(state: &HttpState) -> String {
    let mut out = String::with_capacity(16 << 10);
    let engine = &state.engine;

    help(
        &mut out,
        "eddy_kafka_request_duration_seconds",
        "histogram",
        "Kafka requests by API, from decode to encoded response.",
    );
    for (key, h) in metrics::KAFKA_REQUESTS.iter().enumerate() {
        if h.count() == 0 {
            continue;
        }
        let api = ApiKey::try_from(key as i16).map(|k| format!("{k:?}")).unwrap_or_else(|_| key.to_string());
        histogram(&mut out, "eddy_kafka_request_duration_seconds", &format!("api=\"{api}\""), h);
    }
    help(&mut out, "eddy_kafka_bytes_total", "counter", "Bytes of Kafka request and response frames.");
    let _ =
        writeln!(out, "eddy_kafka_bytes_total{{direction=\"in\"}} {}", metrics::KAFKA_BYTES_IN.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "eddy_kafka_bytes_total{{direction=\"out\"}} {}",
        metrics::KAFKA_BYTES_OUT.load(Ordering::Relaxed)
    );
    help(&mut out, "eddy_kafka_connections", "gauge", "Kafka client connections open.");
    let _ = writeln!(out, "eddy_kafka_connections {}", metrics::KAFKA_CONNECTIONS.load(Ordering::Relaxed));
    help(&mut out, "eddy_pg_connections", "gauge", "Postgres client connections open.");
    let _ = writeln!(out, "eddy_pg_connections {}", metrics::PG_CONNECTIONS.load(Ordering::Relaxed));
    help(&mut out, "eddy_http_requests_total", "counter", "HTTP requests answered, by status class.");
    for (class, n) in metrics::HTTP_REQUESTS.iter().enumerate().skip(1) {
        let _ = writeln!(out, "eddy_http_requests_total{{code=\"{class}xx\"}} {}", n.load(Ordering::Relaxed));
    }
    help(
        &mut out,
        "eddy_http_request_duration_seconds",
        "histogram",
        "HTTP requests until the response head (streamed bodies go on after).",
    );
    histogram(&mut out, "eddy_http_request_duration_seconds", "", &metrics::HTTP_REQUEST_DURATION);

    // The log: per partition, bounded.
    let topics = engine.log.topics();
    help(
        &mut out,
        "eddy_partition_high_watermark",
        "gauge",
        "Offset after the last record readers may see, per partition.",
    );
    let mut series = 0;
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in &topics {
        for (i, p) in t.partitions.iter().enumerate() {
            ends.insert((t.name.clone(), i as i32), p.high_watermark());
            if series < MAX_PARTITION_SERIES {
                series += 1;
                let _ = writeln!(
                    out,
                    "eddy_partition_high_watermark{{topic=\"{}\",partition=\"{i}\"}} {}",
                    label(&t.name),
                    p.high_watermark()
                );
            }
        }
    }
    help(&mut out, "eddy_partition_log_start_offset", "gauge", "First offset still held, per partition.");
    series = 0;
    for t in &topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if series < MAX_PARTITION_SERIES {
                series += 1;
                let _ = writeln!(
                    out,
                    "eddy_partition_log_start_offset{{topic=\"{}\",partition=\"{i}\"}} {}",
                    label(&t.name),
                    p.log_start_offset()
                );
            }
        }
    }
    help(&mut out, "eddy_topics", "gauge", "Topics in the log.");
    let _ = writeln!(out, "eddy_topics {}", topics.len());

    // Consumer groups: committed offsets against the partitions' ends.
    help(
        &mut out,
        "eddy_consumer_group_lag",
        "gauge",
        "Records between a group's committed offsets and the partitions' ends, per group and topic.",
    );
    let mut lag: BTreeMap<(String, String), i64> = BTreeMap::new();
    if let Ok(rows) = engine.store.scan_prefix(CATALOG_CF, b"groupoffset/", MAX_GROUP_OFFSET_BYTES) {
        for (k, v) in rows {
            let key = String::from_utf8_lossy(&k[b"groupoffset/".len()..]).to_string();
            let mut parts = key.split('\0');
            let (Some(group), Some(topic), Some(partition)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else { continue };
            // As OffsetCommit stores it: {"offset": n, ...}.
            let committed = serde_json::from_slice::<serde_json::Value>(&v).ok().and_then(|v| v["offset"].as_i64());
            let Some(committed) = committed else { continue };
            if let Some(end) = ends.get(&(topic.to_string(), partition)) {
                *lag.entry((group.to_string(), topic.to_string())).or_default() += (end - committed).max(0);
            }
        }
    }
    for ((group, topic), n) in lag.iter().take(MAX_GROUP_SERIES) {
        let _ = writeln!(out, "eddy_consumer_group_lag{{group=\"{}\",topic=\"{}\"}} {n}", label(group), label(topic));
    }

    // Queries.
    let stats = engine.query_stats();
    help(&mut out, "eddy_query_running", "gauge", "1 while a persistent query runs.");
    for q in &stats {
        let _ = writeln!(out, "eddy_query_running{{query_id=\"{}\"}} {}", label(&q.id), u8::from(q.running));
    }
    help(
        &mut out,
        "eddy_query_processed_records_total",
        "counter",
        "Input records a persistent query processed since it started.",
    );
    for q in &stats {
        let _ = writeln!(
            out,
            "eddy_query_processed_records_total{{query_id=\"{}\"}} {}",
            label(&q.id),
            q.processed_records
        );
    }
    help(
        &mut out,
        "eddy_query_late_records_total",
        "counter",
        "Records that arrived after their window's grace period.",
    );
    for q in &stats {
        let _ = writeln!(out, "eddy_query_late_records_total{{query_id=\"{}\"}} {}", label(&q.id), q.late_records);
    }
    help(
        &mut out,
        "eddy_query_lost_records_total",
        "counter",
        "Input records retention deleted before the query read them.",
    );
    for q in &stats {
        let _ = writeln!(out, "eddy_query_lost_records_total{{query_id=\"{}\"}} {}", label(&q.id), q.lost_records);
    }
    help(&mut out, "eddy_query_lag_records", "gauge", "Input records not yet covered by the query's last checkpoint.");
    for q in &stats {
        let _ = writeln!(out, "eddy_query_lag_records{{query_id=\"{}\"}} {}", label(&q.id), q.lag_records);
    }
    help(&mut out, "eddy_push_queries", "gauge", "Push queries running for clients.");
    let _ = writeln!(out, "eddy_push_queries {}", engine.push_query_count());
    help(
        &mut out,
        "eddy_checkpoint_duration_seconds",
        "histogram",
        "Checkpoints of continuous queries: sink appends, the synced state write, the publish.",
    );
    histogram(&mut out, "eddy_checkpoint_duration_seconds", "", &metrics::CHECKPOINTS);
    help(
        &mut out,
        "eddy_malformed_records_total",
        "counter",
        "Records logged to the processing log (eddy_processing_log) and skipped.",
    );
    let logged: i64 = engine
        .log
        .topic(crate::dataflow::sink::PROCESSING_LOG)
        .map(|t| t.partitions.iter().map(|p| p.high_watermark()).sum())
        .unwrap_or(0);
    let _ = writeln!(out, "eddy_malformed_records_total {logged}");
    help(&mut out, "eddy_state_bytes", "gauge", "RocksDB's estimate of the state store's live data.");
    let _ = writeln!(out, "eddy_state_bytes {}", engine.store.live_bytes());
    out
}
