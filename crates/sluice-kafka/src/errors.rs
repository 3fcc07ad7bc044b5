//! Core errors as Kafka error codes: one exhaustive match, no catch-all arm.

use kafka_protocol::ResponseError as K;
use sluice_core::{BatchError, CoreError};

/// The Kafka error code for a core error.
pub fn error_code(e: &CoreError) -> i16 {
    match e {
        CoreError::UnknownTopicOrPartition { .. } => K::UnknownTopicOrPartition.code(),
        CoreError::TopicAlreadyExists(_) => K::TopicAlreadyExists.code(),
        CoreError::InvalidTopicName { .. } => K::InvalidTopicException.code(),
        CoreError::InvalidPartitions(_) => K::InvalidPartitions.code(),
        CoreError::InvalidReplicationFactor(_) => K::InvalidReplicationFactor.code(),
        CoreError::InvalidConfig(_) => K::InvalidConfig.code(),
        CoreError::InvalidBatch(b) => match b {
            BatchError::TooLarge { .. } => K::MessageTooLarge.code(),
            BatchError::CrcMismatch { .. }
            | BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::InvalidRecordCount { .. }
            | BatchError::Decompression { .. }
            | BatchError::Empty => K::CorruptMessage.code(),
            BatchError::InvalidRecord { .. } => K::InvalidRecord.code(),
            BatchError::UnsupportedMagic { .. } => K::UnsupportedForMessageFormat.code(),
        },
        CoreError::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber.code(),
        CoreError::ProducerFenced { .. } => K::InvalidProducerEpoch.code(),
        CoreError::OffsetOutOfRange { .. } => K::OffsetOutOfRange.code(),
        CoreError::IllegalGeneration { .. } => K::IllegalGeneration.code(),
        CoreError::UnknownMemberId { .. } => K::UnknownMemberId.code(),
        CoreError::InvalidGroupId(_) => K::InvalidGroupId.code(),
        CoreError::GroupIdNotFound(_) => K::GroupIdNotFound.code(),
        CoreError::OffsetMetadataTooLarge { .. } => K::OffsetMetadataTooLarge.code(),
        CoreError::MemberIdRequired(_) => K::MemberIdRequired.code(),
        CoreError::InconsistentGroupProtocol(_) => K::InconsistentGroupProtocol.code(),
        CoreError::InvalidSessionTimeout { .. } => K::InvalidSessionTimeout.code(),
        CoreError::RebalanceInProgress(_) => K::RebalanceInProgress.code(),
        CoreError::FencedInstanceId { .. } => K::FencedInstanceId.code(),
        CoreError::UnreleasedInstanceId { .. } => K::UnreleasedInstanceId.code(),
        CoreError::GroupMaxSizeReached { .. } => K::GroupMaxSizeReached.code(),
        CoreError::NonEmptyGroup(_) => K::NonEmptyGroup.code(),
        CoreError::GroupSubscribedToTopic { .. } => K::GroupSubscribedToTopic.code(),
        CoreError::FencedMemberEpoch { .. } => K::FencedMemberEpoch.code(),
        CoreError::StaleMemberEpoch { .. } => K::StaleMemberEpoch.code(),
        CoreError::UnsupportedAssignor(_) => K::UnsupportedAssignor.code(),
        CoreError::InvalidRequest(_) => K::InvalidRequest.code(),
        CoreError::CoordinatorNotAvailable => K::CoordinatorNotAvailable.code(),
        CoreError::Unsupported(_) => K::UnsupportedVersion.code(),
        CoreError::InvalidMessage(_) => K::InvalidRecord.code(),
        CoreError::InvalidFilter(_) | CoreError::InvalidReceiptHandle(_) => {
            K::InvalidRequest.code()
        }
        CoreError::IllegalDeliveryTime(_) => K::InvalidTimestamp.code(),
        CoreError::MessageNotFound(_) | CoreError::UnknownTransaction(_) => {
            K::InvalidRequest.code()
        }
        CoreError::Storage(_) => K::KafkaStorageError.code(),
    }
}

/// The Kafka error code of an outcome: 0 for success.
pub fn result_code<T>(r: &Result<T, CoreError>) -> i16 {
    r.as_ref().err().map_or(0, error_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_kafka_protocol() {
        let crc = CoreError::InvalidBatch(BatchError::CrcMismatch {
            expected: 1,
            found: 2,
        });
        assert_eq!(error_code(&crc), 2);
        let big = CoreError::InvalidBatch(BatchError::TooLarge { bytes: 2, max: 1 });
        assert_eq!(error_code(&big), 10);
        let record = CoreError::InvalidBatch(BatchError::InvalidRecord {
            index: 0,
            reason: "x",
        });
        assert_eq!(error_code(&record), 87);
        let unknown = CoreError::UnknownTopicOrPartition {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(error_code(&unknown), 3);
        assert_eq!(error_code(&CoreError::TopicAlreadyExists("t".into())), 36);
        assert_eq!(
            error_code(&CoreError::InvalidTopicName {
                name: "a b".into(),
                reason: "x"
            }),
            17
        );
        assert_eq!(error_code(&CoreError::InvalidConfig("x".into())), 40);
        assert_eq!(
            error_code(&CoreError::OffsetOutOfRange {
                offset: 0,
                log_start_offset: 1,
                log_end_offset: 2
            }),
            1
        );
    }
}
