//! Per-batch summaries: one opaque 64-bit value kept beside each stored batch.
//!
//! The owner of a log computes a summary when it verifies a batch (the broker
//! keeps a bit set of the batch's message tags) and readers use it to pass over
//! batches without decoding them. Each segment has a `.summary` file of 16-byte
//! entries: relative offset u32, summary u64, CRC32C u32 of the first 12 bytes,
//! all big-endian, in increasing offset order.
//!
//! A summary is a hint a reader may only use to skip work: a batch without an
//! entry must be read in full. That lets entries be written lazily (buffered,
//! never fsynced on their own); a crash loses at most the buffered ones, and
//! opening the segment cuts torn entries and those of batches the log lost.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};

/// Bytes of one entry.
const ENTRY_BYTES: usize = 16;
/// Entries buffered before they are written.
const PENDING_MAX: usize = 64;
/// Entries read per chunk when a file is scanned backwards at open.
const SCAN_ENTRIES: usize = 4096;

fn encode(relative_offset: u32, summary: u64) -> [u8; ENTRY_BYTES] {
    let mut e = [0u8; ENTRY_BYTES];
    e[..4].copy_from_slice(&relative_offset.to_be_bytes());
    e[4..12].copy_from_slice(&summary.to_be_bytes());
    let crc = crc32c::crc32c(&e[..12]);
    e[12..].copy_from_slice(&crc.to_be_bytes());
    e
}

/// The entry in `e`, or `None` when its CRC does not match (a torn write).
fn decode(e: &[u8]) -> Option<(u32, u64)> {
    let crc = u32::from_be_bytes(e.get(12..16)?.try_into().ok()?);
    if crc32c::crc32c(&e[..12]) != crc {
        return None;
    }
    let rel = u32::from_be_bytes(e[..4].try_into().ok()?);
    let summary = u64::from_be_bytes(e[4..12].try_into().ok()?);
    Some((rel, summary))
}

/// The summary file of one segment.
pub(crate) struct SummaryFile {
    path: PathBuf,
    file: File,
    /// Entries written to the file.
    on_disk: u64,
    /// Entries not yet written, in order after those on disk.
    pending: Vec<[u8; ENTRY_BYTES]>,
    /// Relative offset of the newest entry, so entries stay ordered.
    last: Option<u32>,
}

impl SummaryFile {
    /// Creates an empty summary file beside a new segment (replacing a stale one).
    pub fn create(log_path: &Path) -> Result<Self, StorageError> {
        let path = log_path.with_extension("summary");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path)?;
        Ok(SummaryFile {
            path,
            file,
            on_disk: 0,
            pending: Vec::new(),
            last: None,
        })
    }

    /// Opens the summary file of an existing segment whose batches end before
    /// relative offset `end_relative`. Cuts a torn tail and every entry at or
    /// beyond `end_relative` (batches the log lost in a crash, which new batches
    /// will reuse the offsets of).
    pub fn open(log_path: &Path, end_relative: u64) -> Result<Self, StorageError> {
        let path = log_path.with_extension("summary");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let mut whole = len / ENTRY_BYTES as u64;
        let mut last = None;
        // Torn and stale entries can only be at the end: walk back to the
        // newest entry that is intact and names a batch the log still has.
        let mut buf = vec![0u8; SCAN_ENTRIES * ENTRY_BYTES];
        'scan: while whole > 0 {
            let n = whole.min(SCAN_ENTRIES as u64);
            let from = whole - n;
            let chunk = &mut buf[..n as usize * ENTRY_BYTES];
            file.read_exact_at(chunk, from * ENTRY_BYTES as u64)
                .at(&path)?;
            for i in (0..n as usize).rev() {
                match decode(&chunk[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES]) {
                    Some((rel, _)) if u64::from(rel) < end_relative => {
                        last = Some(rel);
                        break 'scan;
                    }
                    _ => whole -= 1,
                }
            }
        }
        if whole * ENTRY_BYTES as u64 != len {
            // Synced, so that after a second crash no cut entry comes back to
            // name an offset that new batches reuse.
            file.set_len(whole * ENTRY_BYTES as u64).at(&path)?;
            file.sync_data().at(&path)?;
        }
        Ok(SummaryFile {
            path,
            file,
            on_disk: whole,
            pending: Vec::new(),
            last,
        })
    }

    /// Notes the summary of the batch at `relative_offset`; ignored unless it is
    /// after the newest entry.
    pub fn push(&mut self, relative_offset: u32, summary: u64) -> Result<(), StorageError> {
        if self.last.is_some_and(|l| l >= relative_offset) {
            return Ok(());
        }
        self.pending.push(encode(relative_offset, summary));
        self.last = Some(relative_offset);
        if self.pending.len() >= PENDING_MAX {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes buffered entries to the file (page cache).
    pub fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = self.pending.concat();
        let count = self.pending.len() as u64;
        // Written or not, the buffer is emptied: entries are hints, and a
        // failing disk must not make it grow.
        self.pending.clear();
        self.file
            .write_all_at(&bytes, self.on_disk * ENTRY_BYTES as u64)
            .at(&self.path)?;
        self.on_disk += count;
        Ok(())
    }

    /// The entry at `index` (on disk or pending); `None` past the end or torn.
    fn entry(&self, index: u64) -> Result<Option<(u32, u64)>, StorageError> {
        if index >= self.on_disk {
            let i = (index - self.on_disk) as usize;
            return Ok(self.pending.get(i).and_then(|e| decode(e)));
        }
        let mut e = [0u8; ENTRY_BYTES];
        self.file
            .read_exact_at(&mut e, index * ENTRY_BYTES as u64)
            .at(&self.path)?;
        Ok(decode(&e))
    }

    /// Up to `max` entries with relative offsets in `[from, to)`, in order. Torn
    /// entries are left out (their batches must then be read).
    pub fn range(&self, from: u32, to: u32, max: usize) -> Result<Vec<(u32, u64)>, StorageError> {
        let count = self.on_disk + self.pending.len() as u64;
        // First entry at or after `from`; a torn entry sorts as "after", which
        // at worst starts the scan early, never past an entry that is wanted.
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid)? {
                Some((rel, _)) if rel < from => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let mut out = Vec::new();
        let mut index = lo;
        while index < count && out.len() < max {
            let on_disk_left = self.on_disk.saturating_sub(index);
            if on_disk_left > 0 {
                let n = on_disk_left
                    .min((max - out.len()) as u64)
                    .min(SCAN_ENTRIES as u64);
                let mut buf = vec![0u8; n as usize * ENTRY_BYTES];
                self.file
                    .read_exact_at(&mut buf, index * ENTRY_BYTES as u64)
                    .at(&self.path)?;
                for e in buf.chunks_exact(ENTRY_BYTES) {
                    match decode(e) {
                        Some((rel, _)) if rel >= to => return Ok(out),
                        Some(entry) if entry.0 >= from => out.push(entry),
                        _ => {}
                    }
                }
                index += n;
            } else {
                match self.entry(index)? {
                    Some((rel, _)) if rel >= to => return Ok(out),
                    Some(entry) if entry.0 >= from => out.push(entry),
                    _ => {}
                }
                index += 1;
            }
        }
        Ok(out)
    }

    /// Deletes the summary file of a segment, if there is one.
    pub fn remove_file(log_path: &Path) -> Result<(), StorageError> {
        let path = log_path.with_extension("summary");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&path),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_path(dir: &Path) -> PathBuf {
        dir.join("00000000000000000000.log")
    }

    #[test]
    fn entries_round_trip_from_disk_and_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SummaryFile::create(&log_path(dir.path())).unwrap();
        for i in 0..200u32 {
            f.push(i * 3, u64::from(i) << 8).unwrap();
        }
        // Some entries are on disk, some still buffered.
        assert!(f.on_disk > 0 && !f.pending.is_empty());
        let got = f.range(30, 90, 1000).unwrap();
        let want: Vec<(u32, u64)> = (10..30u32).map(|i| (i * 3, u64::from(i) << 8)).collect();
        assert_eq!(got, want);
        assert_eq!(f.range(31, 33, 10).unwrap(), Vec::new());
        assert_eq!(f.range(0, u32::MAX, 5).unwrap().len(), 5);
        assert_eq!(f.range(597, u32::MAX, 5).unwrap(), vec![(597, 199 << 8)]);
        // Out-of-order pushes are ignored.
        f.push(5, 1).unwrap();
        assert_eq!(f.range(4, 6, 5).unwrap(), Vec::new());
    }

    #[test]
    fn open_cuts_torn_and_lost_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut f = SummaryFile::create(&path).unwrap();
        for i in 0..100u32 {
            f.push(i, 7).unwrap();
        }
        f.write_pending().unwrap();
        drop(f);
        // A torn half entry at the end.
        let summary = path.with_extension("summary");
        let mut bytes = std::fs::read(&summary).unwrap();
        bytes.extend_from_slice(&encode(100, 7)[..9]);
        std::fs::write(&summary, &bytes).unwrap();
        // The log kept batches below relative offset 60 only.
        let mut f = SummaryFile::open(&path, 60).unwrap();
        assert_eq!(f.on_disk, 60);
        assert_eq!(std::fs::metadata(&summary).unwrap().len(), 60 * 16);
        // New batches reuse offsets 60..; their entries replace the lost ones.
        f.push(60, 9).unwrap();
        assert_eq!(f.range(59, 61, 10).unwrap(), vec![(59, 7), (60, 9)]);
        // A corrupted entry in the middle is left out, the rest still found.
        f.write_pending().unwrap();
        drop(f);
        let mut bytes = std::fs::read(&summary).unwrap();
        bytes[20 * 16 + 5] ^= 0xff;
        std::fs::write(&summary, &bytes).unwrap();
        let f = SummaryFile::open(&path, 61).unwrap();
        let got = f.range(19, 22, 10).unwrap();
        assert_eq!(got, vec![(19, 7), (21, 7)]);
    }

    proptest::proptest! {
        /// Whatever a summary file holds (garbage, torn entries), opening it and
        /// looking up ranges never panics, and every entry found is intact and
        /// in the asked range.
        #[test]
        fn any_file_content_opens_and_reads_safely(
            mut entries in proptest::collection::vec((0u32..500, proptest::num::u64::ANY), 0..60),
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            flip in proptest::option::of(0usize..1000),
            end in 0u64..600,
            from in 0u32..600,
            len in 0u32..600,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = log_path(dir.path());
            entries.sort_by_key(|e| e.0);
            let mut bytes: Vec<u8> = entries.iter().flat_map(|(r, s)| encode(*r, *s)).collect();
            if let Some(i) = flip.filter(|i| *i < bytes.len()) {
                bytes[i] ^= 0x5a;
            }
            bytes.extend_from_slice(&garbage);
            std::fs::write(path.with_extension("summary"), &bytes).unwrap();
            let mut f = SummaryFile::open(&path, end).unwrap();
            let to = from.saturating_add(len);
            for (rel, _) in f.range(from, to, 100).unwrap() {
                proptest::prop_assert!(rel >= from && rel < to);
            }
            f.push(600, 1).unwrap();
            f.write_pending().unwrap();
            proptest::prop_assert_eq!(f.range(600, 601, 10).unwrap(), vec![(600, 1)]);
        }
    }

    #[test]
    fn open_of_a_missing_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = SummaryFile::open(&log_path(dir.path()), 1000).unwrap();
        assert_eq!(f.range(0, u32::MAX, 10).unwrap(), Vec::new());
    }
}
