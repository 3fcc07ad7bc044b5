//! Partition log behaviour through its public API: append, read, roll, recovery,
//! retention, timestamps; plus a random-operation test against an in-memory model.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use sluice_storage::batch::{build_batch, verify_batch, BatchHeader};
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog, ReadOutcome, VerifiedBatches};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

fn append_values(log: &PartitionLog, values: &[&[u8]], ts: i64) -> (i64, i64) {
    let batch = build_batch(values, ts, (-1, -1, -1));
    let verified = VerifiedBatches::new(&batch, 1 << 20).unwrap();
    let appended = log.append(&verified, ts).unwrap();
    (appended.base_offset, appended.last_offset)
}

/// Reads every batch from `from` to the end; returns (header, payload after header).
fn read_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        match log.read(offset, max_bytes).unwrap() {
            ReadOutcome::AtEnd => return out,
            ReadOutcome::OutOfRange { .. } => panic!("offset {offset} out of range"),
            ReadOutcome::Data(slice) => {
                let bytes = slice.read_bytes().unwrap();
                let mut at = 0;
                let mut progressed = false;
                while at < bytes.len() {
                    let Ok(header) = verify_batch(&bytes[at..]) else {
                        break; // a batch cut at the size limit
                    };
                    let end = at + header.total_bytes();
                    if header.last_offset() >= offset {
                        out.push((header, bytes[at + 61..end].to_vec()));
                        offset = header.last_offset() + 1;
                        progressed = true;
                    }
                    at = end;
                }
                assert!(progressed, "a read must hold at least one whole batch");
            }
        }
    }
}

fn open(dir: &Path, cfg: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, cfg, 1_000).unwrap().0
}

#[test]
fn append_assigns_contiguous_offsets_and_reads_back_identical_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), config(1 << 20));
    assert_eq!(append_values(&log, &[b"a", b"b", b"c"], 10), (0, 2));
    assert_eq!(append_values(&log, &[b"d"], 11), (3, 3));
    assert_eq!(log.log_end_offset(), 4);
    let batches = read_all(&log, 0, 1 << 20);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].0.base_offset, 0);
    assert_eq!(batches[1].0.base_offset, 3);
    // Reading from the middle of a batch returns the whole batch.
    let from_mid = read_all(&log, 1, 1 << 20);
    assert_eq!(from_mid[0].0.base_offset, 0);
    assert!(matches!(log.read(4, 100).unwrap(), ReadOutcome::AtEnd));
    assert!(matches!(
        log.read(5, 100).unwrap(),
        ReadOutcome::OutOfRange { .. }
    ));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), config(1024));
    for i in 0..100u32 {
        append_values(&log, &[format!("value-{i:04}").as_bytes(); 3], i64::from(i));
    }
    assert!(log.segment_count() > 5);
    drop(log);
    let log = open(tmp.path(), config(1024));
    assert_eq!(log.log_end_offset(), 300);
    let batches = read_all(&log, 0, 700);
    assert_eq!(batches.len(), 100);
    for (i, (h, _)) in batches.iter().enumerate() {
        assert_eq!(h.base_offset, 3 * i as i64);
    }
    // Every offset is readable directly.
    for offset in 0..300 {
        let got = read_all(&log, offset, 1 << 20);
        assert!(got[0].0.base_offset <= offset && got[0].0.last_offset() >= offset);
    }
}

#[test]
fn recovery_keeps_every_complete_batch_when_tail_is_cut_at_any_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = open(&dir, config(1 << 20));
    for i in 0..5 {
        append_values(&log, &[b"0123456789".as_slice(); 2], i);
    }
    let seg = dir.join(format!("{:020}.log", 0));
    let full = std::fs::read(&seg).unwrap();
    drop(log);
    let batch_bytes = full.len() / 5;
    for cut in (full.len() - batch_bytes)..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let (log, recovery) = PartitionLog::open(&dir, config(1 << 20), 0).unwrap();
        assert_eq!(log.log_end_offset(), 8, "cut at {cut}");
        assert_eq!(recovery.truncated_bytes as usize, cut - 4 * batch_bytes);
        assert_eq!(read_all(&log, 0, 1 << 20).len(), 4);
        // The log accepts appends again after the cut.
        assert_eq!(append_values(&log, &[b"x"], 9), (8, 8));
    }
}

#[test]
fn recovery_cuts_garbage_and_corrupt_batches_at_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = open(&dir, config(1 << 20));
    append_values(&log, &[b"keep"], 1);
    append_values(&log, &[b"flip"], 2);
    drop(log);
    let seg = dir.join(format!("{:020}.log", 0));
    // Flip a payload byte of the second batch, then add random garbage.
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    let (log, recovery) = PartitionLog::open(&dir, config(1 << 20), 0).unwrap();
    assert!(recovery.truncated_bytes > 13);
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(
        read_all(&log, 0, 1 << 20)[0].1.len(),
        bytes.len() / 2 - 61 - 6
    );
}

#[test]
fn stale_index_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = open(&dir, config(2048));
    for i in 0..60 {
        append_values(&log, &[b"some value bytes".as_slice(); 4], i);
    }
    drop(log);
    // Damage the first segment's index with a half entry.
    let idx = dir.join(format!("{:020}.index", 0));
    OpenOptions::new()
        .append(true)
        .open(&idx)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let log = open(&dir, config(2048));
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 60);
    for offset in [0, 5, 77, 150, 239] {
        let got = read_all(&log, offset, 100);
        assert!(got[0].0.base_offset <= offset && got[0].0.last_offset() >= offset);
    }
}

#[test]
fn retention_by_size_deletes_oldest_sealed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(1024);
    cfg.retention_bytes = 4096;
    let log = open(tmp.path(), cfg);
    for i in 0..200 {
        append_values(&log, &[b"0123456789abcdef".as_slice(); 2], i);
    }
    let before = log.size_bytes();
    let retained = log.apply_retention(300).unwrap();
    assert!(retained.deleted_segments > 0);
    assert!(log.size_bytes() < before);
    assert!(log.size_bytes() < 4096 + 1024);
    assert!(retained.log_start_offset > 0);
    assert_eq!(log.log_start_offset(), retained.log_start_offset);
    assert!(matches!(
        log.read(0, 100).unwrap(),
        ReadOutcome::OutOfRange { log_start_offset, .. } if log_start_offset == retained.log_start_offset
    ));
    assert!(!read_all(&log, retained.log_start_offset, 1 << 20).is_empty());
}

#[test]
fn retention_by_time_deletes_expired_segments_including_the_active_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(1024);
    cfg.retention_ms = 1000;
    let log = open(tmp.path(), cfg);
    for i in 0..50 {
        append_values(&log, &[b"old record"], 10_000 + i);
    }
    assert_eq!(log.apply_retention(10_500).unwrap().deleted_segments, 0);
    let retained = log.apply_retention(20_000).unwrap();
    assert!(retained.deleted_segments > 0);
    assert_eq!(retained.log_start_offset, 50);
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(append_values(&log, &[b"new"], 20_001), (50, 50));
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), config(1024));
    for i in 0..100i64 {
        // Batches of 2 records: timestamps 1000+10i and 1000+10i+1.
        append_values(&log, &[b"ab", b"cd"], 1000 + 10 * i);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1501).unwrap(), Some((101, 1501)));
    assert_eq!(log.offset_for_timestamp(1502).unwrap(), Some((102, 1510)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some(1991));
}

#[test]
fn sync_through_reports_fsynced_and_flush_if_due_follows_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 20);
    cfg.flush = FlushPolicy::Interval {
        ms: 100,
        bytes: 1 << 30,
    };
    let log = open(tmp.path(), cfg);
    let batch = build_batch(&[b"x"], 0, (-1, -1, -1));
    let appended = log
        .append(&VerifiedBatches::new(&batch, 1 << 20).unwrap(), 0)
        .unwrap();
    assert!(!log.flush_if_due(1050).unwrap());
    assert!(log.flush_if_due(1100).unwrap());
    assert_eq!(
        log.sync_through(appended.seq).unwrap(),
        sluice_storage::Durability::Fsynced
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_bytes: usize },
    Reopen,
    TearTail { keep_fraction: f64 },
    Read { at: f64, max_bytes: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, 0usize..300).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        1 => Just(Op::Reopen),
        1 => (0.0f64..1.0).prop_map(|keep_fraction| Op::TearTail { keep_fraction }),
        3 => (0.0f64..1.0, 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random appends, reopens, torn tails and reads agree with a model that keeps
    /// each batch's records: what was appended (and not torn away) reads back intact.
    #[test]
    fn log_matches_model_under_random_operations(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let cfg = config(2048);
        let mut log = open(&dir, cfg.clone());
        // Model: (base offset, record count, payload after header) of every stored batch.
        let mut model: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        let mut next = 0i64;
        for op in ops {
            match op {
                Op::Append { records, value_bytes } => {
                    let value = vec![(next % 251) as u8; value_bytes];
                    let values: Vec<&[u8]> = (0..records).map(|_| value.as_slice()).collect();
                    let batch = build_batch(&values, next, (-1, -1, -1));
                    let (base, last) = append_values(&log, &values, next);
                    prop_assert_eq!(base, next);
                    prop_assert_eq!(last, next + records as i64 - 1);
                    model.push((base, records as i64, batch[61..].to_vec()));
                    next += records as i64;
                }
                Op::Reopen => {
                    drop(log);
                    log = open(&dir, cfg.clone());
                    prop_assert_eq!(log.log_end_offset(), next);
                }
                Op::TearTail { keep_fraction } => {
                    drop(log);
                    let mut segs: Vec<_> = std::fs::read_dir(&dir).unwrap()
                        .map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|x| x == "log"))
                        .collect();
                    segs.sort();
                    let tail = segs.last().unwrap().clone();
                    let bytes = std::fs::read(&tail).unwrap();
                    let keep = (bytes.len() as f64 * keep_fraction) as usize;
                    std::fs::write(&tail, &bytes[..keep]).unwrap();
                    log = open(&dir, cfg.clone());
                    // Batches wholly inside the kept bytes survive; the rest are gone.
                    let tail_base: i64 = tail.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                    let mut pos = 0usize;
                    model.retain(|(base, _, payload)| {
                        if *base < tail_base { return true; }
                        pos += payload.len() + 61;
                        pos <= keep
                    });
                    next = model.last().map_or(0, |(b, n, _)| b + n).max(tail_base);
                    prop_assert_eq!(log.log_end_offset(), next);
                }
                Op::Read { at, max_bytes } => {
                    if next == 0 { continue; }
                    let offset = ((next as f64) * at) as i64;
                    let got = read_all(&log, offset, max_bytes);
                    let expected: Vec<_> = model.iter().filter(|(b, n, _)| b + n > offset).collect();
                    prop_assert_eq!(got.len(), expected.len());
                    for ((h, payload), (base, n, want)) in got.iter().zip(expected) {
                        prop_assert_eq!(h.base_offset, *base);
                        prop_assert_eq!(i64::from(h.records_count), *n);
                        prop_assert_eq!(payload, want);
                    }
                }
            }
        }
    }
}

#[test]
fn under_flush_always_records_are_readable_only_once_fsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 20);
    cfg.flush = FlushPolicy::Always;
    let log = open(tmp.path(), cfg);
    let batch = build_batch(&[b"durable"], 0, (-1, -1, -1));
    let appended = log
        .append(&VerifiedBatches::new(&batch, 1 << 20).unwrap(), 0)
        .unwrap();
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.visible_end_offset(), 0);
    assert!(matches!(log.read(0, 1 << 20).unwrap(), ReadOutcome::AtEnd));
    log.sync_through(appended.seq).unwrap();
    assert_eq!(log.visible_end_offset(), 1);
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 1);
}

#[test]
fn a_closed_log_refuses_appends_and_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), config(1 << 20));
    append_values(&log, &[b"x"], 0);
    log.close();
    let batch = build_batch(&[b"y"], 0, (-1, -1, -1));
    assert!(log
        .append(&VerifiedBatches::new(&batch, 1 << 20).unwrap(), 0)
        .is_err());
    assert!(log.apply_retention(i64::MAX / 2).is_err());
}

#[test]
fn sparse_offset_deltas_are_refused() {
    let mut batch = build_batch(&[b"a"], 0, (-1, -1, -1));
    batch[23..27].copy_from_slice(&(1i32 << 30).to_be_bytes());
    let crc = sluice_storage::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(VerifiedBatches::new(&batch, 1 << 20).is_err());
}

/// Appends one record with header `tag` = `tag`; the summary is the tag's
/// first byte as a bit.
fn append_tagged(log: &PartitionLog, tag: &str, ts: i64) -> i64 {
    let spec = sluice_storage::batch::RecordSpec {
        key: None,
        value: Some(b"v"),
        headers: vec![("tag", Some(tag.as_bytes())), ("other", None)],
        timestamp: ts,
    };
    let batch = sluice_storage::batch::encode_records(&[spec], (-1, -1, -1));
    let verified =
        VerifiedBatches::summarized(&batch, 1 << 20, &mut |key, value| match (key, value) {
            (b"tag", Some(v)) => 1u64 << (v[0] % 64),
            _ => 0,
        })
        .unwrap();
    assert_eq!(verified.summaries(), &[1u64 << (tag.as_bytes()[0] % 64)]);
    log.append(&verified, ts).unwrap().base_offset
}

#[test]
fn batch_summaries_survive_rolls_and_reopen_and_drop_with_a_cut_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = open(&dir, config(2048));
    let tags = ["a", "b", "c", "d"];
    for i in 0..100 {
        assert_eq!(append_tagged(&log, tags[i % 4], i as i64), i as i64);
    }
    assert!(log.segment_count() > 2, "the test needs several segments");
    let bit = |i: usize| 1u64 << (tags[i % 4].as_bytes()[0] % 64);
    let want: Vec<(i64, u64)> = (10..90).map(|i| (i as i64, bit(i))).collect();
    assert_eq!(log.summaries(10, 90, 1000).unwrap(), want);
    assert_eq!(log.summaries(10, 90, 5).unwrap(), want[..5].to_vec());
    // Batches appended without summaries have none.
    append_values(&log, &[b"plain"], 100);
    assert_eq!(log.summaries(100, 101, 10).unwrap(), Vec::new());
    log.close();
    drop(log);

    let log = open(&dir, config(2048));
    assert_eq!(log.summaries(10, 90, 1000).unwrap(), want);
    let tail = log.log_end_offset();
    drop(log);
    // Cut the last two batches (the tagged offset 99, the plain 100) off the
    // tail segment, as a crash would: 99's summary goes too, and the batch
    // appended in its place gets its own.
    let last_segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let bytes = std::fs::read(&last_segment).unwrap();
    let last_two = read_all(&open(&dir, config(2048)), tail - 2, 1 << 20);
    let cut = bytes.len() - last_two.iter().map(|(_, b)| b.len() + 61).sum::<usize>();
    std::fs::write(&last_segment, &bytes[..cut]).unwrap();
    let log = open(&dir, config(2048));
    assert_eq!(log.log_end_offset(), 99);
    assert_eq!(
        log.summaries(97, 101, 10).unwrap(),
        vec![(97, bit(97)), (98, bit(98))]
    );
    assert_eq!(append_tagged(&log, "z", 200), 99);
    assert_eq!(
        log.summaries(97, 101, 10).unwrap(),
        vec![(97, bit(97)), (98, bit(98)), (99, 1u64 << (b'z' % 64))]
    );
}
