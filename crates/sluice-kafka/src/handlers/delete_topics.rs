//! DeleteTopics: deletes topics by name (or by id).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::s;
use crate::errors::error_code;
use crate::server::Ctx;

pub(crate) fn handle(ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // Up to v5 names come in `topic_names`; v6 sends `topics` with a name or an id.
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| ctx.broker.topic_by_id(id.as_bytes()).map(|t| t.name));
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(s(n))))
                .with_topic_id(id);
            let Some(name) = name else {
                return result.with_error_code(ResponseError::UnknownTopicId.code());
            };
            match ctx.broker.delete_topic(&name) {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
