//! `pgwire::api::Type` for the fuzz targets (see Cargo.toml).
pub mod api {
    pub use postgres_types::Type;
}
