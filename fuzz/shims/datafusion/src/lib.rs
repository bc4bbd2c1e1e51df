//! `datafusion::arrow::datatypes` for the fuzz targets (see Cargo.toml).
pub mod arrow {
    pub use arrow_schema as datatypes;
}
