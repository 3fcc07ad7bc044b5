//! Fetch: returns stored batches as they are, long-polling until `min_bytes` are
//! available or `max_wait_ms` passes.

use std::time::Duration;

use kafka_protocol::messages::FetchRequest;
use sluice_core::CoreError;

use crate::errors::error_code;
use crate::fetch_response::{FetchedPartition, FetchedTopic};
use crate::server::Ctx;

/// Longest wait honoured, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    partition_max_bytes: usize,
}

/// Reads the requested partitions; the answer is encoded by [`crate::fetch_response`].
pub(crate) async fn handle(ctx: &Ctx, req: FetchRequest) -> Vec<FetchedTopic> {
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
        if bytes >= min_bytes || errors || tokio::time::Instant::now() >= deadline {
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

/// One pass over the partitions: (topics, record bytes, whether any partition failed).
fn read_once(
    ctx: &Ctx,
    names: &[String],
    wanted: &[Wanted],
    max_bytes: usize,
) -> (Vec<FetchedTopic>, usize, bool) {
    let mut topics: Vec<FetchedTopic> = Vec::new();
    let mut total = 0usize;
    let mut errors = false;
    for w in wanted {
        let name = &names[w.topic];
        let mut data = FetchedPartition {
            partition: w.partition,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: None,
        };
        let budget = w.partition_max_bytes.min(max_bytes.saturating_sub(total));
        match ctx.broker.read(name, w.partition, w.offset, budget.max(1)) {
            Ok(read) => {
                data.high_watermark = read.high_watermark;
                data.last_stable_offset = read.high_watermark;
                data.log_start_offset = read.log_start_offset;
                // Past the response budget only offsets go out, except that the
                // first partition with data always gets one whole batch.
                if let Some(slice) = read.records.filter(|_| budget > 0 || total == 0) {
                    total += slice.len;
                    data.records = Some(slice);
                }
            }
            Err(e) => {
                if let CoreError::OffsetOutOfRange {
                    log_start_offset,
                    log_end_offset,
                    ..
                } = e
                {
                    data.high_watermark = log_end_offset;
                    data.last_stable_offset = log_end_offset;
                    data.log_start_offset = log_start_offset;
                }
                data.error_code = error_code(&e);
                errors = true;
            }
        }
        match topics.last_mut() {
            Some(t) if &t.name == name => t.partitions.push(data),
            _ => topics.push(FetchedTopic {
                name: name.clone(),
                partitions: vec![data],
            }),
        }
    }
    (topics, total, errors)
}
