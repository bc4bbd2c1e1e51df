//! What runs and how: SHOW, DESCRIBE [EXTENDED], DESCRIBE STREAMS|TABLES, EXPLAIN (of a
//! statement or of a running query), ASSERT TOPIC; and PAUSE / RESUME of persistent queries.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::{Engine, Output};
use crate::catalog::{CatalogChange, QueryDef, RelationDef};
use crate::dataflow::RunningQuery;
use crate::error::{EddyError, Result};
use crate::format::KeyWindow;
use crate::plan::{plan_continuous, WINDOWSTART};
use crate::sql::{RelationKind, Statement};

/// How long ASSERT TOPIC waits without a TIMEOUT (ksqlDB's
/// `ksql.assert.topic.default.timeout.ms`).
const ASSERT_TOPIC_TIMEOUT_MS: u64 = 1_000;
/// The longest TIMEOUT ASSERT TOPIC takes: a statement waits no longer.
const ASSERT_TOPIC_MAX_TIMEOUT_MS: u64 = 3_600_000;

impl Engine {
    pub(super) fn show(&self, what: &str) -> Result<Output> {
        match what {
            "functions" => self.show_functions(),
            "streams" | "tables" => {
                let kind = if what == "streams" { RelationKind::Stream } else { RelationKind::Table };
                let rows = self
                    .catalog
                    .relations()
                    .iter()
                    .filter(|r| r.kind == kind)
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.topic.clone(),
                            key_format(r),
                            r.value_format.clone(),
                            is_windowed(r).to_string(),
                        ]
                    })
                    .collect();
                let first = if kind == RelationKind::Stream { "stream_name" } else { "table_name" };
                Ok(strings_output(&[first, "kafka_topic", "key_format", "value_format", "is_windowed"], rows, "SHOW"))
            }
            "topics" => {
                let rows = self
                    .log
                    .topics()
                    .iter()
                    .map(|t| {
                        let records: i64 = t.partitions.iter().map(|p| p.high_watermark() - p.log_start_offset()).sum();
                        vec![t.name.clone(), t.partitions.len().to_string(), records.to_string()]
                    })
                    .collect();
                Ok(strings_output(&["kafka_topic", "partitions", "records"], rows, "SHOW"))
            }
            "queries" => {
                let running = self.lock_queries();
                let rows = self
                    .catalog
                    .queries()
                    .into_iter()
                    .map(|q| {
                        let lag = running.get(&q.id).map(|r| crate::dataflow::lag(&self.log, r).to_string());
                        let sink_topic =
                            q.sink.as_ref().and_then(|s| self.catalog.relation(s)).map(|r| r.topic).unwrap_or_default();
                        vec![
                            q.id.clone(),
                            self.query_status(&q, running.get(&q.id)),
                            q.sink.clone().unwrap_or_else(|| q.source.clone()),
                            sink_topic,
                            q.sql.clone(),
                            lag.unwrap_or_default(),
                        ]
                    })
                    .collect::<Vec<_>>();
                drop(running);
                // Push queries with state of their own (GROUP BY, joins), as ksqlDB lists them.
                let push = self.runtime.push_queries.lock().unwrap_or_else(|p| p.into_inner());
                let rows = rows
                    .into_iter()
                    .chain(push.iter().map(|(id, q)| {
                        vec![id.clone(), "RUNNING".into(), String::new(), String::new(), q.sql.clone(), String::new()]
                    }))
                    .collect();
                Ok(strings_output(
                    &["query_id", "status", "sink_name", "sink_kafka_topic", "query_string", "lag"],
                    rows,
                    "SHOW",
                ))
            }
            other => {
                let value = super::pg_catalog::setting(other).ok_or_else(|| {
                    EddyError::InvalidValue(format!("unrecognized configuration parameter \"{other}\""))
                })?;
                Ok(strings_output(&[other], vec![vec![value.to_string()]], "SHOW"))
            }
        }
    }

    /// A persistent query's status as SHOW QUERIES and EXPLAIN give it.
    fn query_status(&self, q: &QueryDef, running: Option<&RunningQuery>) -> String {
        match running {
            Some(r) if r.is_running() => {
                let lost = r.status.lost_records.load(Ordering::Relaxed);
                let spilled = r.status.spilled_keys.load(Ordering::Relaxed);
                match r.status.error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    Some(e) => format!("RUNNING ({e})"),
                    None if lost > 0 => format!(
                        "RUNNING ({lost} input records deleted by retention before they were read; see eddy_processing_log)"
                    ),
                    None if spilled > 0 => format!(
                        "RUNNING (join buffers reached --query-memory-bytes: {spilled} keys spilled to the state store, {} read back)",
                        r.status.reloaded_keys.load(Ordering::Relaxed)
                    ),
                    None => "RUNNING".to_string(),
                }
            }
            Some(r) => {
                format!(
                    "ERROR: {}",
                    r.status.error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
                )
            }
            None if q.paused => "PAUSED".to_string(),
            None => match self.failed_queries().get(&q.id) {
                Some(reason) => format!("ERROR: {reason}"),
                None => "NOT RUNNING".to_string(),
            },
        }
    }

    /// `DESCRIBE name`: its columns; `EXTENDED`: also its topic, formats, the queries that
    /// read and write it and their statistics, as (property, value) rows.
    pub(super) fn describe(&self, name: &str, extended: bool) -> Result<Output> {
        let rel = self
            .catalog
            .relation(name)
            .ok_or_else(|| EddyError::UndefinedRelation(format!("stream or table {name}")))?;
        if extended {
            return Ok(strings_output(&["property", "value"], self.describe_extended(&rel), "DESCRIBE"));
        }
        Ok(strings_output(&["field", "type", "key"], fields(&rel), "DESCRIBE"))
    }

    /// `DESCRIBE STREAMS | TABLES [EXTENDED]` (and `SHOW STREAMS | TABLES EXTENDED`): each
    /// one's DESCRIBE, its name in the first column.
    pub(super) fn describe_all(&self, kind: RelationKind, extended: bool) -> Result<Output> {
        let mut rows = Vec::new();
        for rel in self.catalog.relations().into_iter().filter(|r| r.kind == kind) {
            let described = if extended { self.describe_extended(&rel) } else { fields(&rel) };
            rows.extend(described.into_iter().map(|row| std::iter::once(rel.name.clone()).chain(row).collect()));
        }
        let first = if kind == RelationKind::Stream { "stream_name" } else { "table_name" };
        let names: &[&str] = if extended { &[first, "property", "value"] } else { &[first, "field", "type", "key"] };
        Ok(strings_output(names, rows, "DESCRIBE"))
    }

    fn describe_extended(&self, rel: &RelationDef) -> Vec<Vec<String>> {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut add = |property: &str, value: String| rows.push((property.to_string(), value));
        add("name", rel.name.clone());
        add("type", rel.kind.word().to_string());
        add("timestamp field", rel.timestamp_column.clone().unwrap_or_else(|| "Not set - using <ROWTIME>".to_string()));
        add("key format", key_format(rel));
        add("value format", rel.value_format.clone());
        add("windowed", is_windowed(rel).to_string());
        match rel.key_window {
            Some(w @ (KeyWindow::Tumbling { size_ms } | KeyWindow::Hopping { size_ms })) => {
                add("window type", w.type_name().to_string());
                add("window size", format!("{size_ms} ms"));
            }
            Some(KeyWindow::Session) => add("window type", "SESSION".to_string()),
            None => {}
        }
        let (partitions, records) = match self.log.topic(&rel.topic) {
            Some(t) => (
                t.partitions.len().to_string(),
                t.partitions.iter().map(|p| p.high_watermark() - p.log_start_offset()).sum::<i64>().to_string(),
            ),
            None => ("(topic missing)".to_string(), "0".to_string()),
        };
        add("kafka topic", format!("{} (partitions: {partitions}, replication: 1)", rel.topic));
        add("records in topic", records);
        let queries = self.catalog.queries();
        let writers: Vec<&QueryDef> = queries
            .iter()
            .filter(|q| {
                q.sink.as_deref() == Some(rel.name.as_str()) || rel.materialized_by.as_deref() == Some(q.id.as_str())
            })
            .collect();
        if let Some(q) = writers.iter().find(|q| rel.written_by.as_deref() == Some(q.id.as_str())) {
            add("statement", q.sql.clone());
        }
        for (name, ty, key) in fields(rel).into_iter().map(|f| (f[0].clone(), f[1].clone(), f[2].clone())) {
            add("field", if key.is_empty() { format!("{name} {ty}") } else { format!("{name} {ty} {key}") });
        }
        let running = self.lock_queries();
        for q in queries.iter().filter(|q| q.inputs.contains(&rel.name) || q.source == rel.name) {
            if rel.materialized_by.as_deref() != Some(q.id.as_str()) {
                add("read by", format!("{} : {}", q.id, q.sql));
            }
        }
        for q in &writers {
            add("written by", format!("{} : {}", q.id, q.sql));
        }
        for q in &writers {
            let status = self.query_status(q, running.get(&q.id));
            let stats = match running.get(&q.id) {
                Some(r) => format!(
                    "{status}; processed records: {}, late records: {}, lag: {}",
                    r.status.processed_records.load(Ordering::Relaxed),
                    r.status.late_records.load(Ordering::Relaxed),
                    crate::dataflow::lag(&self.log, r)
                ),
                None => status,
            };
            add("statistics", format!("{} : {stats}", q.id));
        }
        drop(running);
        rows.into_iter().map(|(p, v)| vec![p, v]).collect()
    }

    pub(super) async fn explain(&self, inner: Statement) -> Result<Output> {
        let text = match inner {
            Statement::Select(select) | Statement::CreateAs { select, .. }
                if select.emit_changes || !select.relations.is_empty() =>
            {
                match self.sources(&select) {
                    Ok(inputs) if select.emit_changes => plan_continuous(&select, &inputs).await?.description,
                    _ => {
                        let ctx = self.pull_context(&select, false).await?;
                        let df = crate::functions::lambdas::plan_sql(&ctx, &select.sql).await?;
                        format!("{}", df.logical_plan().display_indent())
                    }
                }
            }
            Statement::CreateAs { select, .. } | Statement::Select(select) => {
                let ctx = self.pull_context(&select, false).await?;
                format!(
                    "{}",
                    crate::functions::lambdas::plan_sql(&ctx, &select.sql).await?.logical_plan().display_indent()
                )
            }
            _ => return Err(EddyError::InvalidValue("EXPLAIN takes a SELECT or a CREATE ... AS SELECT".into())),
        };
        Ok(plan_lines(text.lines()))
    }

    /// ksqlDB's `EXPLAIN query_id`: what a persistent query reads and writes, its status
    /// and the plan it runs.
    pub(super) async fn explain_query(&self, query_id: &str) -> Result<Output> {
        let q = self.find_query(query_id)?;
        let (plan, _) = self.replan(&q).await?;
        let status = self.query_status(&q, self.lock_queries().get(&q.id));
        let sink = match q.sink.as_ref().and_then(|s| self.catalog.relation(s)) {
            Some(rel) => format!("{} (topic {})", rel.name, rel.topic),
            None => format!("{} (its state)", q.source),
        };
        let inputs = if q.inputs.is_empty() { q.source.clone() } else { q.inputs.join(", ") };
        let mut lines = vec![
            format!("ID: {}", q.id),
            "Query type: PERSISTENT".to_string(),
            format!("SQL: {}", q.sql),
            format!("Status: {status}"),
            format!("Reads: {inputs}"),
            format!("Writes: {sink}"),
            "Fields:".to_string(),
        ];
        lines.extend(plan.output_columns.iter().map(|c| {
            let key = if c.key { " (key)" } else { "" };
            format!("  {} {}{key}", c.name, c.ty.name())
        }));
        lines.push("Execution plan:".to_string());
        lines.extend(plan.description.lines().map(|l| format!("  {l}")));
        Ok(plan_lines(lines.iter().map(String::as_str)))
    }

    /// A persistent query by id, any case.
    fn find_query(&self, query_id: &str) -> Result<QueryDef> {
        self.catalog
            .queries()
            .into_iter()
            .find(|q| q.id.eq_ignore_ascii_case(query_id))
            .ok_or_else(|| EddyError::UndefinedRelation(format!("query {query_id}")))
    }

    /// `ASSERT [NOT EXISTS] TOPIC name [WITH (PARTITIONS = n, REPLICAS = n)] [TIMEOUT ...]`:
    /// waits up to the timeout for the topic to exist (not to) with those settings, then
    /// succeeds or fails with what differs.
    pub(super) async fn assert_topic(
        &self,
        topic: &str,
        exact: bool,
        exists: bool,
        props: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
    ) -> Result<Output> {
        // Only PARTITIONS and REPLICAS are checked (any other is an error); ASSERT NOT EXISTS
        // checks none.
        let mut wanted = Vec::new();
        for (prop, value) in props.iter().filter(|_| exists) {
            if !matches!(prop.as_str(), "PARTITIONS" | "REPLICAS") {
                return Err(EddyError::InvalidValue(format!("Cannot assert unknown topic property: {prop}")));
            }
            let n: i64 = value.parse().map_err(|_| {
                EddyError::InvalidValue(format!("ASSERT TOPIC: {prop} takes a whole number, got {value}"))
            })?;
            wanted.push((prop.to_lowercase(), n));
        }
        let timeout = timeout_ms.unwrap_or(ASSERT_TOPIC_TIMEOUT_MS).min(ASSERT_TOPIC_MAX_TIMEOUT_MS);
        let deadline = Instant::now() + Duration::from_millis(timeout);
        loop {
            let found = self.log.topics().into_iter().find(|t| {
                if exact {
                    t.name == topic
                } else {
                    t.name.eq_ignore_ascii_case(topic)
                }
            });
            let failure = match (found, exists) {
                (None, true) => Some(EddyError::UndefinedObject(format!("Topic {topic} does not exist"))),
                (Some(t), false) => Some(EddyError::DuplicateObject(format!("Topic {} exists", t.name))),
                (None, false) => None,
                (Some(t), true) => {
                    let actual = |p: &str| if p == "partitions" { t.partitions.len() as i64 } else { 1 };
                    let mismatched: Vec<String> = wanted
                        .iter()
                        .filter(|(p, n)| actual(p) != *n)
                        .map(|(p, n)| format!("For config {p}, expected {n} got {}", actual(p)))
                        .collect();
                    (!mismatched.is_empty()).then(|| {
                        EddyError::InvalidValue(format!(
                            "Mismatched configuration for topic {}: {}",
                            t.name,
                            mismatched.join("\n")
                        ))
                    })
                }
            };
            match failure {
                None => return Ok(Output::Command { tag: "ASSERT TOPIC".into() }),
                Some(e) if Instant::now() >= deadline => return Err(e),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `ASSERT [NOT EXISTS] SCHEMA [SUBJECT 'name'] [ID n] [TIMEOUT ...]`: waits up to the
    /// timeout for the Schema Registry to hold (not to hold) the subject, the id, or the id
    /// as a version of the subject.
    pub(super) async fn assert_schema(
        &self,
        subject: Option<&str>,
        id: Option<u32>,
        exists: bool,
        timeout_ms: Option<u64>,
    ) -> Result<Output> {
        let timeout = timeout_ms.unwrap_or(ASSERT_TOPIC_TIMEOUT_MS).min(ASSERT_TOPIC_MAX_TIMEOUT_MS);
        let deadline = Instant::now() + Duration::from_millis(timeout);
        let named = match (subject, id) {
            (Some(s), Some(id)) => format!("subject name {s} id {id}"),
            (Some(s), None) => format!("subject name {s}"),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => return Err(EddyError::InvalidValue("ASSERT SCHEMA names a subject or an id".into())),
        };
        loop {
            let found = match (subject, id) {
                (Some(s), Some(id)) => {
                    self.registry.usages(id).is_ok_and(|u| u.iter().any(|(subject, _)| subject == s))
                }
                (Some(s), None) => self.registry.versions(s, false).is_ok_and(|v| !v.is_empty()),
                (None, Some(id)) => self.registry.schema(id).is_ok(),
                (None, None) => false,
            };
            let failure = match (found, exists) {
                (false, true) => Some(EddyError::UndefinedObject(format!("Schema with {named} does not exist"))),
                (true, false) => Some(EddyError::DuplicateObject(format!("Schema with {named} exists"))),
                _ => None,
            };
            match failure {
                None => return Ok(Output::Command { tag: "ASSERT SCHEMA".into() }),
                Some(e) if Instant::now() >= deadline => return Err(e),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `PAUSE query_id | ALL`: the query stops where its last checkpoint is, keeping its state
    /// and its outputs (no one else writes them), also across restarts, until `RESUME`, which
    /// goes on from there.
    pub(super) async fn pause_resume(&self, user: &str, query_id: Option<String>, pause: bool) -> Result<Output> {
        let verb = if pause { "PAUSE" } else { "RESUME" };
        let _ddl = self.ddl.lock().await;
        let queries: Vec<QueryDef> = match query_id {
            Some(id) if id.to_lowercase().starts_with(crate::dataflow::TRANSIENT_PREFIX) => {
                return Err(EddyError::InvalidValue(format!(
                    "{verb} takes a persistent query's id; {id} is a push query (TERMINATE ends it)"
                )))
            }
            Some(id) => {
                let q = self.find_query(&id)?;
                if q.id.starts_with("MAT_") {
                    return Err(EddyError::InvalidValue(format!("{} keeps table {} current", q.id, q.source)));
                }
                vec![q]
            }
            None => self.catalog.queries().into_iter().filter(|q| !q.id.starts_with("MAT_")).collect(),
        };
        let queries: Vec<QueryDef> = queries.into_iter().filter(|q| q.paused != pause).collect();
        // All or nothing, as TERMINATE ALL.
        for q in &queries {
            self.require_query_owner(user, &q.id, &verb.to_lowercase())?;
        }
        if !pause {
            let running = self.lock_queries().len();
            let resumed = queries.iter().filter(|q| !self.lock_queries().contains_key(&q.id)).count();
            if running + resumed > self.config.max_queries {
                return Err(EddyError::LimitExceeded(format!(
                    "at most {} persistent queries run at once",
                    self.config.max_queries
                )));
            }
        }
        for q in queries {
            let change =
                CatalogChange { put_queries: vec![QueryDef { paused: pause, ..q.clone() }], ..Default::default() };
            if pause {
                // The catalog first: a crash after it leaves the query paused, as asked.
                self.catalog.apply(change)?;
                let stopped = self.lock_queries().remove(&q.id);
                if let Some(running) = stopped {
                    running.stop();
                }
            } else if !self.lock_queries().contains_key(&q.id) {
                let (plan, sink) = self.replan(&q).await?;
                let late = plan.late_data_to.as_ref().and_then(|n| self.catalog.relation(n));
                let running = self.runtime.start_persistent(&q.id, plan, sink, late, false)?;
                if let Err(e) = self.catalog.apply(change) {
                    running.stop();
                    return Err(e);
                }
                self.failed_queries().remove(&q.id);
                self.lock_queries().insert(q.id.clone(), running);
            }
        }
        Ok(Output::Command { tag: verb.into() })
    }
}

/// A relation's columns as DESCRIBE lists them: name, type, and `KEY` / `PRIMARY KEY`.
fn fields(rel: &RelationDef) -> Vec<Vec<String>> {
    let key_word = if rel.kind == RelationKind::Table { "PRIMARY KEY" } else { "KEY" };
    rel.columns
        .iter()
        .map(|c| {
            vec![c.name.clone(), c.ty.name().to_string(), if c.key { key_word.to_string() } else { String::new() }]
        })
        .collect()
}

fn key_format(rel: &RelationDef) -> String {
    rel.key_format.name().to_string()
}

/// A windowed table (or a stream made from one) keys its rows by window too.
fn is_windowed(rel: &RelationDef) -> bool {
    rel.columns.iter().any(|c| c.key && c.name == WINDOWSTART)
}

/// Lines of text as EXPLAIN's one-column result.
fn plan_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Output {
    strings_output(&["plan"], lines.map(|l| vec![l.to_string()]).collect(), "EXPLAIN")
}

/// One persistent query's counters, as `/metrics` reports them.
#[derive(Debug, Clone)]
pub struct QueryStats {
    pub id: String,
    pub running: bool,
    pub processed_records: u64,
    pub late_records: u64,
    pub lost_records: u64,
    /// Records of its inputs not yet covered by a checkpoint.
    pub lag_records: i64,
}

impl Engine {
    /// Every persistent query's counters (stopped ones with zeros).
    pub fn query_stats(&self) -> Vec<QueryStats> {
        let running = self.lock_queries();
        self.catalog
            .queries()
            .into_iter()
            .map(|q| match running.get(&q.id) {
                Some(r) => QueryStats {
                    id: q.id.clone(),
                    running: r.is_running(),
                    processed_records: r.status.processed_records.load(Ordering::Relaxed),
                    late_records: r.status.late_records.load(Ordering::Relaxed),
                    lost_records: r.status.lost_records.load(Ordering::Relaxed),
                    lag_records: crate::dataflow::lag(&self.log, r),
                },
                None => QueryStats {
                    id: q.id.clone(),
                    running: false,
                    processed_records: 0,
                    late_records: 0,
                    lost_records: 0,
                    lag_records: 0,
                },
            })
            .collect()
    }

    /// Push queries running now (their clients' statements).
    pub fn push_query_count(&self) -> usize {
        self.runtime.push_queries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A result of text columns.
pub(super) fn strings_output(names: &[&str], rows: Vec<Vec<String>>, tag: &str) -> Output {
    let schema = Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()));
    // A row shorter than the names reads empty text there (never a panic).
    let columns: Vec<ArrayRef> = (0..names.len())
        .map(|i| {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.get(i).map_or("", String::as_str))))
                as ArrayRef
        })
        .collect();
    let batches = match RecordBatch::try_new(schema.clone(), columns) {
        Ok(batch) => vec![batch],
        Err(e) => {
            tracing::error!("a bug in Eddy: a text result does not fit its columns: {e}");
            Vec::new()
        }
    };
    Output::Rows { schema, batches, tag: tag.to_string() }
}
