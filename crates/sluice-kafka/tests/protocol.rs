//! The Kafka front end over real sockets, in-process: negotiation, produce/fetch,
//! and bad input that must fail alone and change nothing.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest,
    ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use sluice_core::messaging::{Messaging, MessagingConfig};
use sluice_core::{Broker, BrokerConfig};
use sluice_storage::batch::build_batch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// Forged array counts reserve address space instead of aborting the test process.
#[global_allocator]
static GLOBAL: sluice_kafka::lazy_alloc::LazyHugeAllocator =
    sluice_kafka::lazy_alloc::LazyHugeAllocator;

struct TestBroker {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path().to_path_buf())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let messaging = Messaging::open(broker, MessagingConfig::default()).unwrap();
    tokio::spawn(sluice_kafka::serve(
        listener,
        messaging,
        sluice_kafka::KafkaServerConfig::new("127.0.0.1".into(), i32::from(addr.port())),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    TestBroker {
        addr,
        _dir: dir,
        stop,
    }
}

struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            correlation: 0,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut len))
            .await
            .expect("response within 10 s");
        read.ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation += 1;
        let key = ApiKey::try_from(R::KEY).unwrap();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.send_raw(&buf).await;
        let mut frame = self.read_frame().await.expect("a response");
        let header =
            ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        R::Response::decode(&mut frame, version).unwrap()
    }

    async fn is_closed(&mut self) -> bool {
        self.read_frame().await.is_none()
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn produce(client: &mut Client, topic: &str, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp = client.call(&req, 9).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn offsets(client: &mut Client, topic: &str) -> (i64, i64) {
    let mut out = [0i64; 2];
    for (i, ts) in [-2i64, -1].into_iter().enumerate() {
        let req = ListOffsetsRequest::default().with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts),
                ]),
        ]);
        let resp = client.call(&req, 7).await;
        out[i] = resp.topics[0].partitions[0].offset;
    }
    (out[0], out[1])
}

async fn healthy(addr: std::net::SocketAddr) {
    let mut c = Client::connect(addr).await;
    let resp = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(resp.error_code, 0);
}

#[tokio::test]
async fn api_versions_lists_supported_apis_without_feature_tags() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let resp: ApiVersionsResponse = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(resp.error_code, 0);
    let produce = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 11));
    assert!(resp.supported_features.is_empty());
    assert_eq!(resp.finalized_features_epoch, -1);
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn api_versions_with_unknown_version_answers_unsupported_version_in_v0() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    // ApiVersions v99 with a v2 (flexible) header: client id and an empty tag buffer.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(7);
    frame.put_i16(4);
    frame.put_slice(b"test");
    frame.put_u8(0);
    let mut wire = BytesMut::new();
    wire.put_i32(frame.len() as i32);
    wire.put_slice(&frame);
    c.send_raw(&wire).await;
    let mut resp = c.read_frame().await.unwrap();
    assert_eq!(resp.get_i32(), 7);
    let body = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(body.error_code, 35);
    assert!(!body.api_keys.is_empty());
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn produce_then_fetch_returns_the_stored_batch_byte_for_byte() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let batch = build_batch(&[b"one", b"two"], 1_700_000_000_000, (-1, -1, -1));
    assert_eq!(
        produce(&mut c, "roundtrip", Bytes::from(batch.clone())).await,
        (0, 0)
    );
    assert_eq!(
        produce(&mut c, "roundtrip", Bytes::from(batch.clone())).await,
        (0, 2)
    );
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            kafka_protocol::messages::fetch_request::FetchTopic::default()
                .with_topic(name("roundtrip"))
                .with_partitions(vec![
                    kafka_protocol::messages::fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(2)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp = c.call(&req, 11).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 4);
    let records = p.records.clone().unwrap();
    assert_eq!(records.len(), batch.len());
    assert_eq!(&records[..8], &2i64.to_be_bytes());
    assert_eq!(&records[8..], &batch[8..]);
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn fetch_long_poll_wakes_when_data_arrives() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let batch = Bytes::from(build_batch(&[b"first"], 1, (-1, -1, -1)));
    produce(&mut c, "poll", batch.clone()).await;
    let addr = b.addr;
    let fetcher = tokio::spawn(async move {
        let mut f = Client::connect(addr).await;
        let req = FetchRequest::default()
            .with_max_wait_ms(20_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                kafka_protocol::messages::fetch_request::FetchTopic::default()
                    .with_topic(name("poll"))
                    .with_partitions(vec![
                        kafka_protocol::messages::fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        f.call(&req, 11).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&mut c, "poll", batch).await;
    let resp = fetcher.await.unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 2);
    assert!(!p.records.as_ref().unwrap().is_empty());
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn wrong_crc_is_corrupt_message_and_stores_nothing() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let good = build_batch(&[b"ok"], 5, (-1, -1, -1));
    produce(&mut c, "crc", Bytes::from(good)).await;
    let mut bad = build_batch(&[b"payload"], 5, (-1, -1, -1));
    let last = bad.len() - 2;
    bad[last] ^= 0x40;
    assert_eq!(produce(&mut c, "crc", Bytes::from(bad)).await.0, 2);
    assert_eq!(offsets(&mut c, "crc").await, (0, 1));
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn oversized_batch_is_message_too_large() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let big = vec![b'x'; 2 << 20];
    let batch = build_batch(&[&big], 5, (-1, -1, -1));
    assert_eq!(produce(&mut c, "big", Bytes::from(batch)).await.0, 10);
    assert_eq!(offsets(&mut c, "big").await, (0, 0));
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn invalid_topic_names_are_refused_in_metadata_and_create() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let req = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(name("bad topic!"))),
    ]));
    let resp = c.call(&req, 9).await;
    assert_eq!(resp.topics[0].error_code, 17);
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(name("../escape"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let resp = c.call(&req, 5).await;
    assert_eq!(resp.topics[0].error_code, 17);
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let b = start().await;
    // A 2 GiB length prefix.
    let mut c = Client::connect(b.addr).await;
    c.send_raw(&0x7fff_fff0i32.to_be_bytes()).await;
    assert!(c.is_closed().await);
    healthy(b.addr).await;
    // An unknown API key.
    let mut c = Client::connect(b.addr).await;
    c.send_raw(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0])
        .await;
    assert!(c.is_closed().await);
    healthy(b.addr).await;
    // A Metadata request whose body is garbage.
    let mut c = Client::connect(b.addr).await;
    c.send_raw(&[0, 0, 0, 12, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xde, 0xad])
        .await;
    assert!(c.is_closed().await);
    healthy(b.addr).await;
    // Metadata v1 claiming 2^31-1 topics in a 4-byte array header.
    let mut c = Client::connect(b.addr).await;
    c.send_raw(&[
        0, 0, 0, 15, 0, 3, 0, 1, 0, 0, 0, 1, 0, 1, b'x', 0x7f, 0xff, 0xff, 0xff,
    ])
    .await;
    assert!(c.is_closed().await);
    healthy(b.addr).await;
    // Random bytes.
    let mut c = Client::connect(b.addr).await;
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    c.send_raw(&noise).await;
    drop(c);
    healthy(b.addr).await;
    let _ = b.stop.send(true);
}

/// Pipelined produces to an `always` topic: the broker appends each request while
/// earlier ones wait for their fsync, answers strictly in request order, and still
/// answers everything before a bad frame that closes the connection.
#[tokio::test]
async fn pipelined_produces_are_answered_in_order_before_a_bad_frame_closes() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::ProduceResponse;
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("durable"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("flush.policy"))
            .with_value(Some(StrBytes::from_static_str("always")))])]);
    assert_eq!(c.call(&create, 5).await.topics[0].error_code, 0);

    const REQUESTS: i32 = 20;
    let batch = Bytes::from(build_batch(
        &[b"a", b"b", b"c"],
        1_700_000_000_000,
        (-1, -1, -1),
    ));
    let mut wire = BytesMut::new();
    for i in 0..REQUESTS {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(9)
            .with_correlation_id(100 + i);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("durable"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.clone()))])]);
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, ApiKey::Produce.request_header_version(9))
            .unwrap();
        req.encode(&mut frame, 9).unwrap();
        wire.put_i32(frame.len() as i32);
        wire.extend_from_slice(&frame);
    }
    // A Metadata request whose body is garbage, right behind them.
    wire.extend_from_slice(&[0, 0, 0, 12, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xde, 0xad]);
    c.send_raw(&wire).await;
    for i in 0..REQUESTS {
        let mut frame = c.read_frame().await.expect("a response per produce");
        let header =
            ResponseHeader::decode(&mut frame, ApiKey::Produce.response_header_version(9)).unwrap();
        assert_eq!(header.correlation_id, 100 + i, "responses in request order");
        let resp = ProduceResponse::decode(&mut frame, 9).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, i64::from(3 * i)));
    }
    assert!(c.is_closed().await);
    let mut c = Client::connect(b.addr).await;
    assert_eq!(
        offsets(&mut c, "durable").await,
        (0, i64::from(3 * REQUESTS))
    );
    let _ = b.stop.send(true);
}

async fn commit_raw(
    c: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let req = kafka_protocol::messages::OffsetCommitRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_string(
            group.into(),
        )))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member.into()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(11)])]);
    let resp = c.call(&req, 8).await;
    resp.topics[0].partitions[0].error_code
}

async fn fetch_committed(c: &mut Client, group: &str, topic: &str) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let req = kafka_protocol::messages::OffsetFetchRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_string(
            group.into(),
        )))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0])]));
    let resp = c.call(&req, 7).await;
    resp.topics[0].partitions[0].committed_offset
}

#[tokio::test]
async fn bad_commits_get_group_error_codes_and_change_nothing() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    produce(
        &mut c,
        "committed",
        Bytes::from(build_batch(&[b"x"], 1, (-1, -1, -1))),
    )
    .await;
    assert_eq!(fetch_committed(&mut c, "g", "committed").await, -1);
    assert_eq!(commit_raw(&mut c, "g", -1, "", "committed", 0).await, 0);
    assert_eq!(fetch_committed(&mut c, "g", "committed").await, 11);
    // Stale or unknown membership: the group has no generation 5, no member "m".
    assert_eq!(commit_raw(&mut c, "g", 5, "", "committed", 0).await, 22);
    assert_eq!(commit_raw(&mut c, "g", -1, "m", "committed", 0).await, 25);
    assert_eq!(commit_raw(&mut c, "", -1, "", "committed", 0).await, 24);
    assert_eq!(commit_raw(&mut c, "g", -1, "", "committed", 9).await, 3);
    assert_eq!(commit_raw(&mut c, "g", -1, "", "no-such-topic", 0).await, 3);
    assert_eq!(fetch_committed(&mut c, "g", "committed").await, 11);
    let _ = b.stop.send(true);
}

/// A broker whose new groups rebalance at once (no initial delay), with its
/// maintenance task (group timers) running.
async fn start_with_groups() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path().to_path_buf());
    config.groups.initial_rebalance_delay_ms = 0;
    let broker = Broker::open(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let maintenance = broker.clone();
    let maintenance_stop = stopped(rx.clone());
    tokio::spawn(async move { maintenance.run_maintenance(maintenance_stop).await });
    let messaging = Messaging::open(broker, MessagingConfig::default()).unwrap();
    tokio::spawn(sluice_kafka::serve(
        listener,
        messaging,
        sluice_kafka::KafkaServerConfig::new("127.0.0.1".into(), i32::from(addr.port())),
        stopped(rx),
    ));
    TestBroker {
        addr,
        _dir: dir,
        stop,
    }
}

fn group(g: &str) -> kafka_protocol::messages::GroupId {
    kafka_protocol::messages::GroupId(StrBytes::from_string(g.into()))
}

/// A consumer-protocol subscription (version 0) to `topic`.
fn subscription(topic: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    kafka_protocol::messages::ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.into())])
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

async fn join(
    c: &mut Client,
    g: &str,
    member: &str,
    protocol_type: &str,
    session_ms: i32,
    topic: &str,
) -> kafka_protocol::messages::JoinGroupResponse {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    let req = kafka_protocol::messages::JoinGroupRequest::default()
        .with_group_id(group(g))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_string(member.into()))
        .with_protocol_type(StrBytes::from_string(protocol_type.into()))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription(topic))]);
    c.call(&req, 5).await
}

async fn heartbeat(c: &mut Client, g: &str, member: &str, generation: i32) -> i16 {
    let req = kafka_protocol::messages::HeartbeatRequest::default()
        .with_group_id(group(g))
        .with_member_id(StrBytes::from_string(member.into()))
        .with_generation_id(generation);
    c.call(&req, 4).await.error_code
}

async fn describe_group(c: &mut Client, g: &str) -> (String, usize, Bytes) {
    let req =
        kafka_protocol::messages::DescribeGroupsRequest::default().with_groups(vec![group(g)]);
    let resp = c.call(&req, 5).await;
    let d = &resp.groups[0];
    let assignment = d
        .members
        .first()
        .map(|m| m.member_assignment.clone())
        .unwrap_or_default();
    (d.group_state.to_string(), d.members.len(), assignment)
}

async fn delete_group(c: &mut Client, g: &str) -> i16 {
    let req =
        kafka_protocol::messages::DeleteGroupsRequest::default().with_groups_names(vec![group(g)]);
    c.call(&req, 2).await.results[0].error_code
}

#[tokio::test]
async fn classic_group_fences_stale_members_and_refuses_bad_requests() {
    let b = start_with_groups().await;
    let mut c = Client::connect(b.addr).await;
    let topic = "grouped";
    produce(
        &mut c,
        topic,
        Bytes::from(build_batch(&[b"x"], 1, (-1, -1, -1))),
    )
    .await;

    // Bad joins change nothing: no protocol type, a session timeout below the minimum.
    assert_eq!(
        join(&mut c, "cg", "", "", 10_000, topic).await.error_code,
        23
    );
    assert_eq!(
        join(&mut c, "cg", "", "consumer", 10, topic)
            .await
            .error_code,
        26
    );
    assert_eq!(
        join(&mut c, "cg", "ghost", "consumer", 10_000, topic)
            .await
            .error_code,
        25
    );

    // KIP-394: the first join only hands out a member id.
    let first = join(&mut c, "cg", "", "consumer", 10_000, topic).await;
    assert_eq!(first.error_code, 79);
    let member = first.member_id.to_string();
    assert!(member.starts_with("test-"), "{member}");
    let joined = join(&mut c, "cg", &member, "consumer", 10_000, topic).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), member);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.members[0].metadata, subscription(topic));

    // The leader's SyncGroup stores and returns its assignment.
    let assignment = Bytes::from_static(b"\x00\x00opaque");
    let sync = kafka_protocol::messages::SyncGroupRequest::default()
        .with_group_id(group("cg"))
        .with_generation_id(1)
        .with_member_id(StrBytes::from_string(member.clone()))
        .with_assignments(vec![
            kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_assignment(assignment.clone()),
        ]);
    let synced = c.call(&sync, 3).await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, assignment);
    assert_eq!(
        describe_group(&mut c, "cg").await,
        ("Stable".to_string(), 1, assignment.clone())
    );

    // Heartbeats and commits are checked against generation and member id.
    assert_eq!(heartbeat(&mut c, "cg", &member, 1).await, 0);
    assert_eq!(heartbeat(&mut c, "cg", &member, 0).await, 22);
    assert_eq!(heartbeat(&mut c, "cg", "nobody", 1).await, 25);
    assert_eq!(commit_raw(&mut c, "cg", 1, &member, topic, 0).await, 0);
    assert_eq!(fetch_committed(&mut c, "cg", topic).await, 11);
    for (generation, who, code) in [(0, member.as_str(), 22), (1, "nobody", 25), (-1, "", 25)] {
        // Re-commit a different offset through each bad path: none may land.
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let req = kafka_protocol::messages::OffsetCommitRequest::default()
            .with_group_id(group("cg"))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(who.into()))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(99)])]);
        let resp = c.call(&req, 8).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code, code,
            "generation {generation} member {who:?}"
        );
    }
    assert_eq!(fetch_committed(&mut c, "cg", topic).await, 11);

    // An active group cannot be deleted, nor the offsets of a topic it reads.
    assert_eq!(delete_group(&mut c, "cg").await, 68);
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let offset_delete = kafka_protocol::messages::OffsetDeleteRequest::default()
        .with_group_id(group("cg"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let resp = c.call(&offset_delete, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 86);
    assert_eq!(fetch_committed(&mut c, "cg", topic).await, 11);

    // After LeaveGroup the group is empty: offsets can go, then the group.
    let leave = kafka_protocol::messages::LeaveGroupRequest::default()
        .with_group_id(group("cg"))
        .with_members(vec![
            kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                .with_member_id(StrBytes::from_string(member.clone())),
        ]);
    let left = c.call(&leave, 3).await;
    assert_eq!(left.error_code, 0);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(describe_group(&mut c, "cg").await.0, "Empty");
    assert_eq!(heartbeat(&mut c, "cg", &member, 1).await, 25);
    let resp = c.call(&offset_delete, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_committed(&mut c, "cg", topic).await, -1);
    assert_eq!(delete_group(&mut c, "cg").await, 0);
    assert_eq!(describe_group(&mut c, "cg").await.0, "Dead");
    assert_eq!(delete_group(&mut c, "cg").await, 69);
    let _ = b.stop.send(true);
}

/// Resource type of groups in DescribeConfigs / IncrementalAlterConfigs (Kafka 4).
const RESOURCE_GROUP: i8 = 32;

async fn describe_group_configs(c: &mut Client, g: &str) -> (i16, Vec<(String, String, i8)>) {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req = kafka_protocol::messages::DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_GROUP)
            .with_resource_name(StrBytes::from_string(g.to_string()))
            .with_configuration_keys(None),
    ]);
    let resp = c.call(&req, 4).await;
    let r = &resp.results[0];
    let configs = r
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                e.config_source,
            )
        })
        .collect();
    (r.error_code, configs)
}

async fn alter_group_configs(c: &mut Client, g: &str, ops: &[(&str, i8, Option<&str>)]) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req =
        kafka_protocol::messages::IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_GROUP)
                .with_resource_name(StrBytes::from_string(g.to_string()))
                .with_configs(
                    ops.iter()
                        .map(|(k, op, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_config_operation(*op)
                                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ]);
    c.call(&req, 1).await.responses[0].error_code
}

#[tokio::test]
async fn group_configs_are_described_and_altered_all_or_nothing() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const INVALID_CONFIG: i16 = 40;
    const INVALID_GROUP_ID: i16 = 24;
    let b = start().await;
    let mut c = Client::connect(b.addr).await;

    // Every key with its default (source DEFAULT_CONFIG = 5).
    let (code, configs) = describe_group_configs(&mut c, "rg").await;
    assert_eq!(code, 0);
    let names: Vec<&str> = configs.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "consume.mode",
            "max.delivery.attempts",
            "retry.policy",
            "retry.backoff.ms",
            "retry.initial.backoff.ms",
            "retry.max.backoff.ms",
            "retry.backoff.multiplier"
        ]
    );
    assert!(configs.iter().all(|c| c.2 == 5), "{configs:?}");
    assert_eq!(configs[0].1, "clustering");

    let ok = [
        ("consume.mode", SET, Some("broadcast")),
        ("max.delivery.attempts", SET, Some("3")),
    ];
    assert_eq!(alter_group_configs(&mut c, "rg", &ok).await, 0);
    let (_, configs) = describe_group_configs(&mut c, "rg").await;
    assert_eq!(configs[0], ("consume.mode".into(), "broadcast".into(), 8));
    assert_eq!(configs[1], ("max.delivery.attempts".into(), "3".into(), 8));

    // A bad value or unknown key fails the whole resource and changes nothing.
    for bad in [
        vec![
            ("retry.policy", SET, Some("exponential")),
            ("max.delivery.attempts", SET, Some("0")),
        ],
        vec![("no.such.key", SET, Some("1"))],
        vec![
            ("consume.mode", DELETE, None),
            ("no.such.key", DELETE, None),
        ],
        vec![("consume.mode", 2, Some("x"))],
    ] {
        assert_eq!(
            alter_group_configs(&mut c, "rg", &bad).await,
            INVALID_CONFIG,
            "{bad:?}"
        );
    }
    let (_, after) = describe_group_configs(&mut c, "rg").await;
    assert_eq!(after, configs);
    assert_eq!(
        alter_group_configs(&mut c, "bad.group", &ok).await,
        INVALID_GROUP_ID
    );

    // DELETE brings the default back.
    let del = [("consume.mode", DELETE, None)];
    assert_eq!(alter_group_configs(&mut c, "rg", &del).await, 0);
    let (_, configs) = describe_group_configs(&mut c, "rg").await;
    assert_eq!(configs[0], ("consume.mode".into(), "clustering".into(), 5));
    assert_eq!(configs[1].1, "3");
    let _ = b.stop.send(true);
}
