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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::CoreError;
use crate::filter::Filter;
use crate::messaging::message::{decode_batch, StoredMessage};
use crate::messaging::MessagingConfig;
use crate::{now_ms, Broker};

/// Bytes read from a log per step when looking for new messages.
const READ_BYTES: usize = 1 << 20;
/// Log reads per partition per receive call, so one call cannot scan a long run
/// of filtered-out data while holding the partition's state.
const READS_PER_CALL_MAX: usize = 8;

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
}

/// A message whose deliveries are used up, to be moved to the dead-letter topic.
pub(crate) struct DeadLetter {
    pub key: QueueKey,
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
    nonce: AtomicU64,
    /// Rotates the partition a receive starts with, so that all are served.
    rotation: AtomicU64,
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
    pub(crate) fn new() -> Self {
        let seed = crate::ids::random_bytes16();
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        SharedSubscriptions {
            queues: Mutex::new(HashMap::new()),
            // Random start: a handle from before a restart must not name a new
            // delivery.
            nonce: AtomicU64::new(u64::from_le_bytes(s) >> 1),
            rotation: AtomicU64::new(0),
        }
    }

    fn queue(&self, key: &QueueKey) -> Arc<Mutex<Queue>> {
        self.queues.lock().entry(key.clone()).or_default().clone()
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
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) as usize;
        for i in 0..partitions.len() {
            if taken.deliveries.len() >= req.max_messages {
                break;
            }
            let p = partitions[(start + i) % partitions.len()];
            let key = (req.group.clone(), req.topic.clone(), p);
            let queue = self.queue(&key);
            let mut q = queue.lock();
            self.take_from(broker, config, req, &key, &mut q, &mut taken)?;
        }
        Ok(taken)
    }

    /// Adds what one partition has ready to `taken`.
    fn take_from(
        &self,
        broker: &Broker,
        config: &MessagingConfig,
        req: &ReceiveRequest,
        key: &QueueKey,
        q: &mut Queue,
        taken: &mut Taken,
    ) -> Result<(), CoreError> {
        let (topic, partition) = (&key.1, key.2);
        let (log_start, high_watermark) = broker.partition_offsets(topic, partition)?;
        if q.loaded && q.next > high_watermark {
            // The topic was deleted and made again: this state is of the old one.
            *q = Queue::default();
        }
        if !q.loaded {
            let committed = broker
                .committed_offsets(&key.0)
                .get(&(topic.clone(), partition))
                .map(|c| c.offset);
            q.floor = committed
                .unwrap_or(log_start)
                .clamp(log_start, high_watermark);
            q.next = q.floor;
            q.committed_floor = committed.unwrap_or(-1);
            q.loaded = true;
        }
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
            if entry.expire(now, config.max_delivery_attempts) {
                dead.push(DeadLetter {
                    key: key.clone(),
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
        f: impl FnOnce(&mut Queue, i64, &mut Entry, i64) -> T,
    ) -> Result<T, CoreError> {
        let (h_topic, partition, offset, nonce) =
            decode_handle(handle).ok_or_else(|| bad_handle("malformed receipt handle"))?;
        if h_topic != topic {
            return Err(bad_handle("the receipt handle names another topic"));
        }
        let key = (group.to_string(), topic.to_string(), partition);
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
        let result = f(&mut q, offset, &mut entry, now);
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
        self.with_delivery(group, topic, handle, |_, offset, entry, now| {
            let until = now.saturating_add(ms);
            entry.state = EntryState::InFlight { until, nonce };
            let (_, partition, _, _) = decode_handle(handle).unwrap_or_default();
            (encode_handle(topic, partition, offset, nonce), until)
        })
    }

    /// Marks a delivery as being dead-lettered; returns what to move.
    pub(crate) fn begin_dead_letter(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
    ) -> Result<DeadLetter, CoreError> {
        let (_, partition, _, _) =
            decode_handle(handle).ok_or_else(|| bad_handle("malformed receipt handle"))?;
        self.with_delivery(group, topic, handle, |_, offset, entry, _| {
            entry.state = EntryState::Dead;
            DeadLetter {
                key: (group.to_string(), topic.to_string(), partition),
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
    /// whose consumers stopped asking).
    pub(crate) fn sweep_dead(&self, config: &MessagingConfig) -> Vec<DeadLetter> {
        let now = now_ms();
        let queues = self.all_queues();
        let mut dead = Vec::new();
        for (key, queue) in queues {
            let mut q = queue.lock();
            for (&offset, entry) in q.entries.iter_mut() {
                if entry.expire(now, config.max_delivery_attempts) {
                    dead.push(DeadLetter {
                        key: key.clone(),
                        offset,
                        attempts: entry.attempts,
                    });
                }
            }
        }
        dead
    }

    /// Floors that moved since they were last committed: (group, topic,
    /// partition, floor). The caller commits them and reports back.
    pub(crate) fn floors_to_commit(&self) -> Vec<(QueueKey, i64)> {
        let queues = self.all_queues();
        let mut out = Vec::new();
        for (key, queue) in queues {
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

    #[test]
    fn receipt_handles_round_trip_and_reject_garbage() {
        let h = encode_handle("%DLQ%g.x", 3, 1234, 0xabc);
        assert_eq!(decode_handle(&h), Some(("%DLQ%g.x".into(), 3, 1234, 0xabc)));
        for bad in ["", "x", "1.2.3", "1.2.3.", "-1.2.3.t", "zz.1.1.t", "1.2.3"] {
            assert_eq!(decode_handle(bad), None, "{bad}");
        }
    }
}
