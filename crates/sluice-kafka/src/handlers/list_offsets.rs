//! ListOffsets: earliest, latest, by timestamp, and max timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_core::OffsetQuery;

use crate::errors::error_code;
use crate::server::Ctx;

/// The special timestamps of the protocol.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(crate) fn handle(ctx: &Ctx, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // The leader epoch exists from v4 on; the codec refuses it set in older versions.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let query = match p.timestamp {
                        LATEST => OffsetQuery::Latest,
                        EARLIEST => OffsetQuery::Earliest,
                        MAX_TIMESTAMP => OffsetQuery::MaxTimestamp,
                        ts => OffsetQuery::Timestamp(ts),
                    };
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match ctx.broker.list_offset(&name, p.partition_index, query) {
                        Ok((offset, timestamp)) => resp
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(leader_epoch),
                        Err(e) => resp.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
