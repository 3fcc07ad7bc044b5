//! Any bytes as a produce payload: batch verification must refuse or accept
//! without panicking, and whatever it accepts must parse again identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::{verify_batch, verify_batches};

fuzz_target!(|data: &[u8]| {
    if let Ok(headers) = verify_batches(data, 1 << 20) {
        let mut at = 0;
        for h in headers {
            assert_eq!(verify_batch(&data[at..]), Ok(h));
            at += h.total_bytes();
        }
        assert_eq!(at, data.len());
    }
});
