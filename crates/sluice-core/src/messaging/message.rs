//! Messages as RocketMQ (and later AMQP) see them, stored as ordinary records.
//!
//! A message is one Kafka v2 record: the body is the value, user properties are
//! headers under their own names, and the system properties travel as headers
//! whose names start with `sluice-`. So a Kafka consumer sees a RocketMQ message's
//! properties as headers, and a record produced by a Kafka client is a message
//! with those headers as its user properties.

use std::collections::BTreeMap;

use sluice_storage::batch::{encode_records, RecordSpec};
use sluice_storage::records::DecodedRecord;

use crate::error::CoreError;

/// Names starting with this are the broker's; clients may not set them as user
/// properties.
pub const SYSTEM_HEADER_PREFIX: &str = "sluice-";
/// The message's tag (at most one).
pub const HEADER_TAG: &str = "sluice-tag";
/// One header per message key.
pub const HEADER_KEY: &str = "sluice-key";
/// The message id the producer gave (RocketMQ clients make their own).
pub const HEADER_MESSAGE_ID: &str = "sluice-message-id";
/// FIFO message group.
pub const HEADER_MESSAGE_GROUP: &str = "sluice-message-group";
/// Producer host.
pub const HEADER_BORN_HOST: &str = "sluice-born-host";
/// Producer's send time (epoch ms); the record timestamp is the store time.
pub const HEADER_BORN_TIMESTAMP: &str = "sluice-born-timestamp";
/// Delivery time (epoch ms) of a delayed message; also accepted from Kafka clients.
pub const HEADER_DELIVER_AT: &str = "sluice-deliver-at";
/// RocketMQ 4 delay level 1..=18; also accepted from Kafka clients.
pub const HEADER_DELAY_LEVEL: &str = "sluice-delay-level";
/// Where a dead-lettered message came from: topic, partition, offset.
pub const HEADER_DLQ_ORIGIN_TOPIC: &str = "sluice-dlq-origin-topic";
pub const HEADER_DLQ_ORIGIN_PARTITION: &str = "sluice-dlq-origin-partition";
pub const HEADER_DLQ_ORIGIN_OFFSET: &str = "sluice-dlq-origin-offset";
/// Deliveries a message had when it was dead-lettered.
pub const HEADER_DLQ_ATTEMPTS: &str = "sluice-dlq-attempts";

/// Largest total size of a message's properties (names and values), like
/// RocketMQ's limit on its property string.
pub const PROPERTIES_BYTES_MAX: usize = 32 * 1024;

/// One message, free of any protocol's types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Kafka record key; RocketMQ messages have none.
    pub key: Option<Vec<u8>>,
    pub body: Vec<u8>,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// Empty when the producer gave none (Kafka clients); see [`StoredMessage::id`].
    pub message_id: String,
    pub message_group: Option<String>,
    /// User properties, by name.
    pub properties: BTreeMap<String, String>,
    /// Producer's send time (epoch ms); 0 when unknown.
    pub born_timestamp: i64,
    pub born_host: String,
    /// Other `sluice-` headers (delivery time, dead-letter origin), kept verbatim.
    pub system: Vec<(String, Vec<u8>)>,
}

impl Message {
    /// Checks what a producer may set: no user property in the broker's
    /// namespace, properties within [`PROPERTIES_BYTES_MAX`].
    pub fn validate(&self) -> Result<(), CoreError> {
        if let Some(name) = self
            .properties
            .keys()
            .find(|k| k.starts_with(SYSTEM_HEADER_PREFIX))
        {
            return Err(CoreError::InvalidMessage(format!(
                "property name {name:?} is reserved (prefix {SYSTEM_HEADER_PREFIX:?})"
            )));
        }
        if let Some(name) = self.properties.keys().find(|k| k.is_empty()) {
            return Err(CoreError::InvalidMessage(format!(
                "property name {name:?} is empty"
            )));
        }
        let size: usize = self
            .properties
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .chain(self.keys.iter().map(String::len))
            .sum::<usize>()
            + self.tag.as_ref().map_or(0, String::len);
        if size > PROPERTIES_BYTES_MAX {
            return Err(CoreError::InvalidMessage(format!(
                "properties take {size} bytes, more than {PROPERTIES_BYTES_MAX}"
            )));
        }
        Ok(())
    }

    /// A system header's value as text.
    pub fn system_header(&self, name: &str) -> Option<String> {
        self.system
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Replaces (or adds) a system header.
    pub fn set_system_header(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.system.retain(|(k, _)| k != name);
        self.system.push((name.to_string(), value.into()));
    }

    /// Removes a system header and returns its value (the first, if several).
    pub fn take_system_header(&mut self, name: &str) -> Option<Vec<u8>> {
        let at = self.system.iter().position(|(k, _)| k == name)?;
        Some(self.system.remove(at).1)
    }

    /// Removes a system header.
    pub fn remove_system_header(&mut self, name: &str) {
        self.system.retain(|(k, _)| k != name);
    }

    /// The record headers that carry this message's properties.
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut h = Vec::new();
        if let Some(tag) = &self.tag {
            h.push((HEADER_TAG.to_string(), tag.clone().into_bytes()));
        }
        for key in &self.keys {
            h.push((HEADER_KEY.to_string(), key.clone().into_bytes()));
        }
        if !self.message_id.is_empty() {
            h.push((
                HEADER_MESSAGE_ID.to_string(),
                self.message_id.clone().into_bytes(),
            ));
        }
        if let Some(group) = &self.message_group {
            h.push((HEADER_MESSAGE_GROUP.to_string(), group.clone().into_bytes()));
        }
        if !self.born_host.is_empty() {
            h.push((
                HEADER_BORN_HOST.to_string(),
                self.born_host.clone().into_bytes(),
            ));
        }
        if self.born_timestamp != 0 {
            h.push((
                HEADER_BORN_TIMESTAMP.to_string(),
                self.born_timestamp.to_string().into_bytes(),
            ));
        }
        h.extend(self.system.iter().cloned());
        for (k, v) in &self.properties {
            h.push((k.clone(), v.clone().into_bytes()));
        }
        h
    }

    /// A one-record batch (base offset 0) holding this message, stamped `timestamp`.
    pub fn to_batch(&self, timestamp: i64) -> Vec<u8> {
        let headers = self.headers();
        let spec = RecordSpec {
            key: self.key.as_deref(),
            value: Some(&self.body),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect(),
            timestamp,
        };
        encode_records(&[spec], (-1, -1, -1))
    }

    /// The message a stored record carries.
    pub fn from_record(record: &DecodedRecord) -> Message {
        let mut m = Message {
            key: record.key.clone(),
            body: record.value.clone().unwrap_or_default(),
            ..Message::default()
        };
        for (name, value) in &record.headers {
            let bytes = value.clone().unwrap_or_default();
            let text = || String::from_utf8_lossy(&bytes).into_owned();
            match name.as_str() {
                HEADER_TAG => m.tag = Some(text()),
                HEADER_KEY => m.keys.push(text()),
                HEADER_MESSAGE_ID => m.message_id = text(),
                HEADER_MESSAGE_GROUP => m.message_group = Some(text()),
                HEADER_BORN_HOST => m.born_host = text(),
                HEADER_BORN_TIMESTAMP => m.born_timestamp = text().parse().unwrap_or(0),
                n if n.starts_with(SYSTEM_HEADER_PREFIX) => m.system.push((n.to_string(), bytes)),
                n => {
                    m.properties.insert(n.to_string(), text());
                }
            }
        }
        if m.born_timestamp == 0 {
            m.born_timestamp = record.timestamp;
        }
        m
    }
}

/// A message as stored in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// When the broker stored it (the record timestamp), epoch ms.
    pub store_timestamp: i64,
    pub message: Message,
}

impl StoredMessage {
    /// The message id: the producer's, or for records without one (Kafka
    /// producers) an id derived from where the record is stored, stable across
    /// deliveries.
    pub fn id(&self) -> String {
        if !self.message.message_id.is_empty() {
            return self.message.message_id.clone();
        }
        format!(
            "SLUICE{:08X}{:08X}{:016X}",
            crate::filter::tag_hash(&self.topic),
            self.partition,
            self.offset
        )
    }
}

/// The messages of one stored batch, in offset order. A batch that does not
/// decode yields an error; control batches (transaction markers) yield nothing.
pub fn decode_batch(
    topic: &str,
    partition: i32,
    batch: &[u8],
) -> Result<Vec<StoredMessage>, CoreError> {
    let header = sluice_storage::BatchHeader::parse(batch)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let records = sluice_storage::records::decode_records(batch)?;
    Ok(records
        .iter()
        .map(|r| StoredMessage {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            store_timestamp: r.timestamp,
            message: Message::from_record(r),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_record_round_trip() {
        let mut m = Message {
            body: b"hello".to_vec(),
            tag: Some("TagA".into()),
            keys: vec!["k1".into(), "k 2".into()],
            message_id: "01ABC".into(),
            message_group: Some("g1".into()),
            born_timestamp: 1_700_000_000_000,
            born_host: "host-1".into(),
            ..Message::default()
        };
        m.properties.insert("a".into(), "7".into());
        m.set_system_header(HEADER_DELIVER_AT, b"123".to_vec());
        let mut batch = m.to_batch(1_700_000_000_500);
        batch[..8].copy_from_slice(&9i64.to_be_bytes());
        let stored = decode_batch("t", 2, &batch).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].offset, 9);
        assert_eq!(stored[0].store_timestamp, 1_700_000_000_500);
        assert_eq!(stored[0].message, m);
        assert_eq!(stored[0].id(), "01ABC");
    }

    #[test]
    fn kafka_records_get_stable_derived_ids_and_headers_as_properties() {
        let spec = RecordSpec {
            key: None,
            value: Some(b"v"),
            headers: vec![("color", Some(b"red".as_slice()))],
            timestamp: 5,
        };
        let batch = encode_records(&[spec], (-1, -1, -1));
        let stored = decode_batch("orders", 0, &batch).unwrap();
        let m = &stored[0].message;
        assert_eq!(m.properties.get("color").map(String::as_str), Some("red"));
        assert_eq!(m.born_timestamp, 5);
        assert!(stored[0].id().starts_with("SLUICE"));
        assert_eq!(stored[0].id(), stored[0].clone().id());
    }

    #[test]
    fn reserved_and_oversized_properties_are_refused() {
        let mut m = Message::default();
        m.properties.insert("sluice-tag".into(), "x".into());
        assert!(matches!(m.validate(), Err(CoreError::InvalidMessage(_))));
        let mut m = Message::default();
        m.properties
            .insert("big".into(), "x".repeat(PROPERTIES_BYTES_MAX + 1));
        assert!(matches!(m.validate(), Err(CoreError::InvalidMessage(_))));
    }
}
