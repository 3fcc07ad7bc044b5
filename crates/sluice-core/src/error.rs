//! Errors of broker operations, in Sluice's words; each front end maps them to its
//! protocol's codes in one exhaustive match.

use sluice_storage::{BatchError, StorageError};

/// Why a broker operation failed. The operation changed nothing unless stated.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The topic does not exist, or the partition is beyond its partition count.
    #[error("unknown topic or partition: {topic}/{partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    /// CreateTopics for a name in use.
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// A topic name breaks the naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    /// A partition count that is not positive, or not larger than the current one.
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// Replication factor other than what this cluster can place.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// A topic config that is unknown or has an unacceptable value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A record batch failed validation (CRC, format, size); nothing was stored.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A batch from an idempotent producer skipped sequence numbers.
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {found}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        found: i32,
    },
    /// A batch from an older epoch of a producer that has since been bumped.
    #[error("producer {producer_id} epoch {found} is older than current epoch {current}")]
    ProducerFenced {
        producer_id: i64,
        current: i16,
        found: i16,
    },
    /// A fetch or reset to an offset outside [log start, log end].
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// A group request carried a generation that is not the group's current one.
    #[error("illegal generation {generation} for group {group}")]
    IllegalGeneration { group: String, generation: i32 },
    /// A group request named a member the group does not have.
    #[error("unknown member {member:?} of group {group}")]
    UnknownMemberId { group: String, member: String },
    /// A group the broker does not know.
    #[error("group {0} not found")]
    GroupIdNotFound(String),
    /// A group id that is empty.
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    /// Commit metadata longer than the limit.
    #[error("offset metadata of {bytes} bytes exceeds {max}")]
    OffsetMetadataTooLarge { bytes: usize, max: usize },
    /// A feature the request needs is not available yet.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The storage engine failed (I/O error, failed fsync).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
