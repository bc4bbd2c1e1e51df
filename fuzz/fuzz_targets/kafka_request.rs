//! Fuzzes the Kafka request decoder: any bytes a client sends after the length prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/kafka/decode.rs"]
#[allow(dead_code)]
mod decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::decode_request(data);
});
