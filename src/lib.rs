//! Eddy: a SQL-first streaming database in one binary.
//!
//! ```text
//!  Kafka clients (kafka/) :9092 ┐        psql / drivers / sqllogictest
//!                               │                 │ :5433 Postgres wire (pgwire/)
//!                               ▼                 ▼
//!  log/  topics → partitions → segments   engine/  statements: DDL, INSERT, pull, push
//!        of Kafka v2 batches, verbatim;     sql/     ksqlDB dialect → Statement
//!        group-commit fsync               plan/    DataFusion plan → ContinuousPlan
//!        ▲               │                catalog/ streams, tables, queries (RocksDB)
//!        │ sink append   │ source tail    dataflow/ source → filter/project/aggregate → sink
//!        └───────────────┴───────────────► state/   RocksDB: state + offsets + sink ends,
//!                                                   one atomic write per checkpoint
//! ```
//!
//! The five data paths, each readable top to bottom in one function:
//! 1. produce — `log::Partition::append` (from `engine::serve::insert`);
//! 2. continuous query — `dataflow::QueryTask::run`;
//! 3. checkpoint — `dataflow::QueryTask::checkpoint`;
//! 4. serve — `engine::serve` (`pull_query`, `push_query`);
//! 5. DDL — `engine::ddl` (`create_source`, `create_as`, `drop_relation`).

pub mod alloc;
pub mod auth;
pub mod catalog;
pub mod dataflow;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod functions;
pub mod http;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod net;
pub mod pgwire;
pub mod plan;
pub mod registry;
pub mod server;
pub mod sql;
pub mod state;

/// Every binary linking Eddy (the server, tests, benches) gets the allocator that survives
/// absurd sizes read from the wire (see `alloc`).
#[global_allocator]
static GLOBAL: alloc::EddyAllocator = alloc::EddyAllocator;
