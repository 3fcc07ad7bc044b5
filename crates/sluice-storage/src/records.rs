//! Validation of the records inside a batch, compressed or not.
//!
//! The CRC proves the bytes are what the producer sent, not that they are well
//! formed. Before a batch is stored its records are walked: every length must stay
//! inside its record, offset deltas must count 0, 1, 2, ..., and the number of
//! records must match the header. Compressed batches are decompressed as a stream,
//! one record in memory at a time, so a small batch cannot expand into a large
//! allocation.

use std::io::{BufReader, Read};

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::error::BatchError;

/// Largest single record accepted after decompression.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The framing snappy-java (the Java client) puts around snappy blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// Yields the records of a batch one by one.
trait RecordSource {
    /// The next record body (after its length prefix); `None` at a clean end.
    fn next_record(&mut self) -> Result<Option<&[u8]>, String>;
}

/// Records of an uncompressed batch, borrowed in place.
struct SliceSource<'a> {
    rest: &'a [u8],
}

impl RecordSource for SliceSource<'_> {
    fn next_record(&mut self) -> Result<Option<&[u8]>, String> {
        self.next_slice()
    }
}

impl<'a> SliceSource<'a> {
    /// The next record body, borrowed from the batch itself.
    fn next_slice(&mut self) -> Result<Option<&'a [u8]>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (len, n) = read_varint(self.rest).ok_or("record length is not a varint")?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let body = self
            .rest
            .get(n..n + len)
            .ok_or("record length runs past the batch")?;
        self.rest = &self.rest[n + len..];
        Ok(Some(body))
    }
}

/// Records of a compressed batch, read from a decompressing stream.
struct StreamSource<R: Read> {
    reader: R,
    buf: Vec<u8>,
}

impl<R: Read> StreamSource<R> {
    fn read_length(&mut self) -> Result<Option<i64>, String> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            let n = self.reader.read(&mut byte).map_err(|e| e.to_string())?;
            if n == 0 {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err("stream ends inside a record length".into())
                };
            }
            raw |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(((raw >> 1) as i64) ^ -((raw & 1) as i64)));
            }
        }
        Err("record length is not a varint".into())
    }
}

impl<R: Read> RecordSource for StreamSource<R> {
    fn next_record(&mut self) -> Result<Option<&[u8]>, String> {
        let Some(len) = self.read_length()? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        if len > RECORD_BYTES_MAX {
            return Err(format!("record of {len} bytes exceeds {RECORD_BYTES_MAX}"));
        }
        // Grow only with bytes that actually arrive: a claimed length is not trusted.
        self.buf.clear();
        (&mut self.reader)
            .take(len as u64)
            .read_to_end(&mut self.buf)
            .map_err(|e| e.to_string())?;
        if self.buf.len() != len {
            return Err("stream ends inside a record".into());
        }
        Ok(Some(&self.buf))
    }
}

/// snappy-java's framed format: a header, then length-prefixed snappy blocks.
struct XerialReader<'a> {
    rest: &'a [u8],
    block: Vec<u8>,
    at: usize,
}

impl Read for XerialReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            if self.rest.is_empty() {
                return Ok(0);
            }
            let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
            let len_bytes: [u8; 4] = self
                .rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("truncated snappy block length"))?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            let compressed = self
                .rest
                .get(4..4 + len)
                .ok_or_else(|| bad("snappy block runs past the batch"))?;
            let size = snap::raw::decompress_len(compressed).map_err(|e| bad(&e.to_string()))?;
            if size > RECORD_BYTES_MAX || size > snappy_expansion_max(compressed.len()) {
                return Err(bad("snappy block too large"));
            }
            self.block.resize(size, 0);
            snap::raw::Decoder::new()
                .decompress(compressed, &mut self.block)
                .map_err(|e| bad(&e.to_string()))?;
            self.at = 0;
            self.rest = &self.rest[4 + len..];
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The most bytes `compressed` snappy bytes can expand to: a 3-byte copy element
/// yields at most 64 bytes. A header claiming more is forged, and is refused
/// before anything is allocated for it.
fn snappy_expansion_max(compressed: usize) -> usize {
    compressed.saturating_mul(22).saturating_add(64)
}

/// Checks the records of one verified batch (`batch` holds exactly the batch).
pub fn validate_records(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    validate_records_visiting(header, batch, &mut |_, _| {})
}

/// A caller's look at each record header (key, value) while records are
/// validated, so facts about headers cost no second decoding pass.
pub type HeaderVisitor<'v> = dyn FnMut(&[u8], Option<&[u8]>) + 'v;

/// [`validate_records`], showing every record header of every valid record to
/// `visit` (headers of a record that turns out malformed may have been shown
/// before the error is returned).
pub fn validate_records_visiting(
    header: &BatchHeader,
    batch: &[u8],
    visit: &mut HeaderVisitor<'_>,
) -> Result<(), BatchError> {
    with_records(header, batch, |source, decompression| {
        walk(header, source, decompression, visit)
    })
}

/// One record with its fields copied out of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Absolute offset (the batch's base offset plus the record's delta).
    pub offset: i64,
    /// Create time, or the log append time when the batch says so.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header keys (UTF-8, lossily) and values, in record order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Kafka's attribute bit for "timestamps are log append time".
const LOG_APPEND_TIME_BIT: i16 = 0x08;

/// Decodes every record of one batch (`batch` starts with the batch and holds all
/// of it), decompressing when needed. Fronts that deliver records one by one
/// (RocketMQ, AMQP) use this; a malformed batch is an error, never a panic.
pub fn decode_records(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() < header.total_bytes() {
        return Err(BatchError::Truncated {
            needed: header.total_bytes(),
            available: batch.len(),
        });
    }
    let batch = &batch[..header.total_bytes()];
    with_records(&header, batch, |source, decompression| {
        let mut out = Vec::new();
        for index in 0..header.records_count {
            let body =
                source
                    .next_record()
                    .map_err(&decompression)?
                    .ok_or(BatchError::InvalidRecord {
                        index,
                        reason: "fewer records than the header's records count",
                    })?;
            let mut record = decode_record(body).ok_or(BatchError::InvalidRecord {
                index,
                reason: "malformed record",
            })?;
            record.offset += header.base_offset;
            record.timestamp = if header.attributes & LOG_APPEND_TIME_BIT != 0 {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(record.timestamp)
            };
            out.push(record);
        }
        Ok(out)
    })
}

/// Decodes one record body; offset and timestamp are still deltas.
fn decode_record(body: &[u8]) -> Option<DecodedRecord> {
    let mut at = 1usize;
    let varint = |at: &mut usize| -> Option<i64> {
        let (v, n) = read_varint(body.get(*at..)?)?;
        *at += n;
        Some(v)
    };
    let timestamp = varint(&mut at)?;
    let offset = varint(&mut at)?;
    let field = |at: &mut usize| -> Option<Option<Vec<u8>>> {
        let len = varint(at)?;
        if len < 0 {
            return Some(None);
        }
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        let bytes = body.get(*at..end)?;
        *at = end;
        Some(Some(bytes.to_vec()))
    };
    let key = field(&mut at)?;
    let value = field(&mut at)?;
    let count = {
        let (v, n) = read_varint(body.get(at..)?)?;
        at += n;
        usize::try_from(v).ok()?
    };
    // Each header takes at least two bytes: a claimed count is not trusted.
    let mut headers = Vec::with_capacity(count.min(body.len() / 2));
    for _ in 0..count {
        let name = field(&mut at)??;
        let value = field(&mut at)?;
        headers.push((String::from_utf8_lossy(&name).into_owned(), value));
    }
    Some(DecodedRecord {
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

/// Runs `f` over a source of the batch's records, decompressing as the codec says.
fn with_records<T>(
    header: &BatchHeader,
    batch: &[u8],
    f: impl FnOnce(&mut dyn RecordSource, &dyn Fn(String) -> BatchError) -> Result<T, BatchError>,
) -> Result<T, BatchError> {
    let payload = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let codec = header.compression();
    let decompression = |reason: String| BatchError::Decompression { codec, reason };
    match codec {
        0 => f(&mut SliceSource { rest: payload }, &decompression),
        1 => f(
            &mut stream(flate2::read::MultiGzDecoder::new(payload)),
            &decompression,
        ),
        2 if payload.starts_with(XERIAL_MAGIC) => f(
            &mut stream(XerialReader {
                rest: payload.get(XERIAL_HEADER_BYTES..).unwrap_or_default(),
                block: Vec::new(),
                at: 0,
            }),
            &decompression,
        ),
        2 => {
            let size =
                snap::raw::decompress_len(payload).map_err(|e| decompression(e.to_string()))?;
            if size > RECORD_BYTES_MAX.saturating_mul(4) {
                return Err(decompression(format!(
                    "{size} bytes uncompressed is too large"
                )));
            }
            let raw = snap::raw::Decoder::new()
                .decompress_vec(payload)
                .map_err(|e| decompression(e.to_string()))?;
            f(&mut SliceSource { rest: &raw }, &decompression)
        }
        3 => {
            let reader = lz4::Decoder::new(payload).map_err(|e| decompression(e.to_string()))?;
            f(&mut stream(reader), &decompression)
        }
        4 => {
            let reader = zstd::stream::read::Decoder::new(payload)
                .map_err(|e| decompression(e.to_string()))?;
            f(&mut stream(reader), &decompression)
        }
        other => Err(decompression(format!("unknown codec {other}"))),
    }
}

fn stream<R: Read>(reader: R) -> StreamSource<BufReader<R>> {
    StreamSource {
        reader: BufReader::new(reader),
        buf: Vec::new(),
    }
}

fn walk(
    header: &BatchHeader,
    source: &mut dyn RecordSource,
    decompression: &dyn Fn(String) -> BatchError,
    visit: &mut HeaderVisitor<'_>,
) -> Result<(), BatchError> {
    // Structural failures of an uncompressed batch are record errors; of a
    // compressed one, the stream may simply be garbage.
    let compressed = header.compression() != 0;
    let fail = |index: i32, reason: String, fixed: &'static str| {
        if compressed {
            decompression(reason)
        } else {
            BatchError::InvalidRecord {
                index,
                reason: fixed,
            }
        }
    };
    for index in 0..header.records_count {
        let body = source
            .next_record()
            .map_err(|e| fail(index, e, "malformed record length"))?
            .ok_or(BatchError::InvalidRecord {
                index,
                reason: "fewer records than the header's records count",
            })?;
        check_record(body, index, visit)
            .map_err(|reason| BatchError::InvalidRecord { index, reason })?;
    }
    match source.next_record() {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(BatchError::InvalidRecord {
            index: header.records_count,
            reason: "more records than the header's records count",
        }),
        Err(e) => Err(fail(header.records_count, e, "bytes after the last record")),
    }
}

/// Checks one record body: attributes, timestamp delta, offset delta == index,
/// key, value and headers all inside the body, nothing left over. Shows each
/// header to `visit`.
fn check_record(
    body: &[u8],
    index: i32,
    visit: &mut HeaderVisitor<'_>,
) -> Result<(), &'static str> {
    let mut at = 1usize; // attributes
    if body.is_empty() {
        return Err("empty record");
    }
    let mut next = |what: &'static str| -> Result<i64, &'static str> {
        let (v, n) = read_varint(body.get(at..).unwrap_or_default()).ok_or(what)?;
        at += n;
        Ok(v)
    };
    next("timestamp delta is not a varint")?;
    if next("offset delta is not a varint")? != i64::from(index) {
        return Err("offset delta does not match the record's position");
    }
    let key_len = next("key length is not a varint")?;
    skip(body, &mut at, key_len, true)?;
    let value_len = read_len(body, &mut at)?;
    skip(body, &mut at, value_len, true)?;
    let headers = read_len(body, &mut at)?;
    if headers < 0 {
        return Err("negative header count");
    }
    for _ in 0..headers {
        let k = read_len(body, &mut at)?;
        let key_at = at;
        skip(body, &mut at, k, false)?;
        let key = &body[key_at..at];
        let v = read_len(body, &mut at)?;
        let value_at = at;
        skip(body, &mut at, v, true)?;
        visit(key, (v >= 0).then(|| &body[value_at..at]));
    }
    if at != body.len() {
        return Err("bytes left over after the record's fields");
    }
    Ok(())
}

fn read_len(body: &[u8], at: &mut usize) -> Result<i64, &'static str> {
    let (v, n) =
        read_varint(body.get(*at..).unwrap_or_default()).ok_or("length is not a varint")?;
    *at += n;
    Ok(v)
}

fn skip(body: &[u8], at: &mut usize, len: i64, nullable: bool) -> Result<(), &'static str> {
    if len == -1 && nullable {
        return Ok(());
    }
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    if body.len() - *at < len {
        return Err("field length runs past the record");
    }
    *at += len;
    Ok(())
}

/// One record of an uncompressed batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The records of one uncompressed, already validated batch (`batch` holds exactly
/// the batch). Compressed batches yield nothing; internal logs never compress.
pub fn uncompressed_records(batch: &[u8]) -> Vec<RecordView<'_>> {
    let Ok(header) = BatchHeader::parse(batch) else {
        return Vec::new();
    };
    if header.compression() != 0 || batch.len() < header.total_bytes() {
        return Vec::new();
    }
    let mut source = SliceSource {
        rest: &batch[BATCH_HEADER_BYTES..header.total_bytes()],
    };
    let mut out = Vec::new();
    while let Ok(Some(body)) = source.next_slice() {
        match view(body) {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

fn view(body: &[u8]) -> Option<RecordView<'_>> {
    let mut at = 1usize;
    let varint = |at: &mut usize| -> Option<i64> {
        let (v, n) = read_varint(body.get(*at..)?)?;
        *at += n;
        Some(v)
    };
    varint(&mut at)?; // timestamp delta
    let offset_delta = i32::try_from(varint(&mut at)?).ok()?;
    let field = |at: &mut usize| -> Option<Option<&[u8]>> {
        let len = varint(at)?;
        if len < 0 {
            return Some(None);
        }
        let bytes = body.get(*at..*at + usize::try_from(len).ok()?)?;
        *at += bytes.len();
        Some(Some(bytes))
    };
    let key = field(&mut at)?;
    let value = field(&mut at)?;
    Some(RecordView {
        offset_delta,
        key,
        value,
    })
}

/// A zig-zag varint of up to 10 bytes: (value, bytes used).
pub(crate) fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, compute_crc, verify_batch, verify_batches};
    use std::io::Write;

    /// Re-packs an uncompressed batch with its records compressed by `codec`.
    fn compress(batch: &[u8], codec: u8) -> Vec<u8> {
        let records = &batch[BATCH_HEADER_BYTES..];
        let packed: Vec<u8> = match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(records).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(records).unwrap(),
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(records).unwrap();
                e.finish().0
            }
            4 => zstd::encode_all(records, 1).unwrap(),
            _ => unreachable!(),
        };
        let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(&packed);
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[21..23].copy_from_slice(&i16::from(codec).to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn check(batch: &[u8]) -> Result<(), BatchError> {
        let header = verify_batch(batch)?;
        validate_records(&header, batch)
    }

    #[test]
    fn uncompressed_records_yield_keys_and_values() {
        let batch = crate::batch::encode_batch(
            &[
                (Some(b"k1"), Some(b"v1")),
                (None, None),
                (Some(b""), Some(b"v3")),
            ],
            0,
            (-1, -1, -1),
        );
        check(&batch).unwrap();
        let records = uncompressed_records(&batch);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[1].value, None);
        assert_eq!(records[2].offset_delta, 2);
        assert_eq!(records[2].value, Some(&b"v3"[..]));
    }

    #[test]
    fn well_formed_batches_pass_in_every_codec() {
        let batch = build_batch(&[b"alpha", b"", b"gamma gamma"], 5, (-1, -1, -1));
        check(&batch).unwrap();
        for codec in 1..=4 {
            check(&compress(&batch, codec)).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
        }
    }

    #[test]
    fn xerial_framed_snappy_passes() {
        let batch = build_batch(&[b"one", b"two"], 5, (-1, -1, -1));
        let records = &batch[BATCH_HEADER_BYTES..];
        let block = snap::raw::Encoder::new().compress_vec(records).unwrap();
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(&framed);
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[21..23].copy_from_slice(&2i16.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        check(&out).unwrap();
    }

    /// Sets header fields then fixes the CRC, as a careful forger would.
    fn forge(mut batch: Vec<u8>, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        edit(&mut batch);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn record_count_above_the_records_present_is_refused() {
        let batch = forge(build_batch(&[b"a", b"b"], 0, (-1, -1, -1)), |b| {
            b[23..27].copy_from_slice(&2i32.to_be_bytes());
            b[57..61].copy_from_slice(&3i32.to_be_bytes());
        });
        assert!(matches!(
            check(&batch),
            Err(BatchError::InvalidRecord { index: 2, .. })
        ));
    }

    #[test]
    fn record_length_past_the_batch_is_refused() {
        let batch = forge(build_batch(&[b"a", b"b"], 0, (-1, -1, -1)), |b| {
            b[BATCH_HEADER_BYTES] = 200; // zig-zag 100
        });
        assert!(matches!(
            check(&batch),
            Err(BatchError::InvalidRecord { index: 0, .. })
        ));
    }

    #[test]
    fn compression_flag_on_garbage_is_refused() {
        for codec in 1..=4u8 {
            let batch = forge(build_batch(&[b"plain", b"text"], 0, (-1, -1, -1)), |b| {
                b[21..23].copy_from_slice(&i16::from(codec).to_be_bytes());
            });
            assert!(check(&batch).is_err(), "codec {codec}");
        }
    }

    #[test]
    fn wrong_offset_delta_and_trailing_bytes_are_refused() {
        let batch = forge(build_batch(&[b"a", b"b"], 0, (-1, -1, -1)), |b| {
            // Second record: length, attributes, timestamp delta, offset delta.
            let second = BATCH_HEADER_BYTES + 1 + usize::from(b[BATCH_HEADER_BYTES] / 2);
            b[second + 3] = 8; // offset delta 4 instead of 1
        });
        assert!(check(&batch).is_err());
        let batch = forge(build_batch(&[b"a"], 0, (-1, -1, -1)), |b| b.push(0));
        assert!(verify_batches(&batch, 1 << 20).is_err());
    }

    #[test]
    fn a_small_batch_cannot_inflate_into_a_huge_record() {
        // One record claiming 1 GiB, compressed to a few bytes.
        let mut records = Vec::new();
        let mut z = ((1i64 << 30) << 1) as u64;
        while z >= 0x80 {
            records.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        records.push(z as u8);
        records.extend(std::iter::repeat_n(0u8, 1 << 20));
        let template = build_batch(&[b"x"], 0, (-1, -1, -1));
        let mut raw = template[..BATCH_HEADER_BYTES].to_vec();
        raw.extend_from_slice(&records);
        let batch = compress(&raw, 4);
        assert!(matches!(
            check(&batch),
            Err(BatchError::Decompression { .. })
        ));
    }
}
