//! Record batches from log-protocol producers (Kafka) whose records ask for a
//! later delivery time with a header: `sluice-deliver-at` (epoch ms, decimal)
//! or `sluice-delay-level` (RocketMQ 4's levels 1..=18). Such records go
//! through the delay scheduler and land in their partition when due; all other
//! batches are appended as they came.

use std::future::Future;
use std::pin::Pin;

use sluice_storage::records::{decode_records, DecodedRecord};
use sluice_storage::BatchHeader;

use crate::error::CoreError;
use crate::messaging::delay::{deliver_at_for_level, DELAY_LEVELS_MS, HEADER_DELAY_REF};
use crate::messaging::message::{Message, HEADER_DELAY_LEVEL, HEADER_DELIVER_AT};
use crate::messaging::Messaging;
use crate::{now_ms, AppendedProduce, Diverted, Durability, Produced};

/// The future of records being scheduled for later delivery.
pub type ScheduledProduce = Pin<Box<dyn Future<Output = Result<Produced, CoreError>> + Send>>;

/// What a producer's records turned into.
pub enum ClientProduce {
    /// Appended to the log, as [`crate::Broker::produce_append`] does.
    Appended(AppendedProduce),
    /// Records with delivery times, being stored by the scheduler (fsynced);
    /// records of the same request without one are appended in order. The
    /// answer's base offset is -1: the records do not sit at consecutive
    /// offsets, as a producer would infer from a base offset.
    Scheduled(ScheduledProduce),
}

/// The delivery time a record asks for, `None` for "now". A record that the
/// scheduler already delivered (it carries `sluice-delay-ref`) is not delayed
/// again, so records copied from one topic to another keep flowing.
fn delivery_time(record: &DecodedRecord, now: i64) -> Result<Option<i64>, CoreError> {
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
    };
    if header(HEADER_DELAY_REF).is_some() {
        return Ok(None);
    }
    if let Some(at) = header(HEADER_DELIVER_AT) {
        return at.trim().parse::<i64>().map(Some).map_err(|_| {
            CoreError::IllegalDeliveryTime(format!(
                "header {HEADER_DELIVER_AT} must be epoch milliseconds in decimal, not {at:?}"
            ))
        });
    }
    if let Some(level) = header(HEADER_DELAY_LEVEL) {
        let at = level
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|l| deliver_at_for_level(l, now));
        return at.map(Some).ok_or_else(|| {
            CoreError::IllegalDeliveryTime(format!(
                "header {HEADER_DELAY_LEVEL} must be a level from 1 to {}, not {level:?}",
                DELAY_LEVELS_MS.len()
            ))
        });
    }
    Ok(None)
}

impl Messaging {
    /// Verifies and stores a producer's record batches for one partition.
    /// Batches without delivery-time headers are appended at once (the common
    /// case costs nothing more: the headers are spotted while the records are
    /// validated). Otherwise every record is decoded and checked first (its
    /// delivery time, its headers as message properties, room in the delay
    /// store), so bad input refuses the whole request with nothing stored; then
    /// a task of its own schedules or appends the records one by one, in
    /// request order. Must be called within a tokio runtime.
    pub fn produce_append(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<ClientProduce, CoreError> {
        let broker = &self.inner.broker;
        let checked = broker.check_produce(topic, partition, records)?;
        if !checked.has_delivery_time() {
            return broker.append_checked(checked).map(ClientProduce::Appended);
        }
        let now = now_ms();
        let mut plan: Vec<(Message, Option<i64>)> = Vec::new();
        let mut at = 0;
        while at < records.len() {
            let header = BatchHeader::parse(&records[at..])?;
            let batch = &records[at..at + header.total_bytes()];
            at += header.total_bytes();
            for record in decode_records(batch)? {
                let deliver_at = delivery_time(&record, now)?;
                self.check_delivery_time(deliver_at, now)?;
                let message = Message::from_record(&record);
                message.validate()?;
                plan.push((message, deliver_at));
            }
        }
        let delayed = plan.iter().filter(|(_, at)| at.is_some()).count();
        let delay = &self.inner.delay;
        if delay.pending().saturating_add(delayed) > delay.pending_max() {
            return Err(CoreError::InvalidRequest(format!(
                "{} delayed messages are pending; {delayed} more would exceed the {} this broker keeps",
                delay.pending(),
                delay.pending_max()
            )));
        }
        let (log_start_offset, _) = broker.partition_offsets(topic, partition)?;
        let taken = match broker.divert_checked(checked)? {
            Diverted::Duplicate { base_offset } => {
                let produced = Produced {
                    base_offset,
                    last_offset: base_offset,
                    log_start_offset,
                    durability: Durability::Fsynced,
                    duplicate: true,
                };
                return Ok(ClientProduce::Scheduled(Box::pin(
                    async move { Ok(produced) },
                )));
            }
            Diverted::Taken(taken) => taken,
        };
        // Stored by a task of its own, started now: the producer's sequence is
        // already counted, so the records must be stored (or the count undone)
        // even when nobody waits for the answer any more (connection gone).
        let this = self.clone();
        let topic = topic.to_string();
        let storing = tokio::spawn(async move {
            let mut durability = Durability::Fsynced;
            for (message, deliver_at) in &plan {
                match this.store(&topic, partition, message, *deliver_at).await {
                    Ok(sent) => {
                        if sent.durability == Durability::PageCache {
                            durability = Durability::PageCache;
                        }
                    }
                    Err(e) => {
                        // Records before this one are stored: a retry stores them
                        // again (at least once), but is not lost as a duplicate.
                        taken.undo();
                        return Err(e);
                    }
                }
            }
            Ok(Produced {
                base_offset: -1,
                last_offset: -1,
                log_start_offset,
                durability,
                duplicate: false,
            })
        });
        Ok(ClientProduce::Scheduled(Box::pin(async move {
            storing.await.map_err(|e| {
                CoreError::InvalidRequest(format!("storing delayed records failed: {e}"))
            })?
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)]) -> DecodedRecord {
        DecodedRecord {
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(b"v".to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    #[test]
    fn delivery_time_comes_from_either_header() {
        let now = 1_000_000;
        assert_eq!(delivery_time(&record(&[]), now).unwrap(), None);
        assert_eq!(
            delivery_time(&record(&[(HEADER_DELIVER_AT, "1234567")]), now).unwrap(),
            Some(1_234_567)
        );
        assert_eq!(
            delivery_time(&record(&[(HEADER_DELAY_LEVEL, "3")]), now).unwrap(),
            Some(now + 10_000)
        );
        // Already delivered by the scheduler: not delayed again.
        assert_eq!(
            delivery_time(
                &record(&[(HEADER_DELIVER_AT, "1234567"), (HEADER_DELAY_REF, "9")]),
                now
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_delivery_headers_are_refused() {
        for (name, value) in [
            (HEADER_DELIVER_AT, "soon"),
            (HEADER_DELIVER_AT, ""),
            (HEADER_DELAY_LEVEL, "0"),
            (HEADER_DELAY_LEVEL, "19"),
            (HEADER_DELAY_LEVEL, "x"),
        ] {
            assert!(
                matches!(
                    delivery_time(&record(&[(name, value)]), 0),
                    Err(CoreError::IllegalDeliveryTime(_))
                ),
                "{name}={value:?}"
            );
        }
    }
}
