//! Fetch: returns stored batches as they are, long-polling until `min_bytes` are
//! available or `max_wait_ms` passes.

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use sluice_core::CoreError;

use crate::errors::error_code;
use crate::server::Ctx;

/// Longest wait honoured, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    partition_max_bytes: usize,
}

pub(crate) async fn handle(ctx: &Ctx, req: FetchRequest) -> FetchResponse {
    let names: Vec<String> = req.topics.iter().map(|t| t.topic.0.to_string()).collect();
    let wanted: Vec<Wanted> = req
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.partitions.iter().map(move |p| Wanted {
                topic: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
            })
        })
        .collect();
    let max_bytes = if req.max_bytes <= 0 {
        i32::MAX
    } else {
        req.max_bytes
    } as usize;
    let min_bytes = req.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    // Watch before the first read, so an append in between still wakes us.
    let mut watch = ctx.broker.watch_appends(
        wanted
            .iter()
            .map(|w| (names[w.topic].as_str(), w.partition)),
    );
    loop {
        let (response, bytes, errors) = read_once(ctx, &names, &wanted, max_bytes);
        if bytes >= min_bytes.max(1) || errors || tokio::time::Instant::now() >= deadline {
            return response;
        }
        if tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_err()
        {
            return read_once(ctx, &names, &wanted, max_bytes).0;
        }
    }
}

/// One pass over the partitions: (response, record bytes, whether any partition failed).
fn read_once(
    ctx: &Ctx,
    names: &[String],
    wanted: &[Wanted],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut total = 0usize;
    let mut errors = false;
    for w in wanted {
        let name = &names[w.topic];
        let mut data = PartitionData::default().with_partition_index(w.partition);
        let budget = w.partition_max_bytes.min(max_bytes.saturating_sub(total));
        match ctx.broker.read(name, w.partition, w.offset, budget.max(1)) {
            Ok(read) => {
                data = data
                    .with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.high_watermark)
                    .with_log_start_offset(read.log_start_offset);
                // Past the response budget only metadata goes out, except that the
                // first partition with data always gets one whole batch.
                if let Some(slice) = read.records.filter(|_| budget > 0 || total == 0) {
                    match slice.read_bytes() {
                        Ok(bytes) => {
                            total += bytes.len();
                            data = data.with_records(Some(bytes));
                        }
                        Err(e) => {
                            tracing::error!(topic = %name, partition = w.partition, error = %e, "read failed");
                            data = data.with_error_code(
                                kafka_protocol::ResponseError::KafkaStorageError.code(),
                            );
                            errors = true;
                        }
                    }
                }
            }
            Err(e) => {
                if let CoreError::OffsetOutOfRange {
                    log_start_offset,
                    log_end_offset,
                    ..
                } = e
                {
                    data = data
                        .with_high_watermark(log_end_offset)
                        .with_log_start_offset(log_start_offset);
                }
                data = data.with_error_code(error_code(&e));
                errors = true;
            }
        }
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == name.as_str() => t.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(kafka_protocol::messages::TopicName(super::s(name.clone())))
                    .with_partitions(vec![data]),
            ),
        }
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}
