//! Message-queue services through the core's public API: tag filters pass over
//! batches by their stored tag summary, and producer records with delivery-time
//! headers go through the delay scheduler.

use std::time::Duration;

use sluice_core::filter::Filter;
use sluice_core::messaging::{ClientProduce, Messaging, MessagingConfig, ReceiveRequest};
use sluice_core::{now_ms, Broker, BrokerConfig, CoreError, Produced, TopicConfig};
use sluice_storage::batch::{encode_records, RecordSpec};

/// One batch of `n` records, each with the given headers.
fn batch(n: usize, value: &str, headers: &[(&str, &str)], producer: (i64, i16, i32)) -> Vec<u8> {
    let specs: Vec<RecordSpec<'_>> = (0..n)
        .map(|_| RecordSpec {
            key: Some(b"key".as_slice()),
            value: Some(value.as_bytes()),
            headers: headers
                .iter()
                .map(|(k, v)| (*k, Some(v.as_bytes())))
                .collect(),
            timestamp: now_ms(),
        })
        .collect();
    encode_records(&specs, producer)
}

async fn produce(messaging: &Messaging, records: &[u8]) -> Result<Produced, CoreError> {
    match messaging.produce_append("t", 0, records)? {
        ClientProduce::Appended(a) => a.sync().wait().await,
        ClientProduce::Scheduled(s) => s.await,
    }
}

fn receive(group: &str, filter: Filter, wait: Duration) -> ReceiveRequest {
    ReceiveRequest {
        group: group.into(),
        topic: "t".into(),
        partition: None,
        filter,
        max_messages: 1000,
        invisible: Duration::from_secs(60),
        wait,
        client_id: Some("test-client".into()),
    }
}

fn open(dir: &std::path::Path) -> Messaging {
    let broker = Broker::open(BrokerConfig::new(dir.to_path_buf())).unwrap();
    broker
        .create_topic("t", 1, 1, TopicConfig::default(), false)
        .unwrap();
    Messaging::open(broker, MessagingConfig::default()).unwrap()
}

#[tokio::test]
async fn a_tag_filter_passes_over_batches_of_other_tags_without_decoding_them() {
    let tmp = tempfile::tempdir().unwrap();
    let messaging = open(tmp.path());
    for i in 0..40 {
        let tag = if i % 4 == 0 { "TagA" } else { "TagB" };
        produce(
            &messaging,
            &batch(5, tag, &[("sluice-tag", tag)], (-1, -1, -1)),
        )
        .await
        .unwrap();
    }
    // Untagged records never match a tag filter either.
    produce(&messaging, &batch(5, "none", &[], (-1, -1, -1)))
        .await
        .unwrap();
    let got = messaging
        .receive(receive("g", Filter::tags("TagA").unwrap(), Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got.len(), 10 * 5);
    assert!(got
        .iter()
        .all(|d| d.message.message.tag.as_deref() == Some("TagA")));
    // TagA and TagB may share a summary bit (1 in 64); "none" has no tags.
    assert!(messaging.batches_skipped() >= 1);
    let skipped = messaging.batches_skipped();
    // Without a tag filter nothing is passed over.
    let all = messaging
        .receive(receive("g2", Filter::All, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(all.len(), 41 * 5);
    assert_eq!(messaging.batches_skipped(), skipped);
}

#[tokio::test]
async fn records_with_delivery_headers_land_when_due_and_only_then() {
    let tmp = tempfile::tempdir().unwrap();
    let messaging = open(tmp.path());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let runner = {
        let messaging = messaging.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            messaging
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let due = now_ms() + 1500;
    let due_text = due.to_string();
    // An idempotent producer: a delayed batch, then a plain one, in sequence.
    let delayed = batch(2, "later", &[("sluice-deliver-at", &due_text)], (7, 0, 0));
    let answered = produce(&messaging, &delayed).await.unwrap();
    assert_eq!(answered.base_offset, -1);
    assert!(!answered.duplicate);
    let plain = batch(1, "now", &[], (7, 0, 2));
    assert_eq!(produce(&messaging, &plain).await.unwrap().base_offset, 0);
    // A retry of the delayed batch is a duplicate: not scheduled twice.
    assert!(produce(&messaging, &delayed).await.unwrap().duplicate);
    let broker = messaging.broker();
    if now_ms() < due {
        assert_eq!(broker.partition_offsets("t", 0).unwrap().1, 1);
    }
    // Bounded wait for the delivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while broker.partition_offsets("t", 0).unwrap().1 < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = messaging
        .receive(receive("g", Filter::All, Duration::ZERO))
        .await
        .unwrap();
    let bodies: Vec<&[u8]> = got
        .iter()
        .map(|d| d.message.message.body.as_slice())
        .collect();
    assert_eq!(bodies, [b"now".as_slice(), b"later", b"later"]);
    for d in &got[1..] {
        assert!(d.message.store_timestamp >= due);
        assert_eq!(d.message.message.key.as_deref(), Some(b"key".as_slice()));
    }
    assert_eq!(broker.partition_offsets("t", 0).unwrap().1, 3);
    stop.send_replace(true);
    runner.await.unwrap();
}

#[tokio::test]
async fn malformed_delivery_headers_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let messaging = open(tmp.path());
    let far = (now_ms() + 10 * 24 * 3600 * 1000).to_string();
    let past = (now_ms() - 3600 * 1000).to_string();
    for headers in [
        [("sluice-deliver-at", "soon")],
        [("sluice-deliver-at", far.as_str())],
        [("sluice-deliver-at", past.as_str())],
        [("sluice-delay-level", "0")],
    ] {
        // The bad record comes after a good one: nothing of the request stays.
        let mut records = batch(1, "ok", &[], (-1, -1, -1));
        records.extend(batch(1, "bad", &headers, (-1, -1, -1)));
        let err = produce(&messaging, &records).await.unwrap_err();
        assert!(matches!(err, CoreError::IllegalDeliveryTime(_)), "{err}");
    }
    // Headers that cannot be message properties are refused up front too.
    let soon = (now_ms() + 60_000).to_string();
    let mut records = batch(
        1,
        "ok",
        &[("sluice-deliver-at", soon.as_str())],
        (-1, -1, -1),
    );
    records.extend(batch(1, "bad", &[("", "x")], (-1, -1, -1)));
    let err = produce(&messaging, &records).await.unwrap_err();
    assert!(matches!(err, CoreError::InvalidMessage(_)), "{err}");
    assert_eq!(messaging.broker().partition_offsets("t", 0).unwrap().1, 0);
}
