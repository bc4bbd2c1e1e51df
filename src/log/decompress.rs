//! Bounded decompression of Kafka record batches (gzip, snappy, lz4, zstd).
//!
//! A producer may store any compressed batch (the log keeps batches byte for byte, and a
//! batch is at most `max.message.bytes` compressed), but a few kilobytes of zstd can
//! inflate to gigabytes. So a batch is inflated through a reader that stops at
//! [`MAX_DECOMPRESSED_BATCH_BYTES`] (snappy: its declared lengths are checked before
//! anything is allocated), and a batch that would inflate past it is refused: the reader
//! of the batch reports it as a bad record (a query's processing log) instead of holding it.
//! Memory follows what a batch really holds: past [`ONE_PASS_BYTES`] a batch is first
//! inflated into nothing, to measure it, then into a buffer of exactly its size.

use std::io::{self, Read};

/// The most bytes one compressed batch may inflate to: 64 MiB, 64 times Kafka's default
/// `max.message.bytes` (1 MiB). Producers' batches are far smaller before compression
/// (librdkafka's `batch.size` is 1 MB, Java's 16 KiB), so only a bomb meets it.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// Kafka's codec ids (the low three bits of a batch's attributes).
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

/// xerial snappy-java's stream header: Kafka's Java clients frame snappy blocks in it.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The records of a compressed batch, inflated, if they fit in `max_bytes`.
pub fn decompress(codec: u8, compressed: &[u8], max_bytes: usize) -> io::Result<Vec<u8>> {
    match codec {
        GZIP => read_bounded(|| Ok(flate2::read::GzDecoder::new(compressed)), max_bytes),
        SNAPPY => snappy(compressed, max_bytes),
        LZ4 => read_bounded(|| lz4::Decoder::new(compressed), max_bytes),
        ZSTD => read_bounded(|| zstd::stream::read::Decoder::with_buffer(compressed), max_bytes),
        other => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown compression codec {other}"))),
    }
}

fn too_large(max_bytes: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("compressed batch inflates to more than {max_bytes} bytes, the most Eddy decompresses"),
    )
}

/// Batches that inflate to at most this many bytes (nearly all) are inflated in one pass.
const ONE_PASS_BYTES: usize = 8 << 20;

/// Inflates what `open` reads, if it fits in `max_bytes` (one byte more shows it does not).
/// `open` starts a fresh decoder for each pass.
fn read_bounded<R: Read>(open: impl Fn() -> io::Result<R>, max_bytes: usize) -> io::Result<Vec<u8>> {
    let first = ONE_PASS_BYTES.min(max_bytes);
    let mut out = Vec::new();
    open()?.take(first as u64 + 1).read_to_end(&mut out)?;
    if out.len() <= first {
        return Ok(out);
    }
    drop(out);
    let len = io::copy(&mut open()?.take(max_bytes as u64 + 1), &mut io::sink())?;
    if len > max_bytes as u64 {
        return Err(too_large(max_bytes));
    }
    let mut out = Vec::with_capacity(len as usize);
    open()?.take(len).read_to_end(&mut out)?;
    Ok(out)
}

/// Raw snappy, or xerial-framed blocks; each block's declared length is checked first.
fn snappy(compressed: &[u8], max_bytes: usize) -> io::Result<Vec<u8>> {
    let bad = |e: snap::Error| io::Error::new(io::ErrorKind::InvalidData, format!("snappy: {e}"));
    let Some(mut blocks) = compressed.strip_prefix(XERIAL_MAGIC.as_slice()) else {
        let len = snap::raw::decompress_len(compressed).map_err(bad)?;
        if len > max_bytes {
            return Err(too_large(max_bytes));
        }
        let mut out = vec![0; len];
        snap::raw::Decoder::new().decompress(compressed, &mut out).map_err(bad)?;
        return Ok(out);
    };
    let truncated = || io::Error::new(io::ErrorKind::InvalidData, "snappy: truncated xerial block");
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (len, rest) = blocks.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = rest.get(..len).ok_or_else(truncated)?;
        blocks = &rest[len..];
        let start = out.len();
        let inflated = snap::raw::decompress_len(block).map_err(bad)?;
        if inflated > max_bytes - start {
            return Err(too_large(max_bytes));
        }
        out.resize(start + inflated, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(bad)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zeros_zstd(n: usize) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            e.write_all(&chunk[..k]).unwrap();
            left -= k;
        }
        e.finish().unwrap()
    }

    #[test]
    fn every_codec_round_trips_under_the_cap() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let snappy_raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        for block in data.chunks(32 << 10) {
            let c = snap::raw::Encoder::new().compress_vec(block).unwrap();
            xerial.extend_from_slice(&(c.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&c);
        }
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&data).unwrap();
        let (lz, r) = lz.finish();
        r.unwrap();
        let zs = zstd::stream::encode_all(&data[..], 3).unwrap();
        for (codec, bytes) in [(GZIP, gz), (SNAPPY, snappy_raw), (SNAPPY, xerial), (LZ4, lz), (ZSTD, zs)] {
            assert_eq!(decompress(codec, &bytes, data.len()).unwrap(), data, "codec {codec}");
            let e = decompress(codec, &bytes, data.len() - 1).unwrap_err();
            assert!(e.to_string().contains("inflates to more than"), "codec {codec}: {e}");
        }
    }

    /// Past one pass's size: measured, then inflated into a buffer of exactly its size.
    #[test]
    fn a_large_batch_is_measured_then_inflated_exactly() {
        let data: Vec<u8> = (0..(ONE_PASS_BYTES + 12345) as u32).map(|i| (i % 253) as u8).collect();
        let zs = zstd::stream::encode_all(&data[..], 1).unwrap();
        let out = decompress(ZSTD, &zs, data.len()).unwrap();
        assert_eq!(out.capacity(), data.len());
        assert!(out == data);
        assert!(decompress(ZSTD, &zs, data.len() - 1).is_err());
    }

    /// 256 MiB of zeros in a few kilobytes of zstd: refused after at most the cap.
    #[test]
    fn a_zstd_bomb_is_refused() {
        let bomb = zeros_zstd(256 << 20);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let e = decompress(ZSTD, &bomb, MAX_DECOMPRESSED_BATCH_BYTES).unwrap_err();
        assert!(e.to_string().contains("inflates to more than"), "{e}");
    }

    #[test]
    fn snappy_declared_lengths_are_checked_before_allocating() {
        // A raw snappy stream whose varint header claims 2^31 bytes.
        let claims = [0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        assert!(decompress(SNAPPY, &claims, MAX_DECOMPRESSED_BATCH_BYTES).is_err());
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&6u32.to_be_bytes());
        xerial.extend_from_slice(&claims);
        assert!(decompress(SNAPPY, &xerial, MAX_DECOMPRESSED_BATCH_BYTES).is_err());
        xerial.extend_from_slice(&100u32.to_be_bytes());
        assert!(decompress(SNAPPY, &xerial, MAX_DECOMPRESSED_BATCH_BYTES).is_err());
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD, 5, 7] {
            for junk in [&b""[..], b"\x00", b"\x1f\x8b\x08\x00junk", b"\x28\xb5\x2f\xfd\xff\xff", b"\x04\x22\x4d\x18"] {
                let _ = decompress(codec, junk, 1 << 20);
            }
        }
    }
}
