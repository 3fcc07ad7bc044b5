//! Micro-benchmarks of the partition log on the produce and fetch paths.
//!
//! - `verify`: what the broker checks before it appends a produced payload,
//!   `VerifiedBatches::new` (header, size, CRC32C, every record, decompressing
//!   lz4/zstd batches as a stream); and `batch::verify_batch` alone (header and
//!   CRC, no record walk) to show the record walk's share. Throughput counts the
//!   batch as received, compressed where it is.
//! - `append`: `PartitionLog::append` of an already verified batch under
//!   `flush = os`, so the bytes reach the page cache only. Offsets are assigned
//!   in a copy, so one prepared batch is appended again and again.
//! - `read`: what a fetch does at successive offsets of a 64 MiB log, asking for
//!   1 MiB: `PartitionLog::read` alone (the file range a `sendfile` fetch sends)
//!   and followed by `FileSlice::read_bytes` (the copy when `sendfile` cannot be
//!   used). The log was just written, so it is read from the page cache.
//!
//! Payloads are fixed: record values come from a fixed-seed generator. Logs live
//! in a temporary directory under `$SLUICE_BENCH_DIR` when it is set, else the
//! system's (often a tmpfs: point `SLUICE_BENCH_DIR` at the data disk's file
//! system to measure its page cache instead).
//!
//! Run with `cargo bench -p sluice-storage --bench log`; add a filter to run one
//! group, e.g. `cargo bench -p sluice-storage --bench log -- append`.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_storage::batch::{
    build_batch, compute_crc, verify_batch, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES,
};
use sluice_storage::config::SEGMENT_BYTES_DEFAULT;
use sluice_storage::{
    FileSlice, FlushPolicy, LogConfig, PartitionLog, ReadOutcome, VerifiedBatches,
};
use tempfile::TempDir;

/// The clock for every open and append: fixed, so no segment ever rolls by age.
const NOW_MS: i64 = 1_700_000_000_000;
/// An append log is recreated, outside the timed region, before it would exceed
/// this: a long run then neither fills the disk nor rolls a segment (a roll
/// fsyncs the sealed segment, which would time the disk, not the append path).
const APPEND_LOG_BYTES_MAX: u64 = 128 << 20;
const _: () = assert!(APPEND_LOG_BYTES_MAX < SEGMENT_BYTES_DEFAULT);
/// Size of the log the read benchmarks read from.
const READ_LOG_BYTES: u64 = 64 << 20;
/// Bytes asked for per read: the consumer's default `max.partition.fetch.bytes`.
const READ_BYTES: usize = 1 << 20;
/// Compression codec ids, as in a batch's attributes.
const CODEC_LZ4: u8 = 3;
const CODEC_ZSTD: u8 = 4;
/// Positions of the CRC and attributes fields in a batch header (see `batch.rs`).
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// The records of one produced batch.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    records: usize,
    value_bytes: usize,
}

/// A batch from a producer that batches well (≈100 KiB).
const LARGE: Shape = Shape {
    name: "100x1KiB",
    records: 100,
    value_bytes: 1024,
};
/// A batch from a producer sending small messages with little batching (≈1.8 KB).
const SMALL: Shape = Shape {
    name: "16x100B",
    records: 16,
    value_bytes: 100,
};

/// Settings of every benchmarked log: page cache only, one segment, no retention.
fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES_DEFAULT,
        retention_ms: -1,
        retention_bytes: -1,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// Values of `shape`: text-like bytes from a fixed-seed xorshift, so every run
/// stores the same bytes and compression behaves roughly as on real payloads
/// (not as on zeros).
fn values_of(shape: Shape) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz {}:,\"";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut values = Vec::with_capacity(shape.records);
    for _ in 0..shape.records {
        let mut value = Vec::with_capacity(shape.value_bytes);
        for _ in 0..shape.value_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value.push(ALPHABET[(state >> 59) as usize]);
        }
        values.push(value);
    }
    values
}

/// An uncompressed v2 batch of `shape`, base offset 0, no producer id.
fn batch_of(shape: Shape) -> Vec<u8> {
    let owned = values_of(shape);
    let values: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    build_batch(&values, NOW_MS, (-1, -1, -1))
}

/// Re-packs an uncompressed batch with its records compressed by `codec`, as a
/// producer sends it (mirrors the helper of the tests in `records.rs`).
fn compress(batch: &[u8], codec: u8) -> Vec<u8> {
    let records = &batch[BATCH_HEADER_BYTES..];
    let packed = match codec {
        CODEC_LZ4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .expect("an lz4 encoder");
            encoder.write_all(records).expect("lz4 into memory");
            let (packed, finished) = encoder.finish();
            finished.expect("lz4 into memory");
            packed
        }
        // Level 3: zstd's and the Java producer's default.
        CODEC_ZSTD => zstd::encode_all(records, 3).expect("zstd into memory"),
        _ => unreachable!("codec {codec} is not benchmarked"),
    };
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    out.extend_from_slice(&packed);
    let batch_length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&i16::from(codec).to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A fresh directory for logs, under `SLUICE_BENCH_DIR` when it is set.
fn bench_root() -> TempDir {
    match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory")
}

fn open_log(dir: &Path) -> PartitionLog {
    let (log, _recovery) = PartitionLog::open(dir, log_config(), NOW_MS).expect("open a log");
    log
}

/// A log that is deleted and opened empty again whenever an append would take it
/// past [`APPEND_LOG_BYTES_MAX`].
struct ScratchLog {
    // Declared first so that it is dropped before the directory is removed.
    log: Option<PartitionLog>,
    dir: PathBuf,
    _root: TempDir,
}

impl ScratchLog {
    fn new() -> Self {
        let root = bench_root();
        let dir = root.path().join("log");
        ScratchLog {
            log: Some(open_log(&dir)),
            dir,
            _root: root,
        }
    }

    /// The log, recreated empty first if `bytes` more would not fit.
    fn with_room_for(&mut self, bytes: u64) -> &PartitionLog {
        assert!(bytes <= APPEND_LOG_BYTES_MAX);
        let full = self
            .log
            .as_ref()
            .is_none_or(|log| log.size_bytes() + bytes > APPEND_LOG_BYTES_MAX);
        if full {
            if let Some(log) = self.log.take() {
                log.delete().expect("delete the scratch log");
            }
            self.log = Some(open_log(&self.dir));
        }
        self.log.as_ref().expect("a scratch log is open")
    }
}

fn bench_verify(c: &mut Criterion) {
    let batch_bytes_max = log_config().max_message_bytes;
    let mut group = c.benchmark_group("verify");
    for shape in [LARGE, SMALL] {
        let batch = batch_of(shape);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(shape.name, |b| {
            b.iter(|| {
                VerifiedBatches::new(black_box(batch.as_slice()), batch_bytes_max)
                    .expect("a valid batch")
                    .offset_count()
            })
        });
    }
    let large = batch_of(LARGE);
    for (codec, name) in [(CODEC_LZ4, "lz4"), (CODEC_ZSTD, "zstd")] {
        let packed = compress(&large, codec);
        group.throughput(Throughput::Bytes(packed.len() as u64));
        group.bench_function(format!("{}_{name}", LARGE.name), |b| {
            b.iter(|| {
                VerifiedBatches::new(black_box(packed.as_slice()), batch_bytes_max)
                    .expect("a valid batch")
                    .offset_count()
            })
        });
    }
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function(format!("{}_crc_only", LARGE.name), |b| {
        b.iter(|| verify_batch(black_box(large.as_slice())).expect("a valid batch"))
    });
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let batch_bytes_max = log_config().max_message_bytes;
    let mut group = c.benchmark_group("append");
    for shape in [LARGE, SMALL] {
        let batch = batch_of(shape);
        let batch_bytes = batch.len() as u64;
        let verified = VerifiedBatches::new(&batch, batch_bytes_max).expect("a valid batch");
        let mut scratch = ScratchLog::new();
        group.throughput(Throughput::Bytes(batch_bytes));
        group.bench_function(shape.name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let log = scratch.with_room_for(batch_bytes);
                    let room = (APPEND_LOG_BYTES_MAX - log.size_bytes()) / batch_bytes;
                    let appends = room.min(left);
                    let start = Instant::now();
                    for _ in 0..appends {
                        black_box(log.append(black_box(&verified), NOW_MS).expect("append"));
                    }
                    elapsed += start.elapsed();
                    left -= appends;
                }
                elapsed
            })
        });
    }
    group.finish();
}

/// What a fetch at `offset` gets: the file range to send.
fn read_slice(log: &PartitionLog, offset: i64) -> FileSlice {
    match log.read(offset, READ_BYTES).expect("read") {
        ReadOutcome::Data(slice) => slice,
        other => panic!("no data at offset {offset}: {other:?}"),
    }
}

fn bench_read(c: &mut Criterion) {
    let root = bench_root();
    let log = open_log(&root.path().join("log"));
    let batch = batch_of(LARGE);
    let batch_bytes = batch.len() as u64;
    let verified =
        VerifiedBatches::new(&batch, log_config().max_message_bytes).expect("a valid batch");
    while log.size_bytes() + batch_bytes <= READ_LOG_BYTES {
        log.append(&verified, NOW_MS).expect("fill the log");
    }
    // Each read starts at a batch boundary whole batches after the previous one,
    // as a consumer moves on after the last whole batch it got, and has at least
    // READ_BYTES after it, so that every read returns the full READ_BYTES.
    let batches_per_read = (READ_BYTES as u64 / batch_bytes).max(1);
    let mut offsets = Vec::new();
    let mut first_batch = 0;
    while first_batch * batch_bytes + READ_BYTES as u64 <= log.size_bytes() {
        offsets.push((first_batch * LARGE.records as u64) as i64);
        first_batch += batches_per_read;
    }
    assert!(!offsets.is_empty());
    for &offset in &offsets {
        assert_eq!(read_slice(&log, offset).len, READ_BYTES, "read at {offset}");
    }

    let mut group = c.benchmark_group("read");
    // No throughput here: nothing is copied, only the range is found.
    group.bench_function("locate_1MiB", |b| {
        let mut next = offsets.iter().cycle();
        b.iter(|| read_slice(&log, black_box(*next.next().expect("offsets"))))
    });
    group.throughput(Throughput::Bytes(READ_BYTES as u64));
    group.bench_function("copy_1MiB", |b| {
        let mut next = offsets.iter().cycle();
        b.iter(|| {
            read_slice(&log, black_box(*next.next().expect("offsets")))
                .read_bytes()
                .expect("copy the range")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_verify, bench_append, bench_read);
criterion_main!(benches);
