//! Produce: validates and appends record batches per partition.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

/// Appends every partition's batches. Returns `None` for acks=0, which wants no
/// response. Every partition gets its own error code; one bad partition does not
/// fail the others.
pub(crate) async fn handle(ctx: &Ctx, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let refuse = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            "acks must be -1, 0 or 1",
        ))
    } else if req.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional produce is not supported yet",
        ))
    } else {
        None
    };
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let mut resp = PartitionProduceResponse::default().with_index(p.index);
            if let Some((err, msg)) = refuse {
                resp = resp
                    .with_error_code(err.code())
                    .with_error_message(Some(s(msg)));
            } else {
                let records = p.records.unwrap_or_default();
                match ctx.broker.produce(&name, p.index, &records).await {
                    Ok(done) => {
                        resp = resp
                            .with_base_offset(done.base_offset)
                            .with_log_start_offset(done.log_start_offset);
                    }
                    Err(e) => {
                        tracing::debug!(topic = %name, partition = p.index, error = %e, "produce refused");
                        resp = resp
                            .with_error_code(error_code(&e))
                            .with_error_message(Some(s(e.to_string())));
                    }
                }
            }
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
