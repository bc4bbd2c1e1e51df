//! `datafusion::arrow::datatypes` and `datafusion::sql::sqlparser` for the fuzz targets (see
//! Cargo.toml).
pub mod arrow {
    pub use arrow_schema as datatypes;
}

pub mod sql {
    pub use sqlparser;
}
