//! `sluice group ...`: list, describe (with lag), delete groups, reset their
//! committed offsets, and show or change their settings (consume mode, retry
//! policy) over DescribeConfigs / IncrementalAlterConfigs on GROUP resources.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::client::{check, Client};
use super::configs::{self, CONFIG_SOURCE_DEFAULT, RESOURCE_TYPE_GROUP};
use super::metadata::{self, topic_name, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::output::{print_json, print_text, Table};
use super::{parse_key_value, CommonArgs};

/// Group subcommands.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members, and per partition its committed offset,
    /// log end offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete a group and its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets on one topic (refused while the group has
    /// active members).
    ResetOffsets(ResetArgs),
    /// Show a group's settings, or change them with --set / --delete: consume.mode
    /// (clustering|broadcast), max.delivery.attempts, retry.policy
    /// (customized|exponential), retry.backoff.ms, retry.initial.backoff.ms,
    /// retry.max.backoff.ms, retry.backoff.multiplier.
    Config(ConfigArgs),
}

/// Arguments of `sluice group config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Group id.
    pub group: String,
    /// Set a group setting, e.g. consume.mode=broadcast (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Revert a group setting to its default (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
}

/// Arguments of `sluice group reset-offsets`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_datetime", "shift_by", "to_offset"])))]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose partitions are reset (all of them).
    #[arg(long)]
    pub topic: String,
    /// To the first offset still stored.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end (skip everything now stored).
    #[arg(long)]
    pub to_latest: bool,
    /// To the first record at or after this time: epoch milliseconds or
    /// YYYY-MM-DDTHH:MM:SS[.mmm] (UTC).
    #[arg(long)]
    pub to_datetime: Option<String>,
    /// Move each committed offset by N (negative goes back), kept in range.
    #[arg(long, allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// To this offset, kept in range.
    #[arg(long)]
    pub to_offset: Option<i64>,
}

/// Runs one group subcommand.
pub async fn run(common: &CommonArgs, command: GroupCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(&common.bootstrap).await?;
    match command {
        GroupCommand::List => list(&mut client, common.json).await,
        GroupCommand::Describe { group } => describe(&mut client, common.json, &group).await,
        GroupCommand::Delete { group } => delete(&mut client, common.json, &group).await,
        GroupCommand::ResetOffsets(args) => reset(&mut client, common.json, &args).await,
        GroupCommand::Config(args) => config(&mut client, common.json, &args).await,
    }
}

/// One group setting as the broker describes it.
struct SettingRow {
    name: String,
    value: String,
    is_default: bool,
}

/// Every setting of a group, in the broker's order.
async fn group_settings(client: &mut Client, group: &str) -> anyhow::Result<Vec<SettingRow>> {
    let what = format!("group {group:?}");
    let rows = configs::describe(client, RESOURCE_TYPE_GROUP, group, &what).await?;
    Ok(rows
        .into_iter()
        .map(|c| SettingRow {
            name: c.name,
            value: c.value.unwrap_or_default(),
            is_default: c.source == CONFIG_SOURCE_DEFAULT,
        })
        .collect())
}

/// Applies --set / --delete (all or nothing, on the broker), then shows the
/// settings in force.
async fn config(client: &mut Client, json: bool, args: &ConfigArgs) -> anyhow::Result<()> {
    let group = args.group.as_str();
    let altering = !args.set.is_empty() || !args.delete.is_empty();
    if altering {
        let what = format!("group {group:?}");
        configs::alter(
            client,
            RESOURCE_TYPE_GROUP,
            group,
            &what,
            &args.set,
            &args.delete,
        )
        .await?;
    }
    let settings = group_settings(client, group).await?;
    if json {
        let configs: Vec<_> = settings
            .iter()
            .map(|r| json!({"name": r.name, "value": r.value, "default": r.is_default}))
            .collect();
        let mut out = json!({"group": group, "configs": configs});
        if altering {
            let set: serde_json::Map<String, serde_json::Value> = args
                .set
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            out["configs_set"] = serde_json::Value::Object(set);
            out["configs_deleted"] = json!(args.delete);
        }
        return print_json(&out);
    }
    let mut text = String::new();
    if altering {
        let mut done: Vec<String> = args.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        done.extend(args.delete.iter().map(|k| format!("{k} reset to default")));
        text.push_str(&format!("altered group {group}: {}\n\n", done.join(", ")));
    }
    let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
    for r in settings {
        let source = if r.is_default { "default" } else { "group" };
        table.row(vec![r.name, r.value, source.to_string()]);
    }
    text.push_str(&table.render());
    print_text(&text)
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

async fn list(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let response = client.send(&ListGroupsRequest::default()).await?;
    check(response.error_code, None, || "ListGroups".to_string())?;
    let mut groups: Vec<(String, String, String)> = response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    groups.sort();
    if json {
        return print_json(&json!(groups
            .iter()
            .map(|(g, s, p)| json!({"group": g, "state": s, "protocol_type": p}))
            .collect::<Vec<_>>()));
    }
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL TYPE"]);
    for (g, s, p) in groups {
        table.row(vec![g, s, p]);
    }
    table.print()
}

/// One member as `group describe` shows it.
struct MemberRow {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    /// "topic-partition" names read from the consumer-protocol assignment.
    partitions: Vec<String>,
}

/// Partitions of a consumer-protocol assignment (version int16, then the struct);
/// empty for other protocols.
fn assigned_partitions(bytes: &[u8]) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]).clamp(0, 3);
    let mut body = &bytes[2..];
    ConsumerProtocolAssignment::decode(&mut body, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", tp.topic.as_str()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (state, protocol type, protocol, members).
async fn group_state(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<(String, String, String, Vec<MemberRow>)> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.send(&request).await?;
    let described = response
        .groups
        .into_iter()
        .next()
        .context("the DescribeGroups response is empty")?;
    check(
        described.error_code,
        described.error_message.as_ref(),
        || format!("group {group:?}"),
    )?;
    let members = described
        .members
        .iter()
        .map(|m| MemberRow {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            partitions: assigned_partitions(&m.member_assignment),
        })
        .collect();
    Ok((
        described.group_state.to_string(),
        described.protocol_type.to_string(),
        described.protocol_data.to_string(),
        members,
    ))
}

/// Committed offsets of every partition of the group: (topic, partition) -> offset.
async fn committed(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    // No topic list: every partition the group has committed (v2+).
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(None);
    let response = client.send(&request).await?;
    check(response.error_code, None, || {
        format!("OffsetFetch of {group:?}")
    })?;
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            check(p.error_code, None, || {
                format!("OffsetFetch of {}/{}", t.name.as_str(), p.partition_index)
            })?;
            out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
        }
    }
    Ok(out)
}

async fn describe(client: &mut Client, json: bool, group: &str) -> anyhow::Result<()> {
    let (state, protocol_type, protocol, members) = group_state(client, group).await?;
    let committed = committed(client, group).await?;
    let mut rows = Vec::new();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in committed.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    for (topic, partitions) in &by_topic {
        let ends = metadata::list_offsets(client, topic, partitions, LATEST_TIMESTAMP)
            .await
            .unwrap_or_default();
        for p in partitions {
            let offset = committed[&(topic.clone(), *p)];
            let end = ends.get(p).copied().unwrap_or(-1);
            let lag = if end >= 0 && offset >= 0 {
                (end - offset).max(0)
            } else {
                0
            };
            rows.push((topic.clone(), *p, offset, end, lag));
        }
    }
    if json {
        return print_json(&json!({
            "group": group,
            "state": state,
            "protocol_type": protocol_type,
            "protocol": protocol,
            "members": members.iter().map(|m| json!({
                "member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id,
                "host": m.host, "partitions": m.partitions,
            })).collect::<Vec<_>>(),
            "partitions": rows.iter().map(|(t, p, o, e, l)| json!({
                "topic": t, "partition": p, "committed_offset": o, "log_end_offset": e, "lag": l
            })).collect::<Vec<_>>(),
            "lag": rows.iter().map(|r| r.4).sum::<i64>(),
        }));
    }
    print_text(&format!(
        "Group {group}: state {state}, protocol {}, {} member(s), total lag {}\n",
        if protocol.is_empty() {
            protocol_type.as_str()
        } else {
            protocol.as_str()
        },
        members.len(),
        rows.iter().map(|r| r.4).sum::<i64>()
    ))?;
    if !members.is_empty() {
        let mut table = Table::new(&["MEMBER", "INSTANCE", "CLIENT ID", "HOST", "PARTITIONS"]);
        for m in members {
            table.row(vec![
                m.member_id,
                m.instance_id.unwrap_or_else(|| "-".into()),
                m.client_id,
                m.host,
                m.partitions.join(","),
            ]);
        }
        table.print()?;
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG"]);
    for (t, p, o, e, l) in rows {
        table.row(vec![
            t,
            p.to_string(),
            o.to_string(),
            e.to_string(),
            l.to_string(),
        ]);
    }
    table.print()
}

async fn delete(client: &mut Client, json: bool, group: &str) -> anyhow::Result<()> {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let response = client.send(&request).await?;
    for r in &response.results {
        check(r.error_code, None, || format!("deleting group {group:?}"))?;
    }
    if json {
        return print_json(&json!({"deleted": group}));
    }
    print_text(&format!("Deleted group {group}\n"))
}

async fn reset(client: &mut Client, json: bool, args: &ResetArgs) -> anyhow::Result<()> {
    let (state, _, _, members) = group_state(client, &args.group).await?;
    if !members.is_empty() || !(state == "Empty" || state == "Dead") {
        bail!(
            "group {:?} is {state} with {} member(s); stop its consumers before resetting offsets",
            args.group,
            members.len()
        );
    }
    let topic = metadata::describe_topic(client, &args.topic).await?;
    let partitions = topic.partition_indexes();
    let earliest =
        metadata::list_offsets(client, &args.topic, &partitions, EARLIEST_TIMESTAMP).await?;
    let latest = metadata::list_offsets(client, &args.topic, &partitions, LATEST_TIMESTAMP).await?;
    let current = committed(client, &args.group).await?;
    let at_time = match &args.to_datetime {
        Some(text) => {
            let ms = parse_datetime_ms(text)?;
            Some(metadata::list_offsets(client, &args.topic, &partitions, ms).await?)
        }
        None => None,
    };
    let mut targets = BTreeMap::new();
    for p in &partitions {
        let (lo, hi) = (earliest[p], latest[p]);
        let now = current
            .get(&(args.topic.clone(), *p))
            .copied()
            .filter(|o| *o >= 0)
            .unwrap_or(lo);
        let target = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(found) = &at_time {
            // No record at or after the time: the log end.
            found.get(p).copied().filter(|o| *o >= 0).unwrap_or(hi)
        } else if let Some(n) = args.shift_by {
            now.saturating_add(n)
        } else {
            args.to_offset.unwrap_or(lo)
        };
        targets.insert(*p, target.clamp(lo, hi));
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(&args.group))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(&args.topic))
            .with_partitions(
                targets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )]);
    let response = client.send(&request).await?;
    for t in &response.topics {
        for p in &t.partitions {
            check(p.error_code, None, || {
                format!("committing {}/{}", args.topic, p.partition_index)
            })?;
        }
    }
    if json {
        return print_json(&json!({
            "group": args.group,
            "topic": args.topic,
            "offsets": targets.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>(),
        }));
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "NEW OFFSET"]);
    for (p, o) in targets {
        table.row(vec![args.topic.clone(), p.to_string(), o.to_string()]);
    }
    table.print()
}

/// Epoch milliseconds, or `YYYY-MM-DDTHH:MM:SS[.mmm][Z]` read as UTC.
fn parse_datetime_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || anyhow::anyhow!("{text:?} is not epoch ms or YYYY-MM-DDTHH:MM:SS[.mmm] (UTC)");
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => (
            hms,
            format!("{frac:0<3}")[..3]
                .parse::<i64>()
                .map_err(|_| bad())?,
        ),
        None => (time, 0),
    };
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        return Err(bad());
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's method.
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_takes_repeated_sets_and_deletes() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(subcommand)]
            command: GroupCommand,
        }
        let t = T::try_parse_from([
            "group",
            "config",
            "G",
            "--set",
            "consume.mode=broadcast",
            "--set",
            "retry.backoff.ms=1000,2000",
            "--delete",
            "retry.policy",
        ])
        .unwrap();
        let GroupCommand::Config(args) = t.command else {
            panic!("not config");
        };
        assert_eq!(args.group, "G");
        assert_eq!(
            args.set,
            [
                ("consume.mode".to_string(), "broadcast".to_string()),
                ("retry.backoff.ms".to_string(), "1000,2000".to_string())
            ]
        );
        assert_eq!(args.delete, ["retry.policy"]);
        assert!(T::try_parse_from(["group", "config", "G", "--set", "novalue"]).is_err());
    }

    #[test]
    fn datetimes_parse_as_utc_epoch_millis() {
        assert_eq!(parse_datetime_ms("0").unwrap(), 0);
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_datetime_ms("2000-03-01T00:00:00").unwrap(),
            951_868_800_000
        );
        assert_eq!(
            parse_datetime_ms("2026-11-21T14:12:46.5").unwrap(),
            1_795_270_366_500
        );
        assert!(parse_datetime_ms("yesterday").is_err());
        assert!(parse_datetime_ms("2026-13-01T00:00:00").is_err());
    }
}
