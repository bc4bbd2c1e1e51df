//! ksqlDB's `ALTER STREAM | TABLE name ADD [COLUMN] ...` and `CREATE OR REPLACE STREAM |
//! TABLE` of one declared over a topic: new value columns, checked against the queries that
//! read it; a table's rows read again from its topic.

use super::ddl::reserved_name;
use super::{Engine, Output};
use crate::catalog::{QueryDef, RelationDef};
use crate::dataflow::state_cf;
use crate::error::{EddyError, Result};
use crate::format::{Column, ValueFormat};
use crate::plan::{plan_continuous, upsert_plan};
use crate::sql::{RelationKind, Statement};

impl Engine {
    /// ksqlDB's `ALTER STREAM name ADD COLUMN ...`: see `add_columns`.
    pub(super) async fn alter_source(
        &self,
        owner: &str,
        kind: RelationKind,
        name: &str,
        columns: Vec<Column>,
    ) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        let rel = self.catalog.relation(name).ok_or_else(|| EddyError::UndefinedRelation(format!("Source {name}")))?;
        if rel.kind != kind {
            return Err(EddyError::WrongObjectType(format!(
                "Incompatible data source type is {}, but statement was ALTER {}",
                rel.kind.word(),
                kind.word()
            )));
        }
        self.add_columns(owner, rel, columns, "ALTER").await?;
        Ok(Output::Command { tag: format!("ALTER {}", kind.word()) })
    }

    /// `CREATE OR REPLACE STREAM | TABLE` of one that exists, over a topic: the same
    /// declaration with new value columns at the end (`add_columns`); anything else stays.
    pub(super) async fn replace_source(&self, owner: &str, existing: RelationDef, declared: RelationDef) -> Result<()> {
        self.require_owner(owner, &existing)?;
        let what = format!("CREATE OR REPLACE {} {}", declared.kind.word(), declared.name);
        let same_place = declared.kind == existing.kind
            && declared.topic == existing.topic
            && declared.key_format == existing.key_format
            && declared.key_window == existing.key_window
            && declared.value_format == existing.value_format
            && declared.value_delimiter == existing.value_delimiter
            && declared.unwrap_single_value == existing.unwrap_single_value
            && declared.timestamp_column == existing.timestamp_column
            && declared.timestamp_format == existing.timestamp_format
            && declared.header_columns == existing.header_columns;
        if !same_place {
            return Err(EddyError::InvalidValue(format!(
                "{what}: only new value columns may be added; its kind, topic, formats, windows, timestamp and header columns stay as declared"
            )));
        }
        let kept = existing.columns.len();
        if declared.columns.len() < kept || declared.columns[..kept] != existing.columns[..] {
            return Err(EddyError::InvalidValue(format!(
                "{what}: its columns stay as they are (none removed, renamed, moved or retyped); new value columns go at the end"
            )));
        }
        let added = declared.columns[kept..].to_vec();
        if added.iter().any(|c| c.key) {
            return Err(EddyError::InvalidValue(format!("{what}: only value columns may be added, not key columns")));
        }
        if added.is_empty() {
            return Ok(());
        }
        self.add_columns(owner, existing, added, "CREATE OR REPLACE").await
    }

    /// New value columns on a stream or table declared over a topic, JSON values (records
    /// written before read NULL there). The queries that read a stream go on as they are;
    /// each must plan to the same output with the new columns (a `SELECT *` would not), and
    /// none may hold its rows in state (a stream–stream join). A table's own state is read
    /// again from its topic; no other query may read it.
    async fn add_columns(&self, owner: &str, rel: RelationDef, columns: Vec<Column>, verb: &str) -> Result<()> {
        let name = rel.name.clone();
        self.require_owner(owner, &rel)?;
        if rel.written_by.is_some() || rel.name == crate::dataflow::sink::PROCESSING_LOG {
            return Err(EddyError::InvalidValue(format!(
                "{verb} command is not supported for CREATE ... AS statements."
            )));
        }
        if rel.kind == RelationKind::Table {
            // Its state is rebuilt from its topic, which must still hold every key's latest
            // record; queries reading it hold its rows as declared.
            let whole = self.log.topic(&rel.topic).is_some_and(|t| {
                t.config().cleanup_policy == crate::log::CleanupPolicy::Compact
                    && t.partitions.iter().all(|p| p.log_start_offset() == 0)
            });
            if !whole {
                return Err(EddyError::ObjectInUse(format!(
                    "{verb} TABLE {name}: its rows would be read again from topic {}, which no longer holds every key's latest record (a delete policy or deleted records); DROP and re-create the table instead",
                    rel.topic
                )));
            }
            let readers: Vec<String> = self
                .catalog
                .queries()
                .into_iter()
                .filter(|q| {
                    (q.source == rel.name || q.inputs.contains(&rel.name))
                        && rel.materialized_by.as_ref() != Some(&q.id)
                })
                .map(|q| q.id)
                .collect();
            if !readers.is_empty() {
                return Err(EddyError::ObjectInUse(format!(
                    "{verb} TABLE {name}: queries {} read it and hold its rows as declared; TERMINATE them first",
                    readers.join(", ")
                )));
            }
        }
        if rel.value_encoding() != ValueFormat::Json {
            return Err(EddyError::NotImplemented(format!(
                "new columns on a {} stream (its records written so far have no place for them; JSON values only)",
                rel.value_format
            )));
        }
        let mut altered = rel.clone();
        for c in columns {
            reserved_name(&c.name)?;
            if altered.columns.iter().any(|o| o.name.eq_ignore_ascii_case(&c.name)) {
                return Err(EddyError::DuplicateObject(format!(
                    "Cannot add column {} to schema. A column with the same name already exists.",
                    c.name
                )));
            }
            altered.columns.push(c);
        }
        // (A table's own materializer has no SELECT to plan again.)
        let reads = |q: &QueryDef| q.source == rel.name || q.inputs.contains(&rel.name);
        for q in self.catalog.queries().into_iter().filter(|q| reads(q) && rel.materialized_by.as_ref() != Some(&q.id))
        {
            let select = match crate::sql::parse(&q.sql)?.into_iter().next().map(|l| l.statement) {
                Some(Statement::CreateAs { select, .. }) | Some(Statement::InsertSelect { select, .. }) => select,
                _ => continue,
            };
            let inputs = self.sources(&select)?;
            let before = plan_continuous(&select, &inputs).await?;
            let inputs: Vec<RelationDef> =
                inputs.into_iter().map(|r| if r.name == rel.name { altered.clone() } else { r }).collect();
            let after = plan_continuous(&select, &inputs).await?;
            if before.interval.is_some() {
                return Err(EddyError::ObjectInUse(format!(
                    "{verb} {name}: query {} joins it with another stream and holds its rows in state; TERMINATE it first",
                    q.id
                )));
            }
            if before.output_columns != after.output_columns {
                return Err(EddyError::ObjectInUse(format!(
                    "{verb} {name}: query {} would change its output (it selects every column); TERMINATE it first",
                    q.id
                )));
            }
        }
        let Some(materializer) = altered.materialized_by.clone() else {
            return self.catalog.update_relation(&altered);
        };
        // A table: its query's state is read again from the topic, the new columns with it
        // (a crash in between does the same with what the catalog holds); pull queries see
        // the table refill.
        let stopped = self.lock_queries().remove(&materializer);
        if let Some(q) = stopped {
            q.stop();
        }
        let cf = state_cf(&materializer);
        altered.state_key = upsert_plan(&altered).state_key;
        let rebuilt = self
            .store
            .drop_cf(&cf)
            .and_then(|()| self.store.ensure_cf(&cf))
            .and_then(|()| self.catalog.update_relation(&altered))
            .and_then(|()| self.start_query(&materializer, upsert_plan(&altered), None));
        if let Err(e) = rebuilt {
            // Never silently gone: SHOW QUERIES says why; a restart tries again.
            let message = format!("{verb} TABLE {name}: its rows could not be read again: {e}");
            if let Some(q) = self.catalog.query(&materializer) {
                self.hold_failed_query(&q, e);
            }
            return Err(EddyError::State(message));
        }
        Ok(())
    }
}
