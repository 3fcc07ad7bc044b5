//! SyncGroup: the leader hands in every assignment; each member gets its own.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use sluice_core::groups::SyncRequest;

use super::s;
use crate::consumer_protocol::assignment_partitions;
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) async fn handle(ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let consumer = req.protocol_type.as_deref().is_none_or(|t| t == "consumer");
    let sync = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|t| t.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|n| n.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| {
                let partitions = if consumer {
                    assignment_partitions(&a.assignment)
                } else {
                    Vec::new()
                };
                (a.member_id.to_string(), a.assignment.clone(), partitions)
            })
            .collect(),
    };
    match ctx.broker.groups().sync(sync).await {
        Ok(synced) => SyncGroupResponse::default()
            .with_protocol_type(Some(s(synced.protocol_type)))
            .with_protocol_name(Some(s(synced.protocol_name)))
            .with_assignment(synced.assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(error_code(&e)),
    }
}
