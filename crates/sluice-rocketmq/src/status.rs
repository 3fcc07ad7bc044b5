//! Core errors as RocketMQ status codes: one exhaustive match.

use sluice_core::{BatchError, CoreError};

use crate::pb::{Code, Status};

/// A status with a code and a message.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The OK status.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The RocketMQ code of a core error.
pub fn code(e: &CoreError) -> Code {
    match e {
        CoreError::UnknownTopicOrPartition { .. } => Code::TopicNotFound,
        CoreError::TopicAlreadyExists(_) => Code::BadRequest,
        CoreError::InvalidTopicName { .. } => Code::IllegalTopic,
        CoreError::InvalidPartitions(_)
        | CoreError::InvalidReplicationFactor(_)
        | CoreError::InvalidConfig(_)
        | CoreError::InvalidRequest(_) => Code::BadRequest,
        CoreError::InvalidBatch(BatchError::TooLarge { .. }) => Code::MessageBodyTooLarge,
        CoreError::InvalidBatch(_) => Code::MessageCorrupted,
        CoreError::OutOfOrderSequence { .. } | CoreError::ProducerFenced { .. } => Code::BadRequest,
        CoreError::OffsetOutOfRange { .. } => Code::IllegalOffset,
        CoreError::InvalidGroupId(_) => Code::IllegalConsumerGroup,
        CoreError::GroupIdNotFound(_) => Code::ConsumerGroupNotFound,
        CoreError::IllegalGeneration { .. }
        | CoreError::UnknownMemberId { .. }
        | CoreError::OffsetMetadataTooLarge { .. }
        | CoreError::MemberIdRequired(_)
        | CoreError::InconsistentGroupProtocol(_)
        | CoreError::InvalidSessionTimeout { .. }
        | CoreError::RebalanceInProgress(_)
        | CoreError::FencedInstanceId { .. }
        | CoreError::UnreleasedInstanceId { .. }
        | CoreError::GroupMaxSizeReached { .. }
        | CoreError::NonEmptyGroup(_)
        | CoreError::GroupSubscribedToTopic { .. }
        | CoreError::FencedMemberEpoch { .. }
        | CoreError::StaleMemberEpoch { .. }
        | CoreError::UnsupportedAssignor(_) => Code::BadRequest,
        CoreError::CoordinatorNotAvailable => Code::InternalServerError,
        CoreError::Unsupported(_) => Code::Unsupported,
        CoreError::InvalidMessage(_) => Code::IllegalMessagePropertyKey,
        CoreError::InvalidFilter(_) => Code::IllegalFilterExpression,
        CoreError::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
        CoreError::InvalidReceiptHandle(_) => Code::InvalidReceiptHandle,
        CoreError::MessageNotFound(_) => Code::NotFound,
        CoreError::UnknownTransaction(_) => Code::InvalidTransactionId,
        CoreError::Storage(_) => Code::InternalError,
    }
}

/// The status of a core error.
pub fn from_error(e: &CoreError) -> Status {
    status(code(e), e.to_string())
}
