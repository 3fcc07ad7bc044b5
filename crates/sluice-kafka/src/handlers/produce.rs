//! Produce: validates and appends record batches per partition now, then answers
//! once the topics' flush policies are satisfied (the server queues the answer
//! behind the connection's earlier responses). Records with a delivery-time
//! header (`sluice-deliver-at`, `sluice-delay-level`) are handed to the delay
//! scheduler instead and land in the partition when due.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::s;
use sluice_core::messaging::{ClientProduce, ScheduledProduce};
use sluice_core::{CoreError, ProduceSync};

use crate::errors::error_code;
use crate::server::Ctx;

/// A produce request whose records are appended (in request order) and whose
/// response waits for their fsyncs, which run meanwhile.
pub(crate) struct PendingProduce {
    acks: i16,
    topics: Vec<(TopicName, Vec<(i32, Outcome)>)>,
}

/// A partition's append under way, or why it was refused (error code, message).
type Outcome = Result<Storing, Refusal>;

/// How a partition's records are being stored.
enum Storing {
    /// Appended; waits for the fsync its topic's policy asks for.
    Appended(ProduceSync),
    /// Going through the delay scheduler.
    Scheduled(ScheduledProduce),
}
type Refusal = (i16, String);

/// Verifies and appends every partition's batches now, starting the fsyncs of
/// `always` topics in the background. Every partition gets its own error code; one
/// bad partition does not fail the others.
pub(crate) fn append(ctx: &Ctx, req: ProduceRequest) -> PendingProduce {
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
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let outcome: Outcome = if let Some((err, msg)) = refuse {
                Err((err.code(), msg.to_string()))
            } else {
                let records = p.records.unwrap_or_default();
                match ctx.messaging.produce_append(&name, p.index, &records) {
                    Ok(ClientProduce::Appended(appended)) => Ok(Storing::Appended(appended.sync())),
                    Ok(ClientProduce::Scheduled(scheduled)) => Ok(Storing::Scheduled(scheduled)),
                    Err(e) => Err(refused(&name, p.index, &e)),
                }
            };
            partitions.push((p.index, outcome));
        }
        // An owned copy: the request's name is a slice of the received frame and
        // would keep the whole frame in memory until the response is written.
        topics.push((TopicName(StrBytes::from_string(name)), partitions));
    }
    PendingProduce { acks, topics }
}

fn refused(topic: &str, partition: i32, e: &CoreError) -> Refusal {
    tracing::debug!(topic, partition, error = %e, "produce refused");
    (error_code(e), e.to_string())
}

impl PendingProduce {
    /// Waits for every partition's fsync and builds the response (`None` for
    /// acks=0; the wait still happens, so fetchers are woken all the same).
    pub(crate) async fn respond(self) -> Option<ProduceResponse> {
        let mut responses = Vec::with_capacity(self.topics.len());
        for (name, partitions) in self.topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                let refuse = |e: CoreError| refused(&name.0, index, &e);
                let stored = match outcome {
                    Ok(Storing::Appended(sync)) => sync.wait().await.map_err(refuse),
                    Ok(Storing::Scheduled(scheduled)) => scheduled.await.map_err(refuse),
                    Err(refusal) => Err(refusal),
                };
                let resp = PartitionProduceResponse::default().with_index(index);
                partition_responses.push(match stored {
                    Ok(done) => resp
                        .with_base_offset(done.base_offset)
                        .with_log_start_offset(done.log_start_offset),
                    Err((code, message)) => resp
                        .with_error_code(code)
                        .with_error_message(Some(s(message))),
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        if self.acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }
}
