//! One segment: a `.log` file of record batches plus its sparse indexes.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{verify_batch, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::{IoContext, StorageError};
use crate::index::{IndexEntry, SegmentIndex};
use crate::summary::SummaryFile;

/// Bytes read at a time while scanning a segment at recovery.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Writes every piece at `position` onward with `pwritev`, resuming after short writes.
fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice<'_>],
    mut position: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // Linux accepts at most IOV_MAX (1024) pieces per call.
    const IOV_MAX: usize = 1024;
    while !pieces.is_empty() {
        let count = pieces.len().min(IOV_MAX);
        let offset = libc::off_t::try_from(position)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices outlive the call
        // and `count` is within the array.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                pieces.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                offset,
            )
        };
        if written < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        position += written as u64;
        IoSlice::advance_slices(&mut pieces, written as usize);
    }
    Ok(())
}

/// File name of the segment starting at `base_offset`, zero-padded so names sort.
/// A summary file, or `None` (logged) when it could not be opened: summaries
/// are a hint, and a log without them is only slower to filter.
fn hint(log_path: &Path, opened: Result<SummaryFile, StorageError>) -> Option<SummaryFile> {
    opened
        .map_err(|e| {
            tracing::warn!(segment = %log_path.display(), error = %e,
                "batch summaries unavailable for this segment")
        })
        .ok()
}

pub(crate) fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) struct Segment {
    pub base_offset: i64,
    /// Offset after the last record in this segment.
    pub next_offset: i64,
    /// Bytes of valid batches; nothing past this is ever read.
    pub size: u64,
    /// Largest record timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// When the segment started receiving data, for `segment.ms` rolls.
    pub created_ms: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    index: SegmentIndex,
    bytes_since_index: u64,
    /// Per-batch summaries, a hint beside the log (see [`crate::summary`]);
    /// `None` when the file could not be opened (the log works on without).
    summary: Option<SummaryFile>,
}

/// Outcome of scanning a segment file.
struct Scan {
    valid_bytes: u64,
    first_timestamp: Option<i64>,
}

/// Walks whole batches of `file` from `start` = (position, offset of the batch
/// there) up to `end` bytes, reading in large chunks; with `verify`, checks each
/// CRC. Stops at the first incomplete, invalid or non-contiguous batch and returns
/// the position after the last good one.
fn walk_batches(
    file: &File,
    path: &Path,
    start: (u64, i64),
    end: u64,
    verify: bool,
    visit: &mut dyn FnMut(&BatchHeader, u64),
) -> Result<u64, StorageError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start: u64 = start.0;
    let (mut position, mut next_offset) = start;
    loop {
        let in_buf = (position - buf_start) as usize;
        let need = if buf.len() >= in_buf + BATCH_HEADER_BYTES {
            match BatchHeader::parse(&buf[in_buf..]) {
                Ok(h) => h.total_bytes(),
                Err(_) => break,
            }
        } else {
            BATCH_HEADER_BYTES
        };
        if position + need as u64 > end {
            break;
        }
        if buf.len() < in_buf + need {
            let want = need.max(SCAN_CHUNK_BYTES).min((end - position) as usize);
            buf.resize(want, 0);
            file.read_exact_at(&mut buf, position).at(path)?;
            buf_start = position;
            continue;
        }
        let bytes = &buf[in_buf..in_buf + need];
        let header = if verify {
            verify_batch(bytes)
        } else {
            BatchHeader::parse(bytes)
        };
        let header = match header {
            Ok(h) if need == h.total_bytes() && h.base_offset == next_offset => h,
            // A batch that does not continue the offsets is as bad as a torn one.
            _ => break,
        };
        visit(&header, position);
        next_offset = header.last_offset() + 1;
        position += need as u64;
    }
    Ok(position)
}

impl Segment {
    /// Creates an empty segment file.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self, StorageError> {
        let path = dir.join(log_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path)?;
        let (mut index, _) = SegmentIndex::open(&path, 0)?;
        index.clear()?;
        let summary = hint(&path, SummaryFile::create(&path));
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            created_ms: now_ms,
            path,
            file: Arc::new(file),
            index,
            bytes_since_index: 0,
            summary,
        })
    }

    /// Opens an existing segment. A `tail` segment is fully verified (CRC of every
    /// batch) and cut at the first bad byte; its indexes are rebuilt as it is
    /// scanned. A sealed segment trusts consistent index files and is only scanned
    /// when they are missing or stale. `next_offset_hint` is the following
    /// segment's base offset. `visit` sees every batch of a tail segment, in
    /// order. Returns the segment and the bytes cut from its end.
    pub fn open(
        path: &Path,
        base_offset: i64,
        tail: bool,
        next_offset_hint: Option<i64>,
        index_interval_bytes: u64,
        now_ms: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Self, u64), StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .at(path)?;
        let file_bytes = file.metadata().at(path)?.len();
        let (index, consistent) = SegmentIndex::open(path, file_bytes.max(1))?;
        let mut segment = Segment {
            base_offset,
            next_offset: base_offset,
            size: file_bytes,
            max_timestamp: -1,
            created_ms: now_ms,
            path: path.to_path_buf(),
            file: Arc::new(file),
            index,
            bytes_since_index: 0,
            // Opened below, once the segment's end is known.
            summary: None,
        };
        if !tail && consistent && file_bytes > 0 {
            if let Some(next) = next_offset_hint {
                segment.next_offset = next;
                segment.max_timestamp = segment.scan_max_timestamp_from_last_entry()?;
                segment.summary = hint(path, SummaryFile::open(path, segment.relative_end()));
                return Ok((segment, 0));
            }
        }
        let mut ignore = |_: &BatchHeader| {};
        let visit: &mut dyn FnMut(&BatchHeader) = if tail { visit } else { &mut ignore };
        let scan = segment.rebuild(tail, index_interval_bytes, visit)?;
        let truncated = file_bytes - scan.valid_bytes;
        if truncated > 0 {
            tracing::warn!(
                segment = %path.display(),
                valid_bytes = scan.valid_bytes,
                truncated_bytes = truncated,
                "truncating torn or corrupt tail of segment"
            );
            segment.file.set_len(scan.valid_bytes).at(path)?;
            segment.file.sync_all().at(path)?;
        }
        segment.size = scan.valid_bytes;
        segment.summary = hint(path, SummaryFile::open(path, segment.relative_end()));
        if let Some(ts) = scan.first_timestamp {
            segment.created_ms = ts.min(now_ms);
        }
        Ok((segment, truncated))
    }

    /// The relative offset after the segment's last batch.
    fn relative_end(&self) -> u64 {
        u64::try_from(self.next_offset - self.base_offset).unwrap_or(0)
    }

    /// The largest timestamp of a sealed segment: the time index knows every batch
    /// before the last indexed one, and the batches after it are scanned.
    fn scan_max_timestamp_from_last_entry(&self) -> Result<i64, StorageError> {
        let mut position = u64::from(self.index.position_for_offset(u32::MAX));
        let mut max_ts = self.index.timestamp_before_last();
        while position < self.size {
            let header = self.read_header(position)?;
            max_ts = max_ts.max(header.max_timestamp);
            position += header.total_bytes() as u64;
        }
        Ok(max_ts)
    }

    /// Rebuilds the indexes, next offset and max timestamp by walking the batches
    /// from the start (verifying CRCs when asked); stops at the first incomplete or
    /// invalid batch, so every batch indexed and visited is valid.
    fn rebuild(
        &mut self,
        verify: bool,
        index_interval_bytes: u64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Scan, StorageError> {
        self.index.clear()?;
        self.bytes_since_index = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        let mut first_timestamp = None;
        let file = self.file.clone();
        let path = self.path.clone();
        let mut noted: Result<(), StorageError> = Ok(());
        let valid_bytes = walk_batches(
            &file,
            &path,
            (0, self.base_offset),
            self.size,
            verify,
            &mut |header, position| {
                first_timestamp.get_or_insert(header.base_timestamp);
                if noted.is_ok() {
                    noted = self.note_batch(header, position, index_interval_bytes);
                }
                visit(header);
            },
        )?;
        noted?;
        Ok(Scan {
            valid_bytes,
            first_timestamp,
        })
    }

    /// Visits the headers of the batches in (about) the last `bytes_max` bytes of
    /// a sealed segment, starting at an indexed batch boundary.
    pub fn visit_recent(
        &self,
        bytes_max: u64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), StorageError> {
        let (relative, position) = self
            .index
            .entry_at_or_after(self.size.saturating_sub(bytes_max));
        walk_batches(
            &self.file,
            &self.path,
            (u64::from(position), self.base_offset + i64::from(relative)),
            self.size,
            false,
            &mut |header, _| visit(header),
        )?;
        Ok(())
    }

    /// Accounts for a batch written at `position`: adds an index entry when an index
    /// interval has passed, and advances the next offset and max timestamp.
    fn note_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        if self.bytes_since_index >= index_interval_bytes && position > 0 {
            self.index.push(IndexEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: position as u32,
                timestamp_before: self.max_timestamp,
            })?;
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes() as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    /// Writes batches at the end of the file (page cache only). Each batch's base
    /// offset is taken from its header in `headers`, whatever its first 8 bytes in
    /// `bytes` say. `summaries` has one per batch, or is empty.
    pub fn append(
        &mut self,
        bytes: &[u8],
        headers: &[BatchHeader],
        summaries: &[u64],
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        debug_assert_eq!(
            headers.first().map(|h| h.base_offset),
            Some(self.next_offset)
        );
        // Each batch goes out as two pieces: its assigned base offset (the first 8
        // bytes, outside the CRC) and the rest as the producer sent it, so the
        // received buffer is written without being copied first.
        let offsets: Vec<[u8; 8]> = headers
            .iter()
            .map(|h| h.base_offset.to_be_bytes())
            .collect();
        let mut pieces = Vec::with_capacity(headers.len() * 2);
        let mut at = 0;
        for (header, offset) in headers.iter().zip(&offsets) {
            let end = at + header.total_bytes();
            pieces.push(IoSlice::new(offset));
            pieces.push(IoSlice::new(&bytes[at + 8..end]));
            at = end;
        }
        debug_assert_eq!(at, bytes.len());
        write_all_vectored_at(&self.file, &mut pieces, self.size).at(&self.path)?;
        let mut position = self.size;
        for header in headers {
            self.note_batch(header, position, index_interval_bytes)?;
            position += header.total_bytes() as u64;
        }
        self.size = position;
        for (header, summary) in headers.iter().zip(summaries) {
            let relative = (header.base_offset - self.base_offset) as u32;
            let Some(file) = self.summary.as_mut() else {
                break;
            };
            if let Err(e) = file.push(relative, *summary) {
                // Only a hint: readers of a batch without one decode it.
                tracing::warn!(segment = %self.path.display(), error = %e,
                    "writing batch summaries failed");
            }
        }
        Ok(())
    }

    /// Summaries of the batches starting in `[from, to)` (absolute offsets), at
    /// most `max`; batches without a (readable) summary are left out.
    pub fn summaries(
        &self,
        from: i64,
        to: i64,
        max: usize,
    ) -> Result<Vec<(i64, u64)>, StorageError> {
        let relative = |o: i64| u32::try_from((o - self.base_offset).max(0)).unwrap_or(u32::MAX);
        let Some(file) = &self.summary else {
            return Ok(Vec::new());
        };
        Ok(file
            .range(relative(from), relative(to), max)?
            .into_iter()
            .map(|(rel, s)| (self.base_offset + i64::from(rel), s))
            .collect())
    }

    /// Writes buffered summaries to the page cache (when the segment is sealed
    /// or the log closes); a failure is logged, as summaries are only a hint.
    pub fn write_summaries(&mut self) {
        if let Some(Err(e)) = self.summary.as_mut().map(SummaryFile::write_pending) {
            tracing::warn!(segment = %self.path.display(), error = %e,
                "writing batch summaries failed");
        }
    }

    /// Reads the batch header at `position`.
    pub fn read_header(&self, position: u64) -> Result<BatchHeader, StorageError> {
        read_header_at(&self.file, &self.path, position)
    }

    /// Position of the batch containing `offset`, or `None` when the segment ends
    /// before it. Reads batch headers forward from the nearest index entry.
    pub fn locate(&self, offset: i64) -> Result<Option<u64>, StorageError> {
        let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        let mut position = u64::from(self.index.position_for_offset(relative));
        while position < self.size {
            let header = self.read_header(position)?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// First batch whose max timestamp is >= `target_ms`: (position, header).
    pub fn locate_timestamp(
        &self,
        target_ms: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let mut position = u64::from(self.index.position_for_timestamp(target_ms));
        while position < self.size {
            let header = self.read_header(position)?;
            if header.max_timestamp >= target_ms {
                return Ok(Some((position, header)));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Flushes the log file and its indexes.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().at(&self.path)?;
        self.index.sync()
    }

    /// Deletes the segment's files.
    pub fn remove_files(&self) -> Result<(), StorageError> {
        std::fs::remove_file(&self.path).at(&self.path)?;
        self.index.remove_files()?;
        SummaryFile::remove_file(&self.path)
    }
}

/// Reads the fixed header of the batch at `position` of a log file.
pub(crate) fn read_header_at(
    file: &File,
    path: &Path,
    position: u64,
) -> Result<BatchHeader, StorageError> {
    let mut buf = [0u8; BATCH_HEADER_BYTES];
    file.read_exact_at(&mut buf, position).at(path)?;
    BatchHeader::parse(&buf).map_err(|e| StorageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_writes_cover_more_pieces_than_one_call_takes() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        let chunks: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut pieces: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        write_all_vectored_at(&file, &mut pieces, 5).unwrap();
        let mut read = vec![0u8; 5 + 3000 * 4];
        file.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(&read[..5], &[0; 5]);
        assert_eq!(read[5..], chunks.concat()[..]);
    }
}
