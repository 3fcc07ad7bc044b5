//! Sluice core: broker semantics behind one [`Broker`] handle, free of protocol types.
//!
//! Topics and partitions, produce with validation and idempotent de-duplication,
//! reads with long-poll watches, offset queries, topic configs, and the background
//! maintenance (interval flushes, retention). Front ends translate their protocol
//! into these calls.

pub mod broker;
pub mod error;
pub mod filter;
pub mod groups;
mod ids;
pub mod messaging;
pub mod names;
pub mod offsets;
pub mod producer_state;
mod topic;
pub mod topic_config;

pub use broker::{
    now_ms, AppendWatch, AppendedProduce, Broker, BrokerConfig, CheckedProduce, ConfigChange,
    Diverted, DivertedBatches, OffsetQuery, PartitionInfo, PartitionLag, PartitionRead,
    PartitionStats, ProduceSync, Produced, TopicInfo,
};
pub use error::CoreError;
pub use groups::{GroupConfig, GroupDescription, GroupKind, GroupState, MemberDescription};
pub use offsets::CommittedOffset;
pub use sluice_storage::{BatchError, Durability, FileSlice, FlushPolicy, LogConfig};
pub use topic_config::{ConfigEntry, TopicConfig};
