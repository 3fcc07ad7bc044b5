//! Produce throughput: several librdkafka producers, each on its own thread, send
//! fixed-size messages as fast as the broker acknowledges them for a fixed time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::admin::BenchTopic;
use super::report::{BenchEnv, BenchResult, CpuUse};
use super::ProduceSettings;

/// How long producers may take to drain their queues after the measured time.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Each producer's local queue, in KiB: bounds the bench's memory; a full queue
/// blocks the sending loop (back-pressure) rather than growing.
const QUEUE_KBYTES: &str = "131072";

/// What the producers achieved.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages that failed.
    pub failed: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// CPU the clients and the broker used meanwhile.
    pub cpu: CpuUse,
}

/// Counts acknowledgements; librdkafka calls it from `poll` on the sending thread.
#[derive(Clone, Default)]
pub struct Counters {
    /// Messages the broker acknowledged.
    pub delivered: Arc<AtomicU64>,
    /// Messages that failed for good.
    pub failed: Arc<AtomicU64>,
    /// The first failure, for the report.
    pub first_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Counters {}

impl ProducerContext for Counters {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// librdkafka settings shared by the throughput and latency producers.
pub fn producer_config(bootstrap: &str, acks: &str, linger_ms: u32) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", QUEUE_KBYTES)
        .set("socket.nagle.disable", "true");
    config
}

/// Deterministic, incompressible-looking bytes.
pub fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            // xorshift64: cheap and good enough to defeat any accidental compression.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Measures produce throughput on a fresh topic, then deletes it.
pub fn measure(env: &BenchEnv, settings: &ProduceSettings) -> anyhow::Result<BenchResult> {
    let topic = BenchTopic::create(
        &env.bootstrap,
        "produce",
        settings.partitions,
        settings.flush,
    )?;
    let outcome = run(env, &topic.name, settings);
    let result = outcome.map(|(outcome, error)| result_of(env, settings, outcome, error));
    topic.delete()?;
    result
}

/// A short name for a produce setting, e.g. `1KiB acks=1 flush=os p=12 x4`.
pub fn describe(settings: &ProduceSettings) -> String {
    format!(
        "{} acks={} flush={} p={} x{}",
        size_name(settings.size),
        settings.acks.as_str(),
        settings.flush.as_str(),
        settings.partitions,
        settings.producers
    )
}

/// `100B`, `1KiB`, `16KiB`.
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

/// Turns an outcome into a report entry with its shares of the machine limits.
pub fn result_of(
    env: &BenchEnv,
    settings: &ProduceSettings,
    outcome: Outcome,
    error: Option<String>,
) -> BenchResult {
    let mut result = BenchResult::new(
        "produce",
        format!("produce {}", describe(settings)),
        settings,
    );
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let msgs_per_s = outcome.delivered as f64 / secs;
    let mb_per_s = msgs_per_s * settings.size as f64 / 1e6;
    result.figures.insert("messages", outcome.delivered as f64);
    result.figures.insert("failed", outcome.failed as f64);
    result.figures.insert("seconds", secs);
    result.figures.insert("msgs_per_s", msgs_per_s);
    result.figures.insert("mb_per_s", mb_per_s);
    outcome.cpu.record(&mut result);
    if let Some(limits) = &env.limits {
        result.ratio("loopback_tcp", mb_per_s, Some(limits.loopback_tcp_mb_s));
        if settings.flush != super::Flush::Os {
            result.ratio("disk_seq_write", mb_per_s, Some(limits.disk_seq_write_mb_s));
        }
    }
    result.broker = env.broker_rss();
    if let Some(error) = error {
        result.notes.push(format!("first delivery error: {error}"));
    }
    result
}

/// Runs the producers against `topic` for the configured time and waits for every
/// acknowledgement. Returns the outcome and the first delivery error, if any.
pub fn run(
    env: &BenchEnv,
    topic: &str,
    settings: &ProduceSettings,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let counters = Counters::default();
    let label = format!("produce {}", describe(settings));
    let bar = env.bar(env.duration.as_millis() as u64, &label);
    let clock = env.cpu_clock();
    let start = Instant::now();
    let deadline = start + env.duration;
    let handles: Vec<_> = (0..settings.producers.max(1))
        .map(|i| {
            let producer: BaseProducer<Counters> =
                producer_config(&env.bootstrap, settings.acks.as_str(), settings.linger_ms)
                    .create_with_context(counters.clone())
                    .context("creating a librdkafka producer")?;
            let topic = topic.to_string();
            let value = payload(settings.size, i as u64 + 1);
            Ok(std::thread::spawn(move || {
                send_until(&producer, &topic, &value, deadline)
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let delivered = counters.delivered.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        bar.set_position((start.elapsed().as_millis() as u64).min(bar.length().unwrap_or(0)));
        bar.set_message(format!(
            "{label}: {delivered} msgs, {:.1} MB/s",
            delivered as f64 * settings.size as f64 / 1e6 / secs
        ));
    }
    bar.finish_and_clear();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
    }
    let outcome = Outcome {
        delivered: counters.delivered.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        cpu: clock.stop(env),
    };
    let error = counters.first_error.lock().ok().and_then(|e| e.clone());
    Ok((outcome, error))
}

fn send_until(
    producer: &BaseProducer<Counters>,
    topic: &str,
    value: &[u8],
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(value)) {
            Ok(()) => {
                sent += 1;
                if sent.is_multiple_of(1024) {
                    // Runs delivery callbacks without waiting.
                    producer.poll(Duration::ZERO);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                wait_for_room(producer);
            }
            Err((e, _)) => return Err(e).context("sending a message"),
        }
    }
    producer
        .flush(DRAIN_TIMEOUT)
        .context("waiting for outstanding acknowledgements")?;
    Ok(())
}

/// Waits for acknowledgements to free room in a full producer queue.
///
/// `poll` with a timeout serves events in a busy loop until the timeout ends; on a
/// two-core machine that spin takes CPU from librdkafka's network thread and from the
/// broker. Sleeping briefly and then draining what arrived costs far less.
pub fn wait_for_room<C: ProducerContext>(producer: &BaseProducer<C>) {
    std::thread::sleep(Duration::from_micros(500));
    for _ in 0..64 {
        producer.poll(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_and_varied() {
        let a = payload(1024, 1);
        assert_eq!(a, payload(1024, 1));
        assert_ne!(a, payload(1024, 2));
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "only {} distinct bytes",
            distinct.len()
        );
    }

    #[test]
    fn size_names_use_binary_units() {
        assert_eq!(size_name(100), "100B");
        assert_eq!(size_name(1024), "1KiB");
        assert_eq!(size_name(16 * 1024), "16KiB");
        assert_eq!(size_name(1500), "1500B");
    }
}
