//! The consumer-protocol subscription and assignment embedded in JoinGroup and
//! SyncGroup: any bytes must decode or be refused without a panic, and a decoded
//! assignment must survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_kafka::consumer_protocol::{assignment_partitions, encode_assignment, subscription_topics};

#[global_allocator]
static GLOBAL: sluice_kafka::lazy_alloc::LazyHugeAllocator = sluice_kafka::lazy_alloc::LazyHugeAllocator;

fuzz_target!(|data: &[u8]| {
    let _ = subscription_topics(data);
    let mut partitions = assignment_partitions(data);
    // Re-encoding groups partitions by topic; compare as sorted lists.
    partitions.sort();
    let mut again = assignment_partitions(&encode_assignment(&partitions));
    again.sort();
    assert_eq!(partitions, again);
});
