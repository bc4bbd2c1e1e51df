//! Eddy's integration tests: one binary, so linking happens once. Every test runs the real
//! `eddy` binary on loopback with its own data directory and talks to it with real clients.

mod chaos_ingest;
mod common;
mod compacted_tables;
mod corruption;
mod crash_points;
mod differential;
mod disk_full;
mod event_time;
mod exact;
mod fences;
mod http;
mod insert_select;
mod join_spill;
mod kafka;
mod ksql_compat;
mod limits;
mod load;
mod log_compaction;
mod log_model;
mod parallel;
mod pg;
mod pg_catalog;
mod pgsecurity;
mod privileges;
mod pull_by_key;
mod push_aggregates;
mod push_tables;
mod rdkafka_client;
mod restart;
mod slt;
mod state_backup;
