//! IncrementalAlterConfigs: SET and DELETE of single topic settings.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;
use sluice_core::ConfigChange;

use super::{s, RESOURCE_TOPIC};
use crate::errors::error_code;
use crate::server::Ctx;

/// Operation codes of IncrementalAlterConfigs.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub(crate) fn handle(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != RESOURCE_TOPIC {
                return resp
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("only topic configs can be altered")));
            }
            let mut changes = Vec::new();
            for c in &r.configs {
                let name = c.name.to_string();
                match (c.config_operation, &c.value) {
                    (OP_SET, Some(v)) => changes.push(ConfigChange::Set(name, v.to_string())),
                    (OP_DELETE, _) => changes.push(ConfigChange::Delete(name)),
                    _ => {
                        return resp
                            .with_error_code(ResponseError::InvalidConfig.code())
                            .with_error_message(Some(s(format!(
                            "operation {} on {name} is not supported (SET with a value, DELETE)",
                            c.config_operation
                        ))))
                    }
                }
            }
            match ctx.broker.alter_topic_config(
                r.resource_name.as_str(),
                &changes,
                req.validate_only,
            ) {
                Ok(()) => resp,
                Err(e) => resp
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
