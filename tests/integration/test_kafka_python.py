"""kafka-python (pure Python, its own ApiVersions probing) against the broker: admin
operations (create/describe/alter configs, create partitions, delete) and a
producer/consumer round trip with assign() + seek_to_beginning()."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, KafkaAdminClient

TIMEOUT_MS = 15000


@pytest.fixture
def admin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS,
                         bootstrap_timeout_ms=30000)
    yield a
    a.close()


def create(admin, topic, partitions, configs=None):
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                 "configs": configs or {}}},
                        timeout_ms=TIMEOUT_MS, wait_for_metadata=True)


def topic_configs(admin, topic, config_filter="all") -> dict:
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter=config_filter)
    return res["topic"][topic]


def partition_ids(admin, topic) -> list[int]:
    (t,) = admin.describe_topics([topic])
    assert t["error_code"] == 0, t
    return sorted(p["partition_index"] for p in t["partitions"])


def produce(broker, topic, records, **producer_conf):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS,
                             max_block_ms=30000, **producer_conf)
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h, partition=p) for k, v, h, p in records]
        producer.flush(timeout=60)
        return [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)


def consume(broker, topic, partitions, expected, timeout_s=60.0):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=TIMEOUT_MS + 5000, auto_offset_reset="none")
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(recs)
        assert len(got) == expected, f"consumed {len(got)} of {expected} within {timeout_s:.0f} s"
        return got
    finally:
        consumer.close()


def test_admin_creates_topic_with_partitions_and_configs_and_describes_them(broker, admin, topic):
    configs = {"retention.ms": "86400000", "segment.bytes": "1048576", "cleanup.policy": "delete",
               "max.message.bytes": "200000"}
    create(admin, topic, 3, configs)
    assert topic in admin.list_topics()
    assert partition_ids(admin, topic) == [0, 1, 2]

    all_configs = topic_configs(admin, topic, "all")
    for name, value in configs.items():
        assert name in all_configs, f"{name} missing from DescribeConfigs: {sorted(all_configs)}"
        assert all_configs[name]["value"] == value, (name, all_configs[name])
    modified = topic_configs(admin, topic, "modified")
    for name, value in configs.items():
        assert name in modified, f"{name} not reported as a topic override: {modified.get(name) or all_configs[name]}"
        assert modified[name]["config_source"] == "DYNAMIC_TOPIC_CONFIG", modified[name]
    assert "segment.ms" in all_configs and "segment.ms" not in modified, \
        "segment.ms was never set but is reported as a topic override"


def test_incremental_alter_configs_sets_and_deletes_topic_overrides(broker, admin, topic):
    create(admin, topic, 1, {"retention.ms": "86400000", "max.message.bytes": "200000"})
    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                              configs={"retention.ms": "3600000", "segment.bytes": "2097152"})],
                              incremental=True)
    assert res == {"topic": {topic: "OK"}}, res
    c = topic_configs(admin, topic)
    assert c["retention.ms"]["value"] == "3600000"
    assert c["segment.bytes"]["value"] == "2097152"
    assert c["max.message.bytes"]["value"] == "200000", "incremental alter must leave other overrides alone"

    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                              configs={"retention.ms": (AlterConfigOp.DELETE, None)})],
                              incremental=True)
    assert res == {"topic": {topic: "OK"}}, res
    modified = topic_configs(admin, topic, "modified")
    assert "retention.ms" not in modified, modified.get("retention.ms")
    assert modified["segment.bytes"]["value"] == "2097152"
    assert topic_configs(admin, topic, "all")["retention.ms"]["value"] == "604800000", \
        "deleted override must fall back to the default (7 days)"


def test_legacy_alter_configs_sets_topic_overrides(broker, admin, topic):
    create(admin, topic, 1, {"max.message.bytes": "200000"})
    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"})],
                              incremental=False)
    assert res == {"topic": {topic: "OK"}}, res
    c = topic_configs(admin, topic)
    assert c["retention.ms"]["value"] == "7200000"
    # kafka-python re-sends the existing overrides with a full AlterConfigs
    assert c["max.message.bytes"]["value"] == "200000"


def test_create_partitions_grows_topic_and_new_partition_takes_data(broker, admin, topic):
    create(admin, topic, 2)
    admin.create_partitions({topic: 5}, timeout_ms=TIMEOUT_MS)
    deadline = time.monotonic() + 30
    while partition_ids(admin, topic) != [0, 1, 2, 3, 4] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert partition_ids(admin, topic) == [0, 1, 2, 3, 4]

    metas = produce(broker, topic, [(b"k", b"into-p4", [], 4), (b"k", b"into-p0", [], 0)])
    assert [(m.partition, m.offset) for m in metas] == [(4, 0), (0, 0)]
    got = consume(broker, topic, [4], expected=1)
    assert (got[0].partition, got[0].offset, got[0].value) == (4, 0, b"into-p4")


def test_delete_topics_removes_topic_and_its_data(broker, admin, topic):
    create(admin, topic, 2)
    produce(broker, topic, [(None, b"old", [], 0)])
    admin.delete_topics([topic], timeout_ms=TIMEOUT_MS)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic not in admin.list_topics()

    # the same name can be created again and starts empty
    create(admin, topic, 1)
    metas = produce(broker, topic, [(None, b"new", [], 0)])
    assert metas[0].offset == 0, "recreated topic still holds the deleted topic's data"
    (rec,) = consume(broker, topic, [0], expected=1)
    assert rec.value == b"new"


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_producer_consumer_round_trip_with_assign_and_seek_to_beginning(broker, admin, topic, compression):
    create(admin, topic, 2)
    records = [(f"key-{i}".encode(), f"value-{i}".encode() * (i % 5 + 1),
                [("i", str(i).encode()), ("h2", b"\x00\xff")], i % 2) for i in range(400)]
    metas = produce(broker, topic, records, compression_type=compression, linger_ms=20)
    assert all(m.topic == topic for m in metas)
    for p in (0, 1):
        assert sorted(m.offset for m in metas if m.partition == p) == list(range(200))

    got = consume(broker, topic, [0, 1], expected=400)
    produced = {(m.partition, m.offset): (k, v, h) for m, (k, v, h, _) in zip(metas, records)}
    consumed = {(r.partition, r.offset): (r.key, r.value, list(r.headers)) for r in got}
    assert consumed == produced


def test_kafka_python_reads_what_librdkafka_wrote_with_gzip(broker, admin, topic):
    from conftest import produce as rdkafka_produce
    create(admin, topic, 1)
    records = [(f"key-{i}".encode(), f"from-librdkafka-{i}".encode() * 3, [("n", str(i).encode())], 0)
               for i in range(1000)]
    delivered = rdkafka_produce(broker.bootstrap, topic, records,
                                conf={"compression.type": "gzip", "linger.ms": 20})
    assert [d.offset for d in delivered] == list(range(1000))
    got = consume(broker, topic, [0], expected=1000)
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in got] == \
        [(i, k, v, h) for i, (k, v, h, _) in enumerate(records)]


def test_create_partitions_cannot_shrink_a_topic(broker, admin, topic):
    from kafka.errors import InvalidPartitionsError
    create(admin, topic, 3)
    with pytest.raises(InvalidPartitionsError):
        admin.create_partitions({topic: 2}, timeout_ms=TIMEOUT_MS)
    assert partition_ids(admin, topic) == [0, 1, 2]
