//! One replica of one partition.

use std::path::Path;

use sluice_storage::{
    Appended, BatchHeader, Durability, LogConfig, PartitionLog, Recovery, StorageError,
    VerifiedBatches,
};

/// Identifies a broker in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub i32);

/// Result of an append through the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAppend {
    /// Where the batches landed in the log.
    pub appended: Appended,
    /// How many replicas hold the data (1 on a single node).
    pub replicated_to: usize,
}

/// The local replica of a partition; on a single node it is always the leader.
pub struct PartitionReplica {
    node: NodeId,
    log: PartitionLog,
}

impl PartitionReplica {
    /// Opens the local log of the partition and recovers it; `visit` sees the
    /// headers of the most recent batches (see [`PartitionLog::open_visiting`]).
    pub fn open(
        node: NodeId,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(Self, Recovery), StorageError> {
        let (log, recovery) = PartitionLog::open_visiting(dir, config, now_ms, visit)?;
        Ok((PartitionReplica { node, log }, recovery))
    }

    /// The leader of the partition.
    pub fn leader(&self) -> NodeId {
        self.node
    }

    /// All replicas of the partition.
    pub fn replicas(&self) -> Vec<NodeId> {
        vec![self.node]
    }

    /// Replicas that hold every acknowledged record.
    pub fn in_sync_replicas(&self) -> Vec<NodeId> {
        vec![self.node]
    }

    /// Appends as leader. Returns once the batches are in the leader's page cache and
    /// (on a single node) thereby in every in-sync replica.
    pub fn append(
        &self,
        batches: &VerifiedBatches<'_>,
        now_ms: i64,
    ) -> Result<ReplicaAppend, StorageError> {
        let appended = self.log.append(batches, now_ms)?;
        Ok(ReplicaAppend {
            appended,
            replicated_to: 1,
        })
    }

    /// Blocks until the append is on the leader's disk.
    pub fn sync_through(&self, seq: u64) -> Result<Durability, StorageError> {
        self.log.sync_through(seq)
    }

    /// The offset below which records are visible to consumers: every in-sync
    /// replica has them (and, under the `always` flush policy, has fsynced them).
    /// On a single node, the log's visible end.
    pub fn high_watermark(&self) -> i64 {
        self.log.visible_end_offset()
    }

    /// The local log, for reads, retention and flushing.
    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    /// Consumes the replica and deletes its data.
    pub fn delete(self) -> Result<(), StorageError> {
        self.log.delete()
    }
}
