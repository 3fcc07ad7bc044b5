//! End-to-end latency at fixed offered rates: a paced producer stamps each message
//! with the time it was due to be sent, a consumer in the same process records how
//! long after that moment it arrived, into an HDR histogram.
//!
//! Stamping the due time rather than the actual send time counts any stall of the
//! producer against the broker too (no coordinated omission): if the pipeline falls
//! behind, every message queued behind the stall shows the wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::admin::BenchTopic;
use super::consume;
use super::produce::{self, Counters};
use super::report::{BenchEnv, BenchResult};
use super::LatencySettings;

/// Messages due in the first second (or quarter of a shorter run) are sent but not
/// recorded: connections, metadata and the consumer's first fetch settle then.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long the consumer waits for stragglers after the producer has finished.
const STRAGGLER_TIMEOUT: Duration = Duration::from_secs(30);
/// Slowest latency the histogram holds, in microseconds (a minute).
const MAX_MICROS: u64 = 60_000_000;

/// Measures each offered rate on its own fresh topic.
pub fn measure(env: &BenchEnv, settings: &LatencySettings) -> anyhow::Result<Vec<BenchResult>> {
    anyhow::ensure!(
        settings.size >= 8,
        "--size must be at least 8 bytes: the send time travels in the message"
    );
    settings
        .rates
        .iter()
        .map(|&rate| {
            anyhow::ensure!(rate > 0, "offered rates must be positive");
            let topic = BenchTopic::create(
                &env.bootstrap,
                "latency",
                settings.partitions,
                settings.flush,
            )?;
            let result = measure_rate(env, &topic, settings, rate);
            topic.delete()?;
            result
        })
        .collect()
}

fn measure_rate(
    env: &BenchEnv,
    topic: &BenchTopic,
    settings: &LatencySettings,
    rate: u64,
) -> anyhow::Result<BenchResult> {
    let name = format!(
        "latency {}/s {} acks={} flush={} p={}",
        rate,
        produce::size_name(settings.size),
        settings.acks.as_str(),
        settings.flush.as_str(),
        settings.partitions
    );
    let clock = env.cpu_clock();
    let base = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let producer_done = Arc::new(AtomicBool::new(false));
    let record_from = Arc::new(AtomicU64::new(u64::MAX));
    let consumer = spawn_consumer(
        env,
        topic,
        base,
        Progress {
            sent: sent.clone(),
            producer_done: producer_done.clone(),
            record_from: record_from.clone(),
        },
    )?;

    let counters = Counters::default();
    // linger.ms=0: send each message as soon as it is due, as a latency-sensitive
    // application would.
    let producer: BaseProducer<Counters> =
        produce::producer_config(&env.bootstrap, settings.acks.as_str(), 0)
            .create_with_context(counters.clone())
            .context("creating a librdkafka producer")?;
    let bar = env.bar(env.duration.as_millis() as u64, &name);
    let mut value = produce::payload(settings.size, rate);
    let interval_ns = 1e9 / rate as f64;
    let start = Instant::now();
    let offset_ns = start.duration_since(base).as_nanos() as u64;
    let warm_up = WARM_UP.min(env.duration / 4);
    record_from.store(offset_ns + warm_up.as_nanos() as u64, Ordering::Release);
    let mut count: u64 = 0;
    while start.elapsed() < env.duration {
        let due = (start.elapsed().as_nanos() as f64 / interval_ns) as u64;
        while count < due {
            let stamp = offset_ns + (count as f64 * interval_ns) as u64;
            value[..8].copy_from_slice(&stamp.to_le_bytes());
            loop {
                match producer.send(BaseRecord::<(), [u8]>::to(&topic.name).payload(&value[..])) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        produce::wait_for_room(&producer);
                    }
                    Err((e, _)) => return Err(e).context("sending a message"),
                }
            }
            count += 1;
            sent.store(count, Ordering::Release);
        }
        producer.poll(Duration::ZERO);
        if count.is_multiple_of(256) {
            bar.set_position(start.elapsed().as_millis() as u64);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    producer
        .flush(STRAGGLER_TIMEOUT)
        .context("waiting for outstanding acknowledgements")?;
    producer_done.store(true, Ordering::Release);
    let send_secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let (histogram, received) = consumer
        .join()
        .map_err(|_| anyhow!("the latency consumer panicked"))??;

    let mut result = BenchResult::new("latency", name, settings);
    clock.stop(env).record(&mut result);
    result.settings["rate"] = rate.into();
    let ms = |micros: u64| micros as f64 / 1000.0;
    result.figures.insert("offered_per_s", rate as f64);
    result
        .figures
        .insert("msgs_per_s", received as f64 / send_secs);
    result.figures.insert("sent", count as f64);
    result.figures.insert("received", received as f64);
    result
        .figures
        .insert("failed", counters.failed.load(Ordering::Relaxed) as f64);
    result.figures.insert("recorded", histogram.len() as f64);
    for (name, quantile) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p99_ms", 0.99),
        ("p99_9_ms", 0.999),
    ] {
        let micros = histogram.value_at_quantile(quantile);
        result.figures.insert(name, ms(micros));
    }
    result.figures.insert("max_ms", ms(histogram.max()));
    if received < count {
        result.notes.push(format!(
            "{} of {count} messages did not arrive within {STRAGGLER_TIMEOUT:?}",
            count - received
        ));
    }
    result.broker = env.broker_rss();
    Ok(result)
}

type ConsumerOutcome = anyhow::Result<(Histogram<u64>, u64)>;

/// What the producer tells the consumer thread.
struct Progress {
    /// Messages sent so far.
    sent: Arc<AtomicU64>,
    /// Set once every message is sent and acknowledged.
    producer_done: Arc<AtomicBool>,
    /// Stamps (ns since the shared base) from which latencies are recorded.
    record_from: Arc<AtomicU64>,
}

/// Starts a consumer of every partition from the beginning; it records each message's
/// latency and stops once it has everything the producer sent.
fn spawn_consumer(
    env: &BenchEnv,
    topic: &BenchTopic,
    base: Instant,
    progress: Progress,
) -> anyhow::Result<std::thread::JoinHandle<ConsumerOutcome>> {
    let consumer: BaseConsumer = consume::consumer_config(&env.bootstrap)
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating a librdkafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..topic.partitions {
        assignment.add_partition_offset(&topic.name, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_MICROS, 3)?;
        let mut received: u64 = 0;
        let mut done_at: Option<Instant> = None;
        loop {
            if progress.producer_done.load(Ordering::Acquire) {
                if received >= progress.sent.load(Ordering::Acquire) {
                    break;
                }
                let since = *done_at.get_or_insert_with(Instant::now);
                if since.elapsed() > STRAGGLER_TIMEOUT {
                    break;
                }
            }
            let message = match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(anyhow!("latency consumer: {e}")),
                None => continue,
            };
            let now_ns = base.elapsed().as_nanos() as u64;
            received += 1;
            let Some(stamp) = message
                .payload()
                .and_then(|p| p.get(..8))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
            else {
                continue;
            };
            if stamp >= progress.record_from.load(Ordering::Acquire) {
                let micros = now_ns.saturating_sub(stamp) / 1000;
                histogram.saturating_record(micros.clamp(1, MAX_MICROS));
            }
        }
        Ok((histogram, received))
    }))
}
