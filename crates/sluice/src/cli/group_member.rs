//! Group membership for `sluice consume --group`, through the consumer group
//! protocol of KIP-848: the broker assigns partitions, so the CLI needs no
//! assignor. The member heartbeats between fetches, reports the partitions it
//! owns, gives up revoked ones after committing them, and commits its progress
//! with its member epoch, which fences a member that was removed from the group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::{check, error_name, Client};

/// Rebalance timeout announced to the broker: how long we may take to give up
/// partitions.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Heartbeats answered with a retriable error before giving up.
const HEARTBEAT_RETRIES_MAX: u32 = 20;

/// What changed in the assignment at a heartbeat.
#[derive(Debug, Default)]
pub struct AssignmentChange {
    pub added: Vec<i32>,
    pub removed: Vec<i32>,
}

/// This process as a member of one group, consuming one topic.
pub struct GroupMember {
    group: String,
    topic: String,
    topic_id: uuid::Uuid,
    member_id: String,
    epoch: i32,
    owned: BTreeSet<i32>,
    interval: Duration,
    last_heartbeat: Option<Instant>,
    failures: u32,
}

/// A random UUID-shaped id (std's hasher keys are randomly seeded per process).
fn random_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut halves = [0u64; 2];
    for (i, h) in halves.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        *h = hasher.finish();
    }
    uuid::Uuid::from_u64_pair(halves[0], halves[1]).to_string()
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl GroupMember {
    /// A member that has not joined yet; the first [`GroupMember::heartbeat`] joins.
    pub fn new(group: &str, topic: &str, topic_id: uuid::Uuid) -> Self {
        GroupMember {
            group: group.to_string(),
            topic: topic.to_string(),
            topic_id,
            // v1 of the protocol has members choose their own id.
            member_id: random_member_id(),
            epoch: 0,
            owned: BTreeSet::new(),
            interval: Duration::ZERO,
            last_heartbeat: None,
            failures: 0,
        }
    }

    /// Whether a heartbeat is due.
    pub fn due(&self) -> bool {
        self.last_heartbeat
            .is_none_or(|at| at.elapsed() >= self.interval)
    }

    /// Sends one heartbeat and applies the assignment the broker returns. A member
    /// the broker fenced rejoins from scratch and reports every partition removed.
    pub async fn heartbeat(&mut self, client: &mut Client) -> anyhow::Result<AssignmentChange> {
        let joining = self.epoch == 0;
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_member_id(text(&self.member_id))
            .with_member_epoch(self.epoch)
            .with_rebalance_timeout_ms(if joining { REBALANCE_TIMEOUT_MS } else { -1 })
            .with_subscribed_topic_names(joining.then(|| vec![TopicName(text(&self.topic))]))
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic_id(self.topic_id)
                .with_partitions(self.owned.iter().copied().collect())]));
        let response = client.send(&request).await?;
        self.last_heartbeat = Some(Instant::now());
        let code = response.error_code;
        if code == ResponseError::FencedMemberEpoch.code()
            || code == ResponseError::UnknownMemberId.code()
        {
            tracing::warn!(group = %self.group, error = %error_name(code), "fenced; rejoining");
            self.epoch = 0;
            self.interval = Duration::ZERO;
            let removed = std::mem::take(&mut self.owned).into_iter().collect();
            return Ok(AssignmentChange {
                added: Vec::new(),
                removed,
            });
        }
        if code != 0 {
            self.failures += 1;
            if self.failures > HEARTBEAT_RETRIES_MAX {
                check(code, response.error_message.as_ref(), || {
                    format!("heartbeat of group {:?}", self.group)
                })?;
            }
            return Ok(AssignmentChange::default());
        }
        self.failures = 0;
        if let Some(id) = response.member_id.as_ref().filter(|id| !id.is_empty()) {
            self.member_id = id.to_string();
        }
        self.epoch = response.member_epoch;
        self.interval = Duration::from_millis(response.heartbeat_interval_ms.max(100) as u64);
        let Some(assignment) = response.assignment else {
            return Ok(AssignmentChange::default());
        };
        let target: BTreeSet<i32> = assignment
            .topic_partitions
            .iter()
            .filter(|tp| tp.topic_id == self.topic_id)
            .flat_map(|tp| tp.partitions.iter().copied())
            .collect();
        let change = AssignmentChange {
            added: target.difference(&self.owned).copied().collect(),
            removed: self.owned.difference(&target).copied().collect(),
        };
        self.owned = target;
        Ok(change)
    }

    /// Committed offsets of `partitions` (-1 where none).
    pub async fn committed(
        &self,
        client: &mut Client,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(&self.topic)))
                .with_partition_indexes(partitions.to_vec())]));
        // v8+ moves group ids into a list; this request uses the v7 shape.
        let version = client.version::<OffsetFetchRequest>()?.min(7);
        let response = client.send_version(&request, version).await?;
        check(response.error_code, None, || {
            format!("OffsetFetch of group {:?}", self.group)
        })?;
        let mut out = BTreeMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                check(p.error_code, None, || {
                    format!("OffsetFetch of {}/{}", self.topic, p.partition_index)
                })?;
                out.insert(p.partition_index, p.committed_offset);
            }
        }
        Ok(out)
    }

    /// Commits next-offsets per partition as this member.
    pub async fn commit(
        &self,
        client: &mut Client,
        offsets: &BTreeMap<i32, i64>,
    ) -> anyhow::Result<()> {
        if offsets.is_empty() || self.epoch <= 0 {
            return Ok(());
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_generation_id_or_member_epoch(self.epoch)
            .with_member_id(text(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(&self.topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                )]);
        let version = client.version::<OffsetCommitRequest>()?.min(8);
        let response = client.send_version(&request, version).await?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "committing {}/{} for group {:?}: {}",
                        self.topic,
                        p.partition_index,
                        self.group,
                        error_name(p.error_code)
                    );
                }
            }
        }
        Ok(())
    }

    /// Leaves the group, so the broker reassigns our partitions at once.
    pub async fn leave(&mut self, client: &mut Client) -> anyhow::Result<()> {
        if self.epoch <= 0 {
            return Ok(());
        }
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_member_id(text(&self.member_id))
            .with_member_epoch(-1);
        let response = client.send(&request).await?;
        check(response.error_code, response.error_message.as_ref(), || {
            format!("leaving group {:?}", self.group)
        })?;
        self.epoch = -1;
        Ok(())
    }
}
