//! Committed offsets of consumer groups, kept in an internal log.
//!
//! Every commit appends one batch to `internal/__consumer_offsets/0` with one
//! record per partition: key = (group, topic, partition), value = (offset, leader
//! epoch, commit time, metadata), or a null value to delete. The log is fsynced
//! before a commit is acknowledged. On start the log is replayed into memory, and
//! rewritten with only the live entries when most of it is superseded, so it stays
//! proportional to the number of committed partitions.
//!
//! The same log keeps each group's metadata image (written by the group
//! coordinator) under key = (group, marker): the topic length field holds
//! 0xFFFF, which no topic name can have.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use sluice_storage::batch::{encode_batch, verify_batch, KeyValue};
use sluice_storage::records::uncompressed_records;
use sluice_storage::{FlushPolicy, LogConfig, PartitionLog, ReadOutcome, VerifiedBatches};

use crate::error::CoreError;

/// Longest metadata string kept with a commit (Kafka's default
/// `offset.metadata.max.bytes`).
pub const METADATA_BYTES_MAX: usize = 4096;
/// Rewrite the log at start-up when it holds more than this many records per
/// live entry.
const REWRITE_RATIO: u64 = 4;

/// One committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A partition of a group's commit: (topic, partition).
pub type GroupPartition = (String, i32);

/// The offset store.
pub struct OffsetStore {
    dir: PathBuf,
    log: Mutex<PartitionLog>,
    groups: Mutex<HashMap<String, BTreeMap<GroupPartition, CommittedOffset>>>,
    /// Group metadata images by group.
    meta: Mutex<HashMap<String, Vec<u8>>>,
    /// Records in the log (live and superseded), to decide when to rewrite it.
    records: std::sync::atomic::AtomicU64,
}

/// Topic-length value that marks a group metadata key.
const META_MARKER: u16 = 0xFFFF;

fn encode_meta_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + group.len());
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k.extend_from_slice(&META_MARKER.to_be_bytes());
    k
}

/// The group of a metadata key, or `None` for an offset key.
fn decode_meta_key(k: &[u8]) -> Option<String> {
    let len = u16::from_be_bytes([*k.first()?, *k.get(1)?]) as usize;
    let marker = k.get(2 + len..2 + len + 2)?;
    if marker != META_MARKER.to_be_bytes() || k.len() != len + 4 {
        return None;
    }
    Some(std::str::from_utf8(k.get(2..2 + len)?).ok()?.to_string())
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        retention_ms: -1,
        retention_bytes: -1,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn decode_key(k: &[u8]) -> Option<(String, String, i32)> {
    let take_str = |k: &[u8], at: usize| -> Option<(String, usize)> {
        let len = u16::from_be_bytes([*k.get(at)?, *k.get(at + 1)?]) as usize;
        let s = std::str::from_utf8(k.get(at + 2..at + 2 + len)?).ok()?;
        Some((s.to_string(), at + 2 + len))
    };
    let (group, at) = take_str(k, 0)?;
    let (topic, at) = take_str(k, at)?;
    let p: [u8; 4] = k.get(at..at + 4)?.try_into().ok()?;
    Some((group, topic, i32::from_be_bytes(p)))
}

fn encode_value(c: &CommittedOffset) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + c.metadata.len());
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    v.extend_from_slice(c.metadata.as_bytes());
    v
}

fn decode_value(v: &[u8]) -> Option<CommittedOffset> {
    Some(CommittedOffset {
        offset: i64::from_be_bytes(v.get(0..8)?.try_into().ok()?),
        leader_epoch: i32::from_be_bytes(v.get(8..12)?.try_into().ok()?),
        commit_timestamp_ms: i64::from_be_bytes(v.get(12..20)?.try_into().ok()?),
        metadata: String::from_utf8_lossy(v.get(20..)?).into_owned(),
    })
}

/// Replays every batch of `log` through `apply`; returns the records seen.
fn replay(
    log: &PartitionLog,
    mut apply: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<u64, CoreError> {
    let mut offset = log.log_start_offset();
    let mut records = 0u64;
    loop {
        let slice = match log.read(offset, 1 << 20)? {
            ReadOutcome::Data(slice) => slice,
            ReadOutcome::AtEnd | ReadOutcome::OutOfRange { .. } => return Ok(records),
        };
        let bytes = slice
            .read_bytes()
            .map_err(|e| sluice_storage::StorageError::Io {
                path: log.dir().to_path_buf(),
                source: e,
            })?;
        let mut at = 0;
        let before = offset;
        while let Ok(h) = verify_batch(&bytes[at..]) {
            for r in uncompressed_records(&bytes[at..at + h.total_bytes()]) {
                if let Some(key) = r.key {
                    apply(key, r.value);
                    records += 1;
                }
            }
            offset = h.last_offset() + 1;
            at += h.total_bytes();
        }
        if offset == before {
            return Ok(records); // cannot happen for a recovered log; never spin
        }
    }
}

impl OffsetStore {
    /// Opens (and recovers) the store under `data_dir`.
    pub fn open(data_dir: &Path, now_ms: i64) -> Result<Self, CoreError> {
        let dir = data_dir
            .join("internal")
            .join("__consumer_offsets")
            .join("0");
        // Finish or undo a rewrite a crash interrupted: `0.old` is the last complete
        // log until `0` exists again; `0.rewrite` is only complete once renamed.
        let old = dir.with_extension("old");
        let fresh = dir.with_extension("rewrite");
        if old.exists() {
            if dir.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
            } else {
                std::fs::rename(&old, &dir).map_err(|e| io(&old, e))?;
            }
        }
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
        }
        let (log, _) = PartitionLog::open(&dir, log_config(), now_ms)?;
        let mut groups: HashMap<String, BTreeMap<GroupPartition, CommittedOffset>> = HashMap::new();
        let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
        let records = replay(&log, |key, value| {
            if let Some(group) = decode_meta_key(key) {
                match value {
                    Some(v) => meta.insert(group, v.to_vec()),
                    None => meta.remove(&group),
                };
                return;
            }
            let Some((group, topic, partition)) = decode_key(key) else {
                return;
            };
            match value.and_then(decode_value) {
                Some(c) => {
                    groups
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), c);
                }
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.remove(&(topic, partition));
                        if g.is_empty() {
                            groups.remove(&group);
                        }
                    }
                }
            }
        })?;
        let store = OffsetStore {
            dir,
            log: Mutex::new(log),
            groups: Mutex::new(groups),
            meta: Mutex::new(meta),
            records: std::sync::atomic::AtomicU64::new(records),
        };
        store.compact_if_needed(now_ms)?;
        Ok(store)
    }

    /// Replaces the log with one holding only the live entries.
    fn rewrite(&self, now_ms: i64) -> Result<(), CoreError> {
        // Held throughout: commits update the maps under this lock, so none can
        // land in the old log after the snapshot of the maps below.
        let mut log = self.log.lock();
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .groups
            .lock()
            .iter()
            .flat_map(|(g, parts)| {
                parts
                    .iter()
                    .map(move |((t, p), c)| (encode_key(g, t, *p), encode_value(c)))
            })
            .collect();
        entries.extend(
            self.meta
                .lock()
                .iter()
                .map(|(g, image)| (encode_meta_key(g), image.clone())),
        );
        let fresh_dir = self.dir.with_extension("rewrite");
        if fresh_dir.exists() {
            std::fs::remove_dir_all(&fresh_dir).map_err(|e| io(&fresh_dir, e))?;
        }
        let (fresh, _) = PartitionLog::open(&fresh_dir, log_config(), now_ms)?;
        for chunk in entries.chunks(1000) {
            let records: Vec<KeyValue<'_>> = chunk
                .iter()
                .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
                .collect();
            let batch = encode_batch(&records, now_ms, (-1, -1, -1));
            let verified = VerifiedBatches::new(&batch, usize::MAX)?;
            fresh.append(&verified, now_ms)?;
        }
        fresh.flush(now_ms)?;
        drop(fresh);
        let old_dir = self.dir.with_extension("old");
        std::fs::rename(&self.dir, &old_dir).map_err(|e| io(&self.dir, e))?;
        std::fs::rename(&fresh_dir, &self.dir).map_err(|e| io(&fresh_dir, e))?;
        if let Some(parent) = self.dir.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(parent, e))?;
        }
        *log = PartitionLog::open(&self.dir, log_config(), now_ms)?.0;
        self.records
            .store(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        std::fs::remove_dir_all(&old_dir).map_err(|e| io(&old_dir, e))?;
        tracing::info!(entries = entries.len(), "rewrote the committed-offsets log");
        Ok(())
    }

    /// Stores commits durably (fsynced) and then makes them visible. A `None`
    /// offset deletes the entry. Blocking: call off the async threads.
    pub fn commit(
        &self,
        group: &str,
        entries: &[(String, i32, Option<CommittedOffset>)],
        now_ms: i64,
    ) -> Result<(), CoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries
            .iter()
            .map(|(t, p, c)| (encode_key(group, t, *p), c.as_ref().map(encode_value)))
            .collect();
        let records: Vec<KeyValue<'_>> = encoded
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let _log = self.append_synced(&records, now_ms)?;
        let mut groups = self.groups.lock();
        let g = groups.entry(group.to_string()).or_default();
        for (t, p, c) in entries {
            match c {
                Some(c) => {
                    g.insert((t.clone(), *p), c.clone());
                }
                None => {
                    g.remove(&(t.clone(), *p));
                }
            }
        }
        if g.is_empty() {
            groups.remove(group);
        }
        Ok(())
    }

    /// Appends one batch and waits for its fsync.
    /// Appends one batch and waits for its fsync; returns the log lock, so the
    /// caller updates the in-memory maps before a rewrite can snapshot them.
    fn append_synced(
        &self,
        records: &[KeyValue<'_>],
        now_ms: i64,
    ) -> Result<parking_lot::MutexGuard<'_, PartitionLog>, CoreError> {
        let batch = encode_batch(records, now_ms, (-1, -1, -1));
        let verified = VerifiedBatches::new(&batch, usize::MAX)?;
        let log = self.log.lock();
        let appended = log.append(&verified, now_ms)?;
        log.sync_through(appended.seq)?;
        self.records
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(log)
    }

    /// Rewrites the log to its live entries when most of it is superseded, so it
    /// stays proportional to the committed partitions and groups while the broker
    /// runs. Blocking: call off the async threads.
    pub fn compact_if_needed(&self, now_ms: i64) -> Result<bool, CoreError> {
        let live = self
            .groups
            .lock()
            .values()
            .map(|g| g.len() as u64)
            .sum::<u64>()
            + self.meta.lock().len() as u64;
        if self.records.load(std::sync::atomic::Ordering::Relaxed) <= REWRITE_RATIO * live.max(256)
        {
            return Ok(false);
        }
        self.rewrite(now_ms)?;
        Ok(true)
    }

    /// Stores (or with `None` deletes) a group's metadata image, fsynced.
    /// Blocking: call off the async threads.
    pub fn put_group_metadata(
        &self,
        group: &str,
        image: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), CoreError> {
        if image.is_none() && !self.meta.lock().contains_key(group) {
            return Ok(());
        }
        let key = encode_meta_key(group);
        let _log = self.append_synced(&[(Some(key.as_slice()), image)], now_ms)?;
        let mut meta = self.meta.lock();
        match image {
            Some(i) => meta.insert(group.to_string(), i.to_vec()),
            None => meta.remove(group),
        };
        Ok(())
    }

    /// Every group's metadata image, as recovered or last stored.
    pub fn group_metadata(&self) -> Vec<(String, Vec<u8>)> {
        self.meta
            .lock()
            .iter()
            .map(|(g, i)| (g.clone(), i.clone()))
            .collect()
    }

    /// Whether a group has any committed offset.
    pub fn has_offsets(&self, group: &str) -> bool {
        self.groups.lock().contains_key(group)
    }

    /// The committed offsets of a group (empty when it has none).
    pub fn fetch(&self, group: &str) -> BTreeMap<GroupPartition, CommittedOffset> {
        self.groups.lock().get(group).cloned().unwrap_or_default()
    }

    /// Groups with at least one committed offset.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.groups.lock().keys().cloned().collect();
        g.sort();
        g
    }
}

fn io(path: &Path, source: std::io::Error) -> CoreError {
    CoreError::Storage(sluice_storage::StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: format!("m{offset}"),
            commit_timestamp_ms: 1,
        })
    }

    #[test]
    fn commits_survive_reopen_and_deletes_stick() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        store
            .commit(
                "g1",
                &[("t".into(), 0, committed(5)), ("t".into(), 1, committed(7))],
                0,
            )
            .unwrap();
        store
            .commit("g1", &[("t".into(), 0, committed(9))], 0)
            .unwrap();
        store
            .commit("g2", &[("u".into(), 0, committed(1))], 0)
            .unwrap();
        store.commit("g2", &[("u".into(), 0, None)], 0).unwrap();
        drop(store);
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        let g1 = store.fetch("g1");
        assert_eq!(g1[&("t".to_string(), 0)].offset, 9);
        assert_eq!(g1[&("t".to_string(), 0)].metadata, "m9");
        assert_eq!(g1[&("t".to_string(), 1)].offset, 7);
        assert!(store.fetch("g2").is_empty());
        assert_eq!(store.groups(), vec!["g1".to_string()]);
    }

    #[test]
    fn a_rewrite_interrupted_after_the_first_rename_keeps_the_old_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        store
            .commit("g", &[("t".into(), 3, committed(42))], 0)
            .unwrap();
        let dir = store.dir.clone();
        drop(store);
        std::fs::rename(&dir, dir.with_extension("old")).unwrap();
        std::fs::create_dir_all(dir.with_extension("rewrite")).unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        assert_eq!(store.fetch("g")[&("t".to_string(), 3)].offset, 42);
    }

    #[test]
    fn a_log_of_superseded_commits_is_rewritten_to_the_live_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        for i in 0..2000 {
            store
                .commit("g", &[("t".into(), 0, committed(i))], 0)
                .unwrap();
        }
        drop(store);
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        assert_eq!(store.fetch("g")[&("t".to_string(), 0)].offset, 1999);
        assert_eq!(store.log.lock().log_end_offset(), 1);
        drop(store);
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        assert_eq!(store.fetch("g")[&("t".to_string(), 0)].offset, 1999);
    }

    #[test]
    fn group_metadata_is_kept_beside_offsets_and_survives_a_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        store
            .commit("g", &[("t".into(), 0, committed(3))], 0)
            .unwrap();
        store.put_group_metadata("g", Some(b"image-1"), 0).unwrap();
        store.put_group_metadata("h", Some(b"other"), 0).unwrap();
        store.put_group_metadata("h", None, 0).unwrap();
        // Enough superseded images to force a rewrite at the next open.
        for i in 0..2000 {
            store
                .put_group_metadata("g", Some(format!("image-{i}").as_bytes()), 0)
                .unwrap();
        }
        drop(store);
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        assert_eq!(
            store.log.lock().log_end_offset(),
            2,
            "rewritten to the live entries"
        );
        assert_eq!(
            store.group_metadata(),
            vec![("g".to_string(), b"image-1999".to_vec())]
        );
        assert_eq!(store.fetch("g")[&("t".to_string(), 0)].offset, 3);
        assert_eq!(
            store.groups(),
            vec!["g".to_string()],
            "metadata is not an offset"
        );
        // A group named like a marker-bearing key is still an offset key.
        assert_eq!(decode_meta_key(&encode_key("g", "t", 0)), None);
        assert_eq!(
            decode_meta_key(&encode_meta_key("g")),
            Some("g".to_string())
        );
    }

    #[test]
    fn the_log_is_compacted_while_open_and_nothing_is_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        assert!(!store.compact_if_needed(0).unwrap());
        for i in 0..1500 {
            store
                .commit("g", &[("t".into(), i % 3, committed(i as i64))], 0)
                .unwrap();
        }
        store.put_group_metadata("g", Some(b"img"), 0).unwrap();
        assert!(store.compact_if_needed(0).unwrap());
        assert_eq!(store.log.lock().log_end_offset(), 4);
        store
            .commit("g", &[("t".into(), 0, committed(5000))], 0)
            .unwrap();
        drop(store);
        let store = OffsetStore::open(tmp.path(), 0).unwrap();
        let g = store.fetch("g");
        assert_eq!(g[&("t".to_string(), 0)].offset, 5000);
        assert_eq!(g[&("t".to_string(), 1)].offset, 1498);
        assert_eq!(g[&("t".to_string(), 2)].offset, 1499);
        assert_eq!(
            store.group_metadata(),
            vec![("g".to_string(), b"img".to_vec())]
        );
    }
}
