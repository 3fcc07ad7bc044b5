//! Micro-benchmarks of the Kafka codec on the produce path, for the request a
//! batching producer sends: one topic, 12 partitions, one full record batch of
//! 16 × 1000-byte values each (16,205 bytes, just under the Java producer's
//! default `batch.size` of 16 KiB).
//!
//! - `decode`: `ProduceRequest::decode` of the request body from `Bytes`; the
//!   record batches are sliced out of the buffer, not copied.
//! - `decode_frame`: the broker's path from a received frame to a request:
//!   `wire::frame_bounds`, then `wire::decode_request` (request header and body,
//!   under `catch_unwind`).
//! - `encode`: `ProduceRequest::encode` into a reused buffer, as a client does.
//!
//! Each at v3 (the oldest version the broker serves) and v9 (the first flexible
//! one: compact strings and arrays, tagged fields). Throughput counts the bytes
//! decoded or encoded. Payloads are fixed bytes. Verifying the record batches
//! themselves is measured in `sluice-storage`'s `log` benchmark (`verify`).
//!
//! Run with `cargo bench -p sluice-kafka --bench produce_codec`.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_kafka::wire::{decode_request, frame_bounds, FRAME_BYTES_MAX};
use sluice_storage::batch::build_batch;

// The broker decodes requests under this allocator; measure under it too.
#[global_allocator]
static GLOBAL: sluice_kafka::lazy_alloc::LazyHugeAllocator =
    sluice_kafka::lazy_alloc::LazyHugeAllocator;

const PARTITIONS: i32 = 12;
const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 1000;
/// Produce versions measured: the oldest served and the first flexible one.
const VERSIONS: [i16; 2] = [3, 9];
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// One full batch per partition, each its own allocation with its own bytes, as
/// a producer accumulates them.
fn produce_request() -> ProduceRequest {
    let partitions: Vec<PartitionProduceData> = (0..PARTITIONS)
        .map(|index| {
            let owned: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
                .map(|record| {
                    (0..VALUE_BYTES)
                        .map(|i| (i + record + index as usize) as u8)
                        .collect()
                })
                .collect();
            let values: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let batch = build_batch(&values, BASE_TIMESTAMP_MS, (-1, -1, -1));
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(Bytes::from(batch)))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(partitions)])
}

/// The request body alone, as `ProduceRequest::decode` reads it.
fn encode_body(request: &ProduceRequest, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    request
        .encode(&mut buf, version)
        .expect("encode the request");
    buf.freeze()
}

/// The request as it arrives on a connection: size prefix, header, body.
fn encode_frame(request: &ProduceRequest, version: i16) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench-producer")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .expect("encode the header");
    request
        .encode(&mut buf, version)
        .expect("encode the request");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

/// The broker's decoding of one received frame holding a produce request.
fn decode_frame(frame: Bytes, version: i16) -> (RequestHeader, RequestKind) {
    let (start, end) = frame_bounds(&frame, FRAME_BYTES_MAX)
        .expect("a valid size")
        .expect("a whole frame");
    decode_request(ApiKey::Produce, version, frame.slice(start..end)).expect("a valid request")
}

fn bench_produce_request(c: &mut Criterion) {
    let request = produce_request();
    let mut group = c.benchmark_group("produce_request");
    for version in VERSIONS {
        let v = format!("v{version}");
        let body = encode_body(&request, version);
        let frame = encode_frame(&request, version);
        // What is measured must be what was meant: both decodings give the request back.
        let decoded = ProduceRequest::decode(&mut body.clone(), version).expect("decode");
        assert_eq!(decoded, request);
        match decode_frame(frame.clone(), version) {
            (_, RequestKind::Produce(decoded)) => assert_eq!(decoded, request),
            (_, other) => panic!("decoded a produce frame as {other:?}"),
        }

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(BenchmarkId::new("decode", &v), |b| {
            b.iter(|| {
                ProduceRequest::decode(&mut black_box(body.clone()), version).expect("decode")
            })
        });
        group.bench_function(BenchmarkId::new("encode", &v), |b| {
            let mut buf = BytesMut::with_capacity(body.len());
            b.iter(|| {
                buf.clear();
                black_box(&request)
                    .encode(&mut buf, version)
                    .expect("encode");
                buf.len()
            })
        });
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(BenchmarkId::new("decode_frame", &v), |b| {
            b.iter(|| decode_frame(black_box(frame.clone()), version))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_produce_request);
criterion_main!(benches);
