//! Fuzzes rows as state stores them (`src/format/stored.rs`): any bytes read as a row give
//! its cells or an error, never a panic (a corrupt value, however deep or long it claims to
//! be); and cells written back read as the same cells.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../stand_ins/error.rs"]
mod error;

#[path = "../../src/format/stored.rs"]
#[allow(dead_code)]
mod stored;

fuzz_target!(|data: &[u8]| {
    // The binary format (its first byte), or JSON as older state held it when it starts so.
    let mut bytes = data.to_vec();
    if bytes.first().is_some_and(|&b| b != b'{') {
        bytes[0] = stored::ROW_FORMAT;
    }
    let Ok(Some(cells)) = stored::row(&bytes) else { return };
    let again = stored::encode_row(&cells);
    assert_eq!(stored::row(&again).expect("a written row reads").expect("a row"), cells);
});
