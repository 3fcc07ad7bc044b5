//! DescribeConfigs: topic settings with their sources, group settings (resource
//! type GROUP) with theirs; broker resources answer empty.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::create_topics::config_source;
use super::{s, RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::errors::error_code;
use crate::server::Ctx;

/// Config type codes (KIP-569).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;
/// Config source of a group's own setting (Kafka 4's GROUP_CONFIG).
const SOURCE_GROUP: i8 = 8;
/// Config source of a default.
const SOURCE_DEFAULT: i8 = 5;

fn group_config_type(name: &str) -> i8 {
    use sluice_core::messaging::group_settings as g;
    match name {
        g::KEY_CONSUME_MODE | g::KEY_RETRY_POLICY => TYPE_STRING,
        g::KEY_MAX_DELIVERY_ATTEMPTS => TYPE_INT,
        g::KEY_RETRY_BACKOFF_MS => TYPE_LIST,
        g::KEY_RETRY_BACKOFF_MULTIPLIER => TYPE_DOUBLE,
        _ => TYPE_LONG,
    }
}

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "flush.policy" => TYPE_STRING,
        "max.message.bytes" | "segment.bytes" => TYPE_INT,
        _ => TYPE_LONG,
    }
}

/// One described entry: name, value, config source, config type.
type Described = (String, String, i8, i8);

/// The entries the request asked for (all when it named no keys), or the
/// error that kept the resource from being described.
fn described(
    result: DescribeConfigsResult,
    keys: Option<&Vec<kafka_protocol::protocol::StrBytes>>,
    entries: Result<Vec<Described>, sluice_core::CoreError>,
) -> DescribeConfigsResult {
    match entries {
        Ok(entries) => result.with_configs(
            entries
                .into_iter()
                .filter(|(name, ..)| {
                    keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                })
                .map(|(name, value, source, config_type)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(s(name))
                        .with_value(Some(s(value)))
                        .with_config_source(source)
                        .with_config_type(config_type)
                })
                .collect(),
        ),
        Err(e) => result
            .with_error_code(error_code(&e))
            .with_error_message(Some(s(e.to_string()))),
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
            let name = r.resource_name.as_str();
            let keys = r.configuration_keys.as_ref();
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let entries = ctx.broker.describe_topic_config(name).map(|entries| {
                        entries
                            .into_iter()
                            .map(|e| {
                                let (source, kind) =
                                    (config_source(e.is_override), config_type(e.name));
                                (e.name.to_string(), e.value, source, kind)
                            })
                            .collect()
                    });
                    described(result, keys, entries)
                }
                RESOURCE_GROUP => {
                    let entries = ctx
                        .messaging
                        .group_settings()
                        .describe(name)
                        .map(|entries| {
                            entries
                                .into_iter()
                                .map(|e| {
                                    let source = if e.is_default {
                                        SOURCE_DEFAULT
                                    } else {
                                        SOURCE_GROUP
                                    };
                                    let kind = group_config_type(e.name);
                                    (e.name.to_string(), e.value, source, kind)
                                })
                                .collect()
                        });
                    described(result, keys, entries)
                }
                RESOURCE_BROKER => result,
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(
                        "only topic, group and broker resources are described",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
