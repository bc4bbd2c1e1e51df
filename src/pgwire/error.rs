//! The one place Eddy errors become SQLSTATEs.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::EddyError;
use crate::log::LogError;

pub fn sqlstate(e: &EddyError) -> &'static str {
    match e {
        EddyError::Syntax { .. } => "42601",
        EddyError::UndefinedRelation(_) => "42P01",
        EddyError::UndefinedColumn(_) => "42703",
        EddyError::DuplicateRelation(_) => "42P07",
        EddyError::InvalidValue(_) => "22023",
        EddyError::TypeMismatch(_) => "42804",
        EddyError::InvalidTextRepresentation(_) => "22P02",
        EddyError::OutOfRange(_) => "22003",
        EddyError::ObjectInUse(_) => "55006",
        EddyError::WrongObjectType(_) => "42809",
        EddyError::NotImplemented(_) => "0A000",
        EddyError::LimitExceeded(_) => "54000",
        EddyError::ReadOnly(_) => "25006",
        EddyError::Canceled => "57014",
        EddyError::PermissionDenied(_) => "42501",
        EddyError::DuplicateObject(_) => "42710",
        EddyError::UndefinedObject(_) => "42704",
        EddyError::Log(LogError::InvalidTopic(_)) => "22023",
        EddyError::Log(LogError::MessageTooLarge { .. }) => "54000",
        EddyError::Log(LogError::TopicExists(_)) => "42P07",
        EddyError::Log(LogError::UnknownTopic(_)) => "42P01",
        // Postgres's "cannot insert into view ...": the relation is not one a client writes.
        EddyError::Log(LogError::Fenced { .. }) => "42809",
        EddyError::Log(LogError::InUse { .. }) => "55006",
        // A compacted topic takes only records with a key.
        EddyError::Log(LogError::InvalidRecord(_)) => "23502",
        EddyError::Log(LogError::Io(e)) if e.raw_os_error() == Some(28) => "53100",
        EddyError::Log(_) | EddyError::State(_) => "58030",
        EddyError::DataFusion(msg) => {
            if msg.contains("Cannot infer common argument type")
                || msg.contains("cannot be cast")
                || msg.contains("Invalid function")
            {
                "42883"
            } else if msg.contains("Divide by zero") {
                "22012"
            } else {
                "42000"
            }
        }
        EddyError::Internal(_) => "XX000",
        EddyError::InStatement { source, .. } => sqlstate(source),
    }
}

pub fn to_pg(e: EddyError) -> PgWireError {
    if matches!(e, EddyError::Canceled) {
        return PgWireError::QueryCanceled;
    }
    let mut info = ErrorInfo::new("ERROR".to_string(), sqlstate(&e).to_string(), e.to_string());
    if let EddyError::Syntax { position: Some(p), .. } = &e {
        info.position = Some(p.to_string());
    }
    PgWireError::UserError(Box::new(info))
}
