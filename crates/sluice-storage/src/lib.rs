//! Sluice storage: per-partition segmented logs of Kafka v2 record batches.
//!
//! Storage knows bytes, offsets and files; it knows nothing of protocols. A log
//! verifies every batch before writing it, assigns offsets in place, keeps sparse
//! offset and time indexes, recovers a torn tail on open, applies retention, and
//! serves reads as file ranges so a front end can send them without re-encoding.
//! Beside each batch it can keep an opaque 64-bit summary its owner computed,
//! which readers use to pass over batches without decoding them.

pub mod batch;
pub mod config;
pub mod error;
mod group_commit;
mod index;
pub mod log;
pub mod records;
mod segment;
mod summary;

pub use batch::BatchHeader;
pub use config::{FlushPolicy, LogConfig};
pub use error::{BatchError, StorageError};
pub use log::{
    Appended, Durability, FileSlice, PartitionLog, ReadOutcome, Recovery, Retained, VerifiedBatches,
};
