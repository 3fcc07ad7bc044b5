//! Errors of the storage engine.

use std::path::PathBuf;

/// Why a record batch was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a batch header, or a length field pointing past the buffer.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// The batch length field is smaller than the fixed header.
    #[error("record batch length {length} is invalid")]
    InvalidLength { length: i32 },
    /// Only message format v2 (magic 2) is stored.
    #[error("unsupported record batch magic {magic}")]
    UnsupportedMagic { magic: i8 },
    /// The CRC32C over the batch does not match its header.
    #[error("record batch CRC mismatch: header says {expected:#010x}, content has {found:#010x}")]
    CrcMismatch { expected: u32, found: u32 },
    /// The batch is larger than the topic's `max.message.bytes`.
    #[error("record batch of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// `records_count` disagrees with `last_offset_delta`, or is not positive.
    #[error(
        "record batch claims {records_count} records but last offset delta {last_offset_delta}"
    )]
    InvalidRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    /// A record inside the batch is malformed (lengths, offsets, count).
    #[error("record {index} of the batch is invalid: {reason}")]
    InvalidRecord { index: i32, reason: &'static str },
    /// The batch says it is compressed but its payload does not decompress.
    #[error("record batch does not decompress with codec {codec}: {reason}")]
    Decompression { codec: u8, reason: String },
    /// A produce carried no batch at all.
    #[error("no record batch in the request")]
    Empty,
}

/// Errors of a partition log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The batch was refused; nothing was written.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// An I/O call failed on a file of the log.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A flush failed earlier; the log refuses writes until it is reopened, since
    /// after a failed fsync the kernel may have dropped the dirty pages.
    #[error("log {path} is failed after an fsync error; restart to recover")]
    Failed { path: PathBuf },
    /// The log was closed because its topic is being deleted.
    #[error("log {path} is closed")]
    Closed { path: PathBuf },
    /// A segment file name does not parse as a base offset.
    #[error("unexpected file in log directory: {path}")]
    UnexpectedFile { path: PathBuf },
}

/// Attaches the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
