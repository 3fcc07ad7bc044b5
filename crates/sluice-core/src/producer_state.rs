//! Idempotent producer de-duplication for one partition.
//!
//! Kafka producers with an id number each batch per partition. The broker remembers
//! the last few batches of every producer: a retried batch that was already stored
//! is answered with its original offsets instead of being stored again, and a gap in
//! the sequence is refused so that no record is silently lost or reordered.

use std::collections::{HashMap, VecDeque};

use sluice_storage::BatchHeader;

use crate::error::CoreError;

/// Batches remembered per producer, as many as a producer may have in flight
/// (Kafka's `max.in.flight.requests.per.connection` limit for idempotence).
pub const BATCHES_REMEMBERED: usize = 5;
/// Producers remembered per partition; the least recently active is forgotten first.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone)]
struct Producer {
    epoch: i16,
    batches: VecDeque<StoredBatch>,
    last_touch: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Store it.
    Append,
    /// Already stored at these offsets; answer with them and store nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Per-partition producer table.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    clock: u64,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Decides whether `header` continues its producer's sequence.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, CoreError> {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(p) = self.producers.get(&header.producer_id) else {
            // Unknown producer (new, or its state aged out): accept, as Kafka does
            // once the producer's earlier data is gone.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < p.epoch {
            return Err(CoreError::ProducerFenced {
                producer_id: header.producer_id,
                current: p.epoch,
                found: header.producer_epoch,
            });
        }
        if header.producer_epoch > p.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(CoreError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    expected: 0,
                    found: header.base_sequence,
                })
            };
        }
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == header.last_sequence())
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = p.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if header.base_sequence != expected {
            return Err(CoreError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                found: header.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a stored batch (its header carries the assigned base offset).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&header.producer_id)
            && self.producers.len() >= PRODUCERS_MAX
        {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.last_touch)
                .map(|(id, _)| *id)
            {
                self.producers.remove(&oldest);
            }
        }
        let p = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| Producer {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_touch: clock,
            });
        if header.producer_epoch != p.epoch {
            p.epoch = header.producer_epoch;
            p.batches.clear();
        }
        p.last_touch = clock;
        if p.batches.len() == BATCHES_REMEMBERED {
            p.batches.pop_front();
        }
        p.batches.push_back(StoredBatch {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Forgets `header`'s batch (it was recorded, then could not be stored), so
    /// a retry of it is not taken for a duplicate. A producer left without
    /// batches is forgotten too, so its retry is accepted whatever its sequence.
    pub fn forget(&mut self, header: &BatchHeader) {
        let Some(p) = self.producers.get_mut(&header.producer_id) else {
            return;
        };
        if p.epoch != header.producer_epoch {
            return;
        }
        p.batches.retain(|b| {
            b.first_seq != header.base_sequence || b.last_seq != header.last_sequence()
        });
        if p.batches.is_empty() {
            self.producers.remove(&header.producer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::batch::build_batch;

    fn header(pid: i64, epoch: i16, seq: i32, records: usize, base_offset: i64) -> BatchHeader {
        let values: Vec<&[u8]> = vec![b"v"; records];
        let mut h = BatchHeader::parse(&build_batch(&values, 0, (pid, epoch, seq))).unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn retried_batch_is_reported_as_duplicate_with_original_offsets() {
        let mut s = ProducerStates::default();
        let h = header(7, 0, 0, 3, 100);
        assert_eq!(s.check(&h).unwrap(), SequenceCheck::Append);
        s.record(&h);
        assert_eq!(
            s.check(&header(7, 0, 0, 3, -1)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            s.check(&header(7, 0, 3, 1, -1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn sequence_gap_is_out_of_order_and_old_epoch_is_fenced() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 1, 0, 2, 0));
        assert!(matches!(
            s.check(&header(7, 1, 5, 1, -1)),
            Err(CoreError::OutOfOrderSequence {
                expected: 2,
                found: 5,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(7, 0, 2, 1, -1)),
            Err(CoreError::ProducerFenced { .. })
        ));
        assert_eq!(
            s.check(&header(7, 2, 0, 1, -1)).unwrap(),
            SequenceCheck::Append
        );
        assert!(s.check(&header(7, 2, 4, 1, -1)).is_err());
    }

    #[test]
    fn a_forgotten_batch_is_new_again() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 0, 0, 2, 0));
        let h = header(7, 0, 2, 1, -1);
        s.record(&h);
        assert!(matches!(
            s.check(&h).unwrap(),
            SequenceCheck::Duplicate { .. }
        ));
        s.forget(&h);
        assert_eq!(s.check(&h).unwrap(), SequenceCheck::Append);
        // A batch behind a newer one is forgotten as well.
        s.record(&h);
        s.record(&header(7, 0, 3, 1, 5));
        s.forget(&h);
        assert!(!matches!(s.check(&h), Ok(SequenceCheck::Duplicate { .. })));
        // A producer left without batches is forgotten: any sequence is new.
        let mut s = ProducerStates::default();
        let first = header(8, 0, 57, 1, -1);
        s.record(&first);
        s.forget(&first);
        assert_eq!(s.check(&first).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn batches_without_producer_id_are_always_appended() {
        let s = ProducerStates::default();
        assert_eq!(
            s.check(&header(-1, -1, -1, 1, 0)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn producer_table_is_bounded() {
        let mut s = ProducerStates::default();
        for pid in 0..(PRODUCERS_MAX as i64 + 10) {
            s.record(&header(pid, 0, 0, 1, pid));
        }
        assert_eq!(s.producers.len(), PRODUCERS_MAX);
    }
}
