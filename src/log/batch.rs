//! Kafka v2 record batches ("log batches"), the one on-disk record format.
//!
//! Every record Eddy stores — from a Kafka producer, from SQL `INSERT`, from a query's sink —
//! lives inside one of these, byte for byte as Kafka defines it (magic 2). The log only ever
//! reads the 61-byte header and checks the CRC; records are decoded by readers that need them.
//! Kafka's `RecordBatch` name is taken by Arrow here, so this is a `LogBatch`.
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...
//! ```
//! The CRC-32C covers everything from `attributes` to the end, so the base offset (assigned by
//! the log at append) can be rewritten without touching the CRC.

use super::LogError;

/// Bytes before the records.
pub const HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the part not counted in `batchLength`.
pub const LENGTH_PREFIX_BYTES: usize = 12;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;

/// The fields of a batch header the log needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch including the 12-byte prefix.
    pub total_bytes: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// The whole batches in a partition read's bytes, each with its header, in order; stops at
/// the first that does not parse (a read ends on whole batches).
pub fn batches_in(bytes: &[u8]) -> impl Iterator<Item = (LogBatchHeader, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let header = LogBatchHeader::parse(bytes.get(pos..)?).ok()?;
        let end = (pos + header.total_bytes).min(bytes.len());
        let batch = &bytes[pos..end];
        pos = end;
        Some((header, batch))
    })
}

impl LogBatchHeader {
    /// Reads the header from the start of `bytes` without checking the CRC.
    pub fn parse(bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() < HEADER_BYTES {
            return Err(LogError::CorruptBatch("batch shorter than its header".into()));
        }
        let batch_length = be_i32(bytes, 8);
        if batch_length < (HEADER_BYTES - LENGTH_PREFIX_BYTES) as i32 {
            return Err(LogError::CorruptBatch(format!("batch length {batch_length} too small")));
        }
        let magic = bytes[16] as i8;
        if magic != MAGIC_V2 {
            return Err(LogError::CorruptBatch(format!("unsupported magic {magic}, only v2 batches are stored")));
        }
        let header = LogBatchHeader {
            base_offset: be_i64(bytes, 0),
            total_bytes: batch_length as usize + LENGTH_PREFIX_BYTES,
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp_ms: be_i64(bytes, 27),
            max_timestamp_ms: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            record_count: be_i32(bytes, 57),
        };
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(LogError::CorruptBatch("negative record count".into()));
        }
        Ok(header)
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }
}

/// Parses the header and checks the CRC of one whole batch (`bytes.len() == total_bytes`).
pub fn validate(bytes: &[u8]) -> Result<LogBatchHeader, LogError> {
    let header = LogBatchHeader::parse(bytes)?;
    if bytes.len() != header.total_bytes {
        return Err(LogError::CorruptBatch(format!(
            "batch length says {} bytes, {} present",
            header.total_bytes,
            bytes.len()
        )));
    }
    let stored = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    if stored != computed {
        return Err(LogError::CorruptBatch(format!("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")));
    }
    Ok(header)
}

/// Rewrites the base offset; outside the CRC, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// One record as a producer hands it over and a reader gets it back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Encodes records as one uncompressed v2 batch (base offset 0; the log assigns the real
/// one at append).
pub fn encode_batch<R: std::borrow::Borrow<LogRecord>>(records: &[R]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut builder = BatchBuilder::default();
    for r in records {
        let r = r.borrow();
        builder.push(r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), &r.headers);
    }
    builder.finish();
    builder.buf
}

/// A batch written one record at a time into a buffer that outlives the batch: a sink
/// encodes its output straight into these, and after the append `clear` keeps the memory for
/// the next batch. The base timestamp is the first record's, as Kafka's producers write it
/// (a later record's delta may be negative).
#[derive(Debug, Default)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    records: usize,
    base_ts: i64,
    max_ts: i64,
}

impl BatchBuilder {
    /// An empty batch with room for `bytes` (so filling it does not copy it as it grows).
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder { buf: Vec::with_capacity(bytes), ..BatchBuilder::default() }
    }

    /// Bytes of the batch so far.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The largest record timestamp.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_ts
    }

    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
    ) {
        if self.records == 0 {
            self.buf.clear();
            self.buf.resize(HEADER_BYTES, 0);
            self.base_ts = timestamp_ms;
            self.max_ts = timestamp_ms;
        }
        self.max_ts = self.max_ts.max(timestamp_ms);
        let delta = timestamp_ms - self.base_ts;
        let i = self.records as i64;
        let len = 1
            + varlong_len(delta)
            + varlong_len(i)
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(headers.len() as i64)
            + headers.iter().map(|(k, v)| bytes_len(Some(k.as_bytes())) + bytes_len(v.as_deref())).sum::<usize>();
        let out = &mut self.buf;
        out.reserve(varlong_len(len as i64) + len);
        put_varint(out, len as i32);
        out.push(0u8); // record attributes
        put_varlong(out, delta);
        put_varint(out, i as i32);
        put_bytes(out, key);
        put_bytes(out, value);
        put_varint(out, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(out, Some(k.as_bytes()));
            put_bytes(out, v.as_deref());
        }
        self.records += 1;
    }

    /// Writes the header and CRC; the batch is then `bytes()`. Records may still be pushed
    /// after (finish again).
    pub fn finish(&mut self) {
        assert!(self.records > 0, "a batch holds at least one record");
        let n = self.records;
        let body_len = self.buf.len() - HEADER_BYTES;
        let mut h = [0u8; HEADER_BYTES];
        h[8..12].copy_from_slice(&((HEADER_BYTES - LENGTH_PREFIX_BYTES + body_len) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        h[16] = MAGIC_V2 as u8;
        // 17..21: crc, below; 21..23: attributes 0 (no compression, CreateTime)
        h[23..27].copy_from_slice(&((n - 1) as i32).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_ts.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_ts.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
        h[57..61].copy_from_slice(&(n as i32).to_be_bytes());
        self.buf[..HEADER_BYTES].copy_from_slice(&h);
        let crc = crc32c::crc32c(&self.buf[CRC_START..]);
        self.buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    /// The finished batch.
    pub fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Empty again, keeping the buffer.
    pub fn clear(&mut self) {
        self.records = 0;
        self.buf.clear();
    }

    /// Bytes the buffer holds on to.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// A batch that lost records to compaction: the same header (base offset, last offset delta,
/// timestamps, producer fields, transactional bit, leader epoch) over the surviving records,
/// uncompressed, each with its original offset and timestamp. `records` may be empty (Kafka
/// keeps such empty batches to hold an offset range or a producer's last sequence).
pub fn encode_retained(original: &[u8], header: &LogBatchHeader, records: &[LogRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len().min(header.total_bytes));
    out.extend_from_slice(&original[..HEADER_BYTES]);
    for r in records {
        let ts_delta = r.timestamp_ms.wrapping_sub(header.base_timestamp_ms);
        let offset_delta = (r.offset - header.base_offset) as i32;
        let key = r.key.as_deref();
        let value = r.value.as_deref();
        let len = 1
            + varlong_len(ts_delta)
            + varlong_len(offset_delta as i64)
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(r.headers.len() as i64)
            + r.headers.iter().map(|(k, v)| bytes_len(Some(k.as_bytes())) + bytes_len(v.as_deref())).sum::<usize>();
        put_varint(&mut out, len as i32);
        out.push(0u8); // record attributes
        put_varlong(&mut out, ts_delta);
        put_varint(&mut out, offset_delta);
        put_bytes(&mut out, key);
        put_bytes(&mut out, value);
        put_varint(&mut out, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_bytes(&mut out, Some(k.as_bytes()));
            put_bytes(&mut out, v.as_deref());
        }
    }
    let batch_length = (out.len() - LENGTH_PREFIX_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = header.attributes & !0x7; // written uncompressed
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&(records.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Bytes of a zigzag varint (varlong) for `v`.
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-prefixed byte string (`-1` for NULL).
fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varlong_len(-1),
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// Decodes the records of one whole, validated batch.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<LogRecord>, LogError> {
    Ok(decode_record_refs(bytes)?
        .into_iter()
        .map(|r| LogRecord {
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers,
        })
        .collect())
}

/// One record of an uncompressed batch, its key and value borrowed from the batch.
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl LogRecord {
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.clone(),
        }
    }
}

/// `decode_records` without copying keys and values (a query's source reads them in place).
pub fn decode_record_refs(bytes: &[u8]) -> Result<Vec<RecordRef<'_>>, LogError> {
    let header = LogBatchHeader::parse(bytes)?;
    if header.compression() != 0 {
        return Err(LogError::Unsupported(format!(
            "reading compressed batches (codec {}) in SQL (Kafka protocol issue #3)",
            header.compression()
        )));
    }
    if header.attributes & 0x20 != 0 {
        return Ok(Vec::new()); // control batch (transaction markers): no user records
    }
    let mut cur = Cursor { bytes: &bytes[HEADER_BYTES..header.total_bytes.min(bytes.len())], pos: 0 };
    // A forged count must not make us allocate: each record takes at least 7 bytes.
    let mut out = Vec::with_capacity((header.record_count as usize).min(bytes.len() / 7));
    for _ in 0..header.record_count {
        let len = cur.varint()?;
        if len < 0 {
            return Err(LogError::CorruptBatch("negative record length".into()));
        }
        let start = cur.pos;
        cur.take(1)?; // attributes
        let ts_delta = cur.varlong()?;
        let offset_delta = cur.varint()?;
        let key = cur.nullable_slice()?;
        let value = cur.nullable_slice()?;
        let header_count = cur.varint()?;
        let mut headers = Vec::new();
        for _ in 0..header_count.max(0) {
            let k = cur.nullable_bytes()?.unwrap_or_default();
            let v = cur.nullable_bytes()?;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        if cur.pos - start != len as usize {
            return Err(LogError::CorruptBatch("record length does not match its contents".into()));
        }
        let (Some(offset), Some(timestamp_ms)) =
            (header.base_offset.checked_add(offset_delta as i64), header.base_timestamp_ms.checked_add(ts_delta))
        else {
            return Err(LogError::CorruptBatch("record offset or timestamp out of range".into()));
        };
        out.push(RecordRef { offset, timestamp_ms, key, value, headers });
    }
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        if self.pos + n > self.bytes.len() {
            return Err(LogError::CorruptBatch("record runs past the end of its batch".into()));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.take(1)?[0];
            raw |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(LogError::CorruptBatch("varint too long".into()))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| LogError::CorruptBatch("varint out of range".into()))
    }

    fn nullable_slice(&mut self) -> Result<Option<&'a [u8]>, LogError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?))
    }

    fn nullable_bytes(&mut self) -> Result<Option<Vec<u8>>, LogError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?.to_vec()))
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, v as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> LogRecord {
        LogRecord {
            offset: i,
            timestamp_ms: 1_000 + i,
            key: Some(format!("k{i}").into_bytes()),
            value: if i % 3 == 0 { None } else { Some(vec![i as u8; i as usize]) },
            headers: vec![("h".into(), Some(b"v".to_vec()))],
        }
    }

    #[test]
    fn batches_in_walks_whole_batches_and_stops_at_a_torn_one() {
        let mut first = encode_batch(&[rec(0), rec(1)]);
        let mut second = encode_batch(&[rec(2)]);
        set_base_offset(&mut first, 10);
        set_base_offset(&mut second, 12);
        let mut bytes = [first.clone(), second.clone()].concat();
        let found: Vec<(i64, usize)> = batches_in(&bytes).map(|(h, b)| (h.base_offset, b.len())).collect();
        assert_eq!(found, [(10, first.len()), (12, second.len())]);
        bytes.extend_from_slice(&second[..5]);
        assert_eq!(batches_in(&bytes).count(), 2);
        assert_eq!(batches_in(&[]).count(), 0);
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in
            [0i64, 1, -1, 63, 64, -64, -65, 127, 128, 8191, 8192, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN]
        {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn round_trip_and_crc() {
        let mut records: Vec<_> = (0..5).map(rec).collect();
        // Lengths that take several varint bytes, a NULL key, headers with a NULL value.
        records.push(LogRecord {
            offset: 5,
            timestamp_ms: 900,
            key: None,
            value: Some(vec![7; 20_000]),
            headers: vec![("x".repeat(200), None), ("y".into(), Some(vec![1; 130]))],
        });
        let mut bytes = encode_batch(&records);
        let h = validate(&bytes).unwrap();
        assert_eq!(h.record_count, 6);
        assert_eq!(h.max_timestamp_ms, 1_004);
        set_base_offset(&mut bytes, 0);
        assert_eq!(decode_records(&bytes).unwrap(), records);
        set_base_offset(&mut bytes, 100);
        validate(&bytes).unwrap();
        assert_eq!(decode_records(&bytes).unwrap()[2].offset, 102);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(validate(&bytes), Err(LogError::CorruptBatch(_))));
    }

    #[test]
    fn a_reused_builder_writes_what_a_fresh_one_writes() {
        let mut builder = BatchBuilder::default();
        for n in [7, 2, 40] {
            let records: Vec<_> = (0..n).map(rec).collect();
            builder.clear();
            for r in &records {
                builder.push(r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), &r.headers);
            }
            builder.finish();
            assert_eq!(builder.bytes().to_vec(), encode_batch(&records), "{n} records");
            set_base_offset(builder.bytes(), 10);
            validate(builder.bytes()).unwrap();
            assert_eq!(decode_records(builder.bytes()).unwrap().len(), n as usize);
        }
    }

    /// Found by the fuzz target `record_batch`: base + delta overflowed (a panic where
    /// overflow is checked, a wrapped offset or timestamp elsewhere).
    #[test]
    fn deltas_past_the_end_of_i64_are_corrupt() {
        let records: Vec<_> = (0..2).map(rec).collect();
        let mut bytes = encode_batch(&records);
        set_base_offset(&mut bytes, i64::MAX);
        assert!(matches!(decode_records(&bytes), Err(LogError::CorruptBatch(_))));
        set_base_offset(&mut bytes, 0);
        // The base timestamp (after base offset, length, epoch, magic, CRC, attributes and
        // last offset delta); the second record's timestamp delta is 1.
        bytes[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(matches!(decode_records(&bytes), Err(LogError::CorruptBatch(_))));
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = validate(&junk);
            let _ = decode_records(&junk);
        }
    }
}
