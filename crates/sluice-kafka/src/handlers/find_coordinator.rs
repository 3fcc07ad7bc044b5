//! FindCoordinator: this broker coordinates every group.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::s;
use crate::server::Ctx;

/// Key type of consumer groups (1 is transactions, which are not served yet).
const KEY_TYPE_GROUP: i8 = 0;

pub(crate) fn handle(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let answer = |key: &StrBytes| -> (i16, Option<StrBytes>) {
        if req.key_type != KEY_TYPE_GROUP {
            (
                ResponseError::CoordinatorNotAvailable.code(),
                Some(s("transactions are not supported yet")),
            )
        } else if key.is_empty() {
            (
                ResponseError::InvalidGroupId.code(),
                Some(s("empty group id")),
            )
        } else {
            (0, None)
        }
    };
    let node = BrokerId(ctx.broker.node_id());
    let host = s(ctx.config.advertised_host.clone());
    let port = ctx.config.advertised_port;
    if version >= 4 {
        // Batched form: one answer per key.
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let (code, message) = answer(key);
                let c = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(code)
                    .with_error_message(message);
                if code == 0 {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message) = answer(&req.key);
    let response = FindCoordinatorResponse::default().with_error_code(code);
    let response = if version >= 1 {
        response.with_error_message(message)
    } else {
        response
    };
    if code == 0 {
        response.with_node_id(node).with_host(host).with_port(port)
    } else {
        response.with_node_id(BrokerId(-1)).with_port(-1)
    }
}
