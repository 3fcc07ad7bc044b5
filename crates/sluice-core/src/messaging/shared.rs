//! Shared subscriptions: per-message delivery state on top of a partition log.
//!
//! Any number of consumers of one group take messages from the same partition
//! at once. Each message handed out is invisible to the group until its
//! invisible time ends; an ack (by receipt handle) settles it, and one that is
//! not acknowledged in time is handed out again with its delivery attempt
//! counted up, until the group's maximum, after which it moves to the group's
//! dead-letter topic. Messages of one FIFO message group are handed out one at
//! a time, in offset order.
//!
//! Per (group, topic, partition) the state is a window `[floor, next)` of the
//! log: everything below `floor` is settled (acknowledged, filtered out or dead-
//! lettered); `next` is the first offset never read. The window holds at most
//! [`MessagingConfig::unacked_per_queue_max`] unsettled messages: a full window
//! stops new reads from that partition (back-pressure) until messages settle.
//! The floor is committed like a consumer group offset; after a restart every
//! message from the committed floor on is delivered again (at least once), with
//! its attempt count starting over.
//!
//! A group whose `consume.mode` is `broadcast` (see [`group_settings`]) has one
//! window per consumer (client id) instead: its queue key names the group plus
//! [`BROADCAST_SEPARATOR`] plus the client id, so every consumer receives every
//! message and acks or redeliveries of one do not touch another's. Such a
//! window starts at the partition's high watermark when the consumer first
//! shows up, lives in memory only (RocketMQ keeps broadcast progress on the
//! client; its floor is never committed) and is dropped when the client
//! terminates or has not received for [`BROADCAST_IDLE_MS`]. Receipt handles of
//! broadcast deliveries carry the client id, so ack and change-invisible need
//! nothing else to find the window.
//!
//! [`group_settings`]: crate::messaging::group_settings

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::CoreError;
use crate::filter::Filter;
use crate::messaging::group_settings::{ConsumeMode, GroupSettingsStore};
use crate::messaging::message::{decode_batch, StoredMessage};
use crate::messaging::MessagingConfig;
use crate::{now_ms, Broker};

/// Bytes read from a log per step when looking for new messages.
const READ_BYTES: usize = 1 << 20;
/// Log reads per partition per receive call, so one call cannot scan a long run
/// of filtered-out data while holding the partition's state.
const READS_PER_CALL_MAX: usize = 8;
/// Joins a broadcast group's name and a client id into the group name of that
/// consumer's queues. Valid group names cannot contain it, so such a name never
/// collides with a real group and splits back unambiguously.
pub(crate) const BROADCAST_SEPARATOR: char = '#';
/// Broadcast queues (one per consumer and partition) kept at most; a consumer
/// that would need one more gets an error.
pub const BROADCAST_QUEUES_MAX: usize = 10_000;
/// A broadcast consumer that has not received for this long (ms) loses its
/// queues; when it comes back it starts at the high watermark again.
pub const BROADCAST_IDLE_MS: i64 = 10 * 60 * 1000;
/// Longest client id accepted for a broadcast consumer.
pub const CLIENT_ID_BYTES_MAX: usize = 256;
/// Marks a receipt handle of a broadcast delivery: `~<client id as hex>.` then
/// the usual handle. Not a hex digit, so no clustering handle starts with it.
const BROADCAST_HANDLE_PREFIX: char = '~';
/// Batch summaries looked up per log read: a 1 MiB read of the smallest
/// batches (about 70 bytes) holds about this many.
const SUMMARIES_PER_READ: usize = 16_384;

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: StoredMessage,
    /// Names this delivery; ack and change-invisible-duration need it.
    pub receipt_handle: String,
    /// 1 for the first delivery.
    pub delivery_attempt: u32,
    /// When the message becomes visible again unless acknowledged (epoch ms).
    pub invisible_until: i64,
}

/// What a consumer asks for.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    pub group: String,
    pub topic: String,
    /// One partition, or `None` for all of the topic's.
    pub partition: Option<i32>,
    pub filter: Filter,
    pub max_messages: usize,
    pub invisible: Duration,
    /// How long to wait for a message when none is ready (long polling).
    pub wait: Duration,
    /// The consumer's id; a receive in a broadcast group needs one.
    pub client_id: Option<String>,
}

/// A message whose deliveries are used up, to be moved to the dead-letter topic.
pub(crate) struct DeadLetter {
    pub key: QueueKey,
    /// The group whose dead-letter topic gets the message (for a broadcast
    /// queue, the group, not the queue's per-consumer name).
    pub group: String,
    pub offset: i64,
    pub attempts: u32,
}

pub(crate) type QueueKey = (String, String, i32);

/// What one pass over a topic's partitions found.
pub(crate) struct Taken {
    pub deliveries: Vec<Delivery>,
    /// When something may next become ready (epoch ms).
    pub wake: Option<i64>,
    /// Messages whose deliveries are used up.
    pub dead: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    /// May be handed out from this time (epoch ms) on.
    Ready {
        at: i64,
    },
    InFlight {
        until: i64,
        nonce: u64,
    },
    /// Being moved to the dead-letter topic.
    Dead,
    /// Acknowledged or dead-lettered.
    Done,
}

#[derive(Debug, Clone)]
struct Entry {
    attempts: u32,
    state: EntryState,
    message_group: Option<String>,
}

impl Entry {
    /// Ends a delivery whose invisible time is over: the message is ready again,
    /// or, with its attempts used up, becomes dead (true).
    fn expire(&mut self, now: i64, max_attempts: u32) -> bool {
        let EntryState::InFlight { until, .. } = self.state else {
            return false;
        };
        if until > now {
            return false;
        }
        if self.attempts >= max_attempts {
            self.state = EntryState::Dead;
            return true;
        }
        self.state = EntryState::Ready { at: until };
        false
    }
}

#[derive(Debug, Default)]
struct Queue {
    loaded: bool,
    floor: i64,
    next: i64,
    entries: BTreeMap<i64, Entry>,
    /// Floor last committed, or being committed.
    committed_floor: i64,
    /// Last receive from a broadcast queue (epoch ms), for the idle sweep.
    last_receive_ms: i64,
}

impl Queue {
    fn advance_floor(&mut self) {
        while let Some((&offset, entry)) = self.entries.first_key_value() {
            if entry.state != EntryState::Done {
                self.floor = offset;
                return;
            }
            self.entries.pop_first();
        }
        self.floor = self.next;
    }
}

/// The shared-subscription state of every group.
pub(crate) struct SharedSubscriptions {
    queues: Mutex<HashMap<QueueKey, Arc<Mutex<Queue>>>>,
    /// Broadcast queues among `queues`; changed only under that lock.
    broadcast_queues: AtomicUsize,
    /// Per-group consume mode and delivery attempts.
    settings: Arc<GroupSettingsStore>,
    nonce: AtomicU64,
    /// Rotates the partition a receive starts with, so that all are served.
    rotation: AtomicU64,
    /// Batches a tag filter passed over by their summary, never decoded.
    batches_skipped: AtomicU64,
}

/// The queue group name of a broadcast consumer, checking the client id.
fn broadcast_queue_group(group: &str, client_id: Option<&str>) -> Result<String, CoreError> {
    let client = client_id.filter(|c| !c.is_empty()).ok_or_else(|| {
        CoreError::InvalidRequest(format!(
            "group {group} consumes in broadcast mode: a receive needs the consumer's client id"
        ))
    })?;
    if client.len() > CLIENT_ID_BYTES_MAX {
        return Err(CoreError::InvalidRequest(format!(
            "client id of {} bytes exceeds {CLIENT_ID_BYTES_MAX}",
            client.len()
        )));
    }
    Ok(format!("{group}{BROADCAST_SEPARATOR}{client}"))
}

/// (group, client id) of a broadcast queue's group name; `None` for a group's
/// shared queue.
fn split_broadcast(queue_group: &str) -> Option<(&str, &str)> {
    queue_group.split_once(BROADCAST_SEPARATOR)
}

/// The group a queue belongs to: a broadcast queue's group name without its
/// client id.
pub(crate) fn real_group(queue_group: &str) -> &str {
    split_broadcast(queue_group).map_or(queue_group, |(g, _)| g)
}

/// The receipt handle of a delivery from the queue `key`.
fn queue_handle(key: &QueueKey, offset: i64, nonce: u64) -> String {
    let plain = encode_handle(&key.1, key.2, offset, nonce);
    match split_broadcast(&key.0) {
        Some((_, client)) => broadcast_handle(client, &plain),
        None => plain,
    }
}

fn broadcast_handle(client: &str, plain: &str) -> String {
    let mut out = String::with_capacity(2 + client.len() * 2 + plain.len());
    out.push(BROADCAST_HANDLE_PREFIX);
    for b in client.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('.');
    out.push_str(plain);
    out
}

/// (client id of a broadcast delivery, plain handle).
fn split_handle(handle: &str) -> Option<(Option<String>, &str)> {
    let Some(rest) = handle.strip_prefix(BROADCAST_HANDLE_PREFIX) else {
        return Some((None, handle));
    };
    let (hex, plain) = rest.split_once('.')?;
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * CLIENT_ID_BYTES_MAX {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((Some(String::from_utf8(bytes).ok()?), plain))
}

/// A receipt handle: partition, offset, nonce and topic, as text.
pub(crate) fn encode_handle(topic: &str, partition: i32, offset: i64, nonce: u64) -> String {
    format!("{partition:x}.{offset:x}.{nonce:x}.{topic}")
}

fn decode_handle(handle: &str) -> Option<(String, i32, i64, u64)> {
    let mut parts = handle.splitn(4, '.');
    let partition = i32::from_str_radix(parts.next()?, 16).ok()?;
    let offset = i64::from_str_radix(parts.next()?, 16).ok()?;
    let nonce = u64::from_str_radix(parts.next()?, 16).ok()?;
    let topic = parts.next()?.to_string();
    (partition >= 0 && offset >= 0 && !topic.is_empty())
        .then_some((topic, partition, offset, nonce))
}

fn bad_handle(why: &str) -> CoreError {
    CoreError::InvalidReceiptHandle(why.to_string())
}

impl SharedSubscriptions {
    pub(crate) fn new(settings: Arc<GroupSettingsStore>) -> Self {
        let seed = crate::ids::random_bytes16();
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        SharedSubscriptions {
            queues: Mutex::new(HashMap::new()),
            broadcast_queues: AtomicUsize::new(0),
            settings,
            // Random start: a handle from before a restart must not name a new
            // delivery.
            nonce: AtomicU64::new(u64::from_le_bytes(s) >> 1),
            rotation: AtomicU64::new(0),
            batches_skipped: AtomicU64::new(0),
        }
    }

    /// Batches passed over by their tag summary so far.
    pub(crate) fn batches_skipped(&self) -> u64 {
        self.batches_skipped.load(Ordering::Relaxed)
    }

    /// The queue of `key`, made when missing; a broadcast one only while fewer
    /// than [`BROADCAST_QUEUES_MAX`] exist.
    fn queue(&self, key: &QueueKey) -> Result<Arc<Mutex<Queue>>, CoreError> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(key) {
            return Ok(q.clone());
        }
        if split_broadcast(&key.0).is_some() {
            let count = self.broadcast_queues.load(Ordering::Relaxed);
            if count >= BROADCAST_QUEUES_MAX {
                return Err(CoreError::InvalidRequest(format!(
                    "{count} broadcast consumer queues exist, the most this broker keeps; \
                     a new broadcast consumer can start once others terminate or go idle"
                )));
            }
            self.broadcast_queues.store(count + 1, Ordering::Relaxed);
        }
        let q = Arc::new(Mutex::new(Queue {
            last_receive_ms: now_ms(),
            ..Queue::default()
        }));
        queues.insert(key.clone(), q.clone());
        Ok(q)
    }

    /// Forgets broadcast queues `drop` selects (by queue key and state).
    fn drop_broadcast_queues(&self, drop: impl Fn(&QueueKey, &Arc<Mutex<Queue>>) -> bool) -> usize {
        let mut queues = self.queues.lock();
        let before = queues.len();
        queues.retain(|key, q| split_broadcast(&key.0).is_none() || !drop(key, q));
        let dropped = before - queues.len();
        let count = self.broadcast_queues.load(Ordering::Relaxed);
        self.broadcast_queues
            .store(count.saturating_sub(dropped), Ordering::Relaxed);
        dropped
    }

    /// Drops every broadcast queue of a client (it terminated).
    pub(crate) fn drop_client(&self, client_id: &str) -> usize {
        self.drop_broadcast_queues(|key, _| {
            split_broadcast(&key.0).is_some_and(|(_, c)| c == client_id)
        })
    }

    /// Drops broadcast queues whose consumer has not received for
    /// [`BROADCAST_IDLE_MS`].
    pub(crate) fn sweep_idle_broadcast(&self, now: i64) -> usize {
        // A queue locked right now is being received from: not idle. Not
        // waiting for it also keeps the map's lock short.
        self.drop_broadcast_queues(|_, q| {
            q.try_lock()
                .is_some_and(|q| q.last_receive_ms < now - BROADCAST_IDLE_MS)
        })
    }

    /// Makes the queues of a broadcast consumer for these topics' partitions now,
    /// so that it receives what arrives from this moment on (called when the
    /// consumer announces its subscription). Nothing for a clustering group.
    pub(crate) fn open_broadcast(
        &self,
        broker: &Broker,
        group: &str,
        client_id: Option<&str>,
        topics: &[String],
    ) -> Result<(), CoreError> {
        if self.settings.consume_mode(group) != ConsumeMode::Broadcast {
            return Ok(());
        }
        let queue_group = broadcast_queue_group(group, client_id)?;
        for topic in topics {
            let Some(info) = broker.topic(topic) else {
                continue;
            };
            for p in &info.partitions {
                let key = (queue_group.clone(), topic.clone(), p.index);
                let queue = self.queue(&key)?;
                load_queue(broker, &key, &mut queue.lock())?;
            }
        }
        Ok(())
    }

    /// Every queue's state, taken out of the map so the map's lock is not held
    /// while each queue is visited.
    fn all_queues(&self) -> Vec<(QueueKey, Arc<Mutex<Queue>>)> {
        self.queues
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn existing_queue(&self, key: &QueueKey) -> Option<Arc<Mutex<Queue>>> {
        self.queues.lock().get(key).cloned()
    }

    fn next_nonce(&self) -> u64 {
        self.nonce.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes up to `req.max_messages` messages without waiting. Returns the
    /// deliveries, the time something may next become ready (epoch ms), and the
    /// messages whose deliveries are used up.
    pub(crate) fn take(
        &self,
        broker: &Broker,
        config: &MessagingConfig,
        req: &ReceiveRequest,
        partitions: &[i32],
    ) -> Result<Taken, CoreError> {
        let mut taken = Taken {
            deliveries: Vec::new(),
            wake: None,
            dead: Vec::new(),
        };
        let max_attempts = self.settings.max_delivery_attempts(&req.group);
        let queue_group = match self.settings.consume_mode(&req.group) {
            ConsumeMode::Clustering => req.group.clone(),
            ConsumeMode::Broadcast => broadcast_queue_group(&req.group, req.client_id.as_deref())?,
        };
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) as usize;
        for i in 0..partitions.len() {
            if taken.deliveries.len() >= req.max_messages {
                break;
            }
            let p = partitions[(start + i) % partitions.len()];
            let key = (queue_group.clone(), req.topic.clone(), p);
            let queue = self.queue(&key)?;
            let mut q = queue.lock();
            let before = taken.deliveries.len();
            self.take_from(broker, config, req, max_attempts, &key, &mut q, &mut taken)?;
            if let Some((_, client)) = split_broadcast(&key.0) {
                q.last_receive_ms = now_ms();
                // Handles name the consumer, so that an ack finds its queue.
                for d in &mut taken.deliveries[before..] {
                    d.receipt_handle = broadcast_handle(client, &d.receipt_handle);
                }
            }
        }
        Ok(taken)
    }

    /// Adds what one partition has ready to `taken`.
    #[allow(clippy::too_many_arguments)]
    fn take_from(
        &self,
        broker: &Broker,
        config: &MessagingConfig,
        req: &ReceiveRequest,
        max_attempts: u32,
        key: &QueueKey,
        q: &mut Queue,
        taken: &mut Taken,
    ) -> Result<(), CoreError> {
        let (topic, partition) = (&key.1, key.2);
        let (log_start, high_watermark) = load_queue(broker, key, q)?;
        if q.floor < log_start {
            // Retention removed messages the group never settled.
            q.entries.retain(|&o, _| o >= log_start);
            q.next = q.next.max(log_start);
            q.advance_floor();
        }
        let now = now_ms();
        let invisible_ms = i64::try_from(req.invisible.as_millis()).unwrap_or(i64::MAX);
        let wake = &mut taken.wake;
        let mut soonest = |t: i64| *wake = Some(wake.map_or(t, |w: i64| w.min(t)));
        let out = &mut taken.deliveries;
        let dead = &mut taken.dead;
        // Groups with an earlier unsettled message: FIFO order holds per group.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut redeliver = Vec::new();
        for (&offset, entry) in q.entries.iter_mut() {
            if entry.expire(now, max_attempts) {
                dead.push(DeadLetter {
                    key: key.clone(),
                    group: real_group(&key.0).to_string(),
                    offset,
                    attempts: entry.attempts,
                });
            }
            let group_blocked = entry
                .message_group
                .as_ref()
                .is_some_and(|g| blocked.contains(g));
            match entry.state {
                EntryState::Done => continue,
                EntryState::Ready { at }
                    if at <= now
                        && !group_blocked
                        && out.len() + redeliver.len() < req.max_messages =>
                {
                    redeliver.push(offset);
                }
                EntryState::Ready { at } => soonest(at.max(now)),
                EntryState::InFlight { until, .. } => soonest(until),
                EntryState::Dead => {}
            }
            if let Some(g) = &entry.message_group {
                blocked.insert(g.clone());
            }
        }
        for offset in redeliver {
            let Some(message) = read_message(broker, topic, partition, offset)? else {
                // Gone (retention): nothing left to deliver.
                if let Some(e) = q.entries.get_mut(&offset) {
                    e.state = EntryState::Done;
                }
                continue;
            };
            let Some(entry) = q.entries.get_mut(&offset) else {
                continue;
            };
            out.push(self.hand_out(entry, message, now, invisible_ms));
        }
        // New messages, while there is room in the window and in the answer.
        let mut reads = 0;
        while out.len() < req.max_messages
            && q.next < high_watermark
            && q.entries.len() < config.unacked_per_queue_max
            && reads < READS_PER_CALL_MAX
        {
            reads += 1;
            let read = broker.read(topic, partition, q.next, READ_BYTES)?;
            let Some(slice) = read.records else {
                break;
            };
            let bytes = slice_bytes(&slice, topic)?;
            // A tag filter passes over batches whose tag summary rules them out
            // without decoding them, as RocketMQ's consume queue does with the
            // tag hash code it keeps per entry.
            let summaries: HashMap<i64, u64> = if req.filter.may_match_summary(0) {
                HashMap::new()
            } else {
                let end = batches_end(&bytes).min(high_watermark);
                broker
                    .batch_summaries(topic, partition, q.next, end, SUMMARIES_PER_READ)?
                    .into_iter()
                    .collect()
            };
            let mut at = 0usize;
            let mut progressed = false;
            while at < bytes.len() {
                let Ok(header) = sluice_storage::BatchHeader::parse(&bytes[at..]) else {
                    break;
                };
                let end = at + header.total_bytes();
                if end > bytes.len() || header.base_offset >= high_watermark {
                    break;
                }
                let batch = &bytes[at..end];
                at = end;
                if header.last_offset() < q.next {
                    continue;
                }
                if summaries
                    .get(&header.base_offset)
                    .is_some_and(|s| !req.filter.may_match_summary(*s))
                {
                    // Nothing in it matches: settled without being decoded.
                    q.next = q.next.max(header.last_offset() + 1);
                    progressed = true;
                    self.batches_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for m in decode_batch(topic, partition, batch)? {
                    if m.offset < q.next || m.offset >= high_watermark {
                        continue;
                    }
                    q.next = m.offset + 1;
                    let matches = req.filter.matches(m.message.tag.as_deref(), &|name| {
                        m.message.properties.get(name).cloned()
                    });
                    if !matches {
                        q.entries.insert(
                            m.offset,
                            Entry {
                                attempts: 0,
                                state: EntryState::Done,
                                message_group: None,
                            },
                        );
                        continue;
                    }
                    let group = m.message.message_group.clone();
                    let mut entry = Entry {
                        attempts: 0,
                        state: EntryState::Ready { at: now },
                        message_group: group.clone(),
                    };
                    let free = group.as_ref().is_none_or(|g| !blocked.contains(g));
                    if free && out.len() < req.max_messages {
                        let offset = m.offset;
                        out.push(self.hand_out(&mut entry, m, now, invisible_ms));
                        q.entries.insert(offset, entry);
                    } else {
                        q.entries.insert(m.offset, entry);
                    }
                    if let Some(g) = group {
                        blocked.insert(g);
                    }
                }
                // Skip past the batch even when it held only control records.
                q.next = q.next.max(header.last_offset() + 1);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        q.advance_floor();
        Ok(())
    }

    fn hand_out(
        &self,
        entry: &mut Entry,
        message: StoredMessage,
        now: i64,
        invisible_ms: i64,
    ) -> Delivery {
        let nonce = self.next_nonce();
        let until = now.saturating_add(invisible_ms);
        entry.attempts += 1;
        entry.state = EntryState::InFlight { until, nonce };
        Delivery {
            receipt_handle: encode_handle(&message.topic, message.partition, message.offset, nonce),
            delivery_attempt: entry.attempts,
            invisible_until: until,
            message,
        }
    }

    /// Finds the in-flight delivery a handle names, and applies `f` to it.
    fn with_delivery<T>(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
        f: impl FnOnce(&QueueKey, i64, &mut Entry, i64) -> T,
    ) -> Result<T, CoreError> {
        let malformed = || bad_handle("malformed receipt handle");
        let (client, plain) = split_handle(handle).ok_or_else(malformed)?;
        let (h_topic, partition, offset, nonce) = decode_handle(plain).ok_or_else(malformed)?;
        if h_topic != topic {
            return Err(bad_handle("the receipt handle names another topic"));
        }
        let queue_group = match client {
            Some(c) => broadcast_queue_group(group, Some(&c))?,
            None => group.to_string(),
        };
        let key = (queue_group, topic.to_string(), partition);
        let queue = self
            .existing_queue(&key)
            .ok_or_else(|| bad_handle("no delivery of this group matches the handle"))?;
        let mut q = queue.lock();
        let now = now_ms();
        let mut entry = q
            .entries
            .get(&offset)
            .cloned()
            .ok_or_else(|| bad_handle("the message is already settled"))?;
        match entry.state {
            EntryState::InFlight { until, nonce: n } if n == nonce && until > now => {}
            EntryState::InFlight { nonce: n, .. } if n == nonce => {
                return Err(bad_handle("the invisible time has expired"))
            }
            _ => {
                return Err(bad_handle(
                    "the handle is stale: the message was handed out again or settled",
                ))
            }
        }
        let result = f(&key, offset, &mut entry, now);
        q.entries.insert(offset, entry);
        q.advance_floor();
        Ok(result)
    }

    pub(crate) fn ack(&self, group: &str, topic: &str, handle: &str) -> Result<(), CoreError> {
        self.with_delivery(group, topic, handle, |_, _, entry, _| {
            entry.state = EntryState::Done;
        })
    }

    pub(crate) fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
        invisible: Duration,
    ) -> Result<(String, i64), CoreError> {
        let nonce = self.next_nonce();
        let ms = i64::try_from(invisible.as_millis()).unwrap_or(i64::MAX);
        self.with_delivery(group, topic, handle, |key, offset, entry, now| {
            let until = now.saturating_add(ms);
            entry.state = EntryState::InFlight { until, nonce };
            (queue_handle(key, offset, nonce), until)
        })
    }

    /// Marks a delivery as being dead-lettered; returns what to move.
    pub(crate) fn begin_dead_letter(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
    ) -> Result<DeadLetter, CoreError> {
        self.with_delivery(group, topic, handle, |key, offset, entry, _| {
            entry.state = EntryState::Dead;
            DeadLetter {
                key: key.clone(),
                group: group.to_string(),
                offset,
                attempts: entry.attempts,
            }
        })
    }

    /// Settles a dead-lettered message, or on failure makes it deliverable again.
    pub(crate) fn finish_dead_letter(&self, dead: &DeadLetter, moved: bool) {
        if let Some(queue) = self.existing_queue(&dead.key) {
            let mut q = queue.lock();
            if let Some(e) = q.entries.get_mut(&dead.offset) {
                if e.state == EntryState::Dead {
                    e.state = if moved {
                        EntryState::Done
                    } else {
                        EntryState::Ready { at: now_ms() }
                    };
                }
            }
            q.advance_floor();
        }
    }

    /// Expired deliveries with no attempts left, across all groups (for groups
    /// whose consumers stopped asking), each by its group's maximum.
    pub(crate) fn sweep_dead(&self) -> Vec<DeadLetter> {
        let now = now_ms();
        let queues = self.all_queues();
        let mut dead = Vec::new();
        for (key, queue) in queues {
            let group = real_group(&key.0);
            let max_attempts = self.settings.max_delivery_attempts(group);
            let mut q = queue.lock();
            for (&offset, entry) in q.entries.iter_mut() {
                if entry.expire(now, max_attempts) {
                    dead.push(DeadLetter {
                        key: key.clone(),
                        group: group.to_string(),
                        offset,
                        attempts: entry.attempts,
                    });
                }
            }
        }
        dead
    }

    /// Floors that moved since they were last committed: (group, topic,
    /// partition, floor). The caller commits them and reports back. Broadcast
    /// queues are never committed: their progress belongs to one consumer.
    pub(crate) fn floors_to_commit(&self) -> Vec<(QueueKey, i64)> {
        let queues = self.all_queues();
        let mut out = Vec::new();
        for (key, queue) in queues {
            if split_broadcast(&key.0).is_some() {
                continue;
            }
            let mut q = queue.lock();
            if q.loaded && q.floor != q.committed_floor {
                q.committed_floor = q.floor;
                out.push((key, q.floor));
            }
        }
        out
    }

    /// Forgets that floors were committed (the commit failed), so they are retried.
    pub(crate) fn commit_failed(&self, keys: &[(QueueKey, i64)]) {
        for (key, _) in keys {
            if let Some(queue) = self.existing_queue(key) {
                queue.lock().committed_floor = -1;
            }
        }
    }
}

/// Brings a queue's window in line with its partition: starts it when new (a
/// group's queue at its committed offset, else the log start; a broadcast
/// consumer's at the high watermark) and starts it over when the topic was
/// deleted and made again. Returns (log start, high watermark).
fn load_queue(broker: &Broker, key: &QueueKey, q: &mut Queue) -> Result<(i64, i64), CoreError> {
    let (topic, partition) = (&key.1, key.2);
    let (log_start, high_watermark) = broker.partition_offsets(topic, partition)?;
    if q.loaded && q.next > high_watermark {
        // The topic was deleted and made again: this state is of the old one.
        *q = Queue {
            last_receive_ms: q.last_receive_ms,
            ..Queue::default()
        };
    }
    if !q.loaded {
        if split_broadcast(&key.0).is_some() {
            q.floor = high_watermark;
            q.committed_floor = high_watermark;
        } else {
            let committed = broker
                .committed_offsets(&key.0)
                .get(&(topic.clone(), partition))
                .map(|c| c.offset);
            q.floor = committed
                .unwrap_or(log_start)
                .clamp(log_start, high_watermark);
            q.committed_floor = committed.unwrap_or(-1);
        }
        q.next = q.floor;
        q.loaded = true;
    }
    Ok((log_start, high_watermark))
}

/// The offset after the last whole batch in `bytes` (0 when there is none).
fn batches_end(bytes: &[u8]) -> i64 {
    let mut at = 0usize;
    let mut end = 0;
    while let Ok(header) = sluice_storage::BatchHeader::parse(&bytes[at..]) {
        if at + header.total_bytes() > bytes.len() {
            break;
        }
        end = header.last_offset() + 1;
        at += header.total_bytes();
    }
    end
}

/// The bytes of a read, with a failure named after the topic.
pub(crate) fn slice_bytes(
    slice: &sluice_storage::FileSlice,
    topic: &str,
) -> Result<bytes::Bytes, CoreError> {
    slice.read_bytes().map_err(|e| {
        CoreError::Storage(sluice_storage::StorageError::Io {
            path: std::path::PathBuf::from(topic),
            source: e,
        })
    })
}

/// The message stored at `offset`, if the log still has it.
pub(crate) fn read_message(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<StoredMessage>, CoreError> {
    let read = match broker.read(topic, partition, offset, 1) {
        Ok(r) => r,
        Err(CoreError::OffsetOutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(slice) = read.records else {
        return Ok(None);
    };
    let bytes = slice_bytes(&slice, topic)?;
    let mut at = 0usize;
    while at < bytes.len() {
        let header = sluice_storage::BatchHeader::parse(&bytes[at..])?;
        let end = (at + header.total_bytes()).min(bytes.len());
        if header.last_offset() >= offset {
            return Ok(decode_batch(topic, partition, &bytes[at..end])?
                .into_iter()
                .find(|m| m.offset == offset));
        }
        at = end;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::messaging::group_settings::{KEY_CONSUME_MODE, KEY_MAX_DELIVERY_ATTEMPTS};
    use crate::messaging::Message;
    use crate::{BrokerConfig, ConfigChange, TopicConfig};

    struct Fixture {
        _dir: tempfile::TempDir,
        broker: Broker,
        settings: Arc<GroupSettingsStore>,
        shared: SharedSubscriptions,
        config: MessagingConfig,
    }

    /// A broker with topic `t` (one partition), and shared subscriptions whose
    /// broker-wide maximum is 5 deliveries.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path().to_path_buf())).unwrap();
        broker
            .create_topic("t", 1, 1, TopicConfig::default(), false)
            .unwrap();
        let settings = Arc::new(GroupSettingsStore::open(dir.path(), 5, 0).unwrap());
        Fixture {
            _dir: dir,
            broker,
            shared: SharedSubscriptions::new(settings.clone()),
            settings,
            config: MessagingConfig {
                max_delivery_attempts: 5,
                ..MessagingConfig::default()
            },
        }
    }

    impl Fixture {
        fn set(&self, group: &str, key: &str, value: &str) {
            let change = ConfigChange::Set(key.to_string(), value.to_string());
            self.settings.alter(group, &[change], false, 0).unwrap();
        }

        async fn send(&self, bodies: &[&str]) {
            for b in bodies {
                let m = Message {
                    body: b.as_bytes().to_vec(),
                    message_id: format!("id-{b}"),
                    ..Message::default()
                };
                self.broker
                    .produce("t", 0, &m.to_batch(now_ms()))
                    .await
                    .unwrap();
            }
        }

        fn take(&self, group: &str, client: Option<&str>, invisible: Duration) -> Taken {
            let req = ReceiveRequest {
                group: group.to_string(),
                topic: "t".to_string(),
                partition: None,
                filter: Filter::All,
                max_messages: 32,
                invisible,
                wait: Duration::ZERO,
                client_id: client.map(str::to_string),
            };
            self.shared
                .take(&self.broker, &self.config, &req, &[0])
                .unwrap()
        }
    }

    fn bodies(t: &Taken) -> Vec<String> {
        t.deliveries
            .iter()
            .map(|d| String::from_utf8_lossy(&d.message.message.body).into_owned())
            .collect()
    }

    /// Waits (real time) until deliveries made with `invisible` have expired.
    async fn outlive(invisible: Duration) {
        tokio::time::sleep(invisible + Duration::from_millis(5)).await;
    }

    #[tokio::test]
    async fn broadcast_consumers_each_receive_every_message_and_ack_alone() {
        let f = fixture();
        f.set("b", KEY_CONSUME_MODE, "broadcast");
        f.send(&["before"]).await;
        // Consumers start at the high watermark when they show up.
        f.shared
            .open_broadcast(&f.broker, "b", Some("c1"), &["t".to_string()])
            .unwrap();
        assert!(f
            .take("b", Some("c2"), Duration::from_secs(30))
            .deliveries
            .is_empty());
        f.send(&["m1", "m2"]).await;
        let one = f.take("b", Some("c1"), Duration::from_secs(30));
        let two = f.take("b", Some("c2"), Duration::from_millis(1));
        assert_eq!(bodies(&one), ["m1", "m2"]);
        assert_eq!(bodies(&two), ["m1", "m2"]);
        // c1 acks both; c2's deliveries are untouched and come back to c2 only.
        for d in &one.deliveries {
            f.shared.ack("b", "t", &d.receipt_handle).unwrap();
        }
        outlive(Duration::from_millis(1)).await;
        let again = f.take("b", Some("c2"), Duration::from_secs(30));
        assert_eq!(bodies(&again), ["m1", "m2"]);
        assert!(again.deliveries.iter().all(|d| d.delivery_attempt == 2));
        assert!(f
            .take("b", Some("c1"), Duration::from_secs(30))
            .deliveries
            .is_empty());
        // A handle of c2 acks c2's delivery, never c1's; it names the client itself.
        f.shared
            .ack("b", "t", &again.deliveries[0].receipt_handle)
            .unwrap();
        let (h, _) = f
            .shared
            .change_invisible(
                "b",
                "t",
                &again.deliveries[1].receipt_handle,
                Duration::from_secs(60),
            )
            .unwrap();
        f.shared.ack("b", "t", &h).unwrap();
        // Broadcast progress is never committed as a group offset.
        assert!(f.shared.floors_to_commit().is_empty());
        // A receive without a client id cannot name a consumer.
        let req = ReceiveRequest {
            group: "b".into(),
            topic: "t".into(),
            partition: None,
            filter: Filter::All,
            max_messages: 1,
            invisible: Duration::from_secs(1),
            wait: Duration::ZERO,
            client_id: None,
        };
        assert!(matches!(
            f.shared.take(&f.broker, &f.config, &req, &[0]),
            Err(CoreError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn broadcast_queues_go_with_their_client_and_when_idle() {
        let f = fixture();
        f.set("b", KEY_CONSUME_MODE, "broadcast");
        f.send(&["m1"]).await;
        let topics = ["t".to_string()];
        f.shared
            .open_broadcast(&f.broker, "b", Some("c1"), &topics)
            .unwrap();
        f.shared
            .open_broadcast(&f.broker, "b", Some("c2"), &topics)
            .unwrap();
        // Clustering groups get no queue from announcing a subscription.
        f.shared
            .open_broadcast(&f.broker, "plain", Some("c1"), &topics)
            .unwrap();
        assert_eq!(f.shared.broadcast_queues.load(Ordering::Relaxed), 2);
        assert_eq!(f.shared.drop_client("c1"), 1);
        assert_eq!(f.shared.sweep_idle_broadcast(now_ms()), 0);
        assert_eq!(
            f.shared
                .sweep_idle_broadcast(now_ms() + BROADCAST_IDLE_MS + 1),
            1
        );
        assert_eq!(f.shared.broadcast_queues.load(Ordering::Relaxed), 0);
        assert_eq!(f.shared.all_queues().len(), 0);
    }

    #[tokio::test]
    async fn dead_letters_follow_each_groups_max_delivery_attempts() {
        let f = fixture();
        f.set("two", KEY_MAX_DELIVERY_ATTEMPTS, "2");
        f.set("bcast", KEY_CONSUME_MODE, "broadcast");
        f.set("bcast", KEY_MAX_DELIVERY_ATTEMPTS, "1");
        f.shared
            .open_broadcast(&f.broker, "bcast", Some("c"), &["t".to_string()])
            .unwrap();
        f.send(&["m"]).await;
        let short = Duration::from_millis(1);
        for attempt in 1..=2 {
            let two = f.take("two", None, short);
            let plain = f.take("plain", None, short);
            assert_eq!(two.deliveries[0].delivery_attempt, attempt);
            assert_eq!(plain.deliveries[0].delivery_attempt, attempt);
            assert!(two.dead.is_empty() && plain.dead.is_empty());
            outlive(short).await;
        }
        // "two" used its 2 deliveries; the default group (5) goes on.
        let two = f.take("two", None, short);
        assert!(two.deliveries.is_empty());
        assert_eq!(two.dead.len(), 1);
        assert_eq!(two.dead[0].group, "two");
        assert_eq!(two.dead[0].attempts, 2);
        let plain = f.take("plain", None, short);
        assert_eq!(plain.deliveries[0].delivery_attempt, 3);
        // The sweep uses the group's maximum too, and a broadcast consumer's
        // dead letter names the group, not the consumer.
        assert_eq!(f.take("bcast", Some("c"), short).deliveries.len(), 1);
        outlive(short).await;
        let swept = f.shared.sweep_dead();
        let groups: Vec<&str> = swept.iter().map(|d| d.group.as_str()).collect();
        assert_eq!(
            groups,
            ["bcast"],
            "{:?}",
            swept.iter().map(|d| &d.key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn broadcast_handles_carry_the_client_and_reject_garbage() {
        let plain = encode_handle("t.x", 1, 2, 3);
        let h = broadcast_handle("host@1@x.y", &plain);
        assert_eq!(
            split_handle(&h),
            Some((Some("host@1@x.y".to_string()), plain.as_str()))
        );
        assert_eq!(split_handle(&plain), Some((None, plain.as_str())));
        for bad in ["~", "~.1.2.3.t", "~6.1.2.3.t", "~zz.1.2.3.t", "~ff.1.2.3.t"] {
            assert_eq!(split_handle(bad), None, "{bad}");
        }
        assert_eq!(real_group("g#c#d"), "g");
        assert_eq!(real_group("g"), "g");
    }

    #[test]
    fn receipt_handles_round_trip_and_reject_garbage() {
        let h = encode_handle("%DLQ%g.x", 3, 1234, 0xabc);
        assert_eq!(decode_handle(&h), Some(("%DLQ%g.x".into(), 3, 1234, 0xabc)));
        for bad in ["", "x", "1.2.3", "1.2.3.", "-1.2.3.t", "zz.1.1.t", "1.2.3"] {
            assert_eq!(decode_handle(bad), None, "{bad}");
        }
    }
}
