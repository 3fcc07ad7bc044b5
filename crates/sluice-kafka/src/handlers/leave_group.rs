//! LeaveGroup: members leave at once instead of waiting for their session to end.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::errors::{error_code, result_code};
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    // Up to v2 one member leaves, named by the top-level member id.
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match ctx.broker.groups().leave(req.group_id.0.as_str(), &members) {
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            req.members
                .into_iter()
                .zip(results)
                .map(|(m, r)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_group_instance_id(m.group_instance_id)
                        .with_error_code(result_code(&r))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default().with_error_code(
            results
                .into_iter()
                .find_map(|r| r.err())
                .map_or(0, |e| error_code(&e)),
        ),
        Err(e) => LeaveGroupResponse::default().with_error_code(error_code(&e)),
    }
}
