//! Metadata: brokers, topics, partitions and leaders; auto-creates asked-for topics.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use sluice_core::{CoreError, TopicInfo};
use uuid::Uuid;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn topic_entry(info: &TopicInfo) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(info.name.clone()))))
        .with_topic_id(Uuid::from_bytes(info.id))
        .with_partitions(
            info.partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(0)
                        .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                        .with_isr_nodes(p.in_sync_replicas.iter().map(|r| BrokerId(*r)).collect())
                })
                .collect(),
        )
}

fn error_entry(name: Option<String>, id: Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(|n| TopicName(s(n))))
        .with_topic_id(id)
        .with_error_code(code)
}

pub(crate) fn handle(ctx: &Ctx, req: MetadataRequest, version: i16) -> MetadataResponse {
    let broker = &ctx.broker;
    // Before v4 there is no flag and requests auto-create; v0 lists all on empty.
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let topics = match req.topics {
        None => broker.list_topics().iter().map(topic_entry).collect(),
        Some(list) if list.is_empty() && version == 0 => {
            broker.list_topics().iter().map(topic_entry).collect()
        }
        Some(list) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => {
                    let name = name.0.to_string();
                    let found = if allow_create {
                        broker.ensure_topic(&name)
                    } else {
                        Ok(broker.topic(&name))
                    };
                    match found {
                        Ok(Some(info)) => topic_entry(&info),
                        Ok(None) => error_entry(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition.code(),
                        ),
                        Err(e @ CoreError::InvalidTopicName { .. }) => {
                            error_entry(Some(name), Uuid::nil(), error_code(&e))
                        }
                        Err(e) => {
                            tracing::warn!(topic = %name, error = %e, "auto-create failed");
                            error_entry(Some(name), Uuid::nil(), error_code(&e))
                        }
                    }
                }
                None => match broker.topic_by_id(t.topic_id.as_bytes()) {
                    Some(info) => topic_entry(&info),
                    None => error_entry(None, t.topic_id, ResponseError::UnknownTopicId.code()),
                },
            })
            .collect(),
    };
    let node = broker.node_id();
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(s(ctx.config.advertised_host.clone()))
            .with_port(ctx.config.advertised_port)])
        .with_cluster_id(Some(s(broker.cluster_id())))
        .with_controller_id(BrokerId(node))
        .with_topics(topics)
}
