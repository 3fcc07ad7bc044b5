//! Message-queue semantics shared by the fronts that deliver message by message
//! (RocketMQ today): sending single messages, shared subscriptions with
//! per-message acknowledgement, retry and dead-letter topics.

pub mod delay;
pub mod group_settings;
pub mod message;
mod produce;
mod shared;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use message::{Message, StoredMessage};
pub use produce::{ClientProduce, ScheduledProduce};
pub use shared::{Delivery, ReceiveRequest};

use crate::error::CoreError;
use crate::messaging::delay::{DelayStore, HEADER_DELAY_REF};
use crate::messaging::group_settings::GroupSettingsStore;
use crate::messaging::message::{
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ORIGIN_OFFSET, HEADER_DLQ_ORIGIN_PARTITION,
    HEADER_DLQ_ORIGIN_TOPIC,
};
use crate::messaging::shared::{read_message, DeadLetter, SharedSubscriptions};
use crate::names::dlq_topic;
use crate::{now_ms, Broker, Durability, TopicConfig};

/// RocketMQ's default redelivery back-off, one step per failed attempt (ms):
/// 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
pub const RETRY_BACKOFF_MS: [i64; 16] = [
    10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000, 480_000, 540_000,
    600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// How shared subscriptions and message sends behave.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Deliveries a message gets before it moves to the group's dead-letter topic.
    pub max_delivery_attempts: u32,
    /// Unsettled messages kept per (group, partition); a full window stops new
    /// reads from that partition until messages are acknowledged.
    pub unacked_per_queue_max: usize,
    /// Largest delay accepted for a delayed message (ms).
    pub max_delay_ms: i64,
    /// Delayed and half messages kept pending at most; beyond it such a send fails.
    pub delayed_pending_max: usize,
    /// How long a half message may wait for commit or rollback before the broker
    /// asks a producer, and between later checks (ms).
    pub transaction_check_interval_ms: i64,
    /// Checks of one half message before it is rolled back.
    pub transaction_max_checks: u32,
}

/// Settings of the broker's internal logs (delay log, group settings): every
/// append fsynced, nothing ever removed by retention.
pub(crate) fn internal_log_config(segment_bytes: u64) -> sluice_storage::LogConfig {
    sluice_storage::LogConfig {
        segment_bytes,
        retention_ms: -1,
        retention_bytes: -1,
        flush: sluice_storage::FlushPolicy::Always,
        ..sluice_storage::LogConfig::default()
    }
}

/// A file error of an internal log, named after its directory.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> CoreError {
    CoreError::Storage(sluice_storage::StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Shows every record of an internal log to `visit`, oldest first (replay at
/// start-up). Reading stops at the first batch that does not verify.
pub(crate) fn replay(
    log: &sluice_storage::PartitionLog,
    visit: &mut dyn FnMut(sluice_storage::records::DecodedRecord),
) -> Result<(), CoreError> {
    let mut offset = log.log_start_offset();
    loop {
        let slice = match log.read(offset, 1 << 20)? {
            sluice_storage::ReadOutcome::Data(slice) => slice,
            _ => return Ok(()),
        };
        let bytes = slice.read_bytes().map_err(|e| io_error(log.dir(), e))?;
        let before = offset;
        let mut at = 0;
        while let Ok(h) = sluice_storage::batch::verify_batch(&bytes[at..]) {
            for r in sluice_storage::records::decode_records(&bytes[at..at + h.total_bytes()])? {
                visit(r);
            }
            offset = h.last_offset() + 1;
            at += h.total_bytes();
        }
        if offset == before {
            return Ok(());
        }
    }
}

/// How far in the past a delivery time may lie (client clocks differ); earlier
/// ones are refused, later ones are delivered at once.
pub const DELIVERY_TIME_TOLERANCE_MS: i64 = 60_000;
/// Due delayed messages delivered per round.
const DELAY_ROUND_MAX: usize = 256;

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            max_delivery_attempts: 16,
            unacked_per_queue_max: 10_000,
            max_delay_ms: 3 * 24 * 3600 * 1000,
            delayed_pending_max: 1_000_000,
            transaction_check_interval_ms: 30_000,
            transaction_max_checks: 15,
        }
    }
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub partition: i32,
    /// Offset in the partition; -1 while the message waits for its delivery time.
    pub offset: i64,
    pub durability: Durability,
    /// For a delayed message: the handle that recalls it before it is due.
    pub recall_handle: Option<String>,
    /// For a half message: the id that commits or rolls it back.
    pub transaction_id: Option<String>,
}

/// A half message the broker asks its producer about.
#[derive(Debug, Clone)]
pub struct TransactionCheck {
    pub transaction_id: String,
    pub topic: String,
    pub partition: i32,
    pub message: Message,
    /// 1 for the first check.
    pub check: u32,
}

struct Inner {
    broker: Broker,
    config: MessagingConfig,
    shared: SharedSubscriptions,
    /// Per-group consumer settings; the shared subscriptions hold it too.
    group_settings: Arc<GroupSettingsStore>,
    delay: DelayStore,
    /// Wakes the delay task when a message is scheduled.
    delay_wake: tokio::sync::Notify,
    /// Half message entry → (next check at, checks so far). Not persisted: after
    /// a restart every pending half message waits one interval, then is checked.
    checks: parking_lot::Mutex<std::collections::HashMap<i64, (i64, u32)>>,
}

/// The message-queue services of one broker. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

impl Messaging {
    /// Services over `broker`: opens the delayed-message log and finishes a
    /// delivery round a crash interrupted. Blocking (file work). Call
    /// [`Messaging::run`] to start background work.
    pub fn open(broker: Broker, config: MessagingConfig) -> Result<Self, CoreError> {
        let (delay, unfinished) = DelayStore::open(
            &broker.config().data_dir,
            config.delayed_pending_max,
            now_ms(),
        )?;
        if let Some(u) = unfinished {
            let wanted: std::collections::HashSet<String> =
                u.entries.iter().map(i64::to_string).collect();
            let mut found = Vec::new();
            for (topic, partition, end) in &u.ends {
                found.extend(find_delivered(&broker, topic, *partition, *end, &wanted)?);
            }
            tracing::info!(
                interrupted = u.entries.len(),
                delivered = found.len(),
                "finishing a delayed-delivery round interrupted by a crash"
            );
            delay.settle(&found, now_ms())?;
        }
        let group_settings = Arc::new(GroupSettingsStore::open(
            &broker.config().data_dir,
            config.max_delivery_attempts,
            now_ms(),
        )?);
        Ok(Messaging {
            inner: Arc::new(Inner {
                broker,
                config,
                shared: SharedSubscriptions::new(group_settings.clone()),
                group_settings,
                delay,
                delay_wake: tokio::sync::Notify::new(),
                checks: parking_lot::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// Runs delay-log work (file I/O, fsyncs) on a blocking thread.
    async fn on_delay_log<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DelayStore) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let this = self.clone();
        self.blocking(move || work(&this.inner.delay)).await
    }

    /// Runs file work (reads, fsyncs) on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        tokio::task::spawn_blocking(work).await.map_err(|e| {
            io_error(
                &self.inner.broker.config().data_dir,
                std::io::Error::other(e),
            )
        })?
    }

    /// The settings in force.
    pub fn config(&self) -> &MessagingConfig {
        &self.inner.config
    }

    /// The broker underneath.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// Per-group consumer settings (consume mode, retry policy), for reading.
    pub fn group_settings(&self) -> &GroupSettingsStore {
        &self.inner.group_settings
    }

    /// Changes a group's settings all or nothing (see
    /// [`GroupSettingsStore::alter`]); returns once the change is fsynced.
    pub async fn alter_group_settings(
        &self,
        group: &str,
        changes: Vec<crate::ConfigChange>,
        validate_only: bool,
    ) -> Result<(), CoreError> {
        let (store, group) = (self.inner.group_settings.clone(), group.to_string());
        self.blocking(move || store.alter(&group, &changes, validate_only, now_ms()))
            .await
    }

    /// A consumer announced its subscription: in a broadcast group its queues
    /// start now (at each partition's high watermark). Nothing otherwise.
    pub fn consumer_subscribed(
        &self,
        group: &str,
        client_id: Option<&str>,
        topics: &[String],
    ) -> Result<(), CoreError> {
        self.inner
            .shared
            .open_broadcast(&self.inner.broker, group, client_id, topics)
    }

    /// A client terminated: its broadcast queues (and their unacknowledged
    /// deliveries) are dropped.
    pub fn client_terminated(&self, client_id: &str) {
        let dropped = self.inner.shared.drop_client(client_id);
        if dropped > 0 {
            tracing::debug!(
                client_id,
                dropped,
                "dropped a terminated client's broadcast queues"
            );
        }
    }

    /// Stores one message in a partition, durably when the topic's flush policy
    /// is `always`. The topic must exist. With a delivery time (epoch ms) in the
    /// future the message is kept back, fsynced, and lands in the partition when
    /// due; one up to [`DELIVERY_TIME_TOLERANCE_MS`] in the past is stored at once.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        message: &Message,
        deliver_at: Option<i64>,
    ) -> Result<Sent, CoreError> {
        message.validate()?;
        self.check_delivery_time(deliver_at, now_ms())?;
        self.store(topic, partition, message, deliver_at).await
    }

    /// [`Messaging::send`] of a message already validated, with a delivery
    /// time already checked: kept back when it is still in the future,
    /// appended otherwise.
    async fn store(
        &self,
        topic: &str,
        partition: i32,
        message: &Message,
        deliver_at: Option<i64>,
    ) -> Result<Sent, CoreError> {
        let now = now_ms();
        if let Some(at) = deliver_at.filter(|at| *at > now) {
            return self.schedule(topic, partition, message, at).await;
        }
        let batch = message.to_batch(now);
        let produced = self.inner.broker.produce(topic, partition, &batch).await?;
        Ok(Sent {
            partition,
            offset: produced.base_offset,
            durability: produced.durability,
            recall_handle: None,
            transaction_id: None,
        })
    }

    /// Refuses a delivery time too far in the past (beyond the clock-skew
    /// tolerance) or beyond the maximum delay.
    fn check_delivery_time(&self, deliver_at: Option<i64>, now: i64) -> Result<(), CoreError> {
        let Some(at) = deliver_at else {
            return Ok(());
        };
        if at < now - DELIVERY_TIME_TOLERANCE_MS {
            return Err(CoreError::IllegalDeliveryTime(format!(
                "{at} lies {} ms in the past",
                now - at
            )));
        }
        if at > now.saturating_add(self.inner.config.max_delay_ms) {
            return Err(CoreError::IllegalDeliveryTime(format!(
                "{at} is more than the maximum delay of {} ms away",
                self.inner.config.max_delay_ms
            )));
        }
        Ok(())
    }

    /// Batches a tag filter passed over by their tag summary, never decoded.
    pub fn batches_skipped(&self) -> u64 {
        self.inner.shared.batches_skipped()
    }

    async fn schedule(
        &self,
        topic: &str,
        partition: i32,
        message: &Message,
        deliver_at: i64,
    ) -> Result<Sent, CoreError> {
        // The target must exist now; a topic deleted before the delivery time
        // drops the message then (logged).
        self.inner.broker.partition_offsets(topic, partition)?;
        let (topic_owned, message) = (topic.to_string(), message.clone());
        let entry = self
            .on_delay_log(move |d| {
                d.schedule(&topic_owned, partition, &message, deliver_at, now_ms())
            })
            .await?;
        self.inner.delay_wake.notify_one();
        Ok(Sent {
            partition,
            offset: -1,
            durability: Durability::Fsynced,
            recall_handle: (deliver_at != delay::HALF).then(|| format!("{entry:x}")),
            transaction_id: (deliver_at == delay::HALF).then(|| format!("{entry:x}")),
        })
    }

    /// Stores a transactional half message durably (fsynced): invisible until
    /// [`Messaging::end_transaction`] commits it, with an optional delivery time.
    pub async fn prepare(
        &self,
        topic: &str,
        partition: i32,
        message: &Message,
        deliver_at: Option<i64>,
    ) -> Result<Sent, CoreError> {
        message.validate()?;
        let mut message = message.clone();
        if let Some(at) = deliver_at {
            message.set_system_header(message::HEADER_DELIVER_AT, at.to_string());
        }
        self.schedule(topic, partition, &message, delay::HALF).await
    }

    /// Commits (the message is delivered exactly once) or rolls back (it never
    /// is) a half message. Returns its message id.
    pub async fn end_transaction(
        &self,
        topic: &str,
        transaction_id: &str,
        commit: bool,
    ) -> Result<String, CoreError> {
        let entry = i64::from_str_radix(transaction_id, 16)
            .map_err(|_| CoreError::UnknownTransaction(transaction_id.to_string()))?;
        let topic = topic.to_string();
        let id = self
            .on_delay_log(move |d| {
                if commit {
                    d.commit(&topic, entry, now_ms())
                } else {
                    d.rollback(&topic, entry, now_ms())
                }
            })
            .await?;
        self.inner.checks.lock().remove(&entry);
        if commit {
            self.inner.delay_wake.notify_one();
        }
        Ok(id)
    }

    /// Half messages due for a check-back now; each call counts a check. Ones
    /// that used up their checks are rolled back here (logged).
    pub async fn transactions_to_check(&self) -> Vec<TransactionCheck> {
        let now = now_ms();
        let interval = self.inner.config.transaction_check_interval_ms;
        let halves = self.inner.delay.halves();
        let mut due = Vec::new();
        let mut expired = Vec::new();
        {
            let mut checks = self.inner.checks.lock();
            let live: std::collections::HashSet<i64> = halves.iter().map(|h| h.0).collect();
            checks.retain(|entry, _| live.contains(entry));
            for (entry, topic, partition) in &halves {
                let state = checks.entry(*entry).or_insert((now + interval, 0));
                if state.0 > now {
                    continue;
                }
                if state.1 >= self.inner.config.transaction_max_checks {
                    expired.push((*entry, topic.clone()));
                    continue;
                }
                state.0 = now + interval;
                state.1 += 1;
                due.push((*entry, topic.clone(), *partition, state.1));
            }
        }
        for (entry, topic) in expired {
            match self
                .end_transaction(&topic, &format!("{entry:x}"), false)
                .await
            {
                Ok(id) => tracing::warn!(topic = %topic, message_id = %id,
                    "rolled back a half message: no producer resolved it"),
                Err(e) => {
                    tracing::error!(topic = %topic, error = %e, "rolling back a half message failed")
                }
            }
        }
        let mut out = Vec::new();
        for (entry, topic, partition, check) in due {
            let read = self.on_delay_log(move |d| d.half_message(entry)).await;
            let Ok(message) = read else { continue };
            out.push(TransactionCheck {
                transaction_id: format!("{entry:x}"),
                topic,
                partition,
                message,
                check,
            });
        }
        out
    }

    /// Withdraws a delayed message that is not yet due; returns its message id.
    pub async fn recall(&self, topic: &str, recall_handle: &str) -> Result<String, CoreError> {
        let entry = i64::from_str_radix(recall_handle, 16).map_err(|_| {
            CoreError::MessageNotFound(format!("malformed recall handle {recall_handle:?}"))
        })?;
        let topic = topic.to_string();
        self.on_delay_log(move |d| d.recall(&topic, entry, now_ms()))
            .await
    }

    /// Takes up to `req.max_messages` messages for the group, waiting up to
    /// `req.wait` when none is ready. An empty answer means none arrived in time.
    pub async fn receive(&self, req: ReceiveRequest) -> Result<Vec<Delivery>, CoreError> {
        let broker = &self.inner.broker;
        let info = broker
            .topic(&req.topic)
            .ok_or_else(|| CoreError::UnknownTopicOrPartition {
                topic: req.topic.clone(),
                partition: -1,
            })?;
        let partitions: Vec<i32> = match req.partition {
            Some(p) if info.partitions.iter().any(|x| x.index == p) => vec![p],
            Some(p) => {
                return Err(CoreError::UnknownTopicOrPartition {
                    topic: req.topic.clone(),
                    partition: p,
                })
            }
            None => info.partitions.iter().map(|p| p.index).collect(),
        };
        let deadline = tokio::time::Instant::now() + req.wait;
        loop {
            let mut watch =
                broker.watch_appends(partitions.iter().map(|p| (req.topic.as_str(), *p)));
            let shared::Taken {
                deliveries: out,
                wake,
                dead,
            } = self
                .inner
                .shared
                .take(broker, &self.inner.config, &req, &partitions)?;
            for d in &dead {
                // A failure is logged and the message stays deliverable.
                let _ = self.dead_letter(d).await;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let mut until = deadline;
            if let Some(at) = wake {
                let ms = u64::try_from(at.saturating_sub(now_ms()).max(1)).unwrap_or(1);
                until = until.min(now + Duration::from_millis(ms));
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Settles a delivery.
    pub fn ack(&self, group: &str, topic: &str, receipt_handle: &str) -> Result<(), CoreError> {
        self.inner.shared.ack(group, topic, receipt_handle)
    }

    /// Makes a delivery invisible for `invisible` from now instead; returns the
    /// new receipt handle (the old one stops working) and the new deadline.
    pub fn change_invisible_duration(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
        invisible: Duration,
    ) -> Result<(String, i64), CoreError> {
        self.inner
            .shared
            .change_invisible(group, topic, receipt_handle, invisible)
    }

    /// Moves a delivered message to the group's dead-letter topic now (a client
    /// that gave up on it).
    pub async fn forward_to_dead_letter(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(), CoreError> {
        let dead = self
            .inner
            .shared
            .begin_dead_letter(group, topic, receipt_handle)?;
        self.dead_letter(&dead).await
    }

    /// Moves a message whose delivery is marked dead, then settles it, or on
    /// failure (logged) makes it deliverable again.
    async fn dead_letter(&self, dead: &DeadLetter) -> Result<(), CoreError> {
        let result = self.move_to_dead_letter(dead).await;
        if let Err(e) = &result {
            tracing::error!(group = %dead.key.0, topic = %dead.key.1, partition = dead.key.2,
                offset = dead.offset, error = %e, "moving a message to its dead-letter topic failed");
        }
        self.inner.shared.finish_dead_letter(dead, result.is_ok());
        result
    }

    /// Appends the message to `%DLQ%<group>` with its properties and where it
    /// came from; the topic is made (one partition) when missing.
    async fn move_to_dead_letter(&self, dead: &DeadLetter) -> Result<(), CoreError> {
        let broker = &self.inner.broker;
        let (_, topic, partition) = &dead.key;
        // The real group: a broadcast queue's key names a consumer too.
        let group = &dead.group;
        let Some(stored) = read_message(broker, topic, *partition, dead.offset)? else {
            // Already removed by retention: nothing to keep.
            return Ok(());
        };
        let dlq = dlq_topic(group);
        if broker.topic(&dlq).is_none() {
            match broker.create_topic(&dlq, 1, -1, TopicConfig::default(), false) {
                Ok(_) | Err(CoreError::TopicAlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let id = stored.id();
        let mut message = stored.message;
        message.message_id = id;
        message.set_system_header(HEADER_DLQ_ORIGIN_TOPIC, topic.as_bytes().to_vec());
        message.set_system_header(HEADER_DLQ_ORIGIN_PARTITION, partition.to_string());
        message.set_system_header(HEADER_DLQ_ORIGIN_OFFSET, dead.offset.to_string());
        message.set_system_header(HEADER_DLQ_ATTEMPTS, dead.attempts.to_string());
        let batch = message.to_batch(now_ms());
        broker.produce(&dlq, 0, &batch).await?;
        tracing::info!(group = %group, topic = %topic, partition, offset = dead.offset,
            attempts = dead.attempts, "moved a message to its dead-letter topic");
        Ok(())
    }

    /// Background work until `shutdown`: delivers due delayed messages, commits
    /// the shared subscriptions' floors and dead-letters expired messages of
    /// groups that stopped asking.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut timer = tokio::time::interval(Duration::from_millis(200));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let delays = {
            let this = self.clone();
            tokio::spawn(async move { this.run_delays().await })
        };
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _delays = AbortOnDrop(delays);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = timer.tick() => {}
            }
            for d in &self.inner.shared.sweep_dead() {
                let _ = self.dead_letter(d).await;
            }
            let idle = self.inner.shared.sweep_idle_broadcast(now_ms());
            if idle > 0 {
                tracing::debug!(dropped = idle, "dropped idle broadcast consumers' queues");
            }
            self.commit_floors().await;
        }
        self.commit_floors().await;
    }

    /// Delivers delayed messages as they fall due, forever.
    async fn run_delays(&self) {
        loop {
            let wait = match self.inner.delay.next_due() {
                Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.inner.delay_wake.notified() => continue,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "delivering delayed messages failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One delivery round (see [`delay`]).
    async fn deliver_due(&self) -> Result<(), CoreError> {
        let broker = &self.inner.broker;
        let due = self
            .on_delay_log(|d| d.due(now_ms(), DELAY_ROUND_MAX))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut ends: Vec<(String, i32, i64)> = Vec::new();
        let mut dropped = Vec::new();
        for d in &due {
            let (topic, partition) = (&d.pending.topic, d.pending.partition);
            if ends.iter().any(|(t, p, _)| t == topic && *p == partition) {
                continue;
            }
            match broker.partition_offsets(topic, partition) {
                Ok((_, end)) => ends.push((topic.clone(), partition, end)),
                Err(_) => dropped.push(d.pending.entry),
            }
        }
        let entries: Vec<i64> = due.iter().map(|d| d.pending.entry).collect();
        let (e2, ends2) = (entries.clone(), ends.clone());
        self.on_delay_log(move |d| d.begin_round(&e2, &ends2, now_ms()))
            .await?;
        let mut settled = Vec::new();
        let mut failure = None;
        for d in due {
            if dropped.contains(&d.pending.entry) {
                tracing::warn!(topic = %d.pending.topic, partition = d.pending.partition,
                    "dropping a delayed message: its topic no longer exists");
                settled.push(d.pending.entry);
                continue;
            }
            let batch = d.message.to_batch(now_ms());
            match broker
                .produce(&d.pending.topic, d.pending.partition, &batch)
                .await
            {
                Ok(_) => settled.push(d.pending.entry),
                Err(CoreError::UnknownTopicOrPartition { .. }) => {
                    tracing::warn!(topic = %d.pending.topic, partition = d.pending.partition,
                        "dropping a delayed message: its topic no longer exists");
                    settled.push(d.pending.entry);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.on_delay_log(move |d| d.settle(&settled, now_ms()))
            .await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn commit_floors(&self) {
        let floors = self.inner.shared.floors_to_commit();
        if floors.is_empty() {
            return;
        }
        let mut by_group: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
        for ((group, topic, partition), floor) in &floors {
            by_group.entry(group.as_str()).or_default().push((
                topic.clone(),
                *partition,
                crate::CommittedOffset {
                    offset: *floor,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: now_ms(),
                },
            ));
        }
        for (group, entries) in by_group {
            let result = self
                .inner
                .broker
                .commit_offsets(group, -1, "", None, entries)
                .await;
            if let Err(e) = result {
                tracing::warn!(group, error = %e, "committing shared-subscription progress failed");
                let failed: Vec<_> = floors.iter().filter(|f| f.0 .0 == group).cloned().collect();
                self.inner.shared.commit_failed(&failed);
            }
        }
    }
}

/// Entries among `wanted` (as text) whose messages a partition holds from `from`
/// on, by their `sluice-delay-ref` header.
fn find_delivered(
    broker: &Broker,
    topic: &str,
    partition: i32,
    from: i64,
    wanted: &std::collections::HashSet<String>,
) -> Result<Vec<i64>, CoreError> {
    let mut found = Vec::new();
    let Ok((start, end)) = broker.partition_offsets(topic, partition) else {
        return Ok(found);
    };
    let mut offset = from.max(start);
    while offset < end {
        let read = broker.read(topic, partition, offset, 1 << 20)?;
        let Some(slice) = read.records else { break };
        let bytes = shared::slice_bytes(&slice, topic)?;
        let before = offset;
        let mut at = 0;
        while let Ok(h) = sluice_storage::BatchHeader::parse(&bytes[at..]) {
            let stop = (at + h.total_bytes()).min(bytes.len());
            for m in message::decode_batch(topic, partition, &bytes[at..stop]).unwrap_or_default() {
                if let Some(r) = m.message.system_header(HEADER_DELAY_REF) {
                    if wanted.contains(&r) {
                        found.push(r.parse().unwrap_or(-1));
                    }
                }
            }
            offset = h.last_offset() + 1;
            at = stop;
            if at >= bytes.len() {
                break;
            }
        }
        if offset == before {
            break;
        }
    }
    Ok(found)
}
