//! Consume throughput: a data set is produced first, then one librdkafka consumer reads
//! every partition from the beginning, once with the data in the page cache and, when
//! asked, once more after the broker's files were evicted from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::admin::BenchTopic;
use super::machine::{self, Eviction};
use super::produce;
use super::report::{BenchEnv, BenchResult};
use super::ProduceSettings;

/// A read that has not finished after this many multiples of the produce time (plus
/// a minute) stops and reports what it read.
const READ_TIME_FACTOR: u32 = 6;

/// Produces a data set with `settings`, reads it back warm (and cold), deletes it.
pub fn measure(
    env: &BenchEnv,
    settings: &ProduceSettings,
    consumers: &[usize],
    cold: bool,
) -> anyhow::Result<Vec<BenchResult>> {
    let topic = BenchTopic::create(
        &env.bootstrap,
        "consume",
        settings.partitions,
        settings.flush,
    )?;
    let results = produce_and_read(env, &topic, settings, consumers, cold);
    topic.delete()?;
    results
}

fn produce_and_read(
    env: &BenchEnv,
    topic: &BenchTopic,
    settings: &ProduceSettings,
    consumers: &[usize],
    cold: bool,
) -> anyhow::Result<Vec<BenchResult>> {
    let (outcome, error) = produce::run(env, &topic.name, settings)?;
    let mut results = vec![produce::result_of(env, settings, outcome, error)];
    let data = produce::describe(settings);
    let consumers = if consumers.is_empty() {
        &[1][..]
    } else {
        consumers
    };
    for &n in consumers {
        let name = format!("consume warm {data} c={n}");
        results.push(read(env, topic, settings, &name, n, None)?);
    }
    if cold {
        let n = consumers[consumers.len() - 1];
        let eviction = machine::evict_page_cache(env.data_dir.as_deref())?;
        let name = format!("consume cold {data} c={n}");
        results.push(read(env, topic, settings, &name, n, Some(eviction))?);
    }
    Ok(results)
}

/// Reads every partition of `topic` from the beginning to its current end, with
/// `consumers` librdkafka consumers on their own threads sharing the partitions.
fn read(
    env: &BenchEnv,
    topic: &BenchTopic,
    settings: &ProduceSettings,
    name: &str,
    consumers: usize,
    eviction: Option<Eviction>,
) -> anyhow::Result<BenchResult> {
    let consumers = consumers.clamp(1, topic.partitions.max(1) as usize);
    let probe = new_consumer(&env.bootstrap)?;
    let mut ends = Vec::new();
    for partition in 0..topic.partitions {
        let (low, high) = probe
            .fetch_watermarks(&topic.name, partition, Duration::from_secs(30))
            .with_context(|| format!("reading the end offset of partition {partition}"))?;
        ends.push(u64::try_from(high - low).unwrap_or(0));
    }
    let expected: u64 = ends.iter().sum();
    let bar = env.bar(expected, name);
    let limit = env.duration * READ_TIME_FACTOR + Duration::from_secs(60);
    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let clock = env.cpu_clock();
    let start = Instant::now();
    let handles: Vec<_> = (0..consumers)
        .map(|i| {
            let consumer = new_consumer(&env.bootstrap)?;
            let mut assignment = TopicPartitionList::new();
            let mut mine = 0;
            for partition in (0..topic.partitions).filter(|p| *p as usize % consumers == i) {
                assignment.add_partition_offset(&topic.name, partition, Offset::Beginning)?;
                mine += ends[partition as usize];
            }
            consumer.assign(&assignment)?;
            let (messages, bytes) = (messages.clone(), bytes.clone());
            Ok(std::thread::spawn(move || {
                drain(&consumer, mine, start + limit, &messages, &bytes)
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        bar.set_position(messages.load(Ordering::Relaxed));
    }
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a consumer thread panicked"))?
            .with_context(|| name.to_string())?;
    }
    let (messages, bytes) = (
        messages.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    let elapsed = start.elapsed();
    let cpu = clock.stop(env);
    bar.finish_and_clear();

    let mut result = BenchResult::new("consume", name.to_string(), settings);
    result.settings["consumers"] = consumers.into();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mb_per_s = bytes as f64 / 1e6 / secs;
    result.figures.insert("messages", messages as f64);
    result.figures.insert("seconds", secs);
    result.figures.insert("msgs_per_s", messages as f64 / secs);
    result.figures.insert("mb_per_s", mb_per_s);
    cpu.record(&mut result);
    if messages < expected {
        result.notes.push(format!(
            "stopped after {limit:?} with {messages} of {expected} messages read"
        ));
    }
    if let Some(limits) = &env.limits {
        match eviction {
            None => result.ratio("loopback_tcp", mb_per_s, Some(limits.loopback_tcp_mb_s)),
            Some(_) => result.ratio("disk_seq_read", mb_per_s, Some(limits.disk_seq_read_mb_s)),
        }
    }
    if let Some(eviction) = eviction {
        result.notes.push(format!(
            "page cache emptied with {eviction:?} before reading"
        ));
    }
    result.broker = env.broker_rss();
    Ok(result)
}

/// librdkafka settings of every bench consumer: manual assignment, no commits.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("socket.nagle.disable", "true");
    config
}

fn new_consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    consumer_config(bootstrap)
        .create()
        .context("creating a librdkafka consumer")
}

/// Reads until `expected` messages arrived or `deadline` passed, adding to the shared
/// counters as it goes.
fn drain(
    consumer: &BaseConsumer,
    expected: u64,
    deadline: Instant,
    messages: &AtomicU64,
    bytes: &AtomicU64,
) -> anyhow::Result<()> {
    let (mut count, mut size) = (0u64, 0u64);
    while count < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                count += 1;
                size += message.payload_len() as u64;
                if count.is_multiple_of(4096) {
                    messages.fetch_add(4096, Ordering::Relaxed);
                    bytes.fetch_add(size, Ordering::Relaxed);
                    size = 0;
                }
            }
            Some(Err(e)) => bail!("{e}"),
            None => {}
        }
    }
    messages.fetch_add(count % 4096, Ordering::Relaxed);
    bytes.fetch_add(size, Ordering::Relaxed);
    Ok(())
}
