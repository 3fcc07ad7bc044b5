//! Looking up topics and partition offsets: Metadata and ListOffsets.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::{check, Client};

/// ListOffsets timestamp meaning "the log end offset".
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp meaning "the log start offset".
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// ListOffsets `timeout_ms` (v10+), for brokers that look offsets up remotely.
const LIST_OFFSETS_TIMEOUT_MS: i32 = 30_000;

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub index: i32,
    /// Broker id of the leader, -1 when there is none.
    pub leader: i32,
    /// Broker ids holding a replica.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// The partition's error code (e.g. LEADER_NOT_AVAILABLE), 0 when healthy.
    pub error_code: i16,
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil when the broker predates topic ids).
    pub id: uuid::Uuid,
    /// Whether the topic is internal to the broker.
    pub internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    fn from_response(topic: &MetadataResponseTopic) -> TopicInfo {
        let mut partitions: Vec<PartitionInfo> = topic
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                index: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.index);
        TopicInfo {
            name: topic
                .name
                .as_ref()
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            id: topic.topic_id,
            internal: topic.is_internal,
            partitions,
        }
    }

    /// Partition indexes, sorted.
    pub fn partition_indexes(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.index).collect()
    }
}

/// Lists every topic of the cluster, sorted by name.
pub async fn list_topics(client: &mut Client) -> anyhow::Result<Vec<TopicInfo>> {
    let version = client.version::<MetadataRequest>()?;
    // v0 asks for all topics with an empty list; later versions with null.
    let topics = if version == 0 { Some(Vec::new()) } else { None };
    let request = metadata_request(topics, version);
    let response = client.send_version(&request, version).await?;
    let mut topics = Vec::with_capacity(response.topics.len());
    for topic in &response.topics {
        let info = TopicInfo::from_response(topic);
        check(topic.error_code, None, || format!("topic {:?}", info.name))?;
        topics.push(info);
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// Describes one topic; fails with UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
pub async fn describe_topic(client: &mut Client, name: &str) -> anyhow::Result<TopicInfo> {
    describe_topic_with(client, name, false).await
}

/// Describes one topic, letting the broker create it if its auto-creation is on
/// (as producers do).
pub async fn describe_or_create_topic(
    client: &mut Client,
    name: &str,
) -> anyhow::Result<TopicInfo> {
    describe_topic_with(client, name, true).await
}

async fn describe_topic_with(
    client: &mut Client,
    name: &str,
    auto_create: bool,
) -> anyhow::Result<TopicInfo> {
    let version = client.version::<MetadataRequest>()?;
    let wanted = MetadataRequestTopic::default().with_name(Some(topic_name(name)));
    let mut request = metadata_request(Some(vec![wanted]), version);
    if version >= 4 {
        request = request.with_allow_auto_topic_creation(auto_create);
    }
    let response = client.send_version(&request, version).await?;
    let topic = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        .ok_or_else(|| anyhow!("the Metadata response does not mention topic {name:?}"))?;
    check(topic.error_code, None, || format!("topic {name:?}"))?;
    let info = TopicInfo::from_response(topic);
    if info.partitions.is_empty() {
        bail!("topic {name:?} has no partitions");
    }
    Ok(info)
}

fn metadata_request(topics: Option<Vec<MetadataRequestTopic>>, version: i16) -> MetadataRequest {
    let mut request = MetadataRequest::default().with_topics(topics);
    if version >= 4 {
        request = request.with_allow_auto_topic_creation(false);
    }
    request
}

/// Looks up one offset per partition: `timestamp` is [`EARLIEST_TIMESTAMP`],
/// [`LATEST_TIMESTAMP`] or a time in ms. Returns partition -> offset.
pub async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let version = client.version::<ListOffsetsRequest>()?;
    let request = list_offsets_request(topic, partitions, timestamp, version);
    let response = client.send_version(&request, version).await?;
    let mut offsets = BTreeMap::new();
    for topic_response in &response.topics {
        if topic_response.name.as_str() != topic {
            continue;
        }
        for p in &topic_response.partitions {
            check(p.error_code, None, || {
                format!("ListOffsets of {topic}/{}", p.partition_index)
            })?;
            offsets.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !offsets.contains_key(p) {
            bail!("the ListOffsets response does not mention partition {topic}/{p}");
        }
    }
    Ok(offsets)
}

fn list_offsets_request(
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    version: i16,
) -> ListOffsetsRequest {
    let mut request = ListOffsetsRequest::default()
        // -1: a consumer, not a follower broker.
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    if version >= 10 {
        request = request.with_timeout_ms(LIST_OFFSETS_TIMEOUT_MS);
    }
    request
}

/// A topic name in kafka-protocol's type.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Encodable, Message};

    #[test]
    fn metadata_and_list_offsets_requests_encode_at_every_supported_version() {
        for version in MetadataRequest::VERSIONS.min..=MetadataRequest::VERSIONS.max {
            let all = if version == 0 { Some(Vec::new()) } else { None };
            let one = Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name("t")))
            ]);
            for topics in [all, one] {
                let mut buf = BytesMut::new();
                metadata_request(topics, version)
                    .encode(&mut buf, version)
                    .unwrap_or_else(|e| panic!("Metadata v{version}: {e}"));
            }
        }
        for version in ListOffsetsRequest::VERSIONS.min..=ListOffsetsRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            list_offsets_request("t", &[0, 1], EARLIEST_TIMESTAMP, version)
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("ListOffsets v{version}: {e}"));
        }
    }
}
