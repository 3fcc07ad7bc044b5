//! Idempotent de-duplication across a segment roll and a restart.

use sluice_core::{Broker, BrokerConfig, TopicConfig};
use sluice_storage::batch::build_batch;

#[tokio::test]
async fn a_retry_after_roll_and_restart_is_answered_with_the_original_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let open = || Broker::open(BrokerConfig::new(tmp.path().to_path_buf())).unwrap();
    let broker = open();
    let config = TopicConfig::from_pairs([("segment.bytes", "1024")]).unwrap();
    broker.create_topic("t", 1, 1, config, false).unwrap();
    let value = [7u8; 300];
    for seq in 0..8 {
        let batch = build_batch(&[&value], 1000 + seq, (42, 0, seq as i32));
        assert_eq!(
            broker.produce("t", 0, &batch).await.unwrap().base_offset,
            seq
        );
    }
    // A large batch from another client rolls the segment: seq 7 is now sealed.
    let filler = build_batch(&[&[1u8; 900]], 2000, (-1, -1, -1));
    assert_eq!(
        broker.produce("t", 0, &filler).await.unwrap().base_offset,
        8
    );
    let last = build_batch(&[&value], 1007, (42, 0, 7));
    drop(broker);
    let broker = open();
    let again = broker.produce("t", 0, &last).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.base_offset, 7);
    assert_eq!(broker.partition_offsets("t", 0).unwrap().1, 9);
    // The next sequence is accepted, a gap is not.
    let next = build_batch(&[&value], 1008, (42, 0, 8));
    assert_eq!(broker.produce("t", 0, &next).await.unwrap().base_offset, 9);
    let gap = build_batch(&[&value], 1009, (42, 0, 11));
    assert!(broker.produce("t", 0, &gap).await.is_err());
}
