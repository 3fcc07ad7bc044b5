//! CreatePartitions: grows topics.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                return result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(s("manual replica assignment is not supported")));
            }
            match ctx
                .broker
                .create_partitions(t.name.0.as_str(), t.count, req.validate_only)
            {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
