//! DescribeConfigs: topic settings with their sources; broker resources answer empty.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::create_topics::config_source;
use super::{s, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::errors::error_code;
use crate::server::Ctx;

/// Config type codes (KIP-569).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "flush.policy" => TYPE_STRING,
        "max.message.bytes" | "segment.bytes" => TYPE_INT,
        _ => TYPE_LONG,
    }
}

pub(crate) fn handle(ctx: &Ctx, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => {
                    match ctx.broker.describe_topic_config(r.resource_name.as_str()) {
                        Ok(entries) => result.with_configs(
                            entries
                                .into_iter()
                                .filter(|e| {
                                    r.configuration_keys.as_ref().is_none_or(|keys| {
                                        keys.iter().any(|k| k.as_str() == e.name)
                                    })
                                })
                                .map(|e| {
                                    DescribeConfigsResourceResult::default()
                                        .with_name(s(e.name))
                                        .with_value(Some(s(e.value)))
                                        .with_config_source(config_source(e.is_override))
                                        .with_config_type(config_type(e.name))
                                })
                                .collect(),
                        ),
                        Err(e) => result
                            .with_error_code(error_code(&e))
                            .with_error_message(Some(s(e.to_string()))),
                    }
                }
                RESOURCE_BROKER => result,
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("only topic and broker resources are described"))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
