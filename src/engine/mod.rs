//! The engine: one place where a parsed statement meets the log, the catalog, the planner
//! and the runtime. DDL (path 5) and serving (path 4) start here; `pgwire/` only translates
//! the results to the wire.

mod alter;
mod avro_schema;
mod custom_types;
mod ddl;
mod function_docs;
mod inspect;
pub use inspect::QueryStats;
pub mod pg_catalog;
mod pg_functions;
mod pg_views;
mod point_lookup;
mod print;
mod privileges;
mod pull_table;
mod script;
mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::{Catalog, QueryDef, RelationDef};
use crate::dataflow::sink::{ProcessingLog, PROCESSING_LOG};
use crate::dataflow::{RunningQuery, Runtime, RuntimeConfig};
use crate::error::{EddyError, Result};
use crate::format::{Column, KeyFormat, SqlType};
use crate::log::{Clock, Log, SystemClock, TopicConfig};
use crate::plan::{plan_continuous, upsert_plan, ContinuousPlan};
use crate::sql::{self, Located, Privilege, RelationKind, Statement};
use crate::state::StateStore;

/// Limits and defaults the server runs with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Most bytes one pull query or bounded scan may load.
    pub query_memory_bytes: usize,
    /// Most persistent queries at once.
    pub max_queries: usize,
    pub default_partitions: i32,
    pub checkpoint_interval: Duration,
    /// Nice value of query threads (see `RuntimeConfig::nice`).
    pub query_nice: i32,
    /// See `RuntimeConfig::idle_partition_timeout`.
    pub idle_partition_timeout: Duration,
    /// See `RuntimeConfig::query_threads`.
    pub query_threads: usize,
    /// See `RuntimeConfig::parallel_min_rows`.
    pub query_parallel_min_rows: usize,
    /// Most rows a pull query may return (0: no limit).
    pub max_result_rows: usize,
    /// Pull queries running longer are cancelled (`SET statement_timeout` overrides it).
    pub statement_timeout: Option<Duration>,
    /// Backups of the state store, the fall-back when it is damaged.
    pub backups: crate::state::backup::BackupConfig,
}

impl EngineConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        EngineConfig {
            data_dir,
            query_memory_bytes: 256 << 20,
            max_queries: 256,
            default_partitions: 1,
            checkpoint_interval: Duration::from_millis(200),
            query_nice: 0,
            idle_partition_timeout: crate::dataflow::DEFAULT_IDLE_PARTITION_TIMEOUT,
            query_threads: crate::dataflow::default_query_threads().into(),
            query_parallel_min_rows: crate::dataflow::DEFAULT_PARALLEL_MIN_ROWS,
            max_result_rows: 0,
            statement_timeout: None,
            backups: Default::default(),
        }
    }
}

/// What a statement returns.
pub enum Output {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        tag: String,
    },
    Command {
        tag: String,
    },
    /// A push query: batches arrive until `limit` rows were sent or the client cancels.
    Push {
        schema: SchemaRef,
        limit: Option<usize>,
        rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    },
    /// COPY (...) TO STDOUT around a push or bounded query.
    CopyOut(Box<Output>),
}

/// Per-connection settings (`SET 'auto.offset.reset' = 'earliest'`).
#[derive(Debug, Default, Clone)]
pub struct Session {
    pub settings: HashMap<String, String>,
    /// ksqlDB's variables (`DEFINE`), replaced in later statements (`sql::variables`).
    pub variables: std::collections::BTreeMap<String, String>,
    /// Who is connected (the startup message's user, authenticated or trusted).
    pub user: String,
    /// The server's defaults (`ALTER SYSTEM`) as of the statement running: `settings` win.
    pub system: std::collections::BTreeMap<String, String>,
}

impl Session {
    pub fn for_user(user: &str) -> Session {
        Session { user: user.to_string(), ..Session::default() }
    }

    /// A property as the session SET it, else as ALTER SYSTEM did.
    pub fn setting(&self, name: &str) -> Option<&String> {
        self.settings.get(name).or_else(|| self.system.get(name))
    }

    /// A duration setting in Postgres's units (`5s`, `500ms`, `1min`; a bare number is
    /// milliseconds); `Some(None)` when set to 0 (off).
    pub fn duration(&self, name: &str) -> Option<Option<Duration>> {
        self.setting(name).map(|v| parse_duration(v))
    }

    pub fn earliest(&self) -> bool {
        self.setting("auto.offset.reset").is_some_and(|v| v.eq_ignore_ascii_case("earliest"))
    }
}

/// `5s`, `500ms`, `1min`, `2h`, or milliseconds; 0 or unparsable: `None` (off).
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000.0,
        "min" | "mins" | "minute" | "minutes" => n * 60_000.0,
        "h" | "hour" | "hours" => n * 3_600_000.0,
        _ => return None,
    };
    (ms > 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64))
}

/// The log's clock: the system's, moved by `EDDY_CLOCK_OFFSET_MS` when set (a test hook:
/// retention and compaction after "30 days" without waiting for them).
fn clock() -> Arc<dyn Clock> {
    match std::env::var("EDDY_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse::<i64>().ok()) {
        Some(offset_ms) => {
            tracing::warn!("the log's clock runs {offset_ms} ms off the system's (EDDY_CLOCK_OFFSET_MS)");
            Arc::new(OffsetClock(offset_ms))
        }
        None => Arc::new(SystemClock),
    }
}

/// The system clock plus a fixed offset.
struct OffsetClock(i64);

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.0)
    }
}

pub struct Engine {
    pub config: EngineConfig,
    /// Users of both endpoints (Postgres and Kafka).
    pub users: Arc<crate::auth::Users>,
    /// The Schema Registry's subjects and schemas.
    pub registry: Arc<crate::registry::Registry>,
    pub log: Arc<Log>,
    pub store: StateStore,
    pub catalog: Catalog,
    pub runtime: Runtime,
    queries: Mutex<HashMap<String, RunningQuery>>,
    /// Queries in the catalog that could not be resumed at start, with the reason
    /// (`SHOW QUERIES` says `ERROR`); their outputs stay fenced and cut.
    failed: Mutex<HashMap<String, String>>,
    /// DDL runs one statement at a time so names and query ids never race.
    ddl: tokio::sync::Mutex<()>,
    /// `pg_catalog` as of a catalog version, shared by pull queries until the next DDL.
    pg_catalog: Mutex<Option<(u64, Arc<pg_catalog::PgCatalog>)>>,
}

impl Engine {
    /// Opens the data directory: recovers the log, the catalog, and resumes every query.
    pub async fn open(config: EngineConfig) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| EddyError::Log(e.into()))?;
        let log = Arc::new(Log::open(&config.data_dir.join("log"), clock())?);
        let store = StateStore::open(&config.data_dir.join("state"), &config.backups)?;
        let catalog = Catalog::open(store.clone())?;
        crate::sql::custom_types::set(catalog.types());
        let users = Arc::new(crate::auth::Users::open(store.clone()).map_err(EddyError::State)?);
        let registry = Arc::new(crate::registry::Registry::open(store.clone()).map_err(EddyError::State)?);
        crate::registry::set_global(registry.clone());
        let runtime = Runtime {
            log: log.clone(),
            store: store.clone(),
            processing_log: ProcessingLog::direct(log.clone()),
            config: RuntimeConfig {
                checkpoint_interval: config.checkpoint_interval,
                nice: config.query_nice,
                idle_partition_timeout: config.idle_partition_timeout,
                query_threads: config.query_threads.max(1),
                parallel_min_rows: config.query_parallel_min_rows.max(1),
                join_memory_bytes: config.query_memory_bytes,
                state_cache_bytes: config.query_memory_bytes / 4,
                state_cache_total_bytes: config.query_memory_bytes,
                ..Default::default()
            },
            push_queries: Arc::default(),
        };
        let engine = Arc::new(Engine {
            config,
            users,
            registry,
            log,
            store,
            catalog,
            runtime,
            queries: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            ddl: tokio::sync::Mutex::new(()),
            pg_catalog: Mutex::new(None),
        });
        let weak = Arc::downgrade(&engine);
        engine.log.set_delete_guard(Box::new(move |topic| weak.upgrade()?.topic_user(topic)));
        engine.users.set_topic_policy(Box::new(privileges::Grants(Arc::downgrade(&engine))));
        if engine.store.read_only {
            tracing::error!("read-only start: continuous queries do not run until a restart with free disk space");
            return Ok(engine);
        }
        // Push queries' state, left by a crash (a clean stop drops it with each query).
        for cf in engine.store.column_families() {
            if cf.starts_with(&crate::dataflow::state_cf(crate::dataflow::TRANSIENT_PREFIX)) {
                engine.store.drop_cf(&cf)?;
            }
        }
        engine.ensure_processing_log()?;
        for topic in engine.catalog.pending_topic_deletes()? {
            engine.delete_dropped_topic(&topic)?;
        }
        for q in engine.catalog.queries() {
            if q.paused {
                // Its outputs stay its own until RESUME.
                engine.fence_query_outputs(&q);
                continue;
            }
            let plan = engine.replan(&q).await;
            let plan = plan.map(|(plan, sink)| {
                let late = plan.late_data_to.as_ref().and_then(|n| engine.catalog.relation(n));
                (plan, sink, late)
            });
            match plan.and_then(|(plan, sink, late)| engine.runtime.start_persistent(&q.id, plan, sink, late, false)) {
                Ok(running) => {
                    engine.lock_queries().insert(q.id.clone(), running);
                }
                Err(e) => engine.hold_failed_query(&q, e),
            }
        }
        Ok(engine)
    }

    /// A query that cannot resume is never silently gone: its outputs stay fenced with their
    /// uncommitted tail cut, and `SHOW QUERIES` shows it as `ERROR` with the reason.
    fn hold_failed_query(&self, q: &QueryDef, e: EddyError) {
        tracing::error!(query = %q.id, "could not resume query: {e}");
        self.fence_query_outputs(q);
        self.failed_queries().insert(q.id.clone(), format!("could not resume: {e}"));
    }

    /// Fences the outputs of a query that does not run (failed or paused) as its own, their
    /// uncommitted tail cut: no one else writes them.
    fn fence_query_outputs(&self, q: &QueryDef) {
        // Its sink (also a stream it appends to by INSERT INTO ... SELECT, which it does not
        // own), and the stream it writes late records to.
        let sink = q.sink.as_ref().and_then(|s| self.catalog.relation(s));
        let late = self
            .catalog
            .relations()
            .into_iter()
            .find(|r| r.written_by.as_deref() == Some(q.id.as_str()) && q.sink.as_ref() != Some(&r.name));
        if let Err(fence) = self.runtime.fence_outputs(&q.id, sink, late) {
            tracing::error!(query = %q.id, "could not fence the outputs of a query that does not run: {fence}");
        }
    }

    /// The stream or table that reads or writes `topic`, if any (such a topic is not
    /// deleted by Kafka's DeleteTopics: `DROP ... DELETE TOPIC` removes both).
    fn topic_user(&self, topic: &str) -> Option<String> {
        let rel = self.catalog.relations().into_iter().find(|r| r.topic == topic)?;
        let mut user = format!("{} {} uses it", rel.kind.word().to_lowercase(), rel.name);
        if let Some(q) = rel.written_by.as_ref().or(rel.materialized_by.as_ref()) {
            user.push_str(&format!(" (query {q})"));
        }
        user.push_str(&format!("; DROP {} {} DELETE TOPIC removes both", rel.kind.word(), rel.name));
        Some(user)
    }

    fn failed_queries(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_queries(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningQuery>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_processing_log(&self) -> Result<()> {
        if self.log.topic(PROCESSING_LOG).is_none() {
            self.log.create_topic(PROCESSING_LOG, TopicConfig::default())?;
        }
        if self.catalog.relation(PROCESSING_LOG).is_none() {
            let col = |name: &str, ty| Column { name: name.into(), ty, key: false };
            self.catalog.add(
                &RelationDef {
                    name: PROCESSING_LOG.into(),
                    kind: RelationKind::Stream,
                    columns: vec![
                        col("logged_at", SqlType::Timestamp),
                        col("query_id", SqlType::String),
                        col("topic", SqlType::String),
                        col("source_partition", SqlType::Int),
                        col("source_offset", SqlType::BigInt),
                        col("error", SqlType::String),
                        col("record", SqlType::String),
                    ],
                    topic: PROCESSING_LOG.into(),
                    key_format: KeyFormat::None,
                    key_window: None,
                    single_json_key_unwrapped: true,
                    value_format: "JSON".into(),
                    value_schema_id: None,
                    key_schema_id: None,
                    key_schema_full_name: None,
                    value_schema_full_name: None,
                    key_protobuf_nullable: Default::default(),
                    value_protobuf_nullable: Default::default(),
                    value_delimiter: None,
                    unwrap_single_value: false,
                    partitions: 1,
                    timestamp_column: None,
                    timestamp_format: None,
                    header_columns: Vec::new(),
                    written_by: None,
                    materialized_by: None,
                    owner: None,
                    grants: Default::default(),
                    state_key: None,
                    legacy_state_key_columns: None,
                },
                None,
            )?;
        }
        Ok(())
    }

    /// Re-plans a stored query from its SQL (at start-up and for EXPLAIN).
    async fn replan(&self, q: &QueryDef) -> Result<(ContinuousPlan, Option<RelationDef>)> {
        let source = self.catalog.relation(&q.source).ok_or_else(|| EddyError::UndefinedRelation(q.source.clone()))?;
        let sink = q.sink.as_ref().and_then(|s| self.catalog.relation(s));
        if source.materialized_by.as_deref() == Some(q.id.as_str()) && q.sink.is_none() {
            // A table declared over a topic: its materializer has no SELECT to re-plan.
            return Ok((upsert_plan(&source), None));
        }
        let stmt = sql::parse(&q.sql)?.into_iter().next().map(|l| l.statement);
        match stmt {
            Some(Statement::CreateAs { select, .. }) | Some(Statement::InsertSelect { select, .. }) => {
                Ok((plan_continuous(&select, &self.sources(&select)?).await?, sink))
            }
            _ => Ok((upsert_plan(&source), None)),
        }
    }

    /// Runs every statement in a query string, returning one output per statement.
    pub async fn execute_all(&self, session: &mut Session, sql: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for stmt in sql::parse(sql)? {
            out.push(self.execute(session, stmt).await?);
        }
        Ok(out)
    }

    pub async fn execute(&self, session: &mut Session, located: Located) -> Result<Output> {
        let user = session.user.clone();
        session.system = self.catalog.system_settings();
        match located.statement {
            Statement::AlterSystem { name, value } => self.alter_system(session, &name, value),
            Statement::CreateSource { kind, name, columns, headers, props, if_not_exists, or_replace } => {
                let source = ddl::SourceDef { kind, name, columns, headers, props };
                self.create_source(&user, source, if_not_exists, or_replace).await
            }
            Statement::CreateAs { kind, name, props, select, if_not_exists, or_replace: true, text } => {
                let _ = if_not_exists;
                self.replace_query(&user, kind, name, props, select, text).await
            }
            Statement::CreateAs { kind, name, props, select, if_not_exists, text, .. } => {
                self.create_as(&user, kind, name, props, select, if_not_exists, text).await
            }
            Statement::InsertSelect { target, props, select, text } => {
                self.insert_select(&user, target, props, select, text).await
            }
            Statement::Insert { target, columns, rows } => {
                if let Some(rel) = self.catalog.relation(&target) {
                    self.require_privilege(&user, &rel, Privilege::Insert)?;
                }
                self.insert(&target, &columns, &rows).await
            }
            Statement::Select(select) if select.emit_changes => {
                self.require_select(&user, &select.relations)?;
                self.push_query(session, &select).await
            }
            Statement::Select(select) => {
                self.require_select(&user, &select.relations)?;
                self.pull_query(&select).await
            }
            Statement::CopyOut(select) => {
                self.require_select(&user, &select.relations)?;
                let inner = if select.emit_changes {
                    self.push_query(session, &select).await?
                } else {
                    self.pull_query(&select).await?
                };
                Ok(Output::CopyOut(Box::new(inner)))
            }
            Statement::Show { what } if what == "variables" => {
                let rows = session.variables.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
                Ok(inspect::strings_output(&["variable_name", "value"], rows, "SHOW"))
            }
            Statement::Show { what } if what == "types" => Ok(self.show_types()),
            Statement::Show { what } if what == "properties" => {
                // The properties Eddy acts on, with their defaults, then what the session SET.
                let defaults =
                    [("auto.offset.reset", "latest"), ("eddy.fetch_timeout", "1s"), ("statement_timeout", "0")];
                let mut rows: Vec<Vec<String>> = defaults
                    .iter()
                    .filter(|(k, _)| !session.settings.contains_key(*k) && !session.system.contains_key(*k))
                    .map(|(k, v)| vec![k.to_string(), v.to_string(), "default".to_string()])
                    .collect();
                rows.extend(
                    session
                        .system
                        .iter()
                        .filter(|(k, _)| !session.settings.contains_key(*k))
                        .map(|(k, v)| vec![k.clone(), v.clone(), "system".to_string()]),
                );
                rows.extend(session.settings.iter().map(|(k, v)| vec![k.clone(), v.clone(), "session".to_string()]));
                rows.sort();
                Ok(inspect::strings_output(&["property", "value", "level"], rows, "SHOW"))
            }
            Statement::Show { what } => self.show(&what),
            Statement::CreateType { name, ty, if_not_exists } => self.create_type(&name, ty, if_not_exists).await,
            Statement::DropType { name, if_exists } => self.drop_type(&name, if_exists).await,
            Statement::Unset { name } => {
                session.settings.remove(&name.to_lowercase());
                Ok(Output::Command { tag: "UNSET".into() })
            }
            Statement::Define { name, value } => {
                session.variables.insert(name, value);
                Ok(Output::Command { tag: "DEFINE".into() })
            }
            Statement::Undefine { name } => {
                session.variables.remove(&name);
                Ok(Output::Command { tag: "UNDEFINE".into() })
            }
            Statement::AlterSource { kind, name, columns } => self.alter_source(&user, kind, &name, columns).await,
            Statement::RunScript { path } => self.run_script(session, &path).await,
            Statement::Describe { name, extended } => self.describe(&name, extended),
            Statement::DescribeAll { kind, extended } => self.describe_all(kind, extended),
            Statement::Drop { kind, name, if_exists, delete_topic } => {
                if let Some(rel) = self.catalog.relation(&name) {
                    self.require_owner(&user, &rel)?;
                }
                self.drop_relation(kind, &name, if_exists, delete_topic).await
            }
            Statement::Terminate { query_id } => self.terminate(&user, query_id).await,
            Statement::PauseResume { query_id, pause } => self.pause_resume(&user, query_id, pause).await,
            Statement::ExplainQuery { query_id } => self.explain_query(&query_id).await,
            Statement::AssertTopic { topic, exact, exists, props, timeout_ms } => {
                self.assert_topic(&topic, exact, exists, props, timeout_ms).await
            }
            Statement::AssertSchema { subject, id, exists, timeout_ms } => {
                self.assert_schema(subject.as_deref(), id, exists, timeout_ms).await
            }
            Statement::Print { topic, exact, from_beginning, interval, limit } => {
                self.print(&user, &topic, exact, from_beginning, interval, limit)
            }
            Statement::DescribeFunction { name } => self.describe_function(&name),
            Statement::Grant { privileges, relations, users, revoke } => {
                self.grant(session, privileges, relations, users, revoke).await
            }
            Statement::Explain(inner) => self.explain(*inner).await,
            Statement::Flush => self.flush().await,
            Statement::Set { name, value } => {
                session.settings.insert(name.to_lowercase(), value);
                Ok(Output::Command { tag: "SET".into() })
            }
            Statement::CreateUser { name, password, superuser } => {
                self.require_superuser(session, "create roles")?;
                self.users.create(&name, password.as_deref(), superuser).map_err(EddyError::DuplicateObject)?;
                Ok(Output::Command { tag: "CREATE ROLE".into() })
            }
            Statement::AlterUser { name, password, superuser } => {
                // Everyone may change their own password, as in Postgres.
                if name != session.user || superuser.is_some() {
                    self.require_superuser(session, "alter roles")?;
                }
                self.users.alter(&name, password.as_deref(), superuser).map_err(|e| {
                    if e.contains("does not exist") {
                        EddyError::UndefinedObject(e)
                    } else {
                        EddyError::InvalidValue(e)
                    }
                })?;
                Ok(Output::Command { tag: "ALTER ROLE".into() })
            }
            Statement::DropUser { name, if_exists } => {
                self.require_superuser(session, "drop roles")?;
                self.users.drop_user(&name, if_exists).map_err(|e| {
                    if e.contains("does not exist") {
                        EddyError::UndefinedObject(e)
                    } else {
                        EddyError::InvalidValue(e)
                    }
                })?;
                Ok(Output::Command { tag: "DROP ROLE".into() })
            }
            Statement::DeclareCursor { .. } | Statement::Fetch { .. } | Statement::CloseCursor { .. } => {
                Err(EddyError::NotImplemented("cursors outside a Postgres connection".into()))
            }
            // Postgres answers ROLLBACK TO SAVEPOINT with the tag ROLLBACK.
            Statement::NoOp { tag } if tag == "ROLLBACK TO" => Ok(Output::Command { tag: "ROLLBACK".into() }),
            Statement::NoOp { tag } => Ok(Output::Command { tag }),
        }
    }

    /// `ALTER SYSTEM 'property' = 'value'` (ksqlDB) or `ALTER SYSTEM SET | RESET name`
    /// (Postgres): the server-wide default of a session property Eddy acts on, kept in the
    /// catalog; every session's next statement sees it, a session's own SET wins.
    fn alter_system(&self, session: &Session, name: &str, value: Option<String>) -> Result<Output> {
        self.require_superuser(session, "ALTER SYSTEM")?;
        let name = name.to_lowercase();
        if let Some(v) = &value {
            let valid = match name.as_str() {
                "auto.offset.reset" => v.eq_ignore_ascii_case("earliest") || v.eq_ignore_ascii_case("latest"),
                "eddy.fetch_timeout" | "statement_timeout" => v.trim() == "0" || parse_duration(v).is_some(),
                _ => {
                    return Err(EddyError::InvalidValue(format!(
                        "ALTER SYSTEM: unrecognized configuration parameter \"{name}\" (Eddy acts on auto.offset.reset, eddy.fetch_timeout and statement_timeout)"
                    )))
                }
            };
            if !valid {
                return Err(EddyError::InvalidValue(format!("invalid value for parameter \"{name}\": \"{v}\"")));
            }
        }
        self.catalog.set_system_setting(&name, value.as_deref())?;
        Ok(Output::Command { tag: "ALTER SYSTEM".into() })
    }

    fn require_superuser(&self, session: &Session, what: &str) -> Result<()> {
        if self.users.is_superuser(&session.user) {
            Ok(())
        } else {
            Err(EddyError::PermissionDenied(format!("permission denied to {what}: only superusers may")))
        }
    }

    /// Waits until every running query has consumed, and checkpointed, all input readable
    /// now (and the input that upstream queries produce from it): a fixed point.
    async fn flush(&self) -> Result<Output> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last: Option<Vec<i64>> = None;
        loop {
            let (all_caught_up, progress) = {
                let queries = self.lock_queries();
                let caught = queries.values().all(|q| crate::dataflow::caught_up(&self.log, q));
                (caught, crate::dataflow::progress(&self.log, &queries))
            };
            if all_caught_up && last.as_ref() == Some(&progress) {
                return Ok(Output::Command { tag: "FLUSH".into() });
            }
            last = all_caught_up.then_some(progress);
            if tokio::time::Instant::now() > deadline {
                return Err(EddyError::LimitExceeded("FLUSH waited 60 s and queries are still behind".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every query thread (on shutdown); their state is as last checkpointed.
    pub fn shutdown(&self) {
        let queries: Vec<RunningQuery> = self.lock_queries().drain().map(|(_, q)| q).collect();
        for q in queries {
            q.stop();
        }
        // The next start then replays no WAL.
        if let Err(e) = self.store.close() {
            tracing::warn!("flushing the state store at shutdown: {e}");
        }
        // And scans no log segment.
        if let Err(e) = self.log.close() {
            tracing::warn!("writing the log's indexes at shutdown: {e}");
        }
    }
}
