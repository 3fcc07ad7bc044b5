//! AlterConfigs (the legacy API): replaces a topic's whole set of overrides.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::ResponseError;
use sluice_core::topic_config::TOPIC_CONFIG_KEYS;
use sluice_core::ConfigChange;

use super::{s, RESOURCE_TOPIC};
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
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
            // Every key not given goes back to its default, as the legacy API says.
            let mut changes: Vec<ConfigChange> = TOPIC_CONFIG_KEYS
                .iter()
                .filter(|k| !r.configs.iter().any(|c| c.name.as_str() == **k))
                .map(|k| ConfigChange::Delete(k.to_string()))
                .collect();
            for c in &r.configs {
                match &c.value {
                    Some(v) => changes.push(ConfigChange::Set(c.name.to_string(), v.to_string())),
                    None => changes.push(ConfigChange::Delete(c.name.to_string())),
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
    AlterConfigsResponse::default().with_responses(responses)
}
