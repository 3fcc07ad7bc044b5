//! OffsetCommit: durable committed positions of a group.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use sluice_core::{now_ms, CommittedOffset};

use crate::errors::{error_code, result_code};
use crate::server::Ctx;

pub(crate) async fn handle(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let now = now_ms();
    let mut entries = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            entries.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let results = ctx
        .broker
        .commit_offsets(
            req.group_id.0.as_str(),
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            entries,
        )
        .await;
    let mut codes = match results {
        Ok(per_partition) => per_partition
            .into_iter()
            .map(|r| result_code(&r))
            .collect::<Vec<_>>(),
        Err(e) => {
            let code = error_code(&e);
            vec![code; req.topics.iter().map(|t| t.partitions.len()).sum()]
        }
    }
    .into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
