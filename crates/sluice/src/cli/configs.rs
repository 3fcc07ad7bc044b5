//! Describe and alter the configs of one resource (a topic or a group) over
//! DescribeConfigs and IncrementalAlterConfigs.

use anyhow::Context;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::client::{check, Client};

/// Config resource type of a topic.
pub(super) const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Config resource type of a group, as Kafka 4 numbers it.
pub(super) const RESOURCE_TYPE_GROUP: i8 = 32;
/// DescribeConfigs source of a default value.
pub(super) const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operation: set a value.
const CONFIG_OP_SET: i8 = 0;
/// IncrementalAlterConfigs operation: revert to the default.
const CONFIG_OP_DELETE: i8 = 1;

/// One config entry as the broker describes it.
pub(super) struct ConfigRow {
    pub name: String,
    pub value: Option<String>,
    /// Where the value comes from (DescribeConfigs config source).
    pub source: i8,
}

/// Every config entry of a resource, in the broker's order. `what` names the
/// resource in errors ("topic \"t\"").
pub(super) async fn describe(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    what: &str,
) -> anyhow::Result<Vec<ConfigRow>> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let response = client.send(&request).await?;
    let result = response
        .results
        .iter()
        .find(|r| r.resource_name.as_str() == name)
        .with_context(|| format!("the DescribeConfigs response does not mention {name:?}"))?;
    check(result.error_code, result.error_message.as_ref(), || {
        format!("describing configs of {what}")
    })?;
    Ok(result
        .configs
        .iter()
        .map(|c| ConfigRow {
            name: c.name.as_str().to_string(),
            value: c.value.as_ref().map(|v| v.as_str().to_string()),
            source: c.config_source,
        })
        .collect())
}

/// Sets and deletes (reverts to default) config entries of a resource in one
/// request, which the broker applies all or nothing.
pub(super) async fn alter(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    what: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<()> {
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_config_operation(CONFIG_OP_SET)
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    configs.extend(delete.iter().map(|key| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(key.clone()))
            .with_config_operation(CONFIG_OP_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let response = client.send(&request).await?;
    let result = response
        .responses
        .iter()
        .find(|r| r.resource_name.as_str() == name)
        .with_context(|| {
            format!("the IncrementalAlterConfigs response does not mention {name:?}")
        })?;
    check(result.error_code, result.error_message.as_ref(), || {
        format!("altering configs of {what}")
    })
}
