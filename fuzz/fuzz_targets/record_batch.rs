//! Fuzzes the record-batch (Kafka v2 "log batch") checks and decoder: whatever bytes a
//! producer or a damaged segment holds, `validate` and `decode_records` return an error or
//! records, never panic, and a batch that validates decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The log module's error type, as `src/log/batch.rs` sees it (`super::LogError`).
#[derive(Debug)]
pub enum LogError {
    CorruptBatch(String),
    Unsupported(String),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[path = "../../src/log/batch.rs"]
#[allow(dead_code)]
mod batch;

#[path = "../../src/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::EddyAllocator = alloc::EddyAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = batch::LogBatchHeader::parse(data);
    if let Ok(header) = batch::validate(data) {
        // A batch whose CRC holds is decoded (or reported unsupported: compressed).
        match batch::decode_records(data) {
            Ok(records) => assert!(records.len() <= data.len()),
            Err(LogError::Unsupported(_)) => assert_ne!(header.compression(), 0),
            Err(_) => {}
        }
    } else {
        let _ = batch::decode_records(data);
    }
});
