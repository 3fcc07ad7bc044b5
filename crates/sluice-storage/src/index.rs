//! Sparse per-segment indexes: offset → file position, and timestamp → offset.
//!
//! Both are kept in memory and appended to their files as entries are added; the
//! files let a restart skip scanning sealed segments. An entry is added every
//! `index_interval_bytes` of log, at a batch boundary, to both indexes at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};

/// Bytes of one offset index entry: relative offset u32, position u32.
const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry: timestamp i64, relative offset u32.
const TIME_ENTRY_BYTES: usize = 12;

/// One indexed batch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset of the indexed batch's first record, relative to the segment base.
    pub relative_offset: u32,
    /// File position of the indexed batch.
    pub position: u32,
    /// Largest timestamp of all batches before the indexed one (-1 when none).
    pub timestamp_before: i64,
}

/// The pair of index files of one segment.
pub(crate) struct SegmentIndex {
    offset_path: PathBuf,
    time_path: PathBuf,
    offset_file: File,
    time_file: File,
    entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// Opens (or creates) the index files beside a segment and loads them. Returns
    /// the index and whether the files were consistent (same entry count, whole
    /// entries, increasing offsets and positions, all positions below `log_bytes`).
    pub fn open(log_path: &Path, log_bytes: u64) -> Result<(Self, bool), StorageError> {
        let offset_path = log_path.with_extension("index");
        let time_path = log_path.with_extension("timeindex");
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(p)
                .at(p)
        };
        let offset_file = open(&offset_path)?;
        let time_file = open(&time_path)?;
        let offset_bytes = std::fs::read(&offset_path).at(&offset_path)?;
        let time_bytes = std::fs::read(&time_path).at(&time_path)?;
        let mut index = SegmentIndex {
            offset_path,
            time_path,
            offset_file,
            time_file,
            entries: Vec::new(),
        };
        let consistent = offset_bytes.len() % OFFSET_ENTRY_BYTES == 0
            && time_bytes.len() % TIME_ENTRY_BYTES == 0
            && offset_bytes.len() / OFFSET_ENTRY_BYTES == time_bytes.len() / TIME_ENTRY_BYTES;
        if !consistent {
            return Ok((index, false));
        }
        for (o, t) in offset_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .zip(time_bytes.chunks_exact(TIME_ENTRY_BYTES))
        {
            let relative_offset = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let position = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&t[..8]);
            let t_rel = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            let entry = IndexEntry {
                relative_offset,
                position,
                timestamp_before: i64::from_be_bytes(ts),
            };
            let ordered = index.entries.last().is_none_or(|prev| {
                prev.relative_offset < entry.relative_offset && prev.position < entry.position
            });
            if t_rel != relative_offset || !ordered || u64::from(position) >= log_bytes {
                index.entries.clear();
                return Ok((index, false));
            }
            index.entries.push(entry);
        }
        Ok((index, true))
    }

    /// Drops all entries, in memory and on disk (before a rebuild).
    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.entries.clear();
        self.offset_file.set_len(0).at(&self.offset_path)?;
        self.time_file.set_len(0).at(&self.time_path)?;
        Ok(())
    }

    /// Appends an entry; entries must arrive in increasing offset order.
    pub fn push(&mut self, entry: IndexEntry) -> Result<(), StorageError> {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|p| p.relative_offset < entry.relative_offset));
        let mut o = [0u8; OFFSET_ENTRY_BYTES];
        o[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
        o[4..].copy_from_slice(&entry.position.to_be_bytes());
        let mut t = [0u8; TIME_ENTRY_BYTES];
        t[..8].copy_from_slice(&entry.timestamp_before.to_be_bytes());
        t[8..].copy_from_slice(&entry.relative_offset.to_be_bytes());
        self.offset_file.write_all(&o).at(&self.offset_path)?;
        self.time_file.write_all(&t).at(&self.time_path)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Position of the last indexed batch whose first offset is <= `relative_offset`
    /// (0, the segment start, when none is).
    pub fn position_for_offset(&self, relative_offset: u32) -> u32 {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    /// Position from which a scan for the first batch with a timestamp >= `target_ms`
    /// may start: every batch before it is older than the target.
    pub fn position_for_timestamp(&self, target_ms: i64) -> u32 {
        // timestamp_before is non-decreasing, so the qualifying entries form a prefix.
        let n = self
            .entries
            .partition_point(|e| e.timestamp_before < target_ms);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    /// The first entry at or after byte `position`, as (relative offset,
    /// position); the last entry when none is, (0, 0) when there are none.
    pub fn entry_at_or_after(&self, position: u64) -> (u32, u32) {
        let n = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries
            .get(n)
            .or(self.entries.last())
            .map_or((0, 0), |e| (e.relative_offset, e.position))
    }

    /// Largest timestamp of the batches before the last indexed one (-1 when none).
    pub fn timestamp_before_last(&self) -> i64 {
        self.entries.last().map_or(-1, |e| e.timestamp_before)
    }

    /// Flushes both index files to disk.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.offset_file.sync_data().at(&self.offset_path)?;
        self.time_file.sync_data().at(&self.time_path)
    }

    /// Deletes both files.
    pub fn remove_files(&self) -> Result<(), StorageError> {
        for p in [&self.offset_path, &self.time_path] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(p),
                _ => {}
            }
        }
        Ok(())
    }
}
