//! Between the protocol's messages and the core's.

use std::io::Read;
use std::time::Duration;

use sluice_core::messaging::{Delivery, Message, StoredMessage};

use crate::pb;
use crate::pb::{Code, Status};
use crate::status::status;

/// Epoch milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as epoch milliseconds.
pub fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// A protobuf duration, refused when negative.
pub fn duration(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A std duration as protobuf.
pub fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The CRC32 of a body as RocketMQ clients check it: 8 upper-case hex digits.
pub fn crc32_hex(body: &[u8]) -> String {
    format!("{:08X}", crc32fast::hash(body))
}

/// A message a producer sent, in the core's terms. Bodies the client gzipped are
/// inflated (at most `max_body_bytes`), so every consumer gets them plain.
pub fn message_in(m: &pb::Message, max_body_bytes: usize) -> Result<Message, Status> {
    let sys = m.system_properties.clone().unwrap_or_default();
    let body = match pb::Encoding::try_from(sys.body_encoding) {
        Ok(pb::Encoding::Gzip) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(m.body.as_slice())
                .take(max_body_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| status(Code::MessageCorrupted, format!("gzip body: {e}")))?;
            out
        }
        _ => m.body.clone(),
    };
    if body.len() > max_body_bytes {
        return Err(status(
            Code::MessageBodyTooLarge,
            format!(
                "body of {} bytes exceeds the limit of {max_body_bytes}",
                body.len()
            ),
        ));
    }
    if body.is_empty() {
        return Err(status(Code::MessageBodyEmpty, "the message body is empty"));
    }
    if let Some(tag) = &sys.tag {
        if tag.is_empty() || tag.contains("||") || tag.chars().any(char::is_whitespace) {
            return Err(status(
                Code::IllegalMessageTag,
                format!("tag {tag:?} must be non-empty, without '||' or whitespace"),
            ));
        }
    }
    if sys.keys.iter().any(|k| k.is_empty()) {
        return Err(status(Code::IllegalMessageKey, "a message key is empty"));
    }
    if let Some(group) = &sys.message_group {
        if group.is_empty() {
            return Err(status(
                Code::IllegalMessageGroup,
                "the message group is empty",
            ));
        }
    }
    Ok(Message {
        key: None,
        body,
        tag: sys.tag.clone(),
        keys: sys.keys.clone(),
        message_id: sys.message_id.clone(),
        message_group: sys.message_group.clone(),
        properties: m
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        born_timestamp: sys.born_timestamp.as_ref().map_or(0, timestamp_ms),
        born_host: sys.born_host.clone(),
        system: Vec::new(),
    })
}

/// The protocol's view of a stored message (no delivery fields).
pub fn message_out(
    stored: &StoredMessage,
    namespace: &str,
    store_host: &str,
    message_type: pb::MessageType,
) -> pb::Message {
    let m = &stored.message;
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: namespace.to_string(),
            name: stored.topic.clone(),
        }),
        user_properties: m.properties.clone().into_iter().collect(),
        system_properties: Some(pb::SystemProperties {
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            message_id: stored.id(),
            body_digest: Some(pb::Digest {
                r#type: pb::DigestType::Crc32 as i32,
                checksum: crc32_hex(&m.body),
            }),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(timestamp(m.born_timestamp)),
            born_host: if m.born_host.is_empty() {
                store_host.to_string()
            } else {
                m.born_host.clone()
            },
            store_timestamp: Some(timestamp(stored.store_timestamp)),
            store_host: store_host.to_string(),
            delivery_timestamp: m
                .system_header(sluice_core::messaging::message::HEADER_DELIVER_AT)
                .and_then(|v| v.parse().ok())
                .map(timestamp),
            queue_id: stored.partition,
            queue_offset: Some(stored.offset),
            message_group: m.message_group.clone(),
            ..Default::default()
        }),
        body: m.body.clone(),
    }
}

/// A delivery as the protocol sends it: the message with its receipt handle,
/// attempt number and invisible time.
pub fn delivery_out(
    d: &Delivery,
    namespace: &str,
    store_host: &str,
    invisible: Duration,
) -> pb::Message {
    let kind = if d.message.message.message_group.is_some() {
        pb::MessageType::Fifo
    } else {
        pb::MessageType::Normal
    };
    let mut m = message_out(&d.message, namespace, store_host, kind);
    if let Some(sys) = m.system_properties.as_mut() {
        sys.receipt_handle = Some(d.receipt_handle.clone());
        sys.delivery_attempt = Some(d.delivery_attempt as i32);
        sys.invisible_duration = Some(to_duration(invisible));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for ms in [0i64, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), ms);
        }
    }

    #[test]
    fn crc_is_eight_upper_case_hex_digits() {
        assert_eq!(crc32_hex(b"123456789"), "CBF43926");
        assert_eq!(crc32_hex(b""), "00000000");
    }

    #[test]
    fn gzip_bodies_are_inflated_and_limits_apply() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'a'; 1000]).unwrap();
        let packed = gz.finish().unwrap();
        let mut m = pb::Message {
            body: packed,
            system_properties: Some(pb::SystemProperties {
                body_encoding: pb::Encoding::Gzip as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(message_in(&m, 4096).unwrap().body.len(), 1000);
        let err = message_in(&m, 999).unwrap_err();
        assert_eq!(err.code, Code::MessageBodyTooLarge as i32);
        m.body.clear();
        m.system_properties = None;
        assert_eq!(
            message_in(&m, 10).unwrap_err().code,
            Code::MessageBodyEmpty as i32
        );
    }
}
