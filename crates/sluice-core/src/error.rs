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
    /// A classic JoinGroup without a member id (v4+): the client must rejoin with
    /// the id returned here.
    #[error("member id required: rejoin as {0}")]
    MemberIdRequired(String),
    /// A member's protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol in group {0}")]
    InconsistentGroupProtocol(String),
    /// A session timeout outside the broker's allowed range.
    #[error("session timeout {timeout_ms} ms outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        timeout_ms: i32,
        min_ms: i32,
        max_ms: i32,
    },
    /// The group is rebalancing; the member must rejoin.
    #[error("group {0} is rebalancing")]
    RebalanceInProgress(String),
    /// Another member now holds this static instance id.
    #[error("instance id {instance_id:?} of group {group} belongs to another member")]
    FencedInstanceId { group: String, instance_id: String },
    /// A static member joined while the previous holder of its instance id is still
    /// a member (consumer protocol).
    #[error("instance id {instance_id:?} of group {group} is still in use")]
    UnreleasedInstanceId { group: String, instance_id: String },
    /// The group has as many members as allowed.
    #[error("group {group} has reached its maximum of {max} members")]
    GroupMaxSizeReached { group: String, max: usize },
    /// The operation needs a group without members.
    #[error("group {0} still has members")]
    NonEmptyGroup(String),
    /// Offsets of a topic the group's members still subscribe to.
    #[error("group {group} is subscribed to topic {topic}")]
    GroupSubscribedToTopic { group: String, topic: String },
    /// A consumer-protocol member used an epoch the coordinator does not accept.
    #[error("member {member:?} of group {group} is fenced at epoch {epoch}")]
    FencedMemberEpoch {
        group: String,
        member: String,
        epoch: i32,
    },
    /// An offset commit carried an older member epoch (consumer protocol).
    #[error("stale member epoch {epoch} of member {member:?} in group {group}")]
    StaleMemberEpoch {
        group: String,
        member: String,
        epoch: i32,
    },
    /// A server-side assignor the broker does not have.
    #[error("unsupported assignor {0:?}")]
    UnsupportedAssignor(String),
    /// A request that is malformed at the semantic level.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The coordinator is shutting down or not ready.
    #[error("group coordinator not available")]
    CoordinatorNotAvailable,
    /// A feature the request needs is not available yet.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A message a front end passed in breaks a rule (reserved property name,
    /// empty body); nothing was stored.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A subscription filter that does not parse.
    #[error("invalid filter expression: {0}")]
    InvalidFilter(#[from] crate::filter::FilterError),
    /// A delivery time in the past beyond tolerance, or beyond the maximum delay.
    #[error("illegal delivery time: {0}")]
    IllegalDeliveryTime(String),
    /// A receipt handle that does not parse, names another topic, or whose
    /// delivery has expired, been acknowledged or been handed out again.
    #[error("invalid receipt handle: {0}")]
    InvalidReceiptHandle(String),
    /// A transaction id that names no pending half message of the topic.
    #[error("unknown transaction {0}")]
    UnknownTransaction(String),
    /// A recall handle that does not name a pending delayed message.
    #[error("message not found: {0}")]
    MessageNotFound(String),
    /// The storage engine failed (I/O error, failed fsync).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
