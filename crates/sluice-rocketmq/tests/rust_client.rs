//! Compatibility with the official RocketMQ 5 Rust client (crates.io `rocketmq`
//! 5.0.0) against a broker started in this process on free loopback ports.
//! Timeouts are upper bounds only; nothing here asserts speed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use sluice_core::messaging::{Messaging, MessagingConfig};
use sluice_core::{Broker, BrokerConfig, TopicConfig};
use sluice_rocketmq::RocketMqServerConfig;
use tokio::net::TcpListener;

/// A broker with its RocketMQ front on a free port; stops when dropped.
struct TestBroker {
    broker: Broker,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(config: MessagingConfig) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path().to_path_buf())).unwrap();
    let messaging = Messaging::open(broker.clone(), config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (run_stop, run_stopped) = tokio::sync::oneshot::channel::<()>();
    let m = messaging.clone();
    tokio::spawn(async move {
        m.run(async {
            let _ = run_stopped.await;
        })
        .await
    });
    tokio::spawn(sluice_rocketmq::serve(
        listener,
        messaging,
        RocketMqServerConfig {
            advertised_host: "127.0.0.1".into(),
            advertised_port: i32::from(addr.port()),
            max_body_bytes: 1 << 20,
        },
        async move {
            let _ = stopped.await;
            let _ = run_stop.send(());
        },
    ));
    TestBroker {
        broker,
        url: addr.to_string(),
        _stop: stop,
        _dir: dir,
    }
}

impl TestBroker {
    fn create_topic(&self, name: &str, partitions: i32) {
        self.broker
            .create_topic(name, partitions, -1, TopicConfig::default(), false)
            .unwrap();
    }

    fn client_option(&self) -> ClientOption {
        let mut o = ClientOption::default();
        o.set_access_url(self.url.clone());
        o.set_enable_tls(false);
        o.set_long_polling_timeout(Duration::from_secs(2));
        o.set_timeout(Duration::from_secs(10));
        o
    }

    async fn producer(&self, topic: &str) -> Producer {
        let mut option = ProducerOption::default();
        option.set_topics(vec![topic]);
        let mut p = Producer::new(option, self.client_option()).unwrap();
        p.start().await.unwrap();
        p
    }

    async fn consumer(&self, group: &str, topic: &str) -> SimpleConsumer {
        let mut option = SimpleConsumerOption::default();
        option.set_topics(vec![topic]);
        option.set_consumer_group(group);
        let mut c = SimpleConsumer::new(option, self.client_option()).unwrap();
        c.start().await.unwrap();
        c
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Receives until `want` messages arrived or `limit` passed, acking each when `ack`.
async fn receive_all(
    consumer: &SimpleConsumer,
    topic: &str,
    filter: &FilterExpression,
    want: usize,
    invisible: Duration,
    ack: bool,
    limit: Duration,
) -> Vec<rocketmq::model::message::MessageView> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let Ok(batch) = consumer.receive_with(topic, filter, 32, invisible).await else {
            continue;
        };
        for m in batch {
            if ack {
                consumer.ack(&m).await.unwrap();
            }
            got.push(m);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_and_sql_filters_deliver_only_matching_messages_and_acks_stick() {
    let b = start(MessagingConfig::default()).await;
    b.create_topic("orders", 2);
    let producer = b.producer("orders").await;
    let mut sent = HashMap::new();
    for i in 0..12 {
        let tag = ["TagA", "TagB", "TagC"][i % 3];
        let message = MessageBuilder::builder()
            .set_topic("orders")
            .set_tag(tag)
            .set_keys(vec![format!("key-{i}")])
            .set_properties(HashMap::from([
                ("a".to_string(), i.to_string()),
                (
                    "b".to_string(),
                    if i % 2 == 0 { "x" } else { "y" }.to_string(),
                ),
            ]))
            .set_body(format!("body-{i}").into_bytes())
            .build()
            .unwrap();
        let receipt = producer.send(message).await.unwrap();
        sent.insert(receipt.message_id().to_string(), i);
    }
    let consumer = b.consumer("tags", "orders").await;
    let filter = FilterExpression::new(FilterType::Tag, "TagA || TagB");
    let got = receive_all(
        &consumer,
        "orders",
        &filter,
        8,
        Duration::from_secs(30),
        true,
        Duration::from_secs(60),
    )
    .await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.body().to_vec()).unwrap())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..12)
        .filter(|i| i % 3 != 2)
        .map(|i| format!("body-{i}"))
        .collect();
    expected.sort();
    assert_eq!(bodies, expected);
    for m in &got {
        let i = sent[m.message_id()];
        assert_eq!(m.tag(), Some(["TagA", "TagB", "TagC"][i % 3]));
        assert_eq!(m.keys(), &[format!("key-{i}")]);
        assert_eq!(m.properties().get("a"), Some(&i.to_string()));
        assert_eq!(m.delivery_attempt(), 1);
    }
    // Everything matching was acknowledged: nothing more arrives.
    let again = consumer
        .receive_with("orders", &filter, 32, Duration::from_secs(30))
        .await
        .unwrap_or_default();
    assert!(again.is_empty(), "redelivered after ack: {}", again.len());

    // SQL92 over user properties, in a second group.
    let consumer = b.consumer("sql", "orders").await;
    let filter = FilterExpression::new(FilterType::Sql, "a > 5 AND b = 'x'");
    let got = receive_all(
        &consumer,
        "orders",
        &filter,
        3,
        Duration::from_secs(30),
        true,
        Duration::from_secs(60),
    )
    .await;
    let mut indexes: Vec<usize> = got.iter().map(|m| sent[m.message_id()]).collect();
    indexes.sort();
    assert_eq!(indexes, vec![6, 8, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_come_back_then_go_to_the_dead_letter_topic() {
    let b = start(MessagingConfig {
        max_delivery_attempts: 2,
        ..MessagingConfig::default()
    })
    .await;
    b.create_topic("jobs", 1);
    let producer = b.producer("jobs").await;
    let message = MessageBuilder::builder()
        .set_topic("jobs")
        .set_tag("T")
        .set_keys(vec!["job-1"])
        .set_properties(HashMap::from([("kind", "resize")]))
        .set_body(b"work".to_vec())
        .build()
        .unwrap();
    let id = producer
        .send(message)
        .await
        .unwrap()
        .message_id()
        .to_string();
    let consumer = b.consumer("workers", "jobs").await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    let first = receive_all(
        &consumer,
        "jobs",
        &all,
        1,
        Duration::from_secs(1),
        false,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery_attempt(), 1);
    // Not acknowledged: back after the invisible time, attempt 2.
    let second = receive_all(
        &consumer,
        "jobs",
        &all,
        1,
        Duration::from_secs(1),
        false,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id(), id);
    assert_eq!(second[0].delivery_attempt(), 2);
    // Attempts used up: it moves to %DLQ%workers and is not delivered again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.broker.topic("%DLQ%workers").is_none()
        || b.broker.partition_offsets("%DLQ%workers", 0).unwrap().1 == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = consumer
        .receive_with("jobs", &all, 32, Duration::from_secs(1))
        .await
        .unwrap_or_default();
    assert!(again.is_empty());
    let dlq = b.consumer("dlq-reader", "%DLQ%workers").await;
    let dead = receive_all(
        &dlq,
        "%DLQ%workers",
        &all,
        1,
        Duration::from_secs(30),
        true,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id(), id);
    assert_eq!(dead[0].body(), b"work");
    assert_eq!(dead[0].tag(), Some("T"));
    assert_eq!(dead[0].keys(), &["job-1".to_string()]);
    assert_eq!(
        dead[0].properties().get("kind").map(String::as_str),
        Some("resize")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_invisible_until_its_delivery_time() {
    let b = start(MessagingConfig::default()).await;
    b.create_topic("later", 1);
    let producer = b.producer("later").await;
    // The client takes the delivery time in epoch seconds.
    let due_s = (now_ms() + 3_000 + 999) / 1000;
    let message = MessageBuilder::delay_message_builder("later", b"soon".to_vec(), due_s)
        .build()
        .unwrap();
    producer.send(message).await.unwrap();
    let consumer = b.consumer("waiters", "later").await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    let got = receive_all(
        &consumer,
        "later",
        &all,
        1,
        Duration::from_secs(30),
        true,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body(), b"soon");
    // Delivered no earlier than due (same clock as the broker's).
    assert!(now_ms() >= due_s * 1000, "delivered before its time");
    // This client reports the delivery time in seconds.
    assert_eq!(got[0].delivery_timestamp(), Some(due_s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_their_order_while_failures_are_retried() {
    let b = start(MessagingConfig::default()).await;
    // One queue holds all three groups: they must not hold each other up.
    b.create_topic("fifo", 1);
    let producer = b.producer("fifo").await;
    let groups = ["g0", "g1", "g2"];
    let per_group = 200;
    for i in 0..per_group {
        for g in groups {
            let message =
                MessageBuilder::fifo_message_builder("fifo", format!("{g}:{i}").into_bytes(), g)
                    .build()
                    .unwrap();
            producer.send(message).await.unwrap();
        }
    }
    let consumer = b.consumer("ordered", "fifo").await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut failed_once: std::collections::HashSet<String> = Default::default();
    let total = groups.len() * per_group;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut acked = 0;
    while acked < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {acked} of {total} acknowledged"
        );
        let Ok(batch) = consumer
            .receive_with("fifo", &all, 32, Duration::from_secs(1))
            .await
        else {
            continue;
        };
        for m in batch {
            let body = String::from_utf8(m.body().to_vec()).unwrap();
            let (g, i) = body.split_once(':').unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(m.message_group(), Some(g));
            // Every 10th fails once: not acknowledged, so it comes back.
            if i.is_multiple_of(10) && failed_once.insert(body.clone()) {
                continue;
            }
            let list = seen.entry(g.to_string()).or_default();
            assert_eq!(
                list.last().map_or(0, |l| l + 1),
                i,
                "group {g} out of order"
            );
            list.push(i);
            consumer.ack(&m).await.unwrap();
            acked += 1;
        }
    }
    for g in groups {
        assert_eq!(seen[g].len(), per_group);
    }
}
