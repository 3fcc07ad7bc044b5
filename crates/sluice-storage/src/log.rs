//! A partition log: an ordered sequence of segments, appended at the tail.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::batch::{first_record_at_or_after, verify_batches_visiting, BatchHeader};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{BatchError, IoContext, StorageError};
use crate::group_commit::GroupCommit;
use crate::segment::Segment;

/// Computes a batch summary's share from one record header (key, value).
pub type Summarizer<'s> = dyn FnMut(&[u8], Option<&[u8]>) -> u64 + 's;

/// Record batches checked by [`crate::batch::verify_batches`]: only these can be appended.
pub struct VerifiedBatches<'a> {
    bytes: &'a [u8],
    headers: Vec<BatchHeader>,
    /// One per batch, or none.
    summaries: Vec<u64>,
}

impl<'a> VerifiedBatches<'a> {
    /// Verifies `bytes` as whole v2 batches of at most `batch_bytes_max` bytes each,
    /// with correct CRCs. The batches get no summaries.
    pub fn new(bytes: &'a [u8], batch_bytes_max: usize) -> Result<Self, BatchError> {
        Ok(VerifiedBatches {
            bytes,
            headers: crate::batch::verify_batches(bytes, batch_bytes_max)?,
            summaries: Vec::new(),
        })
    }

    /// [`VerifiedBatches::new`], computing each batch's summary as it goes: the
    /// OR of `summarize(header key, header value)` over every record header of
    /// the batch. The log keeps the summaries beside the batches.
    pub fn summarized(
        bytes: &'a [u8],
        batch_bytes_max: usize,
        summarize: &mut Summarizer<'_>,
    ) -> Result<Self, BatchError> {
        let mut summaries: Vec<u64> = Vec::new();
        let headers = verify_batches_visiting(bytes, batch_bytes_max, &mut |batch, key, value| {
            if summaries.len() <= batch {
                summaries.resize(batch + 1, 0);
            }
            summaries[batch] |= summarize(key, value);
        })?;
        summaries.resize(headers.len(), 0);
        Ok(VerifiedBatches {
            bytes,
            headers,
            summaries,
        })
    }

    /// Each batch's summary, in order (empty when made by [`VerifiedBatches::new`]).
    pub fn summaries(&self) -> &[u64] {
        &self.summaries
    }

    /// Headers of the batches, in order.
    pub fn headers(&self) -> &[BatchHeader] {
        &self.headers
    }

    /// Records in all batches (by offset span).
    pub fn offset_count(&self) -> i64 {
        self.headers
            .iter()
            .map(|h| i64::from(h.last_offset_delta) + 1)
            .sum()
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes (never true for a verified payload).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What happened to the appended batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
    /// Sequence number of this append within the log, for [`PartitionLog::sync_through`].
    pub seq: u64,
}

/// Whether data reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync completed.
    Fsynced,
    /// Written to the page cache only.
    PageCache,
}

/// A byte range of a segment file holding whole batches (the last one may be cut
/// at the size limit, as Kafka allows), ready to be sent without re-encoding.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// The segment file; stays readable even if retention deletes it meanwhile.
    pub file: Arc<File>,
    /// Start of the first batch.
    pub position: u64,
    /// Bytes in the range.
    pub len: usize,
}

impl FileSlice {
    /// Copies the range into memory (the fallback when the socket cannot `sendfile`).
    pub fn read_bytes(&self) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf.freeze())
    }
}

/// Outcome of a read.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// Batches starting with the one that holds the requested offset.
    Data(FileSlice),
    /// The requested offset is the log end: nothing yet.
    AtEnd,
    /// The requested offset is below the log start or beyond the log end.
    OutOfRange {
        log_start_offset: i64,
        log_end_offset: i64,
    },
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes cut from the tail because they did not form a valid batch.
    pub truncated_bytes: u64,
}

/// How far back before the tail segment recovery shows batch headers to the
/// caller (to rebuild producer state across a recent roll).
pub const RECENT_HEADERS_BYTES: u64 = 64 << 20;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Log start offset after the pass.
    pub log_start_offset: i64,
}

/// The end of the data readers may see: the log end, except under the `always`
/// policy, where it is the end of what has been fsynced, so that nothing is
/// handed to a consumer that a crash could still take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VisibleEnd {
    /// Offset after the last visible record.
    offset: i64,
    /// Base offset of the segment holding that end.
    segment_base: i64,
    /// Bytes of that segment that are visible.
    size: u64,
}

struct Inner {
    config: LogConfig,
    visible: VisibleEnd,
    /// Oldest first; the last one is active. Never empty.
    segments: Vec<Segment>,
    /// Number of appends written so far.
    written_seq: u64,
    unflushed_bytes: u64,
    last_flush_ms: i64,
    failed: bool,
    /// Set when the log's directory is being deleted; every file operation is
    /// refused from then on, so a stale handle cannot touch a re-created log.
    closed: bool,
}

/// A partition's log. All methods take `&self`; appends are serialised inside.
/// Appends write to the page cache; durability is asked for separately with
/// [`PartitionLog::sync_through`] so that fsyncs can be shared and run off the
/// appending thread.
pub struct PartitionLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
    group_commit: GroupCommit,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it if needed, and recovers the tail: every
    /// batch of the last segment is verified and a torn or corrupt tail is cut off.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Self, Recovery), StorageError> {
        Self::open_visiting(dir, config, now_ms, &mut |_| {})
    }

    /// Like [`PartitionLog::open`], and shows `visit` the header of every batch in
    /// the tail segment and in about the last [`RECENT_HEADERS_BYTES`] of the one
    /// before it, oldest first, without collecting them.
    pub fn open_visiting(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Self, Recovery), StorageError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).at(dir)? {
            let path = entry.at(dir)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".log") {
                let base = stem
                    .parse::<i64>()
                    .map_err(|_| StorageError::UnexpectedFile { path: path.clone() })?;
                bases.push((base, path));
            }
        }
        bases.sort();
        let mut recovery = Recovery::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, (base, path)) in bases.iter().enumerate() {
            let tail = i + 1 == bases.len();
            let next_hint = bases.get(i + 1).map(|(b, _)| *b);
            let (segment, truncated) = Segment::open(
                path,
                *base,
                tail,
                next_hint,
                config.index_interval_bytes,
                now_ms,
                visit,
            )?;
            if i + 2 == bases.len() {
                segment.visit_recent(RECENT_HEADERS_BYTES, visit)?;
            }
            if tail {
                recovery.truncated_bytes = truncated;
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, now_ms)?);
            sync_dir(dir)?;
        }
        let visible = {
            let tail = segments.last().expect("a log always has a segment");
            VisibleEnd {
                offset: tail.next_offset,
                segment_base: tail.base_offset,
                size: tail.size,
            }
        };
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                visible,
                config,
                segments,
                written_seq: 0,
                unflushed_bytes: 0,
                last_flush_ms: now_ms,
                failed: false,
                closed: false,
            }),
            group_commit: GroupCommit::default(),
        };
        Ok((log, recovery))
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current settings.
    pub fn config(&self) -> LogConfig {
        self.inner.lock().config.clone()
    }

    /// Replaces the settings; they apply from the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.inner.lock().config = config;
    }

    /// Offset of the first record still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.lock().segments[0].base_offset
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.lock().active().next_offset
    }

    /// Offset after the last record readers may see: the log end, or under the
    /// `always` policy the end of the fsynced data.
    pub fn visible_end_offset(&self) -> i64 {
        self.inner.lock().visible.offset
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().segments.iter().map(|s| s.size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.inner.lock().segments.len()
    }

    /// Assigns offsets to the batches and writes them to the page cache. The batch
    /// bytes are copied once into a reused buffer where base offsets are set; CRCs
    /// are unaffected (they do not cover the base offset).
    pub fn append(
        &self,
        batches: &VerifiedBatches<'_>,
        now_ms: i64,
    ) -> Result<Appended, StorageError> {
        let mut inner = self.inner.lock();
        inner.check_usable(&self.dir)?;
        let span = batches.offset_count();
        let needs_roll = {
            let active = inner.active();
            let config = &inner.config;
            active.size > 0
                && (active.size + batches.len() as u64 > config.segment_bytes
                    || now_ms - active.created_ms >= config.segment_ms
                    || active.next_offset + span - active.base_offset > i64::from(u32::MAX))
        };
        if needs_roll {
            inner.roll(&self.dir, now_ms)?;
        }
        let Inner {
            segments, config, ..
        } = &mut *inner;
        let active = segments.last_mut().expect("a log always has a segment");
        let base_offset = active.next_offset;
        let mut headers = batches.headers.clone();
        let mut next = base_offset;
        for header in &mut headers {
            header.base_offset = next;
            next = header.last_offset() + 1;
        }
        if let Err(e) = active.append(
            batches.bytes,
            &headers,
            &batches.summaries,
            config.index_interval_bytes,
        ) {
            // The file may hold a partial write past `size`; nothing will read it and
            // recovery cuts it, but refuse further appends until then.
            inner.failed = true;
            return Err(e);
        }
        inner.written_seq += 1;
        inner.unflushed_bytes += batches.len() as u64;
        if inner.config.flush != FlushPolicy::Always {
            inner.visible = inner.end();
        }
        Ok(Appended {
            base_offset,
            last_offset: next - 1,
            seq: inner.written_seq,
        })
    }

    /// Blocks until append `seq` is on disk. Concurrent callers share fsyncs.
    /// Returns [`Durability::Fsynced`]; an fsync error fails the log.
    pub fn sync_through(&self, seq: u64) -> Result<Durability, StorageError> {
        self.group_commit.sync_through(seq, || {
            let (covered, end, file, path) = {
                let inner = self.inner.lock();
                inner.check_usable(&self.dir)?;
                let active = inner.active();
                (
                    inner.written_seq,
                    inner.end(),
                    active.file.clone(),
                    active.path.clone(),
                )
            };
            // Sealed segments were synced when they rolled; only the tail needs it.
            if let Err(e) = file.sync_data().at(&path) {
                self.inner.lock().failed = true;
                return Err(e);
            }
            let mut inner = self.inner.lock();
            if covered == inner.written_seq {
                inner.unflushed_bytes = 0;
            }
            if end.offset > inner.visible.offset {
                inner.visible = end;
            }
            Ok(covered)
        })?;
        Ok(Durability::Fsynced)
    }

    /// Number of appends written so far (the `seq` of the newest [`Appended`]).
    pub fn written_seq(&self) -> u64 {
        self.inner.lock().written_seq
    }

    /// Highest append number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.group_commit.synced_seq()
    }

    /// Syncs everything written so far.
    pub fn flush(&self, now_ms: i64) -> Result<(), StorageError> {
        let seq = self.written_seq();
        if seq > self.durable_seq() {
            self.sync_through(seq)?;
        }
        self.inner.lock().last_flush_ms = now_ms;
        Ok(())
    }

    /// Under the `interval` policy, flushes when the interval or byte threshold has
    /// passed. Returns whether it flushed.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, StorageError> {
        let due = {
            let inner = self.inner.lock();
            match inner.config.flush {
                FlushPolicy::Interval { ms, bytes } => {
                    inner.unflushed_bytes > 0
                        && (now_ms - inner.last_flush_ms >= ms as i64
                            || inner.unflushed_bytes >= bytes)
                }
                _ => false,
            }
        };
        if due {
            self.flush(now_ms)?;
        }
        Ok(due)
    }

    /// Returns the batches from the one holding `offset`, up to `max_bytes` (at least
    /// one whole batch, so a consumer always progresses).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, StorageError> {
        let inner = self.inner.lock();
        let log_start_offset = inner.segments[0].base_offset;
        let log_end_offset = inner.active().next_offset;
        let visible = inner.visible;
        if offset >= visible.offset && offset <= log_end_offset {
            return Ok(ReadOutcome::AtEnd);
        }
        if offset < log_start_offset || offset > log_end_offset {
            return Ok(ReadOutcome::OutOfRange {
                log_start_offset,
                log_end_offset,
            });
        }
        let first = inner
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for segment in &inner.segments[first..] {
            if segment.base_offset > visible.segment_base {
                break;
            }
            let limit = if segment.base_offset == visible.segment_base {
                visible.size
            } else {
                segment.size
            };
            let Some(position) = segment.locate(offset)? else {
                continue;
            };
            if position >= limit {
                break;
            }
            let first_batch = segment.read_header(position)?.total_bytes();
            let available = (limit - position) as usize;
            let len = max_bytes.min(available).max(first_batch);
            return Ok(ReadOutcome::Data(FileSlice {
                file: segment.file.clone(),
                position,
                len,
            }));
        }
        Ok(ReadOutcome::AtEnd)
    }

    /// The first record with a timestamp >= `target_ms`: (offset, timestamp). For a
    /// compressed batch the answer is the batch's first offset and max timestamp.
    pub fn offset_for_timestamp(&self, target_ms: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let inner = self.inner.lock();
        let log_start = inner.segments[0].base_offset;
        for segment in &inner.segments {
            if segment.max_timestamp < target_ms {
                continue;
            }
            let Some((position, header)) = segment.locate_timestamp(target_ms)? else {
                continue;
            };
            let mut batch = vec![0u8; header.total_bytes()];
            segment
                .file
                .read_exact_at(&mut batch, position)
                .at(&segment.path)?;
            let found = first_record_at_or_after(&batch, target_ms)
                .unwrap_or((header.base_offset, header.max_timestamp));
            return Ok(Some((found.0.max(log_start), found.1)));
        }
        Ok(None)
    }

    /// Largest record timestamp in the log, or `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<i64> {
        let inner = self.inner.lock();
        inner
            .segments
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .filter(|t| *t >= 0)
    }

    /// Deletes sealed segments beyond the retention time or size. An expired active
    /// segment is rolled first so it can go too, as Kafka does.
    pub fn apply_retention(&self, now_ms: i64) -> Result<Retained, StorageError> {
        let mut inner = self.inner.lock();
        inner.check_usable(&self.dir)?;
        let config = inner.config.clone();
        let mut deleted = 0;
        if config.retention_ms >= 0 {
            // A segment whose records carry no timestamp ages from its creation.
            let expired = |s: &Segment| {
                let newest = if s.max_timestamp >= 0 {
                    s.max_timestamp
                } else {
                    s.created_ms
                };
                s.size > 0 && newest < now_ms - config.retention_ms
            };
            if expired(inner.active()) {
                inner.roll(&self.dir, now_ms)?;
            }
            while inner.segments.len() > 1 && expired(&inner.segments[0]) {
                inner.delete_oldest()?;
                deleted += 1;
            }
        }
        if config.retention_bytes >= 0 {
            let mut total: u64 = inner.segments.iter().map(|s| s.size).sum();
            while inner.segments.len() > 1
                && total - inner.segments[0].size >= config.retention_bytes as u64
            {
                total -= inner.segments[0].size;
                inner.delete_oldest()?;
                deleted += 1;
            }
        }
        Ok(Retained {
            deleted_segments: deleted,
            log_start_offset: inner.segments[0].base_offset,
        })
    }

    /// Refuses every later write, flush, roll and retention pass. Call before the
    /// directory is moved or deleted while other handles may still exist.
    pub fn close(&self) {
        self.write_summaries();
        self.inner.lock().closed = true;
    }

    /// Writes buffered batch summaries to the page cache (at a clean shutdown;
    /// a crash loses them, which only costs readers a decode).
    pub fn write_summaries(&self) {
        if let Some(active) = self.inner.lock().segments.last_mut() {
            active.write_summaries();
        }
    }

    /// Summaries of the batches that start in `[from, to)`, as (base offset,
    /// summary), at most `max`. A batch without a summary (written before a
    /// crash, or by [`VerifiedBatches::new`]) is left out: a reader must decode it.
    pub fn summaries(
        &self,
        from: i64,
        to: i64,
        max: usize,
    ) -> Result<Vec<(i64, u64)>, StorageError> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        let first = inner
            .segments
            .partition_point(|s| s.next_offset <= from)
            .min(inner.segments.len());
        for segment in &inner.segments[first..] {
            if segment.base_offset >= to || out.len() >= max {
                break;
            }
            out.extend(segment.summaries(from, to, max - out.len())?);
        }
        Ok(out)
    }

    /// Removes the whole log directory. The log must not be used afterwards.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).at(&dir)
    }
}

impl Inner {
    /// Err when the log has failed or been closed.
    fn check_usable(&self, dir: &Path) -> Result<(), StorageError> {
        if self.closed {
            return Err(StorageError::Closed {
                path: dir.to_path_buf(),
            });
        }
        if self.failed {
            return Err(StorageError::Failed {
                path: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    /// The current end of the written data.
    fn end(&self) -> VisibleEnd {
        let active = self.active();
        VisibleEnd {
            offset: active.next_offset,
            segment_base: active.base_offset,
            size: active.size,
        }
    }

    /// Seals the active segment (synced, so sealed segments never need recovery)
    /// and starts a new one at the log end.
    fn roll(&mut self, dir: &Path, now_ms: i64) -> Result<(), StorageError> {
        let active = self.active();
        if let Err(e) = active.sync() {
            // After a failed fsync the kernel may have dropped dirty pages and a
            // later fsync can succeed anyway: never acknowledge from this log again.
            self.failed = true;
            return Err(e);
        }
        let next = active.next_offset;
        if let Some(sealed) = self.segments.last_mut() {
            sealed.write_summaries();
        }
        // Everything in the sealed segment is now on disk, hence visible.
        let sealed = self.end();
        if sealed.offset > self.visible.offset {
            self.visible = sealed;
        }
        self.segments.push(Segment::create(dir, next, now_ms)?);
        // Sync the directory too, or the new segment can vanish after a power loss.
        sync_dir(dir)?;
        tracing::debug!(dir = %dir.display(), base_offset = next, "rolled segment");
        Ok(())
    }

    fn delete_oldest(&mut self) -> Result<(), StorageError> {
        let segment = self.segments.remove(0);
        tracing::info!(segment = %segment.path.display(), "retention deleted segment");
        segment.remove_files()
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
