//! `sluice produce TOPIC`: sends the lines of standard input as records.
//!
//! A reader thread hands chunks of lines over a bounded channel; the main task assigns each
//! record a partition, gathers per-partition batches and sends them in Produce requests, at most
//! [`IN_FLIGHT_MAX`] unanswered at a time. A batch goes out when it is full, or when input pauses
//! for [`LINGER_MS`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::client::{check, Client, Pending};
use super::metadata::{self, topic_name};
use super::murmur2::partition_for_key;
use super::output::{print_json, print_text, Table};
use super::{parse_key_value, CommonArgs};

/// A partition's batch is sent once it holds this many payload bytes.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// A partition's batch is sent once it holds this many records.
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// All pending batches are sent once together they hold this many bytes.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Produce requests written but not yet answered.
pub const IN_FLIGHT_MAX: usize = 4;
/// How long a partial batch waits for more input before it is sent.
pub const LINGER_MS: u64 = 5;
/// Lines longer than this are refused rather than buffered.
pub const LINE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Lines per chunk handed from the reader thread to the sender.
const CHUNK_LINES_MAX: usize = 1_000;
/// Chunks buffered between the reader thread and the sender.
const CHUNKS_QUEUED_MAX: usize = 16;
/// The broker's time limit for replicating a produce with acks=all.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Lines read before the progress spinner appears.
const PROGRESS_AFTER_LINES: u64 = 10_000;
/// Bytes a record costs beyond its key, value and headers, for batch sizing.
const RECORD_OVERHEAD_BYTES: usize = 16;

/// Compression codecs for produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(arg: CompressionArg) -> Compression {
        match arg {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Arguments of `sluice produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to write to.
    pub topic: String,
    /// Split each line at the first occurrence of SEP into key and value; lines without it
    /// have no key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// A header added to every record, e.g. source=cli (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub header: Vec<(String, String)>,
    /// Acknowledgement: 0 (none), 1 (leader) or all (in-sync replicas).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression of record batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
}

/// Parses `--acks`: `0`, `1`, `all` or `-1`.
pub fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        other => Err(format!("`{other}` is not one of 0, 1, all")),
    }
}

/// Splits a line into key and value at the first `separator`; without a separator, or when
/// the line does not contain it, the whole line is the value and there is no key.
pub fn split_line(line: Bytes, separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(separator) = separator.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => (Some(line.slice(..at)), line.slice(at + separator.len()..)),
        None => (None, line),
    }
}

/// Strips the line terminator (`\n` or `\r\n`) from a line read with `read_until(b'\n')`.
pub fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Chooses partitions like the Java client: a fixed partition when asked, murmur2 of the key
/// for keyed records, round-robin for the rest.
#[derive(Debug, Clone)]
pub struct Partitioner {
    partition_count: i32,
    fixed: Option<i32>,
    round_robin_next: i32,
}

impl Partitioner {
    /// A partitioner over `partition_count` partitions (at least 1).
    pub fn new(partition_count: i32, fixed: Option<i32>) -> Self {
        assert!(partition_count > 0, "a topic has at least one partition");
        Partitioner {
            partition_count,
            fixed,
            round_robin_next: 0,
        }
    }

    /// The partition for a record with this key.
    pub fn pick(&mut self, key: Option<&[u8]>) -> i32 {
        if let Some(partition) = self.fixed {
            return partition;
        }
        match key {
            Some(key) => partition_for_key(key, self.partition_count),
            None => {
                let partition = self.round_robin_next;
                self.round_robin_next = (self.round_robin_next + 1) % self.partition_count;
                partition
            }
        }
    }
}

/// Records waiting to be sent, per partition.
#[derive(Debug, Default)]
pub struct Accumulator {
    batches: BTreeMap<i32, Batch>,
    bytes_pending: usize,
}

#[derive(Debug, Default)]
struct Batch {
    records: Vec<Record>,
    bytes: usize,
}

impl Accumulator {
    /// Adds a record; returns true when the batches should be sent now.
    pub fn push(
        &mut self,
        partition: i32,
        key: Option<Bytes>,
        value: Bytes,
        headers: &IndexMap<StrBytes, Option<Bytes>>,
        timestamp_ms: i64,
    ) -> bool {
        let bytes = key.as_ref().map_or(0, Bytes::len)
            + value.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
            + RECORD_OVERHEAD_BYTES;
        let batch = self.batches.entry(partition).or_default();
        let index = batch.records.len() as i64;
        batch.records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            // Offsets relative to the batch; the broker assigns real ones.
            offset: index,
            // The encoder keeps records in one batch while offset - sequence is constant;
            // this makes the batch's base sequence -1 (no idempotence).
            sequence: (index as i32).wrapping_sub(1),
            timestamp: timestamp_ms,
            key,
            value: Some(value),
            headers: headers.clone(),
        });
        batch.bytes += bytes;
        self.bytes_pending += bytes;
        batch.records.len() >= BATCH_RECORDS_MAX
            || batch.bytes >= BATCH_BYTES_MAX
            || self.bytes_pending >= REQUEST_BYTES_MAX
    }

    /// Whether any record waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes every pending batch, by partition.
    pub fn take(&mut self) -> BTreeMap<i32, Vec<Record>> {
        self.bytes_pending = 0;
        std::mem::take(&mut self.batches)
            .into_iter()
            .map(|(p, batch)| (p, batch.records))
            .collect()
    }
}

/// What was acknowledged for one partition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Records sent to the partition.
    pub records: u64,
    /// Offset of the last acknowledged record (unknown with acks=0).
    pub last_offset: Option<i64>,
}

struct InFlight {
    pending: Pending,
    counts: BTreeMap<i32, usize>,
}

/// A produce session on one connection.
struct Producer {
    client: Client,
    topic: String,
    topic_id: uuid::Uuid,
    version: i16,
    acks: i16,
    compression: Compression,
    in_flight: VecDeque<InFlight>,
    summary: BTreeMap<i32, PartitionSummary>,
}

impl Producer {
    /// Encodes and writes one Produce request holding all of `batches`.
    async fn send(&mut self, batches: BTreeMap<i32, Vec<Record>>) -> anyhow::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= IN_FLIGHT_MAX {
            self.receive_one().await?;
        }
        let (request, counts) = produce_request(
            &self.topic,
            self.topic_id,
            self.acks,
            self.compression,
            &batches,
        )?;
        let pending = self.client.write_request(&request, self.version).await?;
        if self.acks == 0 {
            // The broker sends no response at all for acks=0.
            for (partition, count) in counts {
                self.summary.entry(partition).or_default().records += count as u64;
            }
        } else {
            self.in_flight.push_back(InFlight { pending, counts });
        }
        Ok(())
    }

    /// Reads the oldest outstanding response and checks every partition in it.
    async fn receive_one(&mut self) -> anyhow::Result<()> {
        let Some(in_flight) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let wait = Duration::from_millis(PRODUCE_TIMEOUT_MS as u64);
        let response: ProduceResponse = self
            .client
            .read_response::<ProduceRequest>(in_flight.pending, wait)
            .await?;
        let mut answered = BTreeMap::new();
        for topic in &response.responses {
            for p in &topic.partition_responses {
                check(p.error_code, p.error_message.as_ref(), || {
                    format!("producing to {}/{}", self.topic, p.index)
                })?;
                answered.insert(p.index, p.base_offset);
            }
        }
        for (partition, count) in in_flight.counts {
            let base_offset = answered.get(&partition).ok_or_else(|| {
                anyhow!(
                    "the Produce response does not mention partition {}/{partition}",
                    self.topic
                )
            })?;
            let entry = self.summary.entry(partition).or_default();
            entry.records += count as u64;
            entry.last_offset = Some(base_offset + count as i64 - 1);
        }
        Ok(())
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.receive_one().await?;
        }
        Ok(())
    }
}

/// Builds one Produce request holding a v2 record batch per partition; also returns the
/// number of records per partition.
pub fn produce_request(
    topic: &str,
    topic_id: uuid::Uuid,
    acks: i16,
    compression: Compression,
    batches: &BTreeMap<i32, Vec<Record>>,
) -> anyhow::Result<(ProduceRequest, BTreeMap<i32, usize>)> {
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    let mut partition_data = Vec::with_capacity(batches.len());
    let mut counts = BTreeMap::new();
    for (partition, records) in batches {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
            .with_context(|| format!("encoding a batch for partition {partition}"))?;
        partition_data.push(
            PartitionProduceData::default()
                .with_index(*partition)
                .with_records(Some(buf.freeze())),
        );
        counts.insert(*partition, records.len());
    }
    let request = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_topic_id(topic_id)
            .with_partition_data(partition_data)]);
    Ok((request, counts))
}

/// Reads stdin on its own thread (reads block) and sends chunks of lines; stops at end of
/// input, on an error (sent along), or when the receiver is gone.
fn spawn_stdin_reader(tx: mpsc::Sender<anyhow::Result<Vec<Bytes>>>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, stdin.lock());
        let mut line_number: u64 = 0;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_LINES_MAX);
            let mut eof = false;
            while chunk.len() < CHUNK_LINES_MAX {
                let mut line = Vec::new();
                let read = std::io::Read::take(&mut reader, LINE_BYTES_MAX as u64 + 1)
                    .read_until(b'\n', &mut line);
                match read {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {
                        line_number += 1;
                        if line.len() > LINE_BYTES_MAX && line.last() != Some(&b'\n') {
                            let _ = tx.blocking_send(Err(anyhow!(
                                "line {line_number} is longer than {LINE_BYTES_MAX} bytes"
                            )));
                            return;
                        }
                        trim_line_end(&mut line);
                        chunk.push(Bytes::from(line));
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(anyhow!(e).context("reading stdin")));
                        return;
                    }
                }
                // Hand over what we have rather than block on a slow input with lines held.
                if reader.buffer().is_empty() {
                    break;
                }
            }
            if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
            if eof {
                return;
            }
        }
    });
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Shows records read so far on stderr, for long piped inputs only.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            enabled: !std::io::stdin().is_terminal(),
        }
    }

    fn update(&mut self, records: u64, bytes: u64) {
        if !self.enabled || records < PROGRESS_AFTER_LINES {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            // Draws on stderr, and not at all when stderr is not a terminal.
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(format!(
            "{records} records, {:.1} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        ));
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs `sluice produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.common.bootstrap).await?;
    let topic = metadata::describe_or_create_topic(&mut client, &args.topic).await?;
    let partition_count = i32::try_from(topic.partitions.len())?;
    if let Some(p) = args.partition {
        if !topic.partitions.iter().any(|info| info.index == p) {
            bail!(
                "topic {} has no partition {p} (it has {partition_count})",
                args.topic
            );
        }
    }
    let mut version = client.version::<ProduceRequest>()?;
    if version >= 13 && topic.id.is_nil() {
        // v13 names topics by id only; without one, stay on v12, which names them.
        version = 12;
    }
    let mut producer = Producer {
        client,
        topic: args.topic.clone(),
        topic_id: topic.id,
        version,
        acks: args.acks,
        compression: args.compression.into(),
        in_flight: VecDeque::new(),
        summary: BTreeMap::new(),
    };
    let headers: IndexMap<StrBytes, Option<Bytes>> = args
        .header
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string(k.clone()),
                Some(Bytes::from(v.clone().into_bytes())),
            )
        })
        .collect();
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut partitioner = Partitioner::new(partition_count, args.partition);
    let mut accumulator = Accumulator::default();
    let mut progress = Progress::new();
    let mut records_read: u64 = 0;
    let mut bytes_read: u64 = 0;

    let (tx, mut rx) = mpsc::channel(CHUNKS_QUEUED_MAX);
    spawn_stdin_reader(tx);
    loop {
        let next = match rx.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                if !accumulator.is_empty() {
                    let linger = Duration::from_millis(LINGER_MS);
                    match tokio::time::timeout(linger, rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            producer.send(accumulator.take()).await?;
                            continue;
                        }
                    }
                } else if !producer.in_flight.is_empty() {
                    producer.receive_one().await?;
                    continue;
                } else {
                    rx.recv().await
                }
            }
        };
        let Some(chunk) = next else { break };
        let lines = chunk?;
        let timestamp_ms = now_ms();
        for line in lines {
            let (key, value) = split_line(line, separator);
            records_read += 1;
            bytes_read += (key.as_ref().map_or(0, Bytes::len) + value.len()) as u64;
            let partition = partitioner.pick(key.as_deref());
            if accumulator.push(partition, key, value, &headers, timestamp_ms) {
                producer.send(accumulator.take()).await?;
            }
        }
        progress.update(records_read, bytes_read);
    }
    producer.send(accumulator.take()).await?;
    producer.drain().await?;
    progress.finish();
    print_summary(
        &args.topic,
        args.common.json,
        records_read,
        bytes_read,
        &producer.summary,
    )
}

fn print_summary(
    topic: &str,
    json: bool,
    records: u64,
    bytes: u64,
    summary: &BTreeMap<i32, PartitionSummary>,
) -> anyhow::Result<()> {
    if json {
        let partitions: Vec<_> = summary
            .iter()
            .map(|(p, s)| json!({"partition": p, "records": s.records, "last_offset": s.last_offset}))
            .collect();
        return print_json(&json!({
            "topic": topic,
            "records": records,
            "bytes": bytes,
            "partitions": partitions,
        }));
    }
    let mut text = format!("produced {records} records ({bytes} bytes) to {topic}\n");
    if !summary.is_empty() {
        let mut table = Table::new(&["PARTITION", "RECORDS", "LAST OFFSET"]);
        for (p, s) in summary {
            table.row(vec![
                p.to_string(),
                s.records.to_string(),
                s.last_offset
                    .map_or_else(|| "-".to_string(), |o| o.to_string()),
            ]);
        }
        text.push_str(&table.render());
    }
    print_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn split(line: &str, separator: Option<&str>) -> (Option<String>, String) {
        let (key, value) = split_line(Bytes::from(line.to_string()), separator.map(str::as_bytes));
        (
            key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
            String::from_utf8(value.to_vec()).unwrap(),
        )
    }

    #[test]
    fn key_is_the_part_before_the_first_separator() {
        assert_eq!(split("k:v:w", Some(":")), (Some("k".into()), "v:w".into()));
        assert_eq!(split(":v", Some(":")), (Some("".into()), "v".into()));
        assert_eq!(split("k::v", Some("::")), (Some("k".into()), "v".into()));
    }

    #[test]
    fn line_without_separator_has_no_key() {
        assert_eq!(
            split("just a value", Some(":")),
            (None, "just a value".into())
        );
        assert_eq!(split("k:v", None), (None, "k:v".into()));
    }

    #[test]
    fn line_end_is_trimmed_once() {
        let mut line = b"abc\r\n".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"abc");
        let mut line = b"abc\n\n".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"abc\n");
        let mut line = b"abc".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"abc");
    }

    #[test]
    fn acks_accept_zero_one_and_all() {
        assert_eq!(parse_acks("0"), Ok(0));
        assert_eq!(parse_acks("1"), Ok(1));
        assert_eq!(parse_acks("all"), Ok(-1));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn unkeyed_records_go_round_robin() {
        let mut partitioner = Partitioner::new(3, None);
        let picks: Vec<i32> = (0..7).map(|_| partitioner.pick(None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn keyed_records_follow_murmur2_and_fixed_partition_wins() {
        let mut partitioner = Partitioner::new(7, None);
        assert_eq!(partitioner.pick(Some(b"21")), 1_173_551_340 % 7);
        let mut fixed = Partitioner::new(7, Some(4));
        assert_eq!(fixed.pick(Some(b"21")), 4);
        assert_eq!(fixed.pick(None), 4);
    }

    #[test]
    fn accumulator_asks_to_send_at_the_record_limit() {
        let mut acc = Accumulator::default();
        let headers = IndexMap::new();
        for i in 0..BATCH_RECORDS_MAX - 1 {
            assert!(!acc.push(0, None, Bytes::from(i.to_string()), &headers, 1));
        }
        assert!(acc.push(0, None, Bytes::from_static(b"last"), &headers, 1));
        let batches = acc.take();
        assert_eq!(batches[&0].len(), BATCH_RECORDS_MAX);
        assert!(acc.is_empty());
    }

    #[test]
    fn produce_request_encodes_at_every_supported_version() {
        use kafka_protocol::protocol::{Encodable, Message};
        let mut acc = Accumulator::default();
        let headers = IndexMap::new();
        acc.push(0, None, Bytes::from_static(b"a"), &headers, 1);
        acc.push(
            2,
            Some(Bytes::from_static(b"k")),
            Bytes::from_static(b"b"),
            &headers,
            1,
        );
        let batches = acc.take();
        let (request, counts) =
            produce_request("t", uuid::Uuid::nil(), -1, Compression::Snappy, &batches).unwrap();
        assert_eq!(counts, BTreeMap::from([(0, 1), (2, 1)]));
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            request
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("Produce v{version}: {e}"));
        }
    }

    #[test]
    fn accumulated_records_encode_as_one_batch_that_decodes_back() {
        let mut acc = Accumulator::default();
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"1")),
        );
        for i in 0..100 {
            acc.push(
                0,
                Some(Bytes::from(format!("k{i}"))),
                Bytes::from(format!("v{i}")),
                &headers,
                1_000 + i,
            );
        }
        let records = acc.take().remove(&0).unwrap();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
            let mut bytes = buf.freeze();
            let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
            assert_eq!(sets.len(), 1, "one batch with {compression:?}");
            let decoded = &sets[0].records;
            assert_eq!(decoded.len(), 100);
            assert_eq!(decoded[42].key.as_deref(), Some(&b"k42"[..]));
            assert_eq!(decoded[42].value.as_deref(), Some(&b"v42"[..]));
            assert_eq!(decoded[42].offset, 42);
            assert_eq!(decoded[42].headers.len(), 1);
        }
    }
}
