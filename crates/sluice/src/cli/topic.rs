//! `sluice topic ...`: create, list, describe, alter and delete topics.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::client::{check, Client};
use super::configs::{self, RESOURCE_TYPE_TOPIC};
use super::metadata::{self, topic_name, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::output::{join_ids, print_json, print_text, Table};
use super::{parse_key_value, CommonArgs};

/// How long the broker may take to create, delete or grow topics.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// Topic subcommands.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List all topics.
    List,
    /// Show a topic's partitions, offsets and configuration.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Add partitions or change configuration.
    Alter(AlterArgs),
}

/// Arguments of `sluice topic create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Number of replicas of each partition.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// A topic setting, e.g. retention.ms=86400000 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
}

/// Arguments of `sluice topic alter`.
#[derive(Args, Debug)]
pub struct AlterArgs {
    /// Topic name.
    pub name: String,
    /// New total number of partitions (can only grow).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Set a topic setting, e.g. retention.ms=1000 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Revert a topic setting to its default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_config: Vec<String>,
}

/// Runs one topic subcommand.
pub async fn run(common: &CommonArgs, command: TopicCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(&common.bootstrap).await?;
    match command {
        TopicCommand::Create(args) => create(&mut client, common.json, &args).await,
        TopicCommand::List => list(&mut client, common.json).await,
        TopicCommand::Describe { name } => describe(&mut client, common.json, &name).await,
        TopicCommand::Delete { name } => delete(&mut client, common.json, &name).await,
        TopicCommand::Alter(args) => alter(&mut client, common.json, &args).await,
    }
}

async fn create(client: &mut Client, json: bool, args: &CreateArgs) -> anyhow::Result<()> {
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if args.replication_factor < 1 {
        bail!("--replication-factor must be at least 1");
    }
    let configs = args
        .config
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&args.name))
            .with_num_partitions(args.partitions)
            .with_replication_factor(args.replication_factor)
            .with_configs(configs)]);
    let response = client.send(&request).await?;
    let result = response
        .topics
        .iter()
        .find(|t| t.name.as_str() == args.name)
        .ok_or_else(|| anyhow!("the CreateTopics response does not mention {:?}", args.name))?;
    check(result.error_code, result.error_message.as_ref(), || {
        format!("creating topic {:?}", args.name)
    })?;
    if json {
        print_json(&json!({
            "name": args.name,
            "partitions": args.partitions,
            "replication_factor": args.replication_factor,
        }))
    } else {
        print_text(&format!(
            "created topic {} with {} partition(s)\n",
            args.name, args.partitions
        ))
    }
}

async fn list(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let topics = metadata::list_topics(client).await?;
    if json {
        let items: Vec<_> = topics
            .iter()
            .map(|t| json!({"name": t.name, "partitions": t.partitions.len()}))
            .collect();
        print_json(&serde_json::Value::Array(items))
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITIONS"]);
        for topic in &topics {
            table.row(vec![topic.name.clone(), topic.partitions.len().to_string()]);
        }
        table.print()
    }
}

async fn describe(client: &mut Client, json: bool, name: &str) -> anyhow::Result<()> {
    let topic = metadata::describe_topic(client, name).await?;
    let indexes = topic.partition_indexes();
    let starts = metadata::list_offsets(client, name, &indexes, EARLIEST_TIMESTAMP).await?;
    let ends = metadata::list_offsets(client, name, &indexes, LATEST_TIMESTAMP).await?;
    let configs = describe_configs(client, name).await?;

    if json {
        let partitions: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.index,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "log_start_offset": starts.get(&p.index),
                    "log_end_offset": ends.get(&p.index),
                })
            })
            .collect();
        let configs: serde_json::Map<String, serde_json::Value> = configs
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        return print_json(&json!({
            "name": topic.name,
            "partitions": partitions,
            "configs": configs,
        }));
    }

    let mut text = format!("topic {}", topic.name);
    if !topic.id.is_nil() {
        text.push_str(&format!(" (id {})", topic.id));
    }
    text.push_str("\n\n");
    let mut table = Table::new(&[
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG START OFFSET",
        "LOG END OFFSET",
    ]);
    let offset_text = |offsets: &BTreeMap<i32, i64>, p: i32| {
        offsets
            .get(&p)
            .map_or_else(|| "-".to_string(), i64::to_string)
    };
    for p in &topic.partitions {
        table.row(vec![
            p.index.to_string(),
            p.leader.to_string(),
            join_ids(&p.replicas),
            join_ids(&p.isr),
            offset_text(&starts, p.index),
            offset_text(&ends, p.index),
        ]);
    }
    text.push_str(&table.render());
    if !configs.is_empty() {
        text.push('\n');
        let mut table = Table::new(&["CONFIG", "VALUE"]);
        for (key, value) in configs {
            table.row(vec![key, value.unwrap_or_else(|| "(null)".to_string())]);
        }
        text.push_str(&table.render());
    }
    print_text(&text)
}

/// All configuration entries of a topic, sorted by name.
async fn describe_configs(
    client: &mut Client,
    name: &str,
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let what = format!("topic {name:?}");
    let rows = configs::describe(client, RESOURCE_TYPE_TOPIC, name, &what).await?;
    Ok(rows.into_iter().map(|r| (r.name, r.value)).collect())
}

async fn delete(client: &mut Client, json: bool, name: &str) -> anyhow::Result<()> {
    let version = client.version::<DeleteTopicsRequest>()?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    if version >= 6 {
        request = request.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(name)))
        ]);
    } else {
        request = request.with_topic_names(vec![topic_name(name)]);
    }
    let response = client.send_version(&request, version).await?;
    let result = response
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name))
        .or(match response.responses.as_slice() {
            // A v6 broker may answer by id only; with one topic asked, one answer is it.
            [only] => Some(only),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the DeleteTopics response does not mention {name:?}"))?;
    check(result.error_code, result.error_message.as_ref(), || {
        format!("deleting topic {name:?}")
    })?;
    if json {
        print_json(&json!({"name": name, "deleted": true}))
    } else {
        print_text(&format!("deleted topic {name}\n"))
    }
}

async fn alter(client: &mut Client, json: bool, args: &AlterArgs) -> anyhow::Result<()> {
    if args.partitions.is_none() && args.config.is_empty() && args.delete_config.is_empty() {
        bail!("nothing to alter: give --partitions, --config or --delete-config");
    }
    let name = args.name.as_str();
    let mut done = Vec::new();
    if let Some(count) = args.partitions {
        if count < 1 {
            bail!("--partitions must be at least 1");
        }
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)
                .with_assignments(None)]);
        let response = client.send(&request).await?;
        let result = response
            .results
            .iter()
            .find(|r| r.name.as_str() == name)
            .ok_or_else(|| anyhow!("the CreatePartitions response does not mention {name:?}"))?;
        check(result.error_code, result.error_message.as_ref(), || {
            format!("growing topic {name:?} to {count} partitions")
        })?;
        done.push(format!("partitions: {count}"));
    }
    if !args.config.is_empty() || !args.delete_config.is_empty() {
        let what = format!("topic {name:?}");
        configs::alter(
            client,
            RESOURCE_TYPE_TOPIC,
            name,
            &what,
            &args.config,
            &args.delete_config,
        )
        .await?;
        done.extend(args.config.iter().map(|(k, v)| format!("{k}={v}")));
        done.extend(
            args.delete_config
                .iter()
                .map(|k| format!("{k} reset to default")),
        );
    }
    if json {
        let configs: serde_json::Map<String, serde_json::Value> = args
            .config
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        print_json(&json!({
            "name": name,
            "partitions": args.partitions,
            "configs_set": configs,
            "configs_deleted": args.delete_config,
        }))
    } else {
        print_text(&format!("altered topic {name}: {}\n", done.join(", ")))
    }
}
