//! Delayed delivery: messages held back until their delivery time.
//!
//! A delayed message is stored durably (fsynced) in the internal log
//! `internal/__sluice_delay/0` before the send is acknowledged, with its target
//! topic and partition. An in-memory timer queue, rebuilt from that log at
//! start-up, says what is due. Delivery of due messages goes in rounds:
//! 1. an *intent* record (fsynced) lists the entries of the round and each target
//!    partition's end offset before the round;
//! 2. each message is appended to its target partition, carrying the header
//!    `sluice-delay-ref` = its entry's offset;
//! 3. a *done* record (fsynced) settles the entries.
//!
//! After a crash in the middle of a round, start-up reads each target partition
//! from the end offset noted in the last intent and settles the entries it finds
//! there, so a message is delivered late but never lost and never twice.
//! Recall writes a *recalled* record for a pending entry.
//!
//! Transactional half messages are entries of the same log that are not due at
//! all ([`HALF`]) until a *committed* record makes them due (at once, or at their
//! own delivery time); rollback is a recall. So a committed half message goes
//! through the same never-lost, never-twice delivery rounds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use parking_lot::Mutex;
use sluice_storage::batch::{encode_records, verify_batch, RecordSpec};
use sluice_storage::{PartitionLog, ReadOutcome, VerifiedBatches};

use crate::error::CoreError;
use crate::messaging::message::{decode_batch, Message, HEADER_DELIVER_AT};
use crate::messaging::{internal_log_config, io_error, replay};

/// Header naming the delay entry a delivered message came from.
pub const HEADER_DELAY_REF: &str = "sluice-delay-ref";
/// RocketMQ 4's delay levels 1..=18 (ms): 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m
/// 8m 9m 10m 20m 30m 1h 2h.
pub const DELAY_LEVELS_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

const KEY_ENTRY: &[u8] = b"E";
const KEY_INTENT: &[u8] = b"I";
const KEY_DONE: &[u8] = b"D";
const KEY_RECALLED: &[u8] = b"R";
const KEY_COMMITTED: &[u8] = b"C";
/// Marks an entry as a transactional half message.
const HEADER_HALF: &str = "sluice-txn-half";
/// The due time of a half message: never, until committed.
pub const HALF: i64 = i64::MAX;
const HEADER_TARGET_TOPIC: &str = "sluice-delay-topic";
const HEADER_TARGET_PARTITION: &str = "sluice-delay-partition";
/// Header keeping a message's own record key while it waits: the delay log's
/// record key marks the record's kind.
const HEADER_RECORD_KEY: &str = "sluice-delay-record-key";

/// A pending delayed message, as the timer queue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub entry: i64,
    /// [`HALF`] for an uncommitted half message.
    pub deliver_at: i64,
    /// For a half message: when it is due once committed (its own delivery
    /// time, or 0 for at once).
    pub commit_due: Option<i64>,
    pub topic: String,
    pub partition: i32,
}

/// One due message, read back for delivery.
pub(crate) struct Due {
    pub pending: Pending,
    /// The message as the target partition gets it.
    pub message: Message,
}

/// An interrupted round found at start-up: entries and where to look for them.
pub(crate) struct Unfinished {
    pub entries: Vec<i64>,
    /// (topic, partition) → end offset before the round.
    pub ends: Vec<(String, i32, i64)>,
}

/// The delay store: log plus timer queue.
pub(crate) struct DelayStore {
    log: Mutex<PartitionLog>,
    /// (deliver at, entry offset) → pending message.
    queue: Mutex<BTreeMap<(i64, i64), Pending>>,
    /// entry offset → deliver at, for recall.
    by_entry: Mutex<HashMap<i64, i64>>,
    pending_max: usize,
}

impl DelayStore {
    /// Opens the log and rebuilds the timer queue; also returns the round a crash
    /// interrupted, if any.
    pub(crate) fn open(
        data_dir: &Path,
        pending_max: usize,
        now_ms: i64,
    ) -> Result<(Self, Option<Unfinished>), CoreError> {
        let dir = data_dir.join("internal").join("__sluice_delay").join("0");
        let (log, _) = PartitionLog::open(&dir, internal_log_config(64 << 20), now_ms)?;
        let mut pending: BTreeMap<i64, Pending> = BTreeMap::new();
        let mut settled: BTreeSet<i64> = BTreeSet::new();
        let mut committed: Vec<i64> = Vec::new();
        let mut last_intent: Option<(i64, Unfinished)> = None;
        let mut last_done_after_intent = false;
        replay(&log, &mut |r| match r.key.as_deref() {
            Some(KEY_ENTRY) => {
                if let Some(p) = entry_meta(r.offset, &r.headers) {
                    pending.insert(r.offset, p);
                }
            }
            Some(KEY_DONE) | Some(KEY_RECALLED) => {
                settled.extend(decode_offsets(r.value.as_deref().unwrap_or_default()));
                if r.key.as_deref() == Some(KEY_DONE) {
                    last_done_after_intent = true;
                }
            }
            Some(KEY_COMMITTED) => {
                committed.extend(decode_offsets(r.value.as_deref().unwrap_or_default()));
            }
            Some(KEY_INTENT) => {
                if let Some(u) = decode_intent(r.value.as_deref().unwrap_or_default()) {
                    last_intent = Some((r.offset, u));
                    last_done_after_intent = false;
                }
            }
            _ => {}
        })?;
        for s in &settled {
            pending.remove(s);
        }
        for c in committed {
            if let Some(p) = pending.get_mut(&c) {
                p.deliver_at = p.commit_due.unwrap_or(0);
            }
        }
        let unfinished = match last_intent {
            Some((_, mut u)) if !last_done_after_intent => {
                u.entries.retain(|e| pending.contains_key(e));
                (!u.entries.is_empty()).then_some(u)
            }
            _ => None,
        };
        let mut queue = BTreeMap::new();
        let mut by_entry = HashMap::new();
        for (entry, p) in pending {
            by_entry.insert(entry, p.deliver_at);
            queue.insert((p.deliver_at, entry), p);
        }
        if !queue.is_empty() {
            tracing::info!(
                pending = queue.len(),
                "delayed messages pending after start-up"
            );
        }
        Ok((
            DelayStore {
                log: Mutex::new(log),
                queue: Mutex::new(queue),
                by_entry: Mutex::new(by_entry),
                pending_max,
            },
            unfinished,
        ))
    }

    /// Stores a delayed message durably and schedules it; returns the entry's offset.
    /// Blocking (fsync): call off the async threads.
    pub(crate) fn schedule(
        &self,
        topic: &str,
        partition: i32,
        message: &Message,
        deliver_at: i64,
        now_ms: i64,
    ) -> Result<i64, CoreError> {
        if self.queue.lock().len() >= self.pending_max {
            return Err(CoreError::InvalidRequest(format!(
                "{} delayed messages are pending, the most this broker keeps",
                self.pending_max
            )));
        }
        let mut m = message.clone();
        if deliver_at == HALF {
            m.set_system_header(HEADER_HALF, b"1".to_vec());
        } else {
            m.set_system_header(HEADER_DELIVER_AT, deliver_at.to_string());
        }
        m.set_system_header(HEADER_TARGET_TOPIC, topic.as_bytes().to_vec());
        m.set_system_header(HEADER_TARGET_PARTITION, partition.to_string());
        if let Some(key) = m.key.take() {
            m.set_system_header(HEADER_RECORD_KEY, key);
        }
        m.key = Some(KEY_ENTRY.to_vec());
        let batch = m.to_batch(now_ms);
        let entry = self.append_synced(&batch, now_ms)?;
        self.by_entry.lock().insert(entry, deliver_at);
        self.queue.lock().insert(
            (deliver_at, entry),
            Pending {
                entry,
                deliver_at,
                commit_due: (deliver_at == HALF).then_some(0),
                topic: topic.to_string(),
                partition,
            },
        );
        Ok(entry)
    }

    fn append_synced(&self, batch: &[u8], now_ms: i64) -> Result<i64, CoreError> {
        let verified = VerifiedBatches::new(batch, usize::MAX)?;
        let log = self.log.lock();
        let appended = log.append(&verified, now_ms)?;
        log.sync_through(appended.seq)?;
        Ok(appended.base_offset)
    }

    fn append_marker(&self, key: &[u8], value: &[u8], now_ms: i64) -> Result<(), CoreError> {
        let batch = encode_records(
            &[RecordSpec {
                key: Some(key),
                value: Some(value),
                headers: Vec::new(),
                timestamp: now_ms,
            }],
            (-1, -1, -1),
        );
        self.append_synced(&batch, now_ms).map(|_| ())
    }

    /// When the next message is due (epoch ms).
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.queue
            .lock()
            .first_key_value()
            .map(|(k, _)| k.0)
            .filter(|at| *at != HALF)
    }

    /// Number of pending messages.
    pub(crate) fn pending(&self) -> usize {
        self.queue.lock().len()
    }

    /// Pending messages this store keeps at most.
    pub(crate) fn pending_max(&self) -> usize {
        self.pending_max
    }

    /// Up to `max` due messages, read back from the log (not yet removed).
    pub(crate) fn due(&self, now_ms: i64, max: usize) -> Result<Vec<Due>, CoreError> {
        let due: Vec<Pending> = self
            .queue
            .lock()
            .range(..(now_ms.saturating_add(1), i64::MIN))
            .take(max)
            .map(|(_, p)| p.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for p in due {
            let mut message = self.read_entry(p.entry)?;
            message.remove_system_header(HEADER_TARGET_TOPIC);
            message.remove_system_header(HEADER_TARGET_PARTITION);
            message.remove_system_header(HEADER_HALF);
            message.set_system_header(HEADER_DELAY_REF, p.entry.to_string());
            message.key = message.take_system_header(HEADER_RECORD_KEY);
            out.push(Due {
                pending: p,
                message,
            });
        }
        Ok(out)
    }

    fn read_entry(&self, entry: i64) -> Result<Message, CoreError> {
        let log = self.log.lock();
        let missing = || CoreError::MessageNotFound(format!("delay entry {entry}"));
        let slice = match log.read(entry, 1)? {
            ReadOutcome::Data(slice) => slice,
            _ => return Err(missing()),
        };
        let bytes = slice.read_bytes().map_err(|e| io_error(log.dir(), e))?;
        let h = verify_batch(&bytes)?;
        decode_batch("", 0, &bytes[..h.total_bytes()])?
            .into_iter()
            .find(|m| m.offset == entry)
            .map(|m| m.message)
            .ok_or_else(missing)
    }

    /// Writes the intent record of a round (fsynced).
    pub(crate) fn begin_round(
        &self,
        entries: &[i64],
        ends: &[(String, i32, i64)],
        now_ms: i64,
    ) -> Result<(), CoreError> {
        let u = Unfinished {
            entries: entries.to_vec(),
            ends: ends.to_vec(),
        };
        self.append_marker(KEY_INTENT, &encode_intent(&u), now_ms)
    }

    /// Settles delivered (or undeliverable) entries durably and forgets them.
    pub(crate) fn settle(&self, entries: &[i64], now_ms: i64) -> Result<(), CoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.append_marker(KEY_DONE, &encode_offsets(entries), now_ms)?;
        self.forget(entries);
        Ok(())
    }

    fn forget(&self, entries: &[i64]) {
        let mut by_entry = self.by_entry.lock();
        let mut queue = self.queue.lock();
        for e in entries {
            if let Some(at) = by_entry.remove(e) {
                queue.remove(&(at, *e));
            }
        }
    }

    /// Commits a half message: it becomes due (durably) and is delivered by the
    /// next round. Returns its message id.
    pub(crate) fn commit(&self, topic: &str, entry: i64, now_ms: i64) -> Result<String, CoreError> {
        let pending = self.half(topic, entry)?;
        let message = self.read_entry(entry)?;
        self.append_marker(KEY_COMMITTED, &encode_offsets(&[entry]), now_ms)?;
        let due = pending.commit_due.unwrap_or(0);
        let mut by_entry = self.by_entry.lock();
        let mut queue = self.queue.lock();
        if let Some(mut p) = queue.remove(&(HALF, entry)) {
            p.deliver_at = due;
            by_entry.insert(entry, due);
            queue.insert((due, entry), p);
        }
        Ok(message.message_id)
    }

    /// The uncommitted half message `entry` of `topic`.
    fn half(&self, topic: &str, entry: i64) -> Result<Pending, CoreError> {
        let not_found = || CoreError::UnknownTransaction(format!("{entry:x} on topic {topic}"));
        let pending = self
            .queue
            .lock()
            .get(&(HALF, entry))
            .cloned()
            .ok_or_else(not_found)?;
        if pending.topic != topic {
            return Err(not_found());
        }
        Ok(pending)
    }

    /// Rolls a half message back (it is never delivered).
    pub(crate) fn rollback(
        &self,
        topic: &str,
        entry: i64,
        now_ms: i64,
    ) -> Result<String, CoreError> {
        self.half(topic, entry)?;
        let message = self.read_entry(entry)?;
        self.append_marker(KEY_RECALLED, &encode_offsets(&[entry]), now_ms)?;
        self.forget(&[entry]);
        Ok(message.message_id)
    }

    /// Every uncommitted half message: (entry, topic, partition).
    pub(crate) fn halves(&self) -> Vec<(i64, String, i32)> {
        self.queue
            .lock()
            .range((HALF, i64::MIN)..)
            .map(|(k, p)| (k.1, p.topic.clone(), p.partition))
            .collect()
    }

    /// A half message's content, as a check-back shows it to the producer.
    pub(crate) fn half_message(&self, entry: i64) -> Result<Message, CoreError> {
        let mut m = self.read_entry(entry)?;
        m.remove_system_header(HEADER_TARGET_TOPIC);
        m.remove_system_header(HEADER_TARGET_PARTITION);
        m.remove_system_header(HEADER_HALF);
        m.key = m.take_system_header(HEADER_RECORD_KEY);
        Ok(m)
    }

    /// Recalls a pending entry; returns its message id. Fails when the entry
    /// was delivered, recalled, or never existed.
    pub(crate) fn recall(&self, topic: &str, entry: i64, now_ms: i64) -> Result<String, CoreError> {
        let not_found = || {
            CoreError::MessageNotFound(format!(
                "no pending delayed message {entry} on topic {topic}"
            ))
        };
        let at = *self.by_entry.lock().get(&entry).ok_or_else(not_found)?;
        if at == HALF {
            return Err(not_found());
        }
        let pending = self
            .queue
            .lock()
            .get(&(at, entry))
            .cloned()
            .ok_or_else(not_found)?;
        if pending.topic != topic {
            return Err(not_found());
        }
        let message = self.read_entry(entry)?;
        self.append_marker(KEY_RECALLED, &encode_offsets(&[entry]), now_ms)?;
        self.forget(&[entry]);
        Ok(message.message_id)
    }
}

fn entry_meta(offset: i64, headers: &[(String, Option<Vec<u8>>)]) -> Option<Pending> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let deliver_at = get(HEADER_DELIVER_AT).and_then(|v| v.parse().ok());
    let half = get(HEADER_HALF).is_some();
    Some(Pending {
        entry: offset,
        deliver_at: if half { HALF } else { deliver_at? },
        commit_due: half.then(|| deliver_at.unwrap_or(0)),
        topic: get(HEADER_TARGET_TOPIC)?,
        partition: get(HEADER_TARGET_PARTITION)?.parse().ok()?,
    })
}

fn encode_offsets(offsets: &[i64]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_be_bytes()).collect()
}

fn decode_offsets(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// Intent: entry offsets, then one line per target partition, as text.
fn encode_intent(u: &Unfinished) -> Vec<u8> {
    let mut s = u
        .entries
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (topic, partition, end) in &u.ends {
        s.push('\n');
        s.push_str(&format!("{partition} {end} {topic}"));
    }
    s.into_bytes()
}

fn decode_intent(bytes: &[u8]) -> Option<Unfinished> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split('\n');
    let entries = lines
        .next()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<i64>>>()?;
    let mut ends = Vec::new();
    for line in lines {
        let mut parts = line.splitn(3, ' ');
        let partition = parts.next()?.parse().ok()?;
        let end = parts.next()?.parse().ok()?;
        ends.push((parts.next()?.to_string(), partition, end));
    }
    Some(Unfinished { entries, ends })
}

/// The delivery time a delay level stands for, from `now_ms`.
pub fn deliver_at_for_level(level: i64, now_ms: i64) -> Option<i64> {
    let index = usize::try_from(level).ok()?.checked_sub(1)?;
    DELAY_LEVELS_MS.get(index).map(|d| now_ms + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_messages_wait_for_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Message {
            body: b"x".to_vec(),
            message_id: "tx-1".into(),
            ..Message::default()
        };
        let (store, _) = DelayStore::open(dir.path(), 100, 0).unwrap();
        let a = store.schedule("t", 0, &m, HALF, 0).unwrap();
        let b = store.schedule("t", 0, &m, HALF, 0).unwrap();
        let c = store.schedule("t", 0, &m, HALF, 0).unwrap();
        assert_eq!(store.next_due(), None);
        assert!(store.due(i64::MAX - 1, 10).unwrap().is_empty());
        assert!(
            store.recall("t", a, 0).is_err(),
            "recall is for delayed messages"
        );
        assert!(store.commit("u", a, 0).is_err(), "another topic");
        assert_eq!(store.commit("t", a, 5).unwrap(), "tx-1");
        assert!(store.commit("t", a, 5).is_err(), "committed twice");
        store.rollback("t", b, 5).unwrap();
        assert_eq!(store.halves(), vec![(c, "t".to_string(), 0)]);
        drop(store);
        let (store, _) = DelayStore::open(dir.path(), 100, 0).unwrap();
        assert_eq!(store.halves(), vec![(c, "t".to_string(), 0)]);
        let due = store.due(10, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].pending.entry, a);
        assert_eq!(due[0].message.system_header(HEADER_HALF), None);
        assert_eq!(store.half_message(c).unwrap().message_id, "tx-1");
    }

    #[test]
    fn intents_round_trip() {
        let u = Unfinished {
            entries: vec![3, 9],
            ends: vec![("a b".into(), 2, 77), ("t".into(), 0, 0)],
        };
        let back = decode_intent(&encode_intent(&u)).unwrap();
        assert_eq!(back.entries, vec![3, 9]);
        assert_eq!(back.ends, u.ends);
        assert!(decode_intent(b"x").is_none());
    }

    #[test]
    fn delay_levels_are_rocketmqs() {
        assert_eq!(deliver_at_for_level(1, 0), Some(1_000));
        assert_eq!(deliver_at_for_level(18, 0), Some(7_200_000));
        assert_eq!(deliver_at_for_level(0, 0), None);
        assert_eq!(deliver_at_for_level(19, 0), None);
    }

    #[test]
    fn pending_entries_survive_reopen_and_settled_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let m = Message {
            body: b"x".to_vec(),
            message_id: "id-1".into(),
            ..Message::default()
        };
        let (store, _) = DelayStore::open(dir.path(), 100, 0).unwrap();
        let a = store.schedule("t", 0, &m, 5_000, 0).unwrap();
        let b = store.schedule("t", 1, &m, 9_000, 0).unwrap();
        let c = store.schedule("u", 0, &m, 7_000, 0).unwrap();
        assert_eq!(store.next_due(), Some(5_000));
        let due = store.due(7_000, 10).unwrap();
        assert_eq!(
            due.iter().map(|d| d.pending.entry).collect::<Vec<_>>(),
            vec![a, c]
        );
        assert_eq!(
            due[0].message.system_header(HEADER_DELAY_REF),
            Some(a.to_string())
        );
        store
            .begin_round(&[a, c], &[("t".into(), 0, 0)], 1)
            .unwrap();
        store.settle(&[a], 1).unwrap();
        assert_eq!(store.recall("u", c, 1).unwrap(), "id-1");
        assert!(store.recall("u", c, 1).is_err());
        drop(store);
        let (store, unfinished) = DelayStore::open(dir.path(), 100, 0).unwrap();
        assert_eq!(store.pending(), 1);
        assert_eq!(store.next_due(), Some(9_000));
        // The intent was followed by a done record: nothing to look for.
        assert!(unfinished.is_none());
        store.begin_round(&[b], &[("t".into(), 1, 4)], 1).unwrap();
        drop(store);
        let (_, unfinished) = DelayStore::open(dir.path(), 100, 0).unwrap();
        let u = unfinished.unwrap();
        assert_eq!(u.entries, vec![b]);
        assert_eq!(u.ends, vec![("t".to_string(), 1, 4)]);
    }
}
