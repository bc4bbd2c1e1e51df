//! Eddy's integration tests: one binary, so linking happens once. Every test runs the real
//! `eddy` binary on loopback with its own data directory and talks to it with real clients.

mod common;
mod differential;
mod kafka;
mod log_model;
mod pg;
mod pgsecurity;
mod rdkafka_client;
mod restart;
mod slt;
