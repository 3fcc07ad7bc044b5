//! CreateTopics: creates topics with partition counts and configs.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;
use sluice_core::{CoreError, TopicConfig};
use uuid::Uuid;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

/// Config source of a topic override in responses (DYNAMIC_TOPIC_CONFIG).
const SOURCE_TOPIC: i8 = 1;
/// Config source of a broker default (DEFAULT_CONFIG).
const SOURCE_DEFAULT: i8 = 5;

/// The protocol's config source of an entry.
pub(crate) fn config_source(is_override: bool) -> i8 {
    if is_override {
        SOURCE_TOPIC
    } else {
        SOURCE_DEFAULT
    }
}

pub(crate) fn handle(ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            if !t.assignments.is_empty() {
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("manual replica assignment is not supported")));
            }
            let config = t
                .configs
                .iter()
                .try_fold(TopicConfig::default(), |mut c, e| {
                    if let Some(v) = &e.value {
                        c.set(e.name.as_str(), v.as_str())?;
                    }
                    Ok::<_, CoreError>(c)
                });
            let created = config.and_then(|config| {
                ctx.broker.create_topic(
                    &name,
                    t.num_partitions,
                    t.replication_factor,
                    config,
                    req.validate_only,
                )
            });
            match created {
                Ok(info) => {
                    let configs = ctx
                        .broker
                        .describe_topic_config(&name)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| {
                            CreatableTopicConfigs::default()
                                .with_name(s(e.name))
                                .with_value(Some(s(e.value)))
                                .with_config_source(config_source(e.is_override))
                        })
                        .collect();
                    result
                        .with_topic_id(Uuid::from_bytes(info.id))
                        .with_num_partitions(info.partitions.len() as i32)
                        .with_replication_factor(1)
                        .with_configs(Some(configs))
                }
                Err(e) => result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
