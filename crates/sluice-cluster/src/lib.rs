//! Sluice cluster layer: partition replicas between the core and storage.
//!
//! Today a node is a cluster of one: a [`PartitionReplica`] is the leader of its
//! partition and appends go straight to the local log. Replication to followers and
//! leader failover will live here, behind the same interface, so the core and the
//! protocol front ends do not change when they arrive.

mod replica;

pub use replica::{NodeId, PartitionReplica, ReplicaAppend};
