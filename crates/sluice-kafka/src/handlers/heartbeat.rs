//! Heartbeat: a classic member proves it is alive and learns of rebalances.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::errors::result_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let result = ctx.broker.groups().heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(result_code(&result))
}
