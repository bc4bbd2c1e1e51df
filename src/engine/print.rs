//! ksqlDB's `PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]`: a topic's records as
//! they are, whatever wrote them, streamed like a push query (from the end unless FROM
//! BEGINNING, every n-th record with INTERVAL, until the LIMIT or a cancel). Each row is one
//! record: its timestamp, partition, offset, key and value, as text when they are UTF-8 and
//! as `\x...` hex (Postgres's bytea text) when not; a NULL key or value (a tombstone) is NULL.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::TimestampMillisecondBuilder;
use datafusion::arrow::array::{ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::{Engine, Output};
use crate::auth::TopicAccess;
use crate::error::{EddyError, Result};
use crate::log::batch::{batches_in, decode_record_refs, RecordRef};
use crate::log::{LogError, Topic};

/// Largest read from one partition per poll.
const READ_BYTES: usize = 1 << 20;

/// The columns PRINT returns.
pub fn print_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rowtime", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// Bytes as text: UTF-8 without control characters (whitespace aside) as is, anything else
/// (a KAFKA-format number, Avro) as Postgres prints a bytea (`\x` and hex).
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => s.to_string(),
        _ => {
            let mut out = String::with_capacity(2 + 2 * bytes.len());
            out.push_str("\\x");
            for b in bytes {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

impl Engine {
    /// Starts PRINT; `exact`: the topic was named quoted (otherwise any case matches, the
    /// exact name first).
    pub(super) fn print(
        &self,
        user: &str,
        topic: &str,
        exact: bool,
        from_beginning: bool,
        interval: u64,
        limit: Option<u64>,
    ) -> Result<Output> {
        let found = self.log.topic(topic).or_else(|| {
            if exact {
                return None;
            }
            let mut matches = self.log.topics().into_iter().filter(|t| t.name.eq_ignore_ascii_case(topic));
            match (matches.next(), matches.next()) {
                (Some(t), None) => Some(t),
                _ => None,
            }
        });
        let topic = found.ok_or_else(|| {
            EddyError::UndefinedRelation(format!(
                "topic {topic} (SHOW TOPICS lists them; quote a name to match its case)"
            ))
        })?;
        if !self.users.may_access_topic(user, &topic.name, TopicAccess::Read) {
            return Err(EddyError::PermissionDenied(format!("permission denied to read topic {}", topic.name)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let log = self.log.clone();
        std::thread::Builder::new()
            .name("print".into())
            .spawn(move || {
                if let Err(e) = print_loop(&log, &topic, from_beginning, interval.max(1), &tx) {
                    let _ = tx.blocking_send(Err(e));
                }
            })
            .map_err(|e| EddyError::Internal(format!("spawn PRINT: {e}")))?;
        let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(Output::Push { schema: print_schema(), limit, rx })
    }
}

/// Rows of one PRINT, being built.
struct Rows {
    time: TimestampMillisecondBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    key: StringBuilder,
    value: StringBuilder,
    len: usize,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            time: TimestampMillisecondBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            key: StringBuilder::new(),
            value: StringBuilder::new(),
            len: 0,
        }
    }

    fn push(&mut self, partition: i32, r: &RecordRef<'_>) {
        self.time.append_value(r.timestamp_ms);
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.key.append_option(r.key.map(shown));
        self.value.append_option(r.value.map(shown));
        self.len += 1;
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
        ];
        Ok(RecordBatch::try_new(print_schema(), columns)?)
    }
}

fn print_loop(
    log: &crate::log::Log,
    topic: &Topic,
    from_beginning: bool,
    interval: u64,
    out: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<()> {
    let mut offsets: Vec<i64> = topic
        .partitions
        .iter()
        .map(|p| if from_beginning { p.log_start_offset() } else { p.high_watermark() })
        .collect();
    let mut seen = 0u64;
    let mut buffer = Vec::new();
    loop {
        if out.is_closed() {
            return Ok(());
        }
        let version = log.notifier.version();
        let mut rows = Rows::new();
        for (p, offset) in topic.partitions.iter().zip(offsets.iter_mut()) {
            match p.read_into(*offset, READ_BYTES, &mut buffer) {
                Ok(_) => {}
                // Retention moved the start past us, or the end went back: go on from there.
                Err(LogError::OffsetOutOfRange { start, end, .. }) => {
                    *offset = if *offset < start { start } else { end };
                    continue;
                }
                Err(e) => return Err(EddyError::Log(e)),
            }
            for (header, bytes) in batches_in(&buffer) {
                let from = *offset;
                *offset = (*offset).max(header.last_offset() + 1);
                let owned;
                let records: Vec<RecordRef<'_>> = match decode_record_refs(bytes) {
                    Ok(r) => r,
                    Err(_) => {
                        // A compressed batch: inflated (bounded) first.
                        owned = crate::format::decode_batch(bytes).map_err(EddyError::InvalidValue)?;
                        owned.iter().map(crate::log::LogRecord::as_ref).collect()
                    }
                };
                for r in records.iter().filter(|r| r.offset >= from) {
                    if seen.is_multiple_of(interval) {
                        rows.push(p.id, r);
                    }
                    seen += 1;
                }
            }
        }
        if rows.len == 0 {
            log.notifier.wait_past(version, Duration::from_millis(100));
            continue;
        }
        if out.blocking_send(Ok(rows.finish()?)).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(shown(b"{\"a\":1}"), "{\"a\":1}");
        assert_eq!(shown(&[0, 0, 0, 42]), "\\x0000002a");
        assert_eq!(shown(&[0xff, 0x01]), "\\xff01");
    }
}
