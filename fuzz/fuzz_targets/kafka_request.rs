//! Any bytes on a Kafka connection: framing, then header and body decoding of
//! every supported API and version. Must never panic or abort.
#![no_main]

use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;
use sluice_kafka::versions::supported_range;
use sluice_kafka::wire::{decode_request, frame_bounds, FRAME_BYTES_MAX};

#[global_allocator]
static GLOBAL: sluice_kafka::lazy_alloc::LazyHugeAllocator = sluice_kafka::lazy_alloc::LazyHugeAllocator;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((start, end))) = frame_bounds(rest, FRAME_BYTES_MAX) {
        let frame = &rest[start..end];
        if frame.len() >= 4 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            if let Ok(api) = ApiKey::try_from(key) {
                if supported_range(api).is_some_and(|(lo, hi)| (lo..=hi).contains(&version)) {
                    let _ = decode_request(api, version, bytes::Bytes::copy_from_slice(frame));
                }
            }
        }
        rest = &rest[end..];
    }
});
