//! Fuzzes bounded decompression of compressed record batches (`src/log/decompress.rs`):
//! the first byte picks the codec (gzip, snappy, lz4, zstd, or an unknown one), the rest is
//! the compressed records. Any bytes give records no longer than the cap, or an error; never
//! a panic, and never more memory than the cap (libFuzzer's malloc limit catches a bomb
//! that is inflated whole).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/log/decompress.rs"]
#[allow(dead_code)]
mod decompress;

#[path = "../../src/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::EddyAllocator = alloc::EddyAllocator;

/// Small, so the fuzzer finds inputs that reach it.
const CAP_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&codec, compressed)) = data.split_first() else { return };
    let codec = codec % 6;
    if let Ok(records) = decompress::decompress(codec, compressed, CAP_BYTES) {
        assert!(records.len() <= CAP_BYTES, "{} bytes past the cap", records.len());
        assert!((1..=4).contains(&codec), "codec {codec} decoded");
        // The same bytes under a cap one short of their size are refused.
        if !records.is_empty() {
            assert!(decompress::decompress(codec, compressed, records.len() - 1).is_err());
        }
    }
});
