//! IncrementalAlterConfigs: SET and DELETE of single topic settings, and of
//! group settings (resource type GROUP: consume mode, retry policy).

use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;
use sluice_core::ConfigChange;

use super::{s, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::errors::error_code;
use crate::server::Ctx;

/// Operation codes of IncrementalAlterConfigs.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Each resource is altered all or nothing, on its own: one failing does not
/// stop the others.
pub(crate) async fn handle(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let name = r.resource_name.as_str();
        let result = match (r.resource_type, changes(&r)) {
            (RESOURCE_TOPIC | RESOURCE_GROUP, Err(failed)) => {
                responses.push(
                    resp.with_error_code(ResponseError::InvalidConfig.code())
                        .with_error_message(Some(s(failed))),
                );
                continue;
            }
            (RESOURCE_TOPIC, Ok(changes)) => {
                ctx.broker
                    .alter_topic_config(name, &changes, req.validate_only)
            }
            (RESOURCE_GROUP, Ok(changes)) => {
                ctx.messaging
                    .alter_group_settings(name, changes, req.validate_only)
                    .await
            }
            _ => {
                responses.push(
                    resp.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(s("only topic and group configs can be altered"))),
                );
                continue;
            }
        };
        responses.push(match result {
            Ok(()) => resp,
            Err(e) => resp
                .with_error_code(error_code(&e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The changes a resource asks for, or why they are not supported.
fn changes(r: &AlterConfigsResource) -> Result<Vec<ConfigChange>, String> {
    let mut changes = Vec::new();
    for c in &r.configs {
        let name = c.name.to_string();
        match (c.config_operation, &c.value) {
            (OP_SET, Some(v)) => changes.push(ConfigChange::Set(name, v.to_string())),
            (OP_DELETE, _) => changes.push(ConfigChange::Delete(name)),
            _ => {
                return Err(format!(
                    "operation {} on {name} is not supported (SET with a value, DELETE)",
                    c.config_operation
                ))
            }
        }
    }
    Ok(changes)
}
