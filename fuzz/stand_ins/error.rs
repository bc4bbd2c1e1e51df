//! `crate::error` as the SQL dialect layer, the parameter handling and stored rows see it: Eddy's
//! `EddyError` with the variants the included modules use. The real one (`src/error.rs`)
//! also converts DataFusion, Arrow, RocksDB and log errors, which the fuzz build does not
//! compile. A module that starts using another variant fails to build here: add it.

// The fields are read through `Debug` only (in the targets' assertion messages).
#[allow(dead_code)]
#[derive(Debug)]
pub enum EddyError {
    /// Bad SQL; `position` is the 1-based character in the client's query string.
    Syntax {
        message: String,
        position: Option<usize>,
    },
    UndefinedRelation(String),
    UndefinedObject(String),
    InvalidValue(String),
    NotImplemented(String),
    LimitExceeded(String),
    Internal(String),
}

#[allow(dead_code)]
pub type Result<T> = std::result::Result<T, EddyError>;
