//! The one place Eddy errors become Kafka error codes.

use crate::log::LogError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
/// A SASL user without the privilege (SELECT, INSERT, ownership) on a relation over the topic.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REQUEST: i16 = 42;
/// A request that breaks a rule of the server (Kafka's CreateTopicPolicy and the like):
/// writing a query's output, deleting a topic a stream or table uses.
pub const POLICY_VIOLATION: i16 = 44;
pub const INVALID_CONFIG: i16 = 40;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
/// A record the topic refuses (a record without a key in a compacted topic).
pub const INVALID_RECORD: i16 = 87;
/// The partition's log is damaged and offline.
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

pub fn code(e: &LogError) -> i16 {
    match e {
        LogError::UnknownTopic(_) => UNKNOWN_TOPIC_OR_PARTITION,
        LogError::TopicExists(_) => TOPIC_ALREADY_EXISTS,
        LogError::InvalidTopic(_) => INVALID_TOPIC_EXCEPTION,
        LogError::CorruptBatch(_) => CORRUPT_MESSAGE,
        LogError::MessageTooLarge { .. } => MESSAGE_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        LogError::Unsupported(_) => INVALID_REQUEST,
        // A full disk is retriable: the write was not made, it may succeed later.
        LogError::Io(e) if e.raw_os_error() == Some(libc_enospc()) => KAFKA_STORAGE_ERROR,
        LogError::Io(_) => UNKNOWN_SERVER_ERROR,
        LogError::Offline(_) => KAFKA_STORAGE_ERROR,
        LogError::Fenced { .. } | LogError::InUse { .. } => POLICY_VIOLATION,
        LogError::InvalidRecord(_) => INVALID_RECORD,
    }
}

/// ENOSPC on Linux.
const fn libc_enospc() -> i32 {
    28
}
