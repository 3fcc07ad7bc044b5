//! Fetch responses encoded for zero-copy sending.
//!
//! The codec crate needs record bytes in memory. To send stored batches straight
//! from the page cache, a Fetch response is encoded here as a list of chunks:
//! encoded protocol bytes, and file ranges whose bytes the socket takes with
//! `sendfile`. The layout follows the FetchResponse schema for v4–v12; a unit test
//! checks it byte for byte against the codec crate's own encoding.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_core::FileSlice;

/// One piece of a response frame.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Encoded protocol bytes.
    Bytes(Bytes),
    /// Stored record batches, sent from the file.
    File(FileSlice),
}

impl Chunk {
    /// Bytes this chunk adds to the frame.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(f) => f.len,
        }
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One partition of a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `None` encodes an empty record set.
    pub records: Option<FileSlice>,
}

/// One topic of a Fetch response.
#[derive(Debug, Clone)]
pub struct FetchedTopic {
    pub name: String,
    pub partitions: Vec<FetchedPartition>,
}

/// Lowest and highest Fetch version this encoder writes.
pub const VERSIONS: (i16, i16) = (4, 12);

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Length of an array or of bytes: i32, or unsigned varint of len+1 when flexible.
fn put_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_unsigned_varint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes a whole response frame (size prefix, header, body) for `version`.
/// Returns the chunks in order and the total frame length including the prefix.
pub fn encode(version: i16, correlation_id: i32, topics: &[FetchedTopic]) -> (Vec<Chunk>, usize) {
    debug_assert!((VERSIONS.0..=VERSIONS.1).contains(&version));
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        put_unsigned_varint(&mut buf, 0); // response header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id: no incremental fetch sessions
    }
    put_len(&mut buf, flexible, topics.len());
    for topic in topics {
        if flexible {
            put_unsigned_varint(&mut buf, topic.name.len() as u32 + 1);
        } else {
            buf.put_i16(topic.name.len() as i16);
        }
        buf.put_slice(topic.name.as_bytes());
        put_len(&mut buf, flexible, topic.partitions.len());
        for p in &topic.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            put_len(&mut buf, flexible, 0); // aborted_transactions: none
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            match &p.records {
                Some(slice) if slice.len > 0 => {
                    put_len(&mut buf, flexible, slice.len);
                    chunks.push(Chunk::Bytes(buf.split().freeze()));
                    chunks.push(Chunk::File(slice.clone()));
                }
                _ => put_len(&mut buf, flexible, 0),
            }
            if flexible {
                put_unsigned_varint(&mut buf, 0); // partition tagged fields
            }
        }
        if flexible {
            put_unsigned_varint(&mut buf, 0); // topic tagged fields
        }
    }
    if flexible {
        put_unsigned_varint(&mut buf, 0); // response tagged fields
    }
    chunks.push(Chunk::Bytes(buf.freeze()));
    let total: usize = chunks.iter().map(Chunk::len).sum();
    let size = ((total - 4) as i32).to_be_bytes();
    if let Some(Chunk::Bytes(first)) = chunks.first_mut() {
        let mut patched = BytesMut::from(&first[..]);
        patched[..4].copy_from_slice(&size);
        *first = patched.freeze();
    }
    (chunks, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use std::io::Write;
    use std::sync::Arc;

    fn slice_of(bytes: &[u8]) -> FileSlice {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"prefix").unwrap();
        f.write_all(bytes).unwrap();
        FileSlice {
            file: Arc::new(f),
            position: 6,
            len: bytes.len(),
        }
    }

    fn flatten(chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(f) => out.extend_from_slice(&f.read_bytes().unwrap()),
            }
        }
        out
    }

    #[test]
    fn matches_the_codec_byte_for_byte_in_every_version() {
        let records = b"pretend these are record batches".to_vec();
        let topics = vec![
            FetchedTopic {
                name: "alpha".into(),
                partitions: vec![
                    FetchedPartition {
                        partition: 0,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 42,
                        log_start_offset: 3,
                        records: Some(slice_of(&records)),
                    },
                    FetchedPartition {
                        partition: 1,
                        error_code: 1,
                        high_watermark: 7,
                        last_stable_offset: 7,
                        log_start_offset: 0,
                        records: None,
                    },
                ],
            },
            FetchedTopic {
                name: "b".into(),
                partitions: vec![],
            },
        ];
        for version in VERSIONS.0..=VERSIONS.1 {
            let (chunks, total) = encode(version, 99, &topics);
            let ours = flatten(&chunks);
            assert_eq!(ours.len(), total);
            let reference = FetchResponse::default().with_responses(
                topics
                    .iter()
                    .map(|t| {
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        PartitionData::default()
                                            .with_partition_index(p.partition)
                                            .with_error_code(p.error_code)
                                            .with_high_watermark(p.high_watermark)
                                            .with_last_stable_offset(p.last_stable_offset)
                                            .with_log_start_offset(p.log_start_offset)
                                            .with_records(Some(match &p.records {
                                                Some(s) => s.read_bytes().unwrap(),
                                                None => Bytes::new(),
                                            }))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            let mut theirs = BytesMut::new();
            theirs.put_i32(0);
            let header_version = if version >= 12 { 1 } else { 0 };
            ResponseHeader::default()
                .with_correlation_id(99)
                .encode(&mut theirs, header_version)
                .unwrap();
            reference.encode(&mut theirs, version).unwrap();
            let size = (theirs.len() - 4) as i32;
            theirs[..4].copy_from_slice(&size.to_be_bytes());
            assert_eq!(ours, theirs.to_vec(), "fetch v{version}");
        }
    }
}
