//! `sluice dlq`: inspect and re-send messages that consumer groups gave up on.
//!
//! A group's dead-letter topic is `%DLQ%<group>` (one partition). Each message keeps
//! its body, key, properties and id, plus `sluice-dlq-origin-topic`,
//! `-partition`, `-offset` and `sluice-dlq-attempts` headers saying where it came from.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Subcommand;
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProduceRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};

use super::client::{check, Client};
use super::consume::{decode_batch, split_batches};
use super::metadata::{self, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::CommonArgs;

const DLQ_PREFIX: &str = "%DLQ%";
const HEADER_PREFIX: &str = "sluice-dlq-";
/// Longest a fetch waits for data that is not there.
const FETCH_WAIT_MS: u64 = 200;

/// What to do with dead letters.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead-letter topics and how many messages each holds.
    List,
    /// Print a group's dead-lettered messages, oldest first.
    Show {
        /// Consumer group.
        group: String,
        /// First offset to show [default: the earliest kept].
        #[arg(long)]
        from: Option<i64>,
        /// Most messages to show.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Send one dead-lettered message back to the topic it came from (or another),
    /// without the dead-letter headers; consumers get it as a new message.
    Resend {
        /// Consumer group.
        group: String,
        /// Offset of the message in the dead-letter topic.
        #[arg(long)]
        offset: i64,
        /// Topic to send it to [default: the one it came from].
        #[arg(long)]
        to: Option<String>,
    },
}

/// Runs one `dlq` subcommand.
pub async fn run(common: &CommonArgs, command: DlqCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(&common.bootstrap).await?;
    match command {
        DlqCommand::List => list(&mut client, common.json).await,
        DlqCommand::Show { group, from, max } => {
            let topic = format!("{DLQ_PREFIX}{group}");
            let from = match from {
                Some(f) => f,
                None => *metadata::list_offsets(&mut client, &topic, &[0], EARLIEST_TIMESTAMP)
                    .await?
                    .get(&0)
                    .unwrap_or(&0),
            };
            let records = read(&mut client, &topic, from, max).await?;
            for r in &records {
                let line = describe(r);
                if common.json {
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    let text: Vec<String> = line
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))
                        })
                        .collect();
                    println!("{}", text.join(" "));
                }
            }
            if records.is_empty() && !common.json {
                eprintln!("no dead-lettered messages in {topic} from offset {from}");
            }
            Ok(())
        }
        DlqCommand::Resend { group, offset, to } => {
            let topic = format!("{DLQ_PREFIX}{group}");
            let record = read(&mut client, &topic, offset, 1)
                .await?
                .into_iter()
                .find(|r| r.offset == offset)
                .with_context(|| format!("{topic} has no message at offset {offset}"))?;
            let origin = header(&record, "sluice-dlq-origin-topic");
            let target = to
                .or(origin)
                .context("the message names no origin topic; give --to")?;
            let info = metadata::describe_topic(&mut client, &target).await?;
            let wanted = header(&record, "sluice-dlq-origin-partition")
                .and_then(|p| p.parse::<i32>().ok())
                .unwrap_or(0);
            let partition = if info.partitions.iter().any(|p| p.index == wanted) {
                wanted
            } else {
                0
            };
            let mut copy = record.clone();
            copy.headers.retain(|k, _| !k.starts_with(HEADER_PREFIX));
            copy.offset = 0;
            copy.sequence = -1;
            copy.producer_id = -1;
            copy.producer_epoch = -1;
            copy.transactional = false;
            copy.timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let batches = BTreeMap::from([(partition, vec![copy])]);
            let (request, _) =
                super::produce::produce_request(&target, info.id, -1, Compression::None, &batches)?;
            let response = client.send::<ProduceRequest>(&request).await?;
            for t in &response.responses {
                for p in &t.partition_responses {
                    check(p.error_code, p.error_message.as_ref(), || {
                        format!("producing to {target}/{}", p.index)
                    })?;
                    if common.json {
                        println!(
                            "{}",
                            serde_json::json!({"topic": target, "partition": p.index, "offset": p.base_offset})
                        );
                    } else {
                        println!(
                            "re-sent {topic}@{offset} to {target}/{} at offset {}",
                            p.index, p.base_offset
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

async fn list(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for t in metadata::list_topics(client).await? {
        let Some(group) = t.name.strip_prefix(DLQ_PREFIX) else {
            continue;
        };
        let parts: Vec<i32> = t.partitions.iter().map(|p| p.index).collect();
        let start = metadata::list_offsets(client, &t.name, &parts, EARLIEST_TIMESTAMP).await?;
        let end = metadata::list_offsets(client, &t.name, &parts, LATEST_TIMESTAMP).await?;
        let messages: i64 = parts
            .iter()
            .map(|p| end.get(p).unwrap_or(&0) - start.get(p).unwrap_or(&0))
            .sum();
        rows.push((group.to_string(), t.name.clone(), messages));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(g, t, n)| serde_json::json!({"group": g, "topic": t, "messages": n}))
            .collect();
        println!("{}", serde_json::to_string(&list)?);
    } else {
        println!("{:<30} {:<36} {:>10}", "GROUP", "TOPIC", "MESSAGES");
        for (g, t, n) in rows {
            println!("{g:<30} {t:<36} {n:>10}");
        }
    }
    Ok(())
}

/// Up to `max` records of partition 0 of `topic`, from `from` to the current end.
async fn read(
    client: &mut Client,
    topic: &str,
    from: i64,
    max: usize,
) -> anyhow::Result<Vec<Record>> {
    let info = metadata::describe_topic(client, topic).await?;
    let end = *metadata::list_offsets(client, topic, &[0], LATEST_TIMESTAMP)
        .await?
        .get(&0)
        .unwrap_or(&0);
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end && out.len() < max {
        let positions = BTreeMap::from([(0, offset)]);
        let request =
            super::consume::simple_fetch_request(topic, info.id, &positions, FETCH_WAIT_MS);
        let version = client.version::<FetchRequest>()?;
        let pending = client.write_request(&request, version).await?;
        let response: FetchResponse = client
            .read_response::<FetchRequest>(pending, Duration::from_millis(FETCH_WAIT_MS))
            .await?;
        check(response.error_code, None, || format!("fetching {topic}"))?;
        let before = offset;
        for t in &response.responses {
            for p in &t.partitions {
                check(p.error_code, None, || format!("fetching {topic}/0"))?;
                let Some(records) = p.records.as_ref() else {
                    continue;
                };
                for batch in split_batches(records)? {
                    for r in decode_batch(&batch, offset)? {
                        if out.len() < max {
                            offset = r.offset + 1;
                            out.push(r);
                        }
                    }
                    offset = offset.max(batch.last_offset + 1).min(end);
                }
            }
        }
        if offset == before {
            bail!("no progress reading {topic} at offset {offset}");
        }
    }
    Ok(out)
}

fn header(r: &Record, name: &str) -> Option<String> {
    r.headers
        .get(&StrBytes::from_string(name.to_string()))
        .and_then(|v| v.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// One dead letter as JSON: where it is, where it came from, and what it holds.
fn describe(r: &Record) -> serde_json::Value {
    let text = |b: &Option<Bytes>| b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
    let mut properties = serde_json::Map::new();
    let mut keys = Vec::new();
    for (k, v) in &r.headers {
        let value = text(v).unwrap_or_default();
        match k.as_str() {
            "sluice-key" => keys.push(value),
            name if name.starts_with("sluice-") => {}
            name => {
                properties.insert(name.to_string(), serde_json::Value::String(value));
            }
        }
    }
    serde_json::json!({
        "offset": r.offset,
        "message_id": header(r, "sluice-message-id"),
        "origin_topic": header(r, "sluice-dlq-origin-topic"),
        "origin_partition": header(r, "sluice-dlq-origin-partition"),
        "origin_offset": header(r, "sluice-dlq-origin-offset"),
        "attempts": header(r, "sluice-dlq-attempts"),
        "tag": header(r, "sluice-tag"),
        "keys": keys,
        "properties": properties,
        "body": text(&r.value),
    })
}
