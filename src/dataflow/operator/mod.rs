//! Streaming operators, one per file. Each is a plain synchronous struct whose `process`
//! takes one Arrow batch; none of them sees tokio, threads or the log, so tests call them
//! directly. The runner in `dataflow/mod.rs` drives them.

pub mod aggregate;
pub mod filter_project;
pub mod interval_join;
pub mod join;
pub mod table_join;
pub mod upsert;
pub mod window;

use serde_json::Value;

/// One change to a table-shaped result: the row now stored under `state_key`, or `None`
/// when the key was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub state_key: Vec<u8>,
    /// The key's values (group values or primary key), for the changelog record key.
    pub key_values: Vec<Value>,
    pub row: Option<Vec<Value>>,
    /// Bytes to persist under `state_key` at the next checkpoint (`None` deletes).
    pub state_value: Option<Vec<u8>>,
    pub timestamp_ms: i64,
}
