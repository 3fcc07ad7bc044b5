//! OffsetFetch: a group's committed positions (-1 where none is committed).

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::s;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let committed = ctx.broker.committed_offsets(req.group_id.0.as_str());
    // The leader epoch exists from v5 on.
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    let topics: Vec<OffsetFetchResponseTopic> = match req.topics {
        Some(requested) => requested
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        let base = OffsetFetchResponsePartition::default()
                            .with_partition_index(*p)
                            .with_metadata(Some(s("")));
                        match committed.get(&(name.clone(), *p)) {
                            Some(c) => base
                                .with_committed_offset(c.offset)
                                .with_committed_leader_epoch(epoch(c.leader_epoch))
                                .with_metadata(Some(s(c.metadata.clone()))),
                            None => base.with_committed_offset(-1),
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        None => {
            // All committed partitions of the group (v2+).
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for ((topic, partition), c) in committed {
                let p = OffsetFetchResponsePartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(c.offset)
                    .with_committed_leader_epoch(epoch(c.leader_epoch))
                    .with_metadata(Some(s(c.metadata)));
                match topics.last_mut() {
                    Some(t) if t.name.0.as_str() == topic => t.partitions.push(p),
                    _ => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(s(topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            topics
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
