//! DDL: CREATE STREAM/TABLE [AS SELECT], CREATE OR REPLACE, INSERT INTO ... SELECT, DROP,
//! TERMINATE.
//! Parse → validate → write the catalog → start: each step a named call.

use std::collections::BTreeMap;

use super::{Engine, Output};
use crate::catalog::{CatalogChange, QueryDef, RelationDef};
use crate::dataflow::state_cf;
use crate::error::{EddyError, Result};
use crate::format::key::{WINDOW_END, WINDOW_START};
use crate::format::{Column, KeyFormat, KeyWindow, SqlType, ValueFormat};
use crate::log::TopicConfig;
use crate::plan::{plan_continuous, upsert_plan, ContinuousPlan, PlanShape};
use crate::sql::{Privilege, RelationKind, SelectStatement, Statement, WindowKind};

/// A stream or table declared over a topic, as `CREATE STREAM | TABLE` gives it.
pub(super) struct SourceDef {
    pub kind: RelationKind,
    pub name: String,
    pub columns: Vec<Column>,
    pub headers: Vec<crate::sql::HeaderColumn>,
    pub props: BTreeMap<String, String>,
}

impl Engine {
    pub(super) async fn create_source(
        &self,
        owner: &str,
        source: SourceDef,
        if_not_exists: bool,
        or_replace: bool,
    ) -> Result<Output> {
        let SourceDef { kind, name, columns, headers, props } = source;
        let _ddl = self.ddl.lock().await;
        let tag = format!("CREATE {}", kind.word());
        let (columns, inferred_key_schema) = self.infer_key_columns(&name, columns, &props)?;
        let (columns, inferred_schema) = self.infer_value_columns(&name, columns, &props)?;
        if let Some(existing) = self.catalog.relation(&name) {
            return if or_replace {
                let mut declared = self.relation_from_props(kind, &name, columns, &props, None, None)?;
                self.attach_key_schema(&mut declared, inferred_key_schema)?;
                self.attach_value_schema(&mut declared, inferred_schema)?;
                declared.header_columns = headers;
                self.replace_source(owner, existing, declared).await.map(|()| Output::Command { tag })
            } else if if_not_exists {
                Ok(Output::Command { tag })
            } else {
                Err(EddyError::DuplicateRelation(format!("{} {name}", kind.word().to_lowercase())))
            };
        }
        validate_columns(kind, &columns)?;
        let mut rel = self.relation_from_props(kind, &name, columns, &props, None, None)?;
        self.attach_key_schema(&mut rel, inferred_key_schema)?;
        self.attach_value_schema(&mut rel, inferred_schema)?;
        rel.header_columns = headers;
        rel.owner = Some(owner.to_string());
        self.ensure_topic(&mut rel, &props)?;
        let query = (kind == RelationKind::Table).then(|| {
            let id = format!("MAT_{}_{}", name.to_uppercase(), self.catalog.next_query_number().unwrap_or(0));
            QueryDef {
                id,
                sql: format!("CREATE TABLE {name} (materialize)"),
                source: name.clone(),
                sink: None,
                inputs: vec![name.clone()],
                paused: false,
            }
        });
        rel.materialized_by = query.as_ref().map(|q| q.id.clone());
        rel.state_key = query.as_ref().and_then(|_| upsert_plan(&rel).state_key);
        self.catalog.add(&rel, query.as_ref())?;
        if let Some(q) = query {
            self.start_query(&q.id, upsert_plan(&rel), None)?;
        }
        Ok(Output::Command { tag })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_as(
        &self,
        owner: &str,
        kind: RelationKind,
        name: String,
        props: BTreeMap<String, String>,
        select: SelectStatement,
        if_not_exists: bool,
        text: String,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        let tag = format!("CREATE {}", kind.word());
        if self.catalog.relation(&name).is_some() {
            return if if_not_exists {
                Ok(Output::Command { tag })
            } else {
                Err(EddyError::DuplicateRelation(format!("{} {name}", kind.word().to_lowercase())))
            };
        }
        let inputs = self.sources(&select)?;
        for input in &inputs {
            self.require_privilege(owner, input, Privilege::Select)?;
        }
        if self.lock_queries().len() >= self.config.max_queries {
            return Err(EddyError::LimitExceeded(format!(
                "at most {} persistent queries run at once",
                self.config.max_queries
            )));
        }
        let plan = plan_continuous(&select, &inputs).await?;
        let source = plan.source.clone();
        let table_input = source.kind == RelationKind::Table;
        if table_input && matches!(plan.shape, PlanShape::Project { .. }) {
            if kind == RelationKind::Stream {
                return Err(EddyError::InvalidValue(format!(
                    "{} is a table: a query over it makes a table (CREATE TABLE ... AS SELECT)",
                    source.name
                )));
            }
            // The plan marks the selected key columns (under their aliases too).
            let keys: Vec<&str> = source.columns.iter().filter(|c| c.key).map(|c| c.name.as_str()).collect();
            let selected = plan.output_columns.iter().filter(|o| o.key).count();
            let mut missing: Vec<&str> =
                keys.iter().copied().filter(|k| !plan.output_columns.iter().any(|o| o.key && o.name == *k)).collect();
            if selected < keys.len() && missing.is_empty() {
                missing = keys;
            }
            if selected < source.columns.iter().filter(|c| c.key).count() {
                return Err(EddyError::InvalidValue(format!(
                    "the SELECT list must include {}'s PRIMARY KEY column(s) {}, the new table's key",
                    source.name,
                    missing.join(", ")
                )));
            }
        }
        match (&plan.shape, kind) {
            (PlanShape::Aggregate(_), RelationKind::Stream) => {
                return Err(EddyError::InvalidValue(
                    "an aggregation produces a table: use CREATE TABLE ... AS SELECT ... GROUP BY".into(),
                ))
            }
            (PlanShape::Project { .. }, RelationKind::Table) if !table_input => {
                return Err(EddyError::InvalidValue(
                    "a table needs GROUP BY (or declare a table over a topic with CREATE TABLE t (id STRING PRIMARY KEY, ...))".into(),
                ))
            }
            _ => {}
        }
        let prefix = if kind == RelationKind::Table { "CTAS" } else { "CSAS" };
        let id = format!("{prefix}_{}_{}", name.to_uppercase(), self.catalog.next_query_number()?);
        let mut props = props;
        props.entry("PARTITIONS".into()).or_insert_with(|| source.partitions.to_string());
        if plan.window.is_some() && kind == RelationKind::Table {
            // Every window is a key of its own: compacted, and windows older than the
            // retention go (ksqlDB's windowed changelogs are `compact,delete` too).
            props.entry("CLEANUP_POLICY".into()).or_insert_with(|| "compact,delete".into());
            props.entry("RETENTION_MS".into()).or_insert_with(|| (7 * 24 * 3600 * 1000i64).to_string());
        }
        // As in ksqlDB, the output is written in its source's value format unless WITH says.
        if !props.contains_key("VALUE_FORMAT") && !props.contains_key("FORMAT") {
            props.insert("VALUE_FORMAT".into(), source.value_format.clone());
            if let Some(d) = source.value_delimiter.filter(|_| !props.contains_key("VALUE_DELIMITER")) {
                let d = match d {
                    '\t' => "TAB".to_string(),
                    ' ' => "SPACE".to_string(),
                    other => other.to_string(),
                };
                props.insert("VALUE_DELIMITER".into(), d);
            }
        }
        // And in its source's key format, where that format holds the result's key.
        let window = output_window(&plan);
        if !props.contains_key("KEY_FORMAT") && !props.contains_key("FORMAT") {
            let is_bound = |c: &&Column| window.is_some() && (c.name == WINDOW_START || c.name == WINDOW_END);
            let keys = plan.output_columns.iter().filter(|c| c.key && !is_bound(c)).count();
            let key_columns: Vec<Column> =
                plan.output_columns.iter().filter(|c| c.key && !is_bound(c)).cloned().collect();
            let inherit = match source.key_format {
                KeyFormat::Json
                | KeyFormat::Delimited
                | KeyFormat::Avro
                | KeyFormat::JsonSr
                | KeyFormat::Protobuf
                | KeyFormat::ProtobufNosr => keys > 0,
                KeyFormat::Kafka => keys == 1,
                KeyFormat::None => false,
            } && source.key_format.check_columns(&key_columns).is_ok();
            if inherit {
                props.insert("KEY_FORMAT".into(), source.key_format.name().to_string());
            }
        }
        let mut rel = self.relation_from_props(kind, &name, plan.output_columns.clone(), &props, Some(&id), window)?;
        self.attach_key_schema(&mut rel, None)?;
        self.attach_value_schema(&mut rel, None)?;
        rel.materialized_by = (kind == RelationKind::Table).then(|| id.clone());
        rel.state_key = plan.state_key.clone().filter(|_| kind == RelationKind::Table);
        rel.owner = Some(owner.to_string());
        self.ensure_topic(&mut rel, &props)?;
        let late = match &plan.late_data_to {
            Some(late) => Some(self.late_data_stream(owner, late, &name, &inputs, &source)?),
            None => None,
        };
        let query = QueryDef {
            id: id.clone(),
            sql: text,
            source: source.name.clone(),
            sink: Some(name.clone()),
            inputs: inputs.iter().map(|r| r.name.clone()).collect(),
            paused: false,
        };
        let mut change =
            CatalogChange { put_relations: vec![rel.clone()], put_queries: vec![query], ..Default::default() };
        if let Some(mut late) = late {
            // The query owns its late-data stream from now on, new or existing: INSERT and
            // Kafka producers are refused there until it is terminated.
            late.written_by = Some(id.clone());
            change.put_relations.push(late);
        }
        self.catalog.apply(change)?;
        self.start_query(&id, plan, Some(rel))?;
        Ok(Output::Command { tag })
    }

    pub(super) fn start_query(
        &self,
        id: &str,
        plan: crate::plan::ContinuousPlan,
        sink: Option<RelationDef>,
    ) -> Result<()> {
        let late = plan.late_data_to.as_ref().and_then(|n| self.catalog.relation(n));
        let running = self.runtime.start_persistent(id, plan, sink, late, false)?;
        self.lock_queries().insert(id.to_string(), running);
        Ok(())
    }

    /// The relations a continuous query reads, in FROM order.
    pub(super) fn sources(&self, select: &SelectStatement) -> Result<Vec<RelationDef>> {
        let mut names: Vec<String> = Vec::new();
        for n in &select.relations {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        if names.is_empty() {
            return Err(EddyError::InvalidValue("a continuous query needs FROM a stream or table".into()));
        }
        names
            .iter()
            .map(|n| {
                self.catalog.relation(n).ok_or_else(|| EddyError::UndefinedRelation(format!("stream or table {n}")))
            })
            .collect()
    }

    /// The stream `LATE DATA TO name` writes: a new one over its own topic, or an existing
    /// stream with the source's columns that no query writes and that the query (`sink`,
    /// reading `inputs`) does not read: a query never feeds its own input.
    fn late_data_stream(
        &self,
        owner: &str,
        name: &str,
        sink: &str,
        inputs: &[RelationDef],
        source: &RelationDef,
    ) -> Result<RelationDef> {
        if name == sink
            || inputs.iter().any(|r| r.name == name || self.catalog.relation(name).is_some_and(|l| l.topic == r.topic))
        {
            return Err(EddyError::InvalidValue(format!(
                "LATE DATA TO {name}: the query reads {name} (or its topic); late records go to a stream it does not read"
            )));
        }
        if let Some(rel) = self.catalog.relation(name) {
            if let Some(writer) = self.catalog.queries().into_iter().find(|q| q.sink.as_deref() == Some(name)) {
                return Err(EddyError::ObjectInUse(format!(
                    "LATE DATA TO {name}: query {} writes {name}; late records go to a stream no query writes",
                    writer.id
                )));
            }
            if let Some(writer) = &rel.written_by {
                return Err(EddyError::ObjectInUse(format!(
                    "LATE DATA TO {name}: query {writer} writes {name}; a stream has one writing query"
                )));
            }
            self.require_privilege(owner, &rel, Privilege::Insert)?;
            let same = rel.kind == RelationKind::Stream
                && rel.columns.len() == source.columns.len()
                && rel.columns.iter().zip(&source.columns).all(|(a, b)| a.name == b.name && a.ty == b.ty);
            if !same {
                return Err(EddyError::InvalidValue(format!(
                    "LATE DATA TO {name}: {name} exists but is not a stream with the columns of {}",
                    source.name
                )));
            }
            return Ok(rel);
        }
        let mut rel = source.clone();
        rel.name = name.to_string();
        rel.topic = name.to_string();
        rel.written_by = None;
        rel.materialized_by = None;
        rel.state_key = None;
        rel.legacy_state_key_columns = None;
        rel.owner = Some(owner.to_string());
        rel.grants.clear();
        rel.kind = RelationKind::Stream;
        self.ensure_topic(&mut rel, &BTreeMap::new())?;
        Ok(rel)
    }

    fn relation_from_props(
        &self,
        kind: RelationKind,
        name: &str,
        mut columns: Vec<Column>,
        props: &BTreeMap<String, String>,
        written_by: Option<&str>,
        query_window: Option<KeyWindow>,
    ) -> Result<RelationDef> {
        for key in props.keys() {
            if ![
                "KAFKA_TOPIC",
                "VALUE_FORMAT",
                "KEY_FORMAT",
                "FORMAT",
                "PARTITIONS",
                "TIMESTAMP",
                "TIMESTAMP_FORMAT",
                "REPLICAS",
                "VALUE_DELIMITER",
                "CLEANUP_POLICY",
                "RETENTION_MS",
                "WRAP_SINGLE_VALUE",
                "WINDOW_TYPE",
                "WINDOW_SIZE",
                "VALUE_SCHEMA_ID",
                "KEY_SCHEMA_ID",
                "KEY_SCHEMA_FULL_NAME",
                "VALUE_SCHEMA_FULL_NAME",
                "VALUE_AVRO_SCHEMA_FULL_NAME",
                "KEY_PROTOBUF_NULLABLE_REPRESENTATION",
                "VALUE_PROTOBUF_NULLABLE_REPRESENTATION",
            ]
            .contains(&key.as_str())
            {
                return Err(EddyError::InvalidValue(format!("unknown property {key} in WITH (...)")));
            }
        }
        // ksqlDB's FORMAT sets both formats, and so excludes either of the others.
        if let (Some(_), Some(other)) =
            (props.get("FORMAT"), ["VALUE_FORMAT", "KEY_FORMAT"].into_iter().find(|k| props.contains_key(*k)))
        {
            return Err(EddyError::InvalidValue(format!(
                "Cannot supply both '{other}' and 'FORMAT' properties, as 'FORMAT' sets both key and value formats. \
                 Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'."
            )));
        }
        let value_format_name = props.get("VALUE_FORMAT").or(props.get("FORMAT")).map_or("JSON", String::as_str);
        let mut value_encoding =
            ValueFormat::parse(value_format_name, props.get("VALUE_DELIMITER").map(String::as_str))
                .map_err(EddyError::InvalidValue)?;
        // ksqlDB's WRAP_SINGLE_VALUE: JSON may hold its one value column bare; KAFKA and
        // DELIMITED values are never wrapped.
        match (props.get("WRAP_SINGLE_VALUE").map(|v| v.to_ascii_lowercase()).as_deref(), value_encoding) {
            (None | Some("true"), ValueFormat::Json) => {}
            (Some("false"), ValueFormat::Json) => value_encoding = ValueFormat::JsonUnwrapped,
            (None | Some("false"), _) => {}
            (Some("true"), other) => {
                return Err(EddyError::InvalidValue(format!(
                    "VALUE_FORMAT='{}' does not support WRAP_SINGLE_VALUE=true (its values are never wrapped)",
                    other.name()
                )))
            }
            (Some(v), _) => {
                return Err(EddyError::InvalidValue(format!("WRAP_SINGLE_VALUE takes true or false, not '{v}'")))
            }
        }
        let value_delimiter = match value_encoding {
            ValueFormat::Delimited(d) if d != ',' => Some(d),
            ValueFormat::Delimited(_)
            | ValueFormat::Json
            | ValueFormat::JsonUnwrapped
            | ValueFormat::Kafka
            | ValueFormat::Avro { .. }
            | ValueFormat::JsonSr { .. }
            | ValueFormat::Protobuf { .. }
            | ValueFormat::ProtobufNosr { .. } => None,
        };
        let key_window = match (props.get("WINDOW_TYPE"), props.get("WINDOW_SIZE")) {
            (None, None) => query_window,
            (None, Some(_)) => {
                return Err(EddyError::InvalidValue(
                    "WINDOW_SIZE applies to a WINDOW_TYPE of TUMBLING or HOPPING".into(),
                ))
            }
            (Some(_), _) if written_by.is_some() => {
                return Err(EddyError::InvalidValue(
                    "WINDOW_TYPE declares the windows of an existing topic (CREATE STREAM|TABLE over it); \
                     a query's windows come from its WINDOW clause"
                        .into(),
                ))
            }
            (Some(t), size) => {
                let window = KeyWindow::from_props(t, size.map(String::as_str)).map_err(EddyError::InvalidValue)?;
                // The window's bounds are key columns, after the declared ones (as a
                // windowed aggregation's result has them).
                let at = columns.iter().rposition(|c| c.key).map_or(0, |i| i + 1);
                for (i, name) in [WINDOW_START, WINDOW_END].into_iter().enumerate() {
                    columns.insert(at + i, Column { name: name.into(), ty: SqlType::BigInt, key: true });
                }
                Some(window)
            }
        };
        let is_window_bound = |c: &Column| key_window.is_some() && (c.name == WINDOW_START || c.name == WINDOW_END);
        let n_keys = columns.iter().filter(|c| c.key && !is_window_bound(c)).count();
        let key_format = match props.get("KEY_FORMAT").or(props.get("FORMAT").filter(|_| n_keys > 0)) {
            Some(f) => KeyFormat::parse(f).ok_or_else(|| {
                EddyError::InvalidValue(format!(
                    "KEY_FORMAT='{f}' (supported: KAFKA, JSON, DELIMITED, AVRO, JSON_SR, PROTOBUF, PROTOBUF_NOSR, NONE)"
                ))
            })?,
            None if n_keys == 0 => KeyFormat::None,
            None if n_keys == 1 => KeyFormat::Kafka,
            None => KeyFormat::Json,
        };
        if key_format == KeyFormat::Kafka && n_keys > 1 {
            return Err(EddyError::InvalidValue(
                "KEY_FORMAT='KAFKA' holds one key column; use KEY_FORMAT='JSON'".into(),
            ));
        }
        let key_columns: Vec<Column> = columns.iter().filter(|c| !is_window_bound(c)).cloned().collect();
        key_format.check_columns(&key_columns).map_err(EddyError::InvalidValue)?;
        let partitions = match props.get("PARTITIONS") {
            Some(p) => p
                .parse::<i32>()
                .ok()
                .filter(|p| (1..=10_000).contains(p))
                .ok_or_else(|| EddyError::InvalidValue(format!("PARTITIONS={p}: expected 1 to 10000")))?,
            None => self.config.default_partitions,
        };
        let timestamp_column = match props.get("TIMESTAMP") {
            Some(t) => {
                let col = columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(t))
                    .ok_or_else(|| EddyError::UndefinedColumn(t.clone()))?;
                Some(col.name.clone())
            }
            None => None,
        };
        let timestamp_format = props.get("TIMESTAMP_FORMAT").cloned();
        if let Some(f) = &timestamp_format {
            let col = timestamp_column.as_ref().and_then(|t| columns.iter().find(|c| &c.name == t));
            if col.is_none_or(|c| c.ty != crate::format::SqlType::String) {
                return Err(EddyError::InvalidValue(
                    "TIMESTAMP_FORMAT applies to a STRING column named by TIMESTAMP='column'".into(),
                ));
            }
            crate::functions::format_timestamp_ms(0, f)
                .map_err(|e| EddyError::InvalidValue(format!("TIMESTAMP_FORMAT '{f}': {e}")))?;
        } else if let Some(col) = timestamp_column.as_ref().and_then(|t| columns.iter().find(|c| &c.name == t)) {
            if !matches!(col.ty, crate::format::SqlType::BigInt | crate::format::SqlType::Timestamp) {
                return Err(EddyError::InvalidValue(format!(
                    "TIMESTAMP column {} must be BIGINT (epoch milliseconds) or TIMESTAMP, or a STRING with TIMESTAMP_FORMAT",
                    col.name
                )));
            }
        }
        if key_format == KeyFormat::None {
            columns.iter_mut().filter(|c| !is_window_bound(c)).for_each(|c| c.key = false);
        }
        value_encoding.check_columns(&columns).map_err(EddyError::InvalidValue)?;
        let schema_props = super::avro_schema::schema_properties(props, key_format, value_encoding)?;
        Ok(RelationDef {
            name: name.to_string(),
            kind,
            columns,
            topic: props.get("KAFKA_TOPIC").cloned().unwrap_or_else(|| name.to_string()),
            key_format,
            key_window,
            single_json_key_unwrapped: true,
            value_format: value_encoding.name().to_string(),
            value_schema_id: None,
            key_schema_id: None,
            key_schema_full_name: schema_props.key_full_name,
            value_schema_full_name: schema_props.value_full_name,
            key_protobuf_nullable: schema_props.key_nullable,
            value_protobuf_nullable: schema_props.value_nullable,
            value_delimiter,
            unwrap_single_value: value_encoding == ValueFormat::JsonUnwrapped,
            partitions,
            timestamp_column,
            timestamp_format,
            header_columns: Vec::new(),
            written_by: written_by.map(str::to_string),
            materialized_by: None,
            owner: None,
            grants: BTreeMap::new(),
            state_key: None,
            legacy_state_key_columns: None,
        })
    }

    /// Creates the relation's topic, or adopts an existing one (its partition count wins
    /// unless PARTITIONS says otherwise, which is an error as in ksqlDB).
    fn ensure_topic(&self, rel: &mut RelationDef, props: &BTreeMap<String, String>) -> Result<()> {
        match self.log.topic(&rel.topic) {
            Some(t) => {
                let existing = t.partitions.len() as i32;
                if props.contains_key("PARTITIONS") && existing != rel.partitions && rel.written_by.is_none() {
                    return Err(EddyError::InvalidValue(format!(
                        "topic {} exists with {existing} partitions, not {}",
                        rel.topic, rel.partitions
                    )));
                }
                if rel.written_by.is_some() && self.catalog.relations().iter().any(|r| r.topic == rel.topic) {
                    return Err(EddyError::DuplicateRelation(format!(
                        "topic {} (used by another stream or table)",
                        rel.topic
                    )));
                }
                rel.partitions = existing;
            }
            None => {
                self.log.create_topic(&rel.topic, topic_config(rel, props)?)?;
            }
        }
        Ok(())
    }

    pub(super) async fn drop_relation(
        &self,
        kind: RelationKind,
        name: &str,
        if_exists: bool,
        delete_topic: bool,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        let tag = format!("DROP {}", kind.word());
        let Some(rel) = self.catalog.relation(name) else {
            return if if_exists {
                Ok(Output::Command { tag })
            } else {
                Err(EddyError::UndefinedRelation(format!("{} {name}", kind.word().to_lowercase())))
            };
        };
        if rel.kind != kind {
            return Err(EddyError::InvalidValue(format!(
                "{name} is a {}, not a {}: use DROP {}",
                rel.kind.word(),
                kind.word(),
                rel.kind.word()
            )));
        }
        if rel.name == crate::dataflow::sink::PROCESSING_LOG {
            return Err(EddyError::InvalidValue("the processing log cannot be dropped".into()));
        }
        if let Some(writer) = rel.written_by.as_ref().and_then(|q| self.catalog.query(q)) {
            if writer.sink.as_deref() != Some(rel.name.as_str()) {
                return Err(EddyError::ObjectInUse(format!(
                    "cannot drop {name}: query {} writes its late records there (drop {} first)",
                    writer.id,
                    writer.sink.unwrap_or_default()
                )));
            }
        }
        let own: Vec<&String> = rel.written_by.iter().chain(rel.materialized_by.iter()).collect();
        if let Some(writer) =
            self.catalog.queries().into_iter().find(|q| q.sink.as_deref() == Some(name) && !own.contains(&&q.id))
        {
            return Err(EddyError::ObjectInUse(format!(
                "cannot drop {name}: query {} writes into it (TERMINATE it first)",
                writer.id
            )));
        }
        if let Some(reader) = self
            .catalog
            .queries()
            .into_iter()
            .find(|q| (q.source == rel.name || q.inputs.contains(&rel.name)) && !own.contains(&&q.id))
        {
            return Err(EddyError::ObjectInUse(format!(
                "cannot drop {name}: query {} reads from it (TERMINATE it or drop its {} first)",
                reader.id,
                reader.sink.unwrap_or_default()
            )));
        }
        // One catalog write for the whole DROP; then what follows from it (fences lifted,
        // state and topic removed), which a restart finishes if a crash comes in between.
        let mut change = CatalogChange { remove_relations: vec![rel.name.clone()], ..Default::default() };
        let mut released = Vec::new();
        for id in own.iter().copied() {
            let stopped = self.lock_queries().remove(id.as_str());
            if let Some(q) = stopped {
                q.stop();
            }
            change.remove_queries.push(id.clone());
            released.extend(self.release_outputs(id, Some(&rel.name), &mut change));
        }
        if rel.written_by.is_some() {
            // Its query is stopped: the topic outlives it (unless DELETE TOPIC) as anyone's.
            released.push(rel.topic.clone());
        }
        if delete_topic {
            change.delete_topics.push(rel.topic.clone());
        }
        self.catalog.apply(change)?;
        crate::failpoint::hit("ddl:after_catalog");
        self.finish_stopped(own.iter().map(|id| id.as_str()), &released)?;
        if delete_topic {
            self.delete_dropped_topic(&rel.topic)?;
        }
        Ok(Output::Command { tag })
    }

    /// What follows a committed DROP or TERMINATE: the stopped queries' state and their
    /// status go, and the topics they wrote take every writer again.
    fn finish_stopped<'a>(&self, ids: impl Iterator<Item = &'a str>, released: &[String]) -> Result<()> {
        let ids: Vec<&str> = ids.collect();
        for id in &ids {
            self.store.drop_cf(&state_cf(id))?;
            self.failed_queries().remove(*id);
        }
        for topic in released {
            for id in &ids {
                self.release_topic(topic, id)?;
            }
        }
        Ok(())
    }

    /// Deletes a topic a committed `DROP ... DELETE TOPIC` named (also at start-up, when a
    /// crash came first).
    pub(super) fn delete_dropped_topic(&self, topic: &str) -> Result<()> {
        match self.log.delete_topic(topic) {
            Ok(()) | Err(crate::log::LogError::UnknownTopic(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.catalog.topic_deleted(topic)
    }

    /// `CREATE OR REPLACE ... AS SELECT`: the query changes in place when its state keeps
    /// its shape (a new projected column, a changed filter over a stream, a changed HAVING);
    /// it resumes from its offsets with its groups, under the same query id.
    pub(super) async fn replace_query(
        &self,
        owner: &str,
        kind: RelationKind,
        name: String,
        props: BTreeMap<String, String>,
        select: SelectStatement,
        text: String,
    ) -> Result<Output> {
        let ddl = self.ddl.lock().await;
        let Some(mut rel) = self.catalog.relation(&name) else {
            drop(ddl);
            return self.create_as(owner, kind, name, props, select, false, text).await;
        };
        self.require_owner(owner, &rel)?;
        let tag = format!("CREATE {}", kind.word());
        let cannot = |why: String| EddyError::InvalidValue(format!("CREATE OR REPLACE {name}: {why}"));
        if rel.kind != kind {
            return Err(cannot(format!("{name} is a {}", rel.kind.word())));
        }
        let Some(old) = rel.written_by.as_ref().and_then(|q| self.catalog.query(q)) else {
            return Err(cannot(format!(
                "{name} is not written by a query (only CREATE ... AS SELECT results can be replaced)"
            )));
        };
        let inputs = self.sources(&select)?;
        for input in &inputs {
            self.require_privilege(owner, input, Privilege::Select)?;
        }
        let plan = plan_continuous(&select, &inputs).await?;
        let old_plan = match crate::sql::parse(&old.sql)?.into_iter().next().map(|l| l.statement) {
            Some(Statement::CreateAs { select, .. }) => plan_continuous(&select, &self.sources(&select)?).await?,
            _ => return Err(cannot(format!("query {} has no SELECT to compare with", old.id))),
        };
        for ((part, was), (_, now)) in old_plan.state_shape.iter().zip(&plan.state_shape) {
            if was != now {
                return Err(cannot(format!(
                    "the new query cannot reuse the state of {}: {part} changed (DROP {} and create it again)",
                    old.id,
                    kind.word()
                )));
            }
        }
        if old_plan.state_shape.len() != plan.state_shape.len() {
            return Err(cannot(format!("the new query cannot reuse the state of {}", old.id)));
        }
        let keys =
            |cols: &[Column]| cols.iter().filter(|c| c.key).map(|c| (c.name.clone(), c.ty.clone())).collect::<Vec<_>>();
        if keys(&old_plan.output_columns) != keys(&plan.output_columns) {
            return Err(cannot("its key columns changed (the topic's records are keyed by them)".into()));
        }
        if plan.emit_final && old_plan.output_columns != plan.output_columns {
            return Err(cannot("an EMIT FINAL query's columns cannot change in place yet".into()));
        }
        let stopped = self.lock_queries().remove(&old.id);
        if let Some(q) = stopped {
            q.stop();
        }
        let reproject = matches!(plan.shape, PlanShape::Aggregate(_)) && old_plan.output_columns != plan.output_columns;
        // Its copies of joined tables are rebuilt (before the catalog names the new query: a
        // crash in between restarts the old one, which rebuilds them too).
        if !plan.join.is_empty() && plan.interval.is_none() && plan.table_join.is_none() {
            self.runtime.forget_join_copies(&old.id)?;
        }
        rel.columns = plan.output_columns.clone();
        let query = QueryDef { sql: text, paused: false, ..old.clone() };
        self.catalog.add(&rel, Some(&query))?;
        let late = plan.late_data_to.as_ref().and_then(|n| self.catalog.relation(n));
        let running = self.runtime.start_persistent(&old.id, plan, Some(rel), late, reproject)?;
        self.lock_queries().insert(old.id.clone(), running);
        Ok(Output::Command { tag })
    }

    /// A stopped query's outputs (its sink, its late-data stream) no longer belong to it:
    /// everything it wrote is committed, so other writers may come in. Adds the relations'
    /// change to `change`; returns their topics, to release once it is committed.
    fn release_outputs(&self, id: &str, except: Option<&str>, change: &mut CatalogChange) -> Vec<String> {
        let mut topics = Vec::new();
        for mut rel in self.catalog.relations() {
            if rel.written_by.as_deref() == Some(id) && except != Some(rel.name.as_str()) {
                rel.written_by = None;
                topics.push(rel.topic.clone());
                change.put_relations.push(rel);
            }
        }
        topics
    }

    /// Query `id` no longer writes `topic`: every writer may come in again, unless other
    /// queries still write it (`INSERT INTO ... SELECT`).
    fn release_topic(&self, topic: &str, id: &str) -> Result<()> {
        if let Some(t) = self.log.topic(topic) {
            let _turn = t.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
            for p in &t.partitions {
                p.release(id)?;
            }
        }
        Ok(())
    }

    /// The stream an `INSERT INTO ... SELECT` query `id` appends to (not its own output).
    fn inserts_into(&self, id: &str) -> Option<RelationDef> {
        let q = self.catalog.query(id)?;
        let rel = self.catalog.relation(q.sink.as_deref()?)?;
        (rel.written_by.as_deref() != Some(id) && rel.materialized_by.as_deref() != Some(id)).then_some(rel)
    }

    /// `INSERT INTO stream SELECT ...`: a persistent query that appends to an existing stream,
    /// beside the query that made it (if any) and other INSERT queries. Their checkpoints take
    /// turns on the topic, each exactly-once; Kafka producers and INSERT ... VALUES are refused
    /// while queries write the stream (as for any query's output).
    pub(super) async fn insert_select(
        &self,
        owner: &str,
        target: String,
        props: BTreeMap<String, String>,
        select: SelectStatement,
        text: String,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        let rel =
            self.catalog.relation(&target).ok_or_else(|| EddyError::UndefinedRelation(format!("stream {target}")))?;
        if rel.kind != RelationKind::Stream {
            return Err(EddyError::InvalidValue(format!(
                "INSERT INTO {target}: {target} is a table; INSERT INTO ... SELECT appends to a stream"
            )));
        }
        if rel.name == crate::dataflow::sink::PROCESSING_LOG {
            return Err(EddyError::InvalidValue("the processing log is written by Eddy only".into()));
        }
        if matches!(rel.value_format.as_str(), "AVRO" | "PROTOBUF") && !self.writes_own_avro_schema(&rel) {
            // A producer's schema may refuse rows the query makes (a NULL in a required
            // field); a query must never fail to write a row it emitted.
            return Err(EddyError::NotImplemented(format!(
                "INSERT INTO {target} ... SELECT: {target}'s AVRO schema (id {}) came from a producer, not from its columns",
                rel.value_schema_id.unwrap_or(0)
            )));
        }
        if !self.writes_own_key_schema(&rel) {
            return Err(EddyError::NotImplemented(format!(
                "INSERT INTO {target} ... SELECT: {target}'s {} key schema (id {}) came from a producer, not from its key columns",
                rel.key_format.name(),
                rel.key_schema_id.unwrap_or(0)
            )));
        }
        self.require_privilege(owner, &rel, Privilege::Insert)?;
        let inputs = self.sources(&select)?;
        for input in &inputs {
            self.require_privilege(owner, input, Privilege::Select)?;
        }
        if inputs.iter().any(|r| r.name == rel.name || r.topic == rel.topic) {
            return Err(EddyError::InvalidValue(format!(
                "INSERT INTO {target}: the query reads {target}; a query never feeds its own input"
            )));
        }
        if let Some(late) = rel.written_by.as_ref().and_then(|q| self.catalog.query(q)) {
            if late.sink.as_deref() != Some(rel.name.as_str()) {
                return Err(EddyError::ObjectInUse(format!(
                    "INSERT INTO {target}: query {} writes its late records there",
                    late.id
                )));
            }
        }
        if self.lock_queries().len() >= self.config.max_queries {
            return Err(EddyError::LimitExceeded(format!(
                "at most {} persistent queries run at once",
                self.config.max_queries
            )));
        }
        let plan = plan_continuous(&select, &inputs).await?;
        if plan.source.kind == RelationKind::Table || matches!(plan.shape, PlanShape::Aggregate(_)) {
            return Err(EddyError::InvalidValue(format!(
                "INSERT INTO {target}: the query makes a table (it reads a table or aggregates); INSERT INTO ... SELECT appends a stream's rows"
            )));
        }
        if plan.late_data_to.is_some() {
            return Err(EddyError::NotImplemented("LATE DATA TO in INSERT INTO ... SELECT".into()));
        }
        let shape = |cols: &[Column]| {
            cols.iter()
                .map(|c| format!("{} {}{}", c.name, c.ty.name(), if c.key { " KEY" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let same = plan.output_columns.len() == rel.columns.len()
            && plan
                .output_columns
                .iter()
                .zip(&rel.columns)
                .all(|(a, b)| a.name == b.name && a.ty == b.ty && a.key == b.key);
        if !same {
            // ksqlDB's words.
            return Err(EddyError::InvalidValue(format!(
                "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                shape(&plan.output_columns),
                shape(&rel.columns)
            )));
        }
        // Its records are keyed by the target's window (or none), which the rows must have.
        let window = output_window(&plan);
        if window != rel.key_window {
            let describe = |w: Option<KeyWindow>| match w {
                Some(w @ (KeyWindow::Tumbling { size_ms } | KeyWindow::Hopping { size_ms })) => {
                    format!("a {} window of {size_ms} ms", w.type_name())
                }
                Some(KeyWindow::Session) => "a SESSION window".to_string(),
                None => "no window".to_string(),
            };
            return Err(EddyError::InvalidValue(format!(
                "INSERT INTO {target}: its records are keyed by {}, the query's rows by {}",
                describe(rel.key_window),
                describe(window)
            )));
        }
        let id = match props.get("QUERY_ID") {
            Some(id) => id.to_uppercase(),
            None => format!("INSERTQUERY_{}", self.catalog.next_query_number()?),
        };
        if self.catalog.query(&id).is_some() {
            return Err(EddyError::DuplicateRelation(format!("query {id}")));
        }
        if let Some(other) = props.keys().find(|k| k.as_str() != "QUERY_ID") {
            return Err(EddyError::InvalidValue(format!(
                "INSERT INTO ... SELECT takes only QUERY_ID in WITH, not {other}"
            )));
        }
        let query = QueryDef {
            id: id.clone(),
            sql: text,
            source: plan.source.name.clone(),
            sink: Some(rel.name.clone()),
            inputs: inputs.iter().map(|r| r.name.clone()).collect(),
            paused: false,
        };
        self.catalog.apply(CatalogChange { put_queries: vec![query], ..Default::default() })?;
        self.start_query(&id, plan, Some(rel))?;
        Ok(Output::Command { tag: "INSERT 0 0".into() })
    }

    pub(super) async fn terminate(&self, user: &str, query_id: Option<String>) -> Result<Output> {
        if let Some(id) =
            query_id.as_deref().filter(|id| id.to_lowercase().starts_with(crate::dataflow::TRANSIENT_PREFIX))
        {
            return self.terminate_push(user, id);
        }
        let _ddl = self.ddl.lock().await;
        let ids: Vec<String> = match query_id {
            Some(id) => {
                let q = self
                    .catalog
                    .queries()
                    .into_iter()
                    .find(|q| q.id.eq_ignore_ascii_case(&id))
                    .ok_or_else(|| EddyError::UndefinedRelation(format!("query {id}")))?;
                if q.id.starts_with("MAT_") {
                    return Err(EddyError::InvalidValue(format!(
                        "{} keeps table {} current; DROP TABLE {} instead",
                        q.id, q.source, q.source
                    )));
                }
                vec![q.id]
            }
            None => self.catalog.queries().into_iter().filter(|q| !q.id.starts_with("MAT_")).map(|q| q.id).collect(),
        };
        // All or nothing: TERMINATE ALL by a user who does not own every query stops none.
        for id in &ids {
            self.require_query_owner(user, id, "terminate")?;
        }
        let mut change = CatalogChange::default();
        let mut released = Vec::new();
        for id in &ids {
            let stopped = self.lock_queries().remove(id);
            if let Some(q) = stopped {
                q.stop();
            }
            released.extend(self.inserts_into(id).map(|rel| rel.topic));
            released.extend(self.release_outputs(id, None, &mut change));
            change.remove_queries.push(id.clone());
        }
        self.catalog.apply(change)?;
        crate::failpoint::hit("ddl:after_catalog");
        self.finish_stopped(ids.iter().map(String::as_str), &released)?;
        Ok(Output::Command { tag: "TERMINATE".into() })
    }
}

/// The settings of a new relation's topic: a table's is compacted with no time retention
/// (the latest row of every key is kept as long as the table exists, as ksqlDB does), a
/// stream's keeps Kafka's 7 days; `WITH (CLEANUP_POLICY='...', RETENTION_MS=...)` says otherwise.
fn topic_config(rel: &RelationDef, props: &BTreeMap<String, String>) -> Result<TopicConfig> {
    let mut config = match rel.kind {
        RelationKind::Table => TopicConfig::compacted(rel.partitions),
        RelationKind::Stream => TopicConfig { partitions: rel.partitions, ..TopicConfig::default() },
    };
    for (prop, key) in [("CLEANUP_POLICY", "cleanup.policy"), ("RETENTION_MS", "retention.ms")] {
        if let Some(value) = props.get(prop) {
            config.set(key, &value.to_lowercase()).map_err(|e| EddyError::InvalidValue(format!("{prop}: {e}")))?;
        }
    }
    Ok(config)
}

/// The window a query's result keys carry, as ksqlDB writes windowed keys: its own WINDOW
/// clause's, or the windowed table's it keeps the key of (a filter or projection of it).
/// Only when both bounds are key columns of the result under their own names; otherwise
/// they are ordinary key columns.
fn output_window(plan: &ContinuousPlan) -> Option<KeyWindow> {
    let keyed = |name: &str| plan.output_columns.iter().any(|c| c.key && c.name == name);
    if !(keyed(WINDOW_START) && keyed(WINDOW_END)) {
        return None;
    }
    match &plan.window {
        Some(w) => Some(match w.spec.kind {
            WindowKind::Tumbling => KeyWindow::Tumbling { size_ms: w.spec.size_ms },
            WindowKind::Hopping { .. } => KeyWindow::Hopping { size_ms: w.spec.size_ms },
            WindowKind::Session => KeyWindow::Session,
        }),
        None => plan.source.key_window,
    }
}

fn validate_columns(kind: RelationKind, columns: &[Column]) -> Result<()> {
    for (i, c) in columns.iter().enumerate() {
        reserved_name(&c.name)?;
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err(EddyError::DuplicateRelation(format!("column {}", c.name)));
        }
    }
    if kind == RelationKind::Table && !columns.iter().any(|c| c.key) {
        return Err(EddyError::InvalidValue(
            "a table needs a PRIMARY KEY column, e.g. (id STRING PRIMARY KEY, ...)".into(),
        ));
    }
    Ok(())
}

/// ksqlDB's pseudo columns cannot be declared (they would hide the record's own).
pub(super) fn reserved_name(name: &str) -> Result<()> {
    let pseudo = ["rowtime", "rowpartition", "rowoffset", "windowstart", "windowend"];
    if pseudo.iter().any(|p| p.eq_ignore_ascii_case(name)) {
        return Err(EddyError::InvalidValue(format!(
            "{} is a reserved column name. You cannot use it as a name for a column.",
            name.to_uppercase()
        )));
    }
    Ok(())
}
