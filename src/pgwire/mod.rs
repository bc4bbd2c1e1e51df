//! The Postgres-wire front door (pgwire): simple and extended query, push queries streamed
//! with our own send loop (flushed per batch), COPY (...) TO STDOUT, and CancelRequest.
//! Everything here is translation; statements run in `engine/`.

mod cursor;
pub mod error;
mod params;
mod socket;
mod startup;
mod types;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, Schema, Time64MicrosecondType, TimeUnit,
    TimestampMillisecondType,
};
use futures::{Sink, SinkExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, PgWireConnectionState, PgWireServerHandlers,
    Type, DEFAULT_NAME, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, Execute, PortalSuspended, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::{EmptyQueryResponse, NoticeResponse};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

use crate::engine::{Engine, Output};
use crate::error::EddyError;
use crate::sql;
use cursor::ConnSession;
use error::to_pg;
pub use socket::process_socket;
pub use startup::Admission;

pub const DATABASE: &str = "eddy";

/// How the endpoint admits connections.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Every connection must authenticate with SCRAM-SHA-256 (otherwise: trust).
    pub auth_required: bool,
    pub max_connections: usize,
    /// Slots of `max_connections` only superusers may take.
    pub superuser_reserved_connections: usize,
    /// Most cursors (DECLARE CURSOR) and partly fetched portals one connection may hold;
    /// each holds a query's rows or a push query's subscription. More fail with 53400.
    pub max_cursors_per_connection: usize,
}

/// `--max-cursors-per-connection`'s default.
pub const DEFAULT_MAX_CURSORS_PER_CONNECTION: usize = 16;

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            auth_required: false,
            max_connections: 256,
            superuser_reserved_connections: 3,
            max_cursors_per_connection: DEFAULT_MAX_CURSORS_PER_CONNECTION,
        }
    }
}

/// One per server; pgwire asks it for the handlers of each connection.
pub struct PgServer {
    engine: Arc<Engine>,
    manager: Arc<ConnectionManager>,
    parser: Arc<EddyQueryParser>,
    options: PgOptions,
    admission: Arc<Admission>,
}

impl PgServer {
    pub fn new(engine: Arc<Engine>) -> Arc<PgServer> {
        PgServer::with_options(engine, PgOptions::default())
    }

    pub fn with_options(engine: Arc<Engine>, options: PgOptions) -> Arc<PgServer> {
        Arc::new(PgServer {
            engine: engine.clone(),
            manager: Arc::new(ConnectionManager::new()),
            parser: Arc::new(EddyQueryParser { engine }),
            admission: Admission::new(options.max_connections, options.superuser_reserved_connections),
            options,
        })
    }
}

pub struct Handlers(pub Arc<PgServer>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.0.manager.clone()))
    }
}

/// The connection's session (made at start-up, in pgwire's session extensions).
fn session_of<C: ClientInfo>(client: &C) -> Arc<ConnSession> {
    client.session_extensions().get_or_insert_with(|| {
        ConnSession::new(client.metadata().get(METADATA_USER).map(String::as_str).unwrap_or_default())
    })
}

/// `sql` with the session's ksqlDB variables (`${name}`) replaced (`sql::variables`).
async fn with_variables<C: ClientInfo>(client: &C, sql: &str) -> PgWireResult<String> {
    if !sql.contains("${") {
        return Ok(sql.to_string());
    }
    let session = session_of(client);
    let vars = session.session.lock().await.variables.clone();
    sql::variables::substitute(sql, &vars).map_err(to_pg)
}

fn is_psql<C: ClientInfo>(client: &C) -> bool {
    client.metadata().get("application_name").is_some_and(|a| a == "psql")
}

/// Structs, maps and lists (other than `types::special`'s arrays) go out as JSON text.
fn is_nested(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Map(_, _)
    )
}

/// Postgres type for an Arrow type, and the Arrow type to cast to before encoding.
/// The Postgres type a column of `dt` is described and sent as, and the Arrow type it is
/// cast to first.
pub fn pg_type(dt: &DataType) -> (Type, DataType) {
    if let Some(special) = types::special(dt) {
        return special;
    }
    match dt {
        DataType::Boolean => (Type::BOOL, DataType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            (Type::INT4, DataType::Int32)
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (Type::INT8, DataType::Int64),
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal256(_, _) => {
            (Type::FLOAT8, DataType::Float64)
        }
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) if *s >= 0 => {
            (Type::NUMERIC, DataType::Decimal128((*p).min(38), *s))
        }
        DataType::Timestamp(_, _) => (Type::TIMESTAMP, DataType::Timestamp(TimeUnit::Millisecond, None)),
        DataType::Date32 | DataType::Date64 => (Type::DATE, DataType::Date32),
        DataType::Time32(_) | DataType::Time64(_) => (Type::TIME, DataType::Time64(TimeUnit::Microsecond)),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            (Type::BYTEA, DataType::Binary)
        }
        // Nested values go out as JSON text (their cells, as the JSON format writes them).
        dt if is_nested(dt) => (Type::JSON, dt.clone()),
        _ => (Type::VARCHAR, DataType::Utf8),
    }
}

fn field_infos(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()).0, format.format_for(i)))
        .collect()
}

/// A time of day or timestamp (formatted with six fraction digits) as Postgres's text shows
/// it: fractional seconds only as far as they go (`12:00:01.5`, `12:00:01`).
fn postgres_fraction(formatted: impl std::fmt::Display) -> String {
    let text = formatted.to_string();
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Encodes up to `max_rows` rows of a batch as DataRows.
fn encode_rows(fields: &Arc<Vec<FieldInfo>>, batch: &RecordBatch, max_rows: usize) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            let target = pg_type(c.data_type()).1;
            if c.data_type() == &target {
                Ok(c.clone())
            } else {
                cast(c, &target)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let n = batch.num_rows().min(max_rows);
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(n);
    for row in 0..n {
        for (i, c) in columns.iter().enumerate() {
            let valid = c.is_valid(row);
            if types::encode(&mut encoder, c, row)? {
                continue;
            }
            match c.data_type() {
                DataType::Boolean => encoder.encode_field(&valid.then(|| c.as_boolean().value(row)))?,
                DataType::Int32 => encoder.encode_field(&valid.then(|| c.as_primitive::<Int32Type>().value(row)))?,
                DataType::Int64 => encoder.encode_field(&valid.then(|| c.as_primitive::<Int64Type>().value(row)))?,
                DataType::Float64 if text_format(fields, i) => {
                    encoder.encode_field(&valid.then(|| pg_float(c.as_primitive::<Float64Type>().value(row))))?
                }
                DataType::Float64 => {
                    encoder.encode_field(&valid.then(|| c.as_primitive::<Float64Type>().value(row)))?
                }
                DataType::Timestamp(_, _) => {
                    let ms = c.as_primitive::<TimestampMillisecondType>().value(row);
                    let ts = chrono::DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc());
                    match ts.filter(|_| valid) {
                        Some(t) if text_format(fields, i) => {
                            encoder.encode_field(&postgres_fraction(t.format("%Y-%m-%d %H:%M:%S%.6f")))?
                        }
                        t => encoder.encode_field(&t)?,
                    }
                }
                DataType::Date32 => {
                    let days = c.as_primitive::<Date32Type>().value(row);
                    let date = chrono::NaiveDate::default().checked_add_signed(chrono::TimeDelta::days(days as i64));
                    encoder.encode_field(&valid.then_some(date).flatten())?
                }
                DataType::Time64(_) => {
                    let us = c.as_primitive::<Time64MicrosecondType>().value(row);
                    let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                        (us / 1_000_000) as u32,
                        ((us % 1_000_000) * 1000) as u32,
                    );
                    match time.filter(|_| valid) {
                        Some(t) if text_format(fields, i) => {
                            encoder.encode_field(&postgres_fraction(t.format("%H:%M:%S%.6f")))?
                        }
                        t => encoder.encode_field(&t)?,
                    }
                }
                DataType::Decimal128(_, s) => {
                    let v = c.as_primitive::<Decimal128Type>().value(row);
                    if text_format(fields, i) {
                        encoder.encode_field(&valid.then(|| crate::format::types::format_decimal(v, *s as u8)))?
                    } else {
                        // Postgres's binary numeric; raw bytes are written as they are.
                        encoder.encode_field(&valid.then(|| numeric_binary(v, *s as u8)))?
                    }
                }
                DataType::Binary => encoder.encode_field(&valid.then(|| c.as_binary::<i32>().value(row)))?,
                dt if is_nested(dt) => {
                    encoder.encode_field(&valid.then(|| crate::format::cell_at(c.as_ref(), row).to_string()))?
                }
                _ => encoder.encode_field(&valid.then(|| c.as_string::<i32>().value(row).to_string()))?,
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// A decimal in Postgres's binary `numeric` layout: digit count, weight, sign, display
/// scale, then base-10000 digits.
fn numeric_binary(unscaled: i128, scale: u8) -> Vec<u8> {
    let abs = unscaled.unsigned_abs();
    let pow = 10u128.pow(scale as u32);
    let (int, frac) = (abs / pow, abs % pow);
    let mut groups: Vec<i16> = Vec::new();
    let mut x = int;
    while x > 0 {
        groups.push((x % 10_000) as i16);
        x /= 10_000;
    }
    groups.reverse();
    let mut weight = groups.len() as i16 - 1;
    if scale > 0 {
        let mut digits = format!("{frac:0>width$}", width = scale as usize);
        while digits.len() % 4 != 0 {
            digits.push('0');
        }
        groups.extend(
            digits.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or("0").parse::<i16>().unwrap_or(0)),
        );
    }
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if unscaled < 0 { 0x4000 } else { 0 };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    groups.iter().for_each(|g| out.extend_from_slice(&g.to_be_bytes()));
    out
}

fn text_format(fields: &[FieldInfo], i: usize) -> bool {
    fields.get(i).is_some_and(|f| f.format() == pgwire::api::results::FieldFormat::Text)
}

/// Postgres's float8 text: shortest round-trip digits, no trailing ".0".
fn pg_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{v}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// COPY text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_lines(batch: &RecordBatch, max_rows: usize) -> Vec<Bytes> {
    let n = batch.num_rows().min(max_rows);
    let text: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Float64 | DataType::Float32 => cast(c, &DataType::Float64).ok().map(|f| {
                let f = f.as_primitive::<Float64Type>().clone();
                std::sync::Arc::new(datafusion::arrow::array::StringArray::from_iter(f.iter().map(|v| v.map(pg_float))))
                    as datafusion::arrow::array::ArrayRef
            }),
            DataType::Binary => Some(std::sync::Arc::new(datafusion::arrow::array::StringArray::from_iter(
                c.as_binary::<i32>().iter().map(|v| v.map(|b| format!("\\x{}", hex(b)))),
            )) as datafusion::arrow::array::ArrayRef),
            dt if is_nested(dt) => Some(std::sync::Arc::new(datafusion::arrow::array::StringArray::from_iter(
                (0..c.len()).map(|r| c.is_valid(r).then(|| crate::format::cell_at(c.as_ref(), r).to_string())),
            )) as datafusion::arrow::array::ArrayRef),
            _ => cast(c, &DataType::Utf8).ok(),
        })
        .collect();
    (0..n)
        .map(|row| {
            let mut line = String::new();
            for (i, c) in text.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                match c {
                    Some(c) if c.is_valid(row) => {
                        for ch in c.as_string::<i32>().value(row).chars() {
                            match ch {
                                '\\' => line.push_str("\\\\"),
                                '\t' => line.push_str("\\t"),
                                '\n' => line.push_str("\\n"),
                                '\r' => line.push_str("\\r"),
                                other => line.push(other),
                            }
                        }
                    }
                    _ => line.push_str("\\N"),
                }
            }
            line.push('\n');
            Bytes::from(line)
        })
        .collect()
}

fn row_description(fields: &[FieldInfo]) -> pgwire::messages::data::RowDescription {
    pgwire::messages::data::RowDescription::new(fields.iter().map(Into::into).collect())
}

async fn notice<C>(client: &mut C, message: &str) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    notice_with(client, "NOTICE", "00000", message).await
}

async fn notice_with<C>(client: &mut C, severity: &str, code: &str, message: &str) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let info = ErrorInfo::new(severity.into(), code.into(), message.to_string());
    client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(info))).await?;
    Ok(())
}

/// The rows an INSERT's output says it wrote (0 for anything else).
fn inserted_rows(output: &Output) -> u64 {
    match output {
        Output::Command { tag } => tag.strip_prefix("INSERT 0 ").and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

/// Writes one statement's output. `describe` sends the RowDescription (simple protocol).
async fn send_output<C>(client: &mut C, output: Output, describe: bool, format: &Format, psql: bool) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match output {
        Output::Command { tag } => {
            client.feed(PgWireBackendMessage::CommandComplete(Tag::new(&tag).into())).await?;
        }
        Output::Rows { schema, batches, tag } => {
            let fields = Arc::new(field_infos(&schema, format));
            if describe {
                client.feed(PgWireBackendMessage::RowDescription(row_description(&fields))).await?;
            }
            let mut n = 0;
            for b in &batches {
                for row in encode_rows(&fields, b, usize::MAX)? {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                    n += 1;
                }
            }
            let tag = if tag == "SELECT" || tag == "FETCH" { Tag::new(&tag).with_rows(n) } else { Tag::new(&tag) };
            client.feed(PgWireBackendMessage::CommandComplete(tag.into())).await?;
        }
        Output::Push { schema, limit, mut rx } => {
            if psql {
                notice(client, "psql prints a SELECT's rows only when it ends; to watch a push query live run: COPY (SELECT ... EMIT CHANGES) TO STDOUT;").await?;
            }
            let fields = Arc::new(field_infos(&schema, format));
            if describe {
                client.send(PgWireBackendMessage::RowDescription(row_description(&fields))).await?;
            }
            let mut remaining = limit.unwrap_or(usize::MAX);
            let mut sent = 0;
            while remaining > 0 {
                match next_push_batch(client, &mut rx).await? {
                    Some(Ok(batch)) => {
                        for row in encode_rows(&fields, &batch, remaining)? {
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            sent += 1;
                            remaining -= 1;
                        }
                        client.flush().await?;
                    }
                    Some(Err(e)) => return Err(to_pg(e)),
                    None => break,
                }
            }
            client.feed(PgWireBackendMessage::CommandComplete(Tag::new("SELECT").with_rows(sent).into())).await?;
        }
        Output::CopyOut(inner) => {
            let (columns, limit) = match inner.as_ref() {
                Output::Rows { schema, .. } => (schema.fields().len(), usize::MAX),
                Output::Push { schema, limit, .. } => (schema.fields().len(), limit.unwrap_or(usize::MAX)),
                _ => return Err(to_pg(EddyError::InvalidValue("COPY needs a SELECT".into()))),
            };
            let response = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
            client.send(PgWireBackendMessage::CopyOutResponse(response)).await?;
            let mut sent = 0usize;
            match *inner {
                Output::Rows { batches, .. } => {
                    for b in &batches {
                        for line in copy_lines(b, usize::MAX) {
                            client.feed(PgWireBackendMessage::CopyData(CopyData::new(line))).await?;
                            sent += 1;
                        }
                    }
                }
                Output::Push { mut rx, .. } => {
                    while sent < limit {
                        match next_push_batch(client, &mut rx).await? {
                            Some(Ok(batch)) => {
                                for line in copy_lines(&batch, limit - sent) {
                                    client.feed(PgWireBackendMessage::CopyData(CopyData::new(line))).await?;
                                    sent += 1;
                                }
                                client.flush().await?;
                            }
                            Some(Err(e)) => return Err(to_pg(e)),
                            None => break,
                        }
                    }
                }
                _ => {}
            }
            client.feed(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
            client.feed(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(sent).into())).await?;
        }
    }
    Ok(())
}

/// How long a push query waits for rows before it checks that its client is still there.
const PUSH_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// A push query's next batch. While none comes, the client is sent, every `PUSH_PROBE`, a
/// ParameterStatus it already has (`server_version`, unchanged; clients take these at any
/// time, in COPY too): once the client has gone away the second such write fails, which
/// ends the statement, and the query's thread stops when `rx` goes.
async fn next_push_batch<C>(
    client: &mut C,
    rx: &mut tokio::sync::mpsc::Receiver<crate::error::Result<RecordBatch>>,
) -> PgWireResult<Option<crate::error::Result<RecordBatch>>>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    loop {
        if let Ok(next) = tokio::time::timeout(PUSH_PROBE, rx.recv()).await {
            return Ok(next);
        }
        let version = crate::engine::pg_catalog::setting("server_version").unwrap_or_default();
        let probe = ParameterStatus::new("server_version".into(), version);
        client.send(PgWireBackendMessage::ParameterStatus(probe)).await?;
    }
}

#[async_trait]
impl SimpleQueryHandler for PgServer {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let query = with_variables(client, query).await?;
        let statements = sql::parse(&query).map_err(to_pg)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        // BEGIN / COMMIT alone: let pgwire report the transaction status (psycopg 3 closes
        // its server cursors only inside a transaction).
        if let [crate::sql::Located { statement: crate::sql::Statement::NoOp { tag }, .. }] = statements.as_slice() {
            if let Some(warning) = session_of(client).transaction_step(Some(tag), 0) {
                notice_with(client, "WARNING", "01000", &warning).await?;
            }
            match tag.as_str() {
                "BEGIN" => return Ok(vec![Response::TransactionStart(Tag::new("BEGIN"))]),
                "COMMIT" | "ROLLBACK" => return Ok(vec![Response::TransactionEnd(Tag::new(tag))]),
                _ => {}
            }
        }
        let session = session_of(client);
        cursor::prune_portals(client, &session).await;
        let psql = is_psql(client);
        for stmt in statements {
            let tag = match &stmt.statement {
                crate::sql::Statement::NoOp { tag } => Some(tag.clone()),
                _ => None,
            };
            let output = self.run(&session, stmt).await?;
            if let Some(warning) = session.transaction_step(tag.as_deref(), inserted_rows(&output)) {
                notice_with(client, "WARNING", "01000", &warning).await?;
            }
            send_output(client, output, true, &Format::UnifiedText, psql).await?;
        }
        Ok(vec![])
    }
}

/// A statement prepared through the extended protocol: its SQL and the result columns.
#[derive(Clone, Debug)]
pub struct Prepared {
    sql: String,
    /// As Describe reports them (see `params::param_types`).
    param_types: Vec<Type>,
    schema: Option<Arc<Schema>>,
}

pub struct EddyQueryParser {
    engine: Arc<Engine>,
}

#[async_trait]
impl QueryParser for EddyQueryParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = &with_variables(client, sql).await?;
        let params = params::count_params(sql).map_err(to_pg)?;
        // Describe needs the result columns: plan the statement now (with NULL parameters).
        let substituted = params::substitute(sql, &vec![None; params]);
        let located = sql::parse(&substituted).map_err(to_pg)?;
        if located.len() > 1 {
            return Err(to_pg(EddyError::Syntax {
                message: "cannot insert multiple commands into a prepared statement".into(),
                position: None,
            }));
        }
        let schema = match located.into_iter().next() {
            // FETCH returns its cursor's columns.
            Some(crate::sql::Located {
                statement: crate::sql::Statement::Fetch { name, discard: false, .. }, ..
            }) => {
                let conn = session_of(client);
                let cursors = conn.cursors.lock().await;
                cursors.get(&name).map(|c| c.schema())
            }
            Some(l) => self.engine.result_schema(&l.statement).await.map_err(to_pg)?,
            None => None,
        };
        let mut param_types = params::param_types(sql, types, params);
        // A parameter nothing declared or cast takes the type its use gives it, as in
        // Postgres (`WHERE id = $1`: the type of id), when it is one Bind can carry in binary.
        if param_types.iter().enumerate().any(|(i, t)| *t == Type::TEXT && types.get(i).cloned().flatten().is_none()) {
            use datafusion::arrow::datatypes::DataType;
            let inferred = self.engine.placeholder_types(sql, params).await;
            for (i, ty) in inferred.into_iter().enumerate() {
                if param_types[i] != Type::TEXT || types.get(i).cloned().flatten().is_some() {
                    continue;
                }
                param_types[i] = match ty {
                    Some(DataType::Int16) => Type::INT2,
                    Some(DataType::Int32) => Type::INT4,
                    Some(DataType::Int64) => Type::INT8,
                    Some(DataType::Float32) => Type::FLOAT4,
                    Some(DataType::Float64) => Type::FLOAT8,
                    Some(DataType::Boolean) => Type::BOOL,
                    Some(DataType::Timestamp(_, None)) => Type::TIMESTAMP,
                    Some(DataType::Timestamp(_, Some(_))) => Type::TIMESTAMPTZ,
                    Some(DataType::Date32) => Type::DATE,
                    Some(DataType::Time32(_) | DataType::Time64(_)) => Type::TIME,
                    Some(DataType::Decimal128(_, _)) => Type::NUMERIC,
                    _ => Type::TEXT,
                };
            }
        }
        Ok(Some(Prepared { sql: sql.to_string(), param_types, schema }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.schema {
            Some(s) => field_infos(s, format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgServer {
    type Statement = Prepared;
    type QueryParser = EddyQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// Describe of a statement that takes parameters and returns no rows (an INSERT): pgwire
    /// answers with an empty RowDescription, Postgres with NoData, and pgjdbc takes the
    /// former to mean rows ("A result was returned when none was expected").
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                if stmt.statement.schema.is_none() && !stmt.statement.param_types.is_empty() {
                    let oids = stmt.statement.param_types.iter().map(|t| t.oid()).collect();
                    client.send(PgWireBackendMessage::ParameterDescription(ParameterDescription::new(oids))).await?;
                    client.send(PgWireBackendMessage::NoData(NoData::new())).await?;
                    return Ok(());
                }
            }
        }
        self._on_describe(client, message).await
    }

    /// Execute, done here rather than through pgwire's portal machinery so that push
    /// queries flush each batch as it comes (pgwire's path buffers until the end).
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let run = self.execute_portal(client, &portal, max_rows);
        let result = match cancel {
            Some(cancel) => match futures::future::select(Box::pin(run), cancel).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => Err(PgWireError::QueryCanceled),
            },
            None => run.await,
        };
        result?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(to_pg(EddyError::Internal("extended queries run through on_execute".into())))
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = target.statement.param_types.clone();
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(&portal.statement.statement, Some(&portal.result_column_format))?;
        Ok(DescribePortalResponse::new(fields))
    }
}

impl PgServer {
    /// Runs a bound portal. With a row limit (`max_rows`), a query's output is kept and sent
    /// in parts, each but the last ending in PortalSuspended (JDBC's fetch size).
    async fn execute_portal<C>(
        &self,
        client: &mut C,
        portal: &Arc<Portal<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client);
        cursor::prune_portals(client, &session).await;
        let identity = Arc::as_ptr(portal) as usize;
        let fields = Arc::new(field_infos(&portal_schema(portal), &portal.result_column_format));
        let resumed = {
            let mut portals = session.portals.lock().await;
            match portals.remove(&portal.name) {
                Some((id, cursor)) if id == identity => Some(cursor),
                _ => None,
            }
        };
        if let Some(cursor) = resumed {
            return self.send_part(client, &session, portal, identity, cursor, &fields, max_rows).await;
        }
        let params = portal
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let Some(bytes) = p else { return Ok(None) };
                match portal.parameter_format.format_for(i) {
                    pgwire::api::results::FieldFormat::Text => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
                    pgwire::api::results::FieldFormat::Binary => {
                        // The client's declared type, else the one Describe reported.
                        let ty = portal
                            .statement
                            .parameter_types
                            .get(i)
                            .cloned()
                            .flatten()
                            .or_else(|| portal.statement.statement.param_types.get(i).cloned());
                        params::binary_param(bytes, ty.as_ref()).map(Some).map_err(to_pg)
                    }
                }
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        let sql_text = params::substitute(&portal.statement.statement.sql, &params);
        let mut statements = sql::parse(&sql_text).map_err(to_pg)?;
        let Some(stmt) = statements.pop() else {
            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
            return Ok(());
        };
        let control = match &stmt.statement {
            crate::sql::Statement::NoOp { tag } => Some(tag.clone()),
            _ => None,
        };
        if let crate::sql::Statement::NoOp { tag } = &stmt.statement {
            let status = client.transaction_status();
            match tag.as_str() {
                "BEGIN" => client.set_transaction_status(status.to_in_transaction_state()),
                "COMMIT" | "ROLLBACK" => client.set_transaction_status(status.to_idle_state()),
                _ => {}
            }
        }
        if max_rows > 0 && matches!(stmt.statement, crate::sql::Statement::Select(_)) {
            // Its output may be kept for the next Execute.
            self.check_cursor_room(&session).await?;
        }
        let declared = match &stmt.statement {
            crate::sql::Statement::DeclareCursor { name, .. } => Some(name.clone()),
            _ => None,
        };
        let output = self.run(&session, stmt).await?;
        if let Some(warning) = session.transaction_step(control.as_deref(), inserted_rows(&output)) {
            notice_with(client, "WARNING", "01000", &warning).await?;
        }
        if let Some(name) = declared {
            // A portal named after the cursor, for Describe (psycopg 3) and Execute (fetch all).
            let schema = self.cursor_schema(&session, &name).await;
            let prepared = Prepared {
                sql: format!("FETCH ALL FROM \"{}\"", name.replace('"', "\"\"")),
                param_types: Vec::new(),
                schema,
            };
            let statement = Arc::new(StoredStatement::new(String::new(), prepared, Vec::new()));
            client.portal_store().put_portal(Arc::new(Portal::new_cursor(name, statement)));
        }
        if max_rows > 0 && matches!(output, Output::Rows { .. } | Output::Push { .. }) {
            let cursor = cursor::Cursor::new(output).map_err(to_pg)?;
            return self.send_part(client, &session, portal, identity, cursor, &fields, max_rows).await;
        }
        let psql = is_psql(client);
        send_output(client, output, false, &portal.result_column_format, psql).await
    }

    /// Up to `max_rows` rows of a portal's output; keeps the rest for the next Execute.
    #[allow(clippy::too_many_arguments)]
    async fn send_part<C>(
        &self,
        client: &mut C,
        session: &ConnSession,
        portal: &Portal<Prepared>,
        identity: usize,
        mut cursor: cursor::Cursor,
        fields: &Arc<Vec<FieldInfo>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let limit = if max_rows == 0 { usize::MAX } else { max_rows };
        let batches = cursor.fetch(limit, None).await.map_err(to_pg)?;
        let mut n = 0;
        for b in &batches {
            for row in encode_rows(fields, b, usize::MAX)? {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                n += 1;
            }
        }
        if cursor.exhausted() {
            client.feed(PgWireBackendMessage::CommandComplete(Tag::new("SELECT").with_rows(n).into())).await?;
        } else {
            client.feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new())).await?;
            session.portals.lock().await.insert(portal.name.clone(), (identity, cursor));
        }
        Ok(())
    }
}

/// The result columns a portal's statement was described with.
fn portal_schema(portal: &Portal<Prepared>) -> Arc<Schema> {
    portal.statement.statement.schema.clone().unwrap_or_else(|| Arc::new(Schema::empty()))
}

#[cfg(test)]
mod tests {
    use super::numeric_binary;

    fn words(b: &[u8]) -> Vec<i16> {
        b.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numeric_binary_matches_postgres() {
        // 12.50: two digits (12, 5000), weight 0, positive, scale 2.
        assert_eq!(words(&numeric_binary(1250, 2)), vec![2, 0, 0, 2, 12, 5000]);
        // -0.0001: one digit (1) at weight -1, negative.
        assert_eq!(words(&numeric_binary(-1, 4)), vec![1, -1, 0x4000, 4, 1]);
        // 100000000: one digit (1) at weight 2.
        assert_eq!(words(&numeric_binary(100_000_000, 0)), vec![1, 2, 0, 0, 1]);
        // 0.00 has no digits.
        assert_eq!(words(&numeric_binary(0, 2)), vec![0, 0, 0, 2]);
        // 0.00001234 (scale 8): digits (0, 1234) → leading zero group dropped, weight -2.
        assert_eq!(words(&numeric_binary(1234, 8)), vec![1, -2, 0, 8, 1234]);
    }
}
