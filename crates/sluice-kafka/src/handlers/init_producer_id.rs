//! InitProducerId: ids and epochs for idempotent producers.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        // Transactions come later; say so rather than hand out a half-working id.
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // v0-v2 have no id/epoch fields; they decode as the defaults (-1/-1).
    let existing = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    match ctx.broker.init_producer_id(existing) {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(error_code(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
