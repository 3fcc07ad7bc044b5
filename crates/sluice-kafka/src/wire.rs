//! Kafka framing: a 4-byte big-endian size, then the request. Pure: no I/O.

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::decode_request_header_from_buffer;

/// Largest request accepted (Kafka's `socket.request.max.bytes` default, 100 MiB).
pub const FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Why a frame cannot be read; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The size prefix is negative or over the limit.
    #[error("frame size {size} outside 0..={max}")]
    BadSize { size: i64, max: usize },
}

/// If `buf` starts with a whole frame, returns its body range `(start, end)`.
/// `Ok(None)` means more bytes are needed. The size is checked before anything
/// is allocated for the body.
pub fn frame_bounds(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 || size as usize > max {
        return Err(WireError::BadSize {
            size: i64::from(size),
            max,
        });
    }
    let end = 4 + size as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((4, end)))
}

/// Decodes a request frame body (after the size prefix) whose API key and version
/// the caller has checked are supported. Malformed input is an `Err` with the
/// codec's message, never a panic: the codec is run under `catch_unwind` because
/// some of its paths index without checking the remaining length.
pub fn decode_request(
    api: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<(RequestHeader, RequestKind), String> {
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let header = decode_request_header_from_buffer(&mut body).map_err(|e| e.to_string())?;
        let request = RequestKind::decode(api, &mut body, version).map_err(|e| e.to_string())?;
        Ok((header, request))
    }));
    decoded.unwrap_or_else(|_| Err("request does not decode".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partial_frames_need_more_bytes() {
        assert_eq!(frame_bounds(&[0, 0], 100), Ok(None));
        assert_eq!(frame_bounds(&[0, 0, 0, 3, 1, 2], 100), Ok(None));
        assert_eq!(frame_bounds(&[0, 0, 0, 2, 1, 2, 9], 100), Ok(Some((4, 6))));
    }

    #[test]
    fn oversized_and_negative_sizes_are_refused() {
        assert!(frame_bounds(&[0x7f, 0xff, 0xff, 0xff], FRAME_BYTES_MAX).is_err());
        assert!(frame_bounds(&[0xff, 0xff, 0xff, 0xff], FRAME_BYTES_MAX).is_err());
    }

    proptest! {
        #[test]
        fn any_prefix_is_need_more_error_or_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((s, e))) = frame_bounds(&bytes, 1 << 20) {
                prop_assert!(s == 4 && e <= bytes.len());
            }
        }
    }
}
