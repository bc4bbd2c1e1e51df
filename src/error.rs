//! Eddy's error type, sorted by who is at fault (DataFusion's habit): the user (bad SQL,
//! unknown names, bad values), a known gap (not implemented yet), the environment (I/O),
//! or a bug (`Internal`, whose message says so). `pgwire/error.rs` maps it to SQLSTATEs.

use datafusion::error::DataFusionError;

use crate::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum EddyError {
    /// Bad SQL; `position` is the 1-based character in the client's query string.
    #[error("{message}")]
    Syntax { message: String, position: Option<usize> },
    #[error("{0} does not exist")]
    UndefinedRelation(String),
    #[error("column {0} does not exist")]
    UndefinedColumn(String),
    #[error("{0} already exists")]
    DuplicateRelation(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    TypeMismatch(String),
    /// Text that does not read as the type it is given for (Postgres's 22P02, "invalid
    /// input syntax for type ...").
    #[error("{0}")]
    InvalidTextRepresentation(String),
    /// A value past its type's range, say a BIGINT sum past 2^63 (22003, as Postgres).
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ObjectInUse(String),
    /// A write to a relation that only its query writes (Postgres: "cannot insert into view").
    #[error("{0}")]
    WrongObjectType(String),
    #[error("not supported yet: {0}")]
    NotImplemented(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("canceling statement due to user request")]
    Canceled,
    /// Not allowed for this user (42501).
    #[error("{0}")]
    PermissionDenied(String),
    /// A role that exists or does not, as Postgres words it (42710 / 42704).
    #[error("{0}")]
    DuplicateObject(String),
    #[error("{0}")]
    UndefinedObject(String),
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("state store error: {0}")]
    State(String),
    /// The server started on a full disk and holds its state read-only.
    #[error("Eddy is read-only: {0}")]
    ReadOnly(String),
    /// An error DataFusion found while planning or running a query (message as it gave it).
    #[error("{0}")]
    DataFusion(String),
    #[error("internal error (a bug in Eddy): {0}")]
    Internal(String),
    /// An error of one statement of several (`RUN SCRIPT`), saying which; its SQLSTATE is
    /// the statement's own.
    #[error("{context}: {source}")]
    InStatement { context: String, source: Box<EddyError> },
}

/// An error of Eddy's raised inside a DataFusion plan (a table read by a pull query): it
/// travels through DataFusion boxed, and comes out as itself (see `From<DataFusionError>`).
impl From<EddyError> for DataFusionError {
    fn from(e: EddyError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

impl From<DataFusionError> for EddyError {
    fn from(e: DataFusionError) -> Self {
        let mut e = e;
        while let DataFusionError::Context(_, inner) = e {
            e = *inner;
        }
        let e = match e {
            DataFusionError::External(inner) => match inner.downcast::<EddyError>() {
                Ok(eddy) => return *eddy,
                Err(other) => DataFusionError::External(other),
            },
            other => other,
        };
        // DataFusion wraps the errors it found in plans; sort the user's from the rest.
        let e = e.find_root().to_string();
        let msg = e.trim_start_matches("Error during planning: ").to_string();
        if let Some(rest) = msg.strip_prefix("table '").or_else(|| msg.strip_prefix("Table '")) {
            if msg.contains("not found") {
                let name = rest.split('\'').next().unwrap_or(rest);
                return EddyError::UndefinedRelation(name.rsplit('.').next().unwrap_or(name).to_string());
            }
        }
        if msg.contains("No field named") || msg.contains("Schema error: No field") {
            // "No field named t.x.\nValid fields are ...": the name, without its qualifier.
            let rest = msg.split("No field named ").nth(1).unwrap_or(&msg);
            let name = rest.split_whitespace().next().unwrap_or(rest);
            let name = name.trim_end_matches('.').rsplit('.').next().unwrap_or(name).trim_matches('"');
            return EddyError::UndefinedColumn(name.to_string());
        }
        if msg.starts_with("SQL error: ParserError") || msg.starts_with("sql parser error") {
            return EddyError::Syntax { message: msg, position: None };
        }
        EddyError::DataFusion(msg.trim_start_matches("Arrow error: ").to_string())
    }
}

impl From<rocksdb::Error> for EddyError {
    fn from(e: rocksdb::Error) -> Self {
        EddyError::State(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for EddyError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EddyError::DataFusion(e.to_string())
    }
}

pub type Result<T, E = EddyError> = std::result::Result<T, E>;
