//! The embedded consumer protocol: the subscription a classic member sends in its
//! JoinGroup metadata and the assignment the leader sends in SyncGroup. Each is a
//! version (int16) followed by a struct of that version. The broker reads them only
//! to show subscriptions and assignments; it forwards the bytes unchanged.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::handlers::s;

/// Highest version of both structs this codec reads; newer versions only add
/// fields at the end, so they are read as this one (as Kafka does).
const VERSION_MAX: i16 = 3;

fn split_version(bytes: &[u8]) -> Option<(i16, &[u8])> {
    let mut buf = bytes;
    if buf.len() < 2 {
        return None;
    }
    let v = buf.get_i16();
    (v >= 0).then_some((v.min(VERSION_MAX), buf))
}

/// Topics of a consumer subscription; empty if the bytes are not one.
pub fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let Some((version, mut body)) = split_version(metadata) else {
        return Vec::new();
    };
    ConsumerProtocolSubscription::decode(&mut body, version)
        .map(|sub| sub.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// Partitions of a consumer assignment; empty if the bytes are not one.
pub fn assignment_partitions(assignment: &[u8]) -> Vec<(String, i32)> {
    let Some((version, mut body)) = split_version(assignment) else {
        return Vec::new();
    };
    ConsumerProtocolAssignment::decode(&mut body, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Encodes partitions as a version-0 consumer assignment (what DescribeGroups
/// shows for members the broker assigned).
pub fn encode_assignment(partitions: &[(String, i32)]) -> Bytes {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartition::default()
                    .with_topic(TopicName(s(t)))
                    .with_partitions(ps)
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    if assignment.encode(&mut buf, 0).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_round_trips_and_garbage_reads_as_empty() {
        let parts = vec![
            ("a".to_string(), 0),
            ("a".to_string(), 2),
            ("b".to_string(), 1),
        ];
        assert_eq!(assignment_partitions(&encode_assignment(&parts)), parts);
        assert!(assignment_partitions(&[0, 0, 0xff]).is_empty());
        assert!(assignment_partitions(&[]).is_empty());
        assert!(subscription_topics(&[0xff, 0xff, 1, 2]).is_empty());
    }

    #[test]
    fn subscriptions_of_newer_versions_are_read() {
        let sub = ConsumerProtocolSubscription::default().with_topics(vec![s("x"), s("y")]);
        for v in 0..=3i16 {
            let mut buf = BytesMut::new();
            buf.put_i16(v);
            sub.encode(&mut buf, v).unwrap();
            assert_eq!(subscription_topics(&buf), vec!["x", "y"], "v{v}");
        }
    }
}
