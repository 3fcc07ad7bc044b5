//! `sluice consume TOPIC`: fetches records from a topic's partitions and prints them.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use serde::Serialize;
use std::borrow::Cow;

use super::client::{check, error_name, is_retriable, Client};
use super::group_member::GroupMember;
use super::metadata::{self, topic_name, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::template::{RecordView, Template};
use super::CommonArgs;

/// Longest the broker may hold a Fetch waiting for data.
const FETCH_WAIT_MS_MAX: u64 = 500;
/// Upper bound on one Fetch response.
const FETCH_BYTES_MAX: i32 = 16 * 1024 * 1024;
/// Starting per-partition byte limit; grows when a batch does not fit.
const PARTITION_FETCH_BYTES: i32 = 1024 * 1024;
/// Consecutive retriable errors tolerated before giving up.
const RETRIES_MAX: u32 = 50;
/// Pause before retrying after a retriable error.
const RETRY_BACKOFF_MS: u64 = 200;

/// Size of a v2 record batch header, up to and including the record count.
const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before a batch's length field has been counted: base offset and length.
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

/// Arguments of `sluice consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to read.
    pub topic: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at this offset (in every partition read).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// Consume as a member of this consumer group: the broker assigns partitions
    /// (shared with the group's other members), reading starts at the group's
    /// committed offsets, and progress is committed after each printed batch.
    /// Partitions without a committed offset start at the end, or at the
    /// beginning with --from-beginning.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// Stop after printing this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no new record arrives for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Output template: %k key, %v value, %o offset, %p partition, %t timestamp (ms),
    /// %h headers, %T topic, \n and \t escapes. Default: the value, one per line.
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
}

/// A complete v2 record batch cut from a fetched byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    /// Offset of the batch's last record (base offset + last offset delta).
    pub last_offset: i64,
    /// The batch's bytes, from its base offset field on.
    pub bytes: Bytes,
}

/// Cuts `data` into complete record batches; a trailing partial batch (which brokers send
/// when a size limit cuts it) is left out.
pub fn split_batches(data: &Bytes) -> anyhow::Result<Vec<RawBatch>> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= BATCH_LOG_OVERHEAD_BYTES {
        let header = &data[at..];
        let base_offset = i64::from_be_bytes(header[0..8].try_into()?);
        let length = i32::from_be_bytes(header[8..12].try_into()?);
        let length = usize::try_from(length)
            .map_err(|_| anyhow!("record batch at offset {base_offset} has length {length}"))?;
        let total = BATCH_LOG_OVERHEAD_BYTES + length;
        if total > header.len() {
            break;
        }
        if total < BATCH_HEADER_BYTES {
            bail!("record batch at offset {base_offset} is {total} bytes, shorter than a header");
        }
        let magic = header[16] as i8;
        if magic != 2 {
            bail!("record batch at offset {base_offset} has magic {magic}; only v2 is supported");
        }
        let last_offset_delta = i32::from_be_bytes(header[23..27].try_into()?);
        batches.push(RawBatch {
            last_offset: base_offset + i64::from(last_offset_delta),
            bytes: data.slice(at..at + total),
        });
        at += total;
    }
    Ok(batches)
}

/// Decodes one batch and returns its data records at or above `from_offset`; control records
/// (transaction markers) are dropped.
pub fn decode_batch(batch: &RawBatch, from_offset: i64) -> anyhow::Result<Vec<Record>> {
    let mut bytes = batch.bytes.clone();
    let set = RecordBatchDecoder::decode(&mut bytes).context("decoding a record batch")?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control && r.offset >= from_offset)
        .collect())
}

/// How records are printed.
enum Printer {
    Json,
    Template(Template),
}

impl Printer {
    fn write(&self, view: &RecordView<'_>, out: &mut Vec<u8>) -> anyhow::Result<()> {
        match self {
            Printer::Template(template) => template.render(view, out),
            Printer::Json => {
                serde_json::to_writer(&mut *out, &RecordJson::new(view))?;
                out.push(b'\n');
            }
        }
        Ok(())
    }
}

/// The JSON form of one record: `{"topic","partition","offset","timestamp","key","value",
/// "headers"}`, with key, value and header values as lossy UTF-8 strings (null when null).
#[derive(Serialize)]
pub struct RecordJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: HeadersJson<'a>,
}

/// Record headers as a JSON object.
pub struct HeadersJson<'a>(&'a IndexMap<StrBytes, Option<Bytes>>);

impl Serialize for HeadersJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref().map(String::from_utf8_lossy))),
        )
    }
}

impl<'a> RecordJson<'a> {
    /// The JSON form of `view`.
    pub fn new(view: &RecordView<'a>) -> Self {
        RecordJson {
            topic: view.topic,
            partition: view.partition,
            offset: view.offset,
            timestamp: view.timestamp_ms,
            key: view.key.map(|k| String::from_utf8_lossy(k)),
            value: view.value.map(|v| String::from_utf8_lossy(v)),
            headers: HeadersJson(view.headers),
        }
    }
}

/// Per-partition fetch state.
#[derive(Debug, Clone, Copy)]
struct Position {
    offset: i64,
    partition_bytes_max: i32,
}

/// Where partitions newly assigned to a group member start.
async fn group_start(
    client: &mut Client,
    member: &GroupMember,
    topic: &str,
    partitions: &[i32],
    from_beginning: bool,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let committed = member.committed(client, partitions).await?;
    let missing: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| committed.get(p).is_none_or(|o| *o < 0))
        .collect();
    let timestamp = if from_beginning {
        EARLIEST_TIMESTAMP
    } else {
        LATEST_TIMESTAMP
    };
    let mut start = if missing.is_empty() {
        BTreeMap::new()
    } else {
        metadata::list_offsets(client, topic, &missing, timestamp).await?
    };
    for (p, o) in committed {
        if o >= 0 {
            start.insert(p, o);
        }
    }
    Ok(start)
}

/// Runs `sluice consume`.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.common.bootstrap).await?;
    let topic = metadata::describe_topic(&mut client, &args.topic).await?;
    let mut member = args
        .group
        .as_deref()
        .map(|g| GroupMember::new(g, &args.topic, topic.id));
    // Next offset to commit per partition, and what was last committed.
    let mut committed_at: BTreeMap<i32, i64> = BTreeMap::new();
    let partitions: Vec<i32> = match args.partition {
        Some(p) => {
            if !topic.partitions.iter().any(|info| info.index == p) {
                bail!(
                    "topic {} has no partition {p} (it has {})",
                    args.topic,
                    topic.partitions.len()
                );
            }
            vec![p]
        }
        None => topic.partition_indexes(),
    };
    let start: BTreeMap<i32, i64> = match args.offset {
        Some(offset) => partitions.iter().map(|&p| (p, offset)).collect(),
        // A group member reads only what the broker assigns it.
        None if member.is_some() => BTreeMap::new(),
        None => {
            let timestamp = if args.from_beginning {
                EARLIEST_TIMESTAMP
            } else {
                LATEST_TIMESTAMP
            };
            metadata::list_offsets(&mut client, &args.topic, &partitions, timestamp).await?
        }
    };
    let mut positions: BTreeMap<i32, Position> = start
        .into_iter()
        .map(|(p, offset)| {
            (
                p,
                Position {
                    offset,
                    partition_bytes_max: PARTITION_FETCH_BYTES,
                },
            )
        })
        .collect();

    let mut version = client.version::<FetchRequest>()?;
    if version >= 13 && topic.id.is_nil() {
        // v13+ names topics by id only; without one, stay on v12, which names them.
        version = 12;
    }
    let printer = if args.common.json {
        Printer::Json
    } else {
        Printer::Template(Template::parse(args.format.as_deref().unwrap_or("%v\\n")))
    };
    let wait_ms = args
        .timeout_ms
        .map_or(FETCH_WAIT_MS_MAX, |t| t.clamp(1, FETCH_WAIT_MS_MAX));
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_data_at = Instant::now();
    let mut printed: u64 = 0;
    let mut retries: u32 = 0;
    let mut out = Vec::with_capacity(64 * 1024);
    let stdout = std::io::stdout();

    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if idle_limit.is_some_and(|limit| last_data_at.elapsed() >= limit) {
            break;
        }
        if let Some(m) = member.as_mut().filter(|m| m.due()) {
            let change = m.heartbeat(&mut client).await?;
            if !change.removed.is_empty() {
                // Commit what we read of revoked partitions before letting them go.
                let done: BTreeMap<i32, i64> = change
                    .removed
                    .iter()
                    .filter_map(|p| Some((*p, positions.get(p)?.offset)))
                    .filter(|(p, o)| committed_at.get(p) != Some(o))
                    .collect();
                if let Err(e) = m.commit(&mut client, &done).await {
                    eprintln!("{e:#}");
                }
                for p in &change.removed {
                    positions.remove(p);
                    committed_at.remove(p);
                }
            }
            if !change.added.is_empty() {
                let start = group_start(
                    &mut client,
                    m,
                    &args.topic,
                    &change.added,
                    args.from_beginning,
                )
                .await?;
                for (p, offset) in start {
                    committed_at.insert(p, offset);
                    positions.insert(
                        p,
                        Position {
                            offset,
                            partition_bytes_max: PARTITION_FETCH_BYTES,
                        },
                    );
                }
            }
        }
        if positions.is_empty() {
            // Nothing assigned (yet): wait for the next heartbeat.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let request = fetch_request(&args.topic, topic.id, &positions, wait_ms);
        let pending = client.write_request(&request, version).await?;
        let response: FetchResponse = client
            .read_response::<FetchRequest>(pending, Duration::from_millis(wait_ms))
            .await?;
        if response.error_code != 0 {
            if is_retriable(response.error_code) && retries < RETRIES_MAX {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                continue;
            }
            check(response.error_code, None, || "Fetch".to_string())?;
        }

        let mut got_data = false;
        let mut had_retriable = false;
        'partitions: for topic_response in &response.responses {
            for data in &topic_response.partitions {
                let partition = data.partition_index;
                let Some(position) = positions.get_mut(&partition) else {
                    continue;
                };
                if data.error_code == ResponseError::OffsetOutOfRange.code() {
                    let earliest = metadata::list_offsets(
                        &mut client,
                        &args.topic,
                        &[partition],
                        EARLIEST_TIMESTAMP,
                    )
                    .await?;
                    let reset_to = earliest.get(&partition).copied().unwrap_or(0);
                    eprintln!(
                        "partition {partition}: offset {} is out of range; resetting to the earliest offset {reset_to}",
                        position.offset
                    );
                    position.offset = reset_to;
                    continue;
                }
                if data.error_code != 0 {
                    if is_retriable(data.error_code) && retries < RETRIES_MAX {
                        tracing::debug!(
                            "partition {partition}: {}; retrying",
                            error_name(data.error_code)
                        );
                        had_retriable = true;
                        continue;
                    }
                    check(data.error_code, None, || {
                        format!("fetching {}/{partition}", args.topic)
                    })?;
                }
                let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let batches = split_batches(records)?;
                if batches.is_empty() {
                    // Only a partial batch came back: it is larger than our limit.
                    position.partition_bytes_max = position
                        .partition_bytes_max
                        .saturating_mul(2)
                        .min(FETCH_BYTES_MAX);
                    continue;
                }
                for batch in &batches {
                    if batch.last_offset < position.offset {
                        continue;
                    }
                    for record in decode_batch(batch, position.offset)? {
                        let view = RecordView {
                            topic: &args.topic,
                            partition,
                            offset: record.offset,
                            timestamp_ms: record.timestamp,
                            key: record.key.as_ref(),
                            value: record.value.as_ref(),
                            headers: &record.headers,
                        };
                        printer.write(&view, &mut out)?;
                        printed += 1;
                        position.offset = record.offset + 1;
                        got_data = true;
                        if args.max_messages.is_some_and(|max| printed >= max) {
                            break 'partitions;
                        }
                    }
                    position.offset = batch.last_offset + 1;
                }
            }
        }
        if had_retriable {
            retries += 1;
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        } else {
            retries = 0;
        }
        if got_data {
            last_data_at = Instant::now();
        }
        if !out.is_empty() {
            let mut lock = stdout.lock();
            let written = lock.write_all(&out).and_then(|()| lock.flush());
            out.clear();
            match written {
                Ok(()) => {}
                // The reader went away (`| head`): stop quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e).context("writing to stdout"),
            }
            if let Some(m) = &member {
                // Printed means delivered: commit it.
                let progress = progress(&positions, &committed_at);
                match m.commit(&mut client, &progress).await {
                    Ok(()) => committed_at.extend(progress),
                    // Fenced or rebalancing: the next heartbeat sorts membership
                    // out; uncommitted records may be delivered again.
                    Err(e) => eprintln!("{e:#}"),
                }
            }
        }
    }
    if let Some(m) = member.as_mut() {
        let progress = progress(&positions, &committed_at);
        m.commit(&mut client, &progress).await?;
        m.leave(&mut client).await?;
    }
    Ok(())
}

/// Positions that moved since they were last committed.
fn progress(
    positions: &BTreeMap<i32, Position>,
    committed: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    positions
        .iter()
        .filter(|(p, pos)| committed.get(p) != Some(&pos.offset))
        .map(|(p, pos)| (*p, pos.offset))
        .collect()
}

/// A fetch of the given partitions from the given offsets, with the default limits.
pub fn simple_fetch_request(
    topic: &str,
    topic_id: uuid::Uuid,
    offsets: &BTreeMap<i32, i64>,
    wait_ms: u64,
) -> FetchRequest {
    let positions = offsets
        .iter()
        .map(|(p, o)| {
            (
                *p,
                Position {
                    offset: *o,
                    partition_bytes_max: PARTITION_FETCH_BYTES,
                },
            )
        })
        .collect();
    fetch_request(topic, topic_id, &positions, wait_ms)
}

fn fetch_request(
    topic: &str,
    topic_id: uuid::Uuid,
    positions: &BTreeMap<i32, Position>,
    wait_ms: u64,
) -> FetchRequest {
    let partitions = positions
        .iter()
        .map(|(&partition, position)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(position.offset)
                .with_partition_max_bytes(position.partition_bytes_max)
        })
        .collect();
    FetchRequest::default()
        .with_max_wait_ms(wait_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_topic_id(topic_id)
            .with_partitions(partitions)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use serde_json::json;

    fn encode_batch(base_offset: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base_offset + i as i64,
                sequence: (base_offset + i as i64) as i32 - 1,
                timestamp: 5,
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf.freeze()
    }

    #[test]
    fn split_batches_drops_a_trailing_partial_batch() {
        let mut data = BytesMut::new();
        data.extend_from_slice(&encode_batch(10, &["a", "b", "c"]));
        data.extend_from_slice(&encode_batch(13, &["d"]));
        let second_len = encode_batch(14, &["e", "f"]).len();
        data.extend_from_slice(&encode_batch(14, &["e", "f"])[..second_len - 5]);
        let batches = split_batches(&data.freeze()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].last_offset, 12);
        assert_eq!(batches[1].last_offset, 13);
    }

    #[test]
    fn decode_batch_skips_records_below_the_start_offset() {
        let data = encode_batch(100, &["a", "b", "c", "d"]);
        let batches = split_batches(&data).unwrap();
        let records = decode_batch(&batches[0], 102).unwrap();
        let values: Vec<_> = records
            .iter()
            .map(|r| (r.offset, r.value.clone().unwrap()))
            .collect();
        assert_eq!(
            values,
            vec![
                (102, Bytes::from_static(b"c")),
                (103, Bytes::from_static(b"d"))
            ]
        );
    }

    #[test]
    fn fetch_request_encodes_at_every_supported_version() {
        use kafka_protocol::protocol::{Encodable, Message};
        let positions = BTreeMap::from([(
            0,
            Position {
                offset: 5,
                partition_bytes_max: PARTITION_FETCH_BYTES,
            },
        )]);
        let request = fetch_request("t", uuid::Uuid::nil(), &positions, 500);
        for version in FetchRequest::VERSIONS.min..=FetchRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            request
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("Fetch v{version}: {e}"));
        }
    }

    #[test]
    fn split_batches_rejects_legacy_message_sets() {
        let mut data = BytesMut::from(&encode_batch(0, &["a"])[..]);
        data[16] = 1;
        assert!(split_batches(&data.freeze()).is_err());
    }

    #[test]
    fn record_json_has_the_documented_fields() {
        let key = Bytes::from_static(b"k");
        let value = Bytes::from_static(b"v\xff");
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"x")),
        );
        let view = RecordView {
            topic: "t",
            partition: 1,
            offset: 7,
            timestamp_ms: 99,
            key: Some(&key),
            value: Some(&value),
            headers: &headers,
        };
        assert_eq!(
            serde_json::to_value(RecordJson::new(&view)).unwrap(),
            json!({
                "topic": "t", "partition": 1, "offset": 7, "timestamp": 99,
                "key": "k", "value": "v\u{fffd}", "headers": {"h": "x"},
            })
        );
    }
}
