//! ConsumerGroupHeartbeat (KIP-848): membership, subscription and the
//! broker-computed assignment in one request. Topics travel by id on the wire and
//! by name in the core.

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_core::groups::ConsumerHeartbeat;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) async fn handle(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
    client_id: &str,
    peer: std::net::SocketAddr,
) -> ConsumerGroupHeartbeatResponse {
    let broker = &ctx.broker;
    let owned = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|tp| {
                let topic = broker.topic_by_id(tp.topic_id.as_bytes())?;
                Some(tp.partitions.iter().map(move |p| (topic.name.clone(), *p)))
            })
            .flatten()
            .collect()
    });
    let heartbeat = ConsumerHeartbeat {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(StrBytes::to_string),
        rack_id: req.rack_id.as_ref().map(StrBytes::to_string),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(StrBytes::to_string),
        server_assignor: req.server_assignor.as_ref().map(StrBytes::to_string),
        owned,
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
    };
    match broker.consumer_heartbeat(heartbeat).await {
        Ok(reply) => {
            let assignment = reply.assignment.map(|parts| {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(p);
                }
                Assignment::default().with_topic_partitions(
                    by_topic
                        .into_iter()
                        .filter_map(|(t, ps)| {
                            let info = broker.topic(&t)?;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(uuid::Uuid::from_bytes(info.id))
                                    .with_partitions(ps),
                            )
                        })
                        .collect(),
                )
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(s(reply.member_id)))
                .with_member_epoch(reply.member_epoch)
                .with_heartbeat_interval_ms(reply.heartbeat_interval_ms)
                .with_assignment(assignment)
        }
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error_code(&e))
            .with_error_message(Some(s(e.to_string())))
            .with_member_id(Some(req.member_id))
            .with_member_epoch(req.member_epoch),
    }
}
