//! JoinGroup: a classic member (re)joins and waits for the rebalance to complete.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use sluice_core::groups::JoinRequest;
use sluice_core::CoreError;

use super::s;
use crate::consumer_protocol::subscription_topics;
use crate::errors::error_code;
use crate::server::Ctx;

/// The protocol type of Kafka consumers, whose metadata the broker can read.
const CONSUMER: &str = "consumer";

pub(crate) async fn handle(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: std::net::SocketAddr,
) -> JoinGroupResponse {
    let subscribed_topics = if req.protocol_type.as_str() == CONSUMER {
        req.protocols
            .first()
            .map(|p| subscription_topics(&p.metadata))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let join = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 had one timeout for both.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        subscribed_topics,
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let response = JoinGroupResponse::default().with_protocol_name(Some(s("")));
    match ctx.broker.groups().join(join).await {
        Ok(j) => response
            .with_generation_id(j.generation_id)
            .with_protocol_type(Some(s(j.protocol_type)))
            .with_protocol_name(Some(s(j.protocol_name)))
            .with_leader(s(j.leader))
            .with_skip_assignment(j.skip_assignment && version >= 9)
            .with_member_id(s(j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(if version >= 5 {
                                m.group_instance_id.map(s)
                            } else {
                                None
                            })
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(CoreError::MemberIdRequired(id)) => response
            .with_error_code(error_code(&CoreError::MemberIdRequired(id.clone())))
            .with_member_id(s(id)),
        Err(e) => response
            .with_error_code(error_code(&e))
            .with_member_id(req.member_id),
    }
}
