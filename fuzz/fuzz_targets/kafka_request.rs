//! Fuzzes the Kafka request decoder: any bytes a client sends after the length prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/kafka/decode.rs"]
#[allow(dead_code)]
mod decode;

// The server's allocator, so the fuzzer sees what the server would (see src/alloc.rs).
#[path = "../../src/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::EddyAllocator = alloc::EddyAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = decode::decode_request(data);
});
