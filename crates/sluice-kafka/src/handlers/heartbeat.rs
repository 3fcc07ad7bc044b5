//! Heartbeat: a classic member proves it is alive and learns of rebalances.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let result = ctx.broker.groups().heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| error_code(&e)))
}
