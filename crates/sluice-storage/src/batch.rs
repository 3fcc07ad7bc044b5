//! Kafka message format v2 record batch headers: parsing and validation.
//!
//! Layout (big-endian): base offset i64 · batch length i32 · partition leader epoch i32 ·
//! magic i8 · crc u32 · attributes i16 · last offset delta i32 · base timestamp i64 ·
//! max timestamp i64 · producer id i64 · producer epoch i16 · base sequence i32 ·
//! records count i32 · records. The CRC32C covers everything from attributes on, so
//! the broker can assign the base offset and leader epoch without recomputing it.

use crate::error::BatchError;
use crate::records::read_varint;

/// Bytes of the fixed batch header, up to and including `records_count`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part counted by the batch length field (base offset + length).
pub const LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
/// Smallest legal value of the batch length field.
const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;

/// The decoded fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the fixed header at the start of `buf` without checking the CRC.
    /// Needs only the first [`BATCH_HEADER_BYTES`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::InvalidLength {
                length: batch_length,
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Bytes the whole batch occupies in a log, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the producer asked for idempotent de-duplication (it has an id).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record of the batch, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Computes the CRC32C that a well-formed batch `buf` (one whole batch) must carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Checks one complete batch at the start of `buf`: header, length, CRC, record count.
/// Returns the header; the batch occupies `header.total_bytes()` bytes of `buf`.
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let found = compute_crc(&buf[..total]);
    if found != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            found,
        });
    }
    // Offsets inside a produced batch are dense: Kafka requires the last offset
    // delta to be exactly count - 1 (only compaction leaves gaps, and compacted
    // batches are never produced). Wider spans would also overflow the 32-bit
    // relative offsets of the segment index.
    if header.records_count < 0
        || header.last_offset_delta < 0
        || (header.records_count > 0 && header.records_count - 1 != header.last_offset_delta)
    {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Validates every batch of a produce payload: header, CRC, and every record inside
/// (decompressing where needed). `batch_bytes_max` bounds each batch (the topic's
/// `max.message.bytes`). Returns the headers in order; the payload must consist of
/// whole batches only.
pub fn verify_batches(buf: &[u8], batch_bytes_max: usize) -> Result<Vec<BatchHeader>, BatchError> {
    verify_batches_visiting(buf, batch_bytes_max, &mut |_, _, _| {})
}

/// A caller's look at every record header (batch index, key, value) while a
/// payload is verified.
pub type BatchHeaderVisitor<'v> = dyn FnMut(usize, &[u8], Option<&[u8]>) + 'v;

/// [`verify_batches`], showing every record header to `visit` with the index of
/// its batch in `buf`.
pub fn verify_batches_visiting(
    buf: &[u8],
    batch_bytes_max: usize,
    visit: &mut BatchHeaderVisitor<'_>,
) -> Result<Vec<BatchHeader>, BatchError> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let header = BatchHeader::parse(rest)?;
        if header.total_bytes() > batch_bytes_max {
            return Err(BatchError::TooLarge {
                bytes: header.total_bytes(),
                max: batch_bytes_max,
            });
        }
        let header = verify_batch(rest)?;
        let index = headers.len();
        crate::records::validate_records_visiting(
            &header,
            &rest[..header.total_bytes()],
            &mut |key, value| visit(index, key, value),
        )?;
        if header.records_count == 0 {
            return Err(BatchError::InvalidRecordCount {
                records_count: 0,
                last_offset_delta: header.last_offset_delta,
            });
        }
        at += header.total_bytes();
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(headers)
}

/// Finds the offset and timestamp of the first record with timestamp >= `target_ms`
/// inside one uncompressed batch. Returns `None` for compressed batches (the caller
/// then answers with the batch's base offset, as the first candidate) or when no
/// record qualifies.
pub fn first_record_at_or_after(batch: &[u8], target_ms: i64) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != 0 || batch.len() < header.total_bytes() {
        return None;
    }
    let mut records = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    for _ in 0..header.records_count {
        let (length, n) = read_varint(records)?;
        let length = usize::try_from(length).ok()?;
        let body = records.get(n..n + length)?;
        // attributes i8, timestamp delta varlong, offset delta varint
        let rest = body.get(1..)?;
        let (ts_delta, m) = read_varint(rest)?;
        let (offset_delta, _) = read_varint(rest.get(m..)?)?;
        let ts = header.base_timestamp + ts_delta;
        if ts >= target_ms {
            return Some((header.base_offset + offset_delta, ts));
        }
        records = &records[n + length..];
    }
    None
}

/// Appends a zig-zag varint.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A record's (key, value), either of which may be null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds a valid uncompressed v2 batch of `values` (no keys, no headers) with
/// timestamps `base_ts + i` and the given (producer id, epoch, base sequence).
/// Base offset 0. For tests and tools that need well-formed batches.
pub fn build_batch(values: &[&[u8]], base_ts: i64, producer: (i64, i16, i32)) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(*v))).collect();
    encode_batch(&records, base_ts, producer)
}

/// Encodes an uncompressed v2 batch of (key, value) records, no headers, record `i`
/// timestamped `base_ts + i`, base offset 0, with (producer id, epoch, base sequence).
pub fn encode_batch(records: &[KeyValue<'_>], base_ts: i64, producer: (i64, i16, i32)) -> Vec<u8> {
    let specs: Vec<RecordSpec<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| RecordSpec {
            key: *key,
            value: *value,
            headers: Vec::new(),
            timestamp: base_ts + i as i64,
        })
        .collect();
    encode_records(&specs, producer)
}

/// One record to encode: key, value, headers (name, value) and create time.
#[derive(Debug, Clone, Default)]
pub struct RecordSpec<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub timestamp: i64,
}

/// Encodes an uncompressed v2 batch (base offset 0, CRC filled in) of `records`
/// with (producer id, epoch, base sequence); -1s for a non-idempotent writer.
/// An empty slice gives a batch of no records, which the log refuses.
pub fn encode_records(records: &[RecordSpec<'_>], producer: (i64, i16, i32)) -> Vec<u8> {
    let base_ts = records.first().map_or(0, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let mut body_all = Vec::new();
    let mut body = Vec::new();
    let put_bytes = |out: &mut Vec<u8>, field: Option<&[u8]>| match field {
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        None => put_varint(out, -1),
    };
    for (i, record) in records.iter().enumerate() {
        body.clear();
        body.push(0u8);
        put_varint(&mut body, record.timestamp - base_ts);
        put_varint(&mut body, i as i64);
        put_bytes(&mut body, record.key);
        put_bytes(&mut body, record.value);
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, *value);
        }
        put_varint(&mut body_all, body.len() as i64);
        body_all.extend_from_slice(&body);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body_all.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_BYTES - 12 + body_all.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&producer.0.to_be_bytes());
    b.extend_from_slice(&producer.1.to_be_bytes());
    b.extend_from_slice(&producer.2.to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body_all);
    let crc = compute_crc(&b);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_well_formed_batch() {
        let b = build_batch(&[b"a", b"bb", b"ccc"], 1000, (-1, -1, -1));
        let h = verify_batch(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_bytes(), b.len());
        assert_eq!(h.max_timestamp, 1002);
    }

    #[test]
    fn verify_rejects_flipped_payload_byte() {
        let mut b = build_batch(&[b"hello"], 0, (-1, -1, -1));
        let last = b.len() - 2;
        b[last] ^= 0x01;
        assert!(matches!(
            verify_batch(&b),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn offset_assignment_does_not_disturb_crc() {
        let mut b = build_batch(&[b"x"], 0, (-1, -1, -1));
        b[..8].copy_from_slice(&12345i64.to_be_bytes());
        assert_eq!(verify_batch(&b).unwrap().base_offset, 12345);
    }

    #[test]
    fn verify_batches_rejects_oversized_and_truncated() {
        let b = build_batch(&[&[7u8; 100]], 0, (-1, -1, -1));
        assert!(matches!(
            verify_batches(&b, 50),
            Err(BatchError::TooLarge { .. })
        ));
        assert!(matches!(
            verify_batches(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        assert_eq!(verify_batches(&[], 1 << 20), Err(BatchError::Empty));
    }

    #[test]
    fn first_record_at_or_after_finds_exact_record() {
        let b = build_batch(&[b"a", b"b", b"c", b"d"], 100, (-1, -1, -1));
        assert_eq!(first_record_at_or_after(&b, 102), Some((2, 102)));
        assert_eq!(first_record_at_or_after(&b, 50), Some((0, 100)));
        assert_eq!(first_record_at_or_after(&b, 200), None);
    }

    #[test]
    fn records_with_headers_round_trip_through_decode() {
        let specs = [
            RecordSpec {
                key: Some(b"k"),
                value: Some(b"v1"),
                headers: vec![("tag", Some(b"A".as_slice())), ("empty", None)],
                timestamp: 1_000,
            },
            RecordSpec {
                key: None,
                value: None,
                headers: Vec::new(),
                timestamp: 900,
            },
        ];
        let mut b = encode_records(&specs, (-1, -1, -1));
        b[..8].copy_from_slice(&40i64.to_be_bytes());
        let h = verify_batch(&b).unwrap();
        assert_eq!(
            (h.records_count, h.base_timestamp, h.max_timestamp),
            (2, 1_000, 1_000)
        );
        crate::records::validate_records(&h, &b).unwrap();
        let records = crate::records::decode_records(&b).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 40);
        assert_eq!(records[0].key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(
            records[0].headers,
            vec![
                ("tag".to_string(), Some(b"A".to_vec())),
                ("empty".to_string(), None)
            ]
        );
        assert_eq!((records[1].offset, records[1].timestamp), (41, 900));
        assert_eq!(records[1].value, None);
    }

    #[test]
    fn last_sequence_wraps() {
        let mut h = BatchHeader::parse(&build_batch(&[b"a", b"b"], 0, (1, 0, i32::MAX))).unwrap();
        assert_eq!(h.last_sequence(), 0);
        h.base_sequence = 5;
        assert_eq!(h.last_sequence(), 6);
    }
}
