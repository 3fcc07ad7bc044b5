"""confluent-kafka (librdkafka 2.16) against the broker: compression codecs, headers,
idempotent producer, delivery-report offsets, ListOffsets, size limits, bad topic names."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from confluent_kafka import (
    Consumer, KafkaError, KafkaException, Producer, TopicPartition, TIMESTAMP_CREATE_TIME,
)
from confluent_kafka.admin import NewTopic, OffsetSpec

from conftest import (
    admin_client, consume_all, consumer_config, create_topic, produce, producer_config, resolve,
    topic_metadata, watermarks,
)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip_keys_values_headers_and_timestamps(broker, topic, codec):
    create_topic(broker.bootstrap, topic, partitions=2)
    base_ts = int(time.time() * 1000) - 60_000
    rnd = os.urandom(4096)
    messages = []
    for i in range(300):
        key = None if i % 17 == 0 else f"k{i % 13}".encode()
        if i % 29 == 0:
            value = None  # tombstone
        elif i % 3 == 0:
            value = rnd[i: i + 1000]  # incompressible bytes
        else:
            value = (f"value {i} " * (i % 40 + 1)).encode()  # compressible text
        headers = [("seq", str(i).encode()), ("bin", bytes([i % 256, 0, 255])), ("dup", b"1"), ("dup", b"2")]
        if i % 7 == 0:
            headers.append(("null-value", None))
        if i % 11 == 0:
            headers = []
        messages.append((key, value, headers, i % 2, base_ts + i))

    delivered = produce(broker.bootstrap, topic, messages,
                        conf={"compression.type": codec, "linger.ms": 50, "batch.num.messages": 100})
    consumed = consume_all(broker.bootstrap, topic, [0, 1])

    for p in (0, 1):
        want = [m for m in messages if m[3] == p]
        got = consumed[p]
        assert len(got) == len(want), f"partition {p}: consumed {len(got)}, produced {len(want)}"
        assert [c.offset for c in got] == list(range(len(want)))
        for c, (key, value, headers, _, ts) in zip(got, want):
            assert c.key == key
            assert c.value == value
            assert (c.headers or ()) == tuple(headers), f"offset {c.offset}: {c.headers} != {headers}"
            assert c.timestamp == (TIMESTAMP_CREATE_TIME, ts)
    # delivery reports agree with what the consumer saw
    got_by_pos = {(c.partition, c.offset): c.value for cs in consumed.values() for c in cs}
    assert {(d.partition, d.offset): d.value for d in delivered} == got_by_pos


def test_idempotent_producer_delivers_each_message_exactly_once(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=3)
    n = 5000
    messages = [(f"k{i % 50}".encode(), f"idem-{i}".encode()) for i in range(n)]
    delivered = produce(broker.bootstrap, topic, messages,
                        conf={"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                              "max.in.flight.requests.per.connection": 5})
    assert len(delivered) == n
    consumed = consume_all(broker.bootstrap, topic, [0, 1, 2])
    values = [c.value for cs in consumed.values() for c in cs]
    assert len(values) == n, f"consumer saw {len(values)} messages, produced {n}"
    dups = [v for v, cnt in Counter(values).items() if cnt > 1]
    assert not dups, f"duplicates: {dups[:5]}"
    assert set(values) == {v for _, v in messages}
    for p, cs in consumed.items():
        assert [c.offset for c in cs] == list(range(len(cs))), f"partition {p} offsets not contiguous"
        # per key (and so per partition) order is production order
        seq = [int(c.value.split(b"-")[1]) for c in cs]
        assert seq == sorted(seq), f"partition {p} out of production order"


def test_delivery_report_offsets_match_consumed_offsets(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=2)
    messages = [(f"key-{i}".encode(), f"dr-{i}".encode(), None, i % 2) for i in range(500)]
    delivered = produce(broker.bootstrap, topic, messages, conf={"linger.ms": 10})
    by_dr = {(d.partition, d.offset): (d.key, d.value) for d in delivered}
    assert len(by_dr) == 500, "two delivery reports carried the same (partition, offset)"
    for p in (0, 1):
        assert sorted(o for (pp, o) in by_dr if pp == p) == list(range(250))
    consumed = consume_all(broker.bootstrap, topic, [0, 1])
    by_consumer = {(c.partition, c.offset): (c.key, c.value) for cs in consumed.values() for c in cs}
    assert by_consumer == by_dr


def test_list_offsets_earliest_latest_and_by_timestamp(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    t0 = int(time.time() * 1000) - 3_600_000
    # one message per batch so every record carries its own timestamp in its own batch
    messages = [(None, f"ts-{i}".encode(), None, 0, t0 + i * 1000) for i in range(10)]
    produce(broker.bootstrap, topic, messages, flush_each=True)
    tp = TopicPartition(topic, 0)

    # AdminClient.list_offsets (ListOffsets v1+)
    admin = admin_client(broker.bootstrap)
    specs = {
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "ts-exact": OffsetSpec.for_timestamp(t0 + 4000),
        "ts-between": OffsetSpec.for_timestamp(t0 + 4500),
        "ts-before-all": OffsetSpec.for_timestamp(t0 - 10_000),
    }
    results = {}
    for name, spec in specs.items():
        futures = admin.list_offsets({tp: spec}, request_timeout=15)
        (res,) = resolve(admin, futures, timeout=20).values()
        results[name] = res
    assert results["earliest"].offset == 0
    assert results["latest"].offset == 10
    assert results["ts-exact"].offset == 4
    assert results["ts-exact"].timestamp == t0 + 4000
    assert results["ts-between"].offset == 5
    assert results["ts-between"].timestamp == t0 + 5000
    assert results["ts-before-all"].offset == 0

    # Consumer.offsets_for_times and get_watermark_offsets
    c = Consumer(consumer_config(broker.bootstrap))
    try:
        (r,) = c.offsets_for_times([TopicPartition(topic, 0, t0 + 7000)], timeout=15)
        assert r.error is None and r.offset == 7
        (r,) = c.offsets_for_times([TopicPartition(topic, 0, t0 + 7001)], timeout=15)
        assert r.offset == 8
        # later than every record: Kafka answers offset -1 (no such record)
        (r,) = c.offsets_for_times([TopicPartition(topic, 0, t0 + 3_600_000_000)], timeout=15)
        assert r.offset == -1, r
        assert c.get_watermark_offsets(tp, timeout=15, cached=False) == (0, 10)
    finally:
        c.close()


def test_message_larger_than_max_message_bytes_fails_with_msg_size_too_large(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1, config={"max.message.bytes": "10000"})
    p = Producer(producer_config(broker.bootstrap, **{"compression.type": "none", "linger.ms": 0}))
    reports = []
    p.produce(topic, value=b"B" * 20000, on_delivery=lambda err, msg: reports.append((err, msg)))
    assert p.flush(40) == 0
    p.produce(topic, value=b"s" * 100, on_delivery=lambda err, msg: reports.append((err, msg)))
    assert p.flush(40) == 0
    (big_err, _), (small_err, small_msg) = reports
    assert big_err is not None, "20000-byte message accepted by a topic with max.message.bytes=10000"
    assert big_err.code() == KafkaError.MSG_SIZE_TOO_LARGE, big_err
    assert small_err is None, small_err
    assert small_msg.offset() == 0
    # nothing of the rejected message was stored
    assert watermarks(broker.bootstrap, topic, 0) == (0, 1)
    (only,) = consume_all(broker.bootstrap, topic, [0])[0]
    assert only.value == b"s" * 100


def test_creating_topic_with_invalid_name_fails_with_invalid_topic_exception(broker):
    admin = admin_client(broker.bootstrap)
    futures = admin.create_topics([NewTopic("bad topic!", num_partitions=1, replication_factor=1)],
                                  request_timeout=15)
    with pytest.raises(KafkaException) as exc:
        resolve(admin, futures, timeout=20)
    assert exc.value.args[0].code() == KafkaError.TOPIC_EXCEPTION, exc.value
    md = admin.list_topics(timeout=15)
    assert "bad topic!" not in md.topics


def test_producing_to_invalid_topic_name_fails(broker):
    p = Producer(producer_config(broker.bootstrap, **{"message.timeout.ms": 15000}))
    reports = []
    p.produce("bad topic!", value=b"x", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    (err,) = reports
    assert err is not None, "produce to 'bad topic!' succeeded"
    # Kafka answers Metadata for an invalid name with INVALID_TOPIC_EXCEPTION (17), which
    # librdkafka treats as permanent and fails the message with at once.
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err
    md = topic_metadata(broker.bootstrap, "bad topic!")
    assert md is None or md.error is not None, "broker created a topic named 'bad topic!'"


def test_record_batch_larger_than_fetch_max_bytes_is_still_delivered(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    values = [os.urandom(600_000) for _ in range(3)]
    produce(broker.bootstrap, topic, [(b"big", v, None, 0) for v in values],
            flush_each=True, conf={"compression.type": "none"})
    # Kafka (KIP-74) returns the first batch of a fetch even when it is larger than the
    # fetch limits, so a consumer with tiny limits still makes progress.
    rows = consume_all(broker.bootstrap, topic, [0], conf={
        "fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024, "message.max.bytes": 1000,
        "receive.message.max.bytes": 2_000_000})[0]
    assert [(r.offset, r.value) for r in rows] == list(enumerate(values))


def test_consumer_waiting_at_the_end_receives_messages_produced_later(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    c = Consumer(consumer_config(broker.bootstrap, **{"fetch.wait.max.ms": 500}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        assert c.poll(1.5) is None  # empty partition: the fetch waits and returns nothing
        produce(broker.bootstrap, topic, [(b"late", b"arrived-later", None, 0)])
        got = None
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            got = c.poll(0.5)
        assert got is not None, "a message produced after the consumer started was never delivered"
        assert got.error() is None, got.error()
        assert (got.offset(), got.key(), got.value()) == (0, b"late", b"arrived-later")
    finally:
        c.close()


def test_concurrent_producers_to_one_partition_get_unique_contiguous_offsets(broker, topic):
    import threading
    create_topic(broker.bootstrap, topic, partitions=1)
    results: dict[int, list] = {}
    errors = []

    def run(n):
        try:
            results[n] = produce(broker.bootstrap, topic,
                                 [(f"p{n}".encode(), f"p{n}-{i}".encode(), None, 0) for i in range(2000)],
                                 conf={"linger.ms": 1})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    by_offset = {d.offset: d.value for ds in results.values() for d in ds}
    assert sorted(by_offset) == list(range(8000)), "delivery reports share or skip offsets"
    rows = consume_all(broker.bootstrap, topic, [0])[0]
    assert {r.offset: r.value for r in rows} == by_offset
    for n in range(4):  # each producer's own messages keep their order
        seq = [int(r.value.split(b"-")[1]) for r in rows if r.key == f"p{n}".encode()]
        assert seq == list(range(2000))


def test_consuming_from_an_offset_inside_a_batch_starts_exactly_there(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    values = [f"mid-{i}".encode() for i in range(1000)]
    produce(broker.bootstrap, topic, [(None, v, None, 0) for v in values],
            conf={"linger.ms": 100, "batch.num.messages": 100})
    for start in (437, 999, 0):
        rows = consume_all(broker.bootstrap, topic, [0], start_offsets={0: start})[0]
        assert rows[0].offset == start
        assert [(r.offset, r.value) for r in rows] == [(o, values[o]) for o in range(start, 1000)]


def test_auto_created_topic_gets_the_default_partition_count(broker_factory, topic):
    b = broker_factory("--default-partitions", "3")
    delivered = produce(b.bootstrap, topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(60)])
    md = topic_metadata(b.bootstrap, topic)
    assert md is not None and md.error is None, md
    assert sorted(md.partitions) == [0, 1, 2]
    assert {d.partition for d in delivered} == {0, 1, 2}
    rows = consume_all(b.bootstrap, topic, [0, 1, 2])
    assert sorted(r.value for rs in rows.values() for r in rs) == sorted(f"v{i}".encode() for i in range(60))


def test_with_auto_creation_off_producing_to_an_unknown_topic_fails_and_creates_nothing(broker_factory, topic):
    b = broker_factory("--auto-create-topics", "false")
    p = Producer(producer_config(b.bootstrap, **{"message.timeout.ms": 15000,
                                                  "topic.metadata.propagation.max.ms": 1000}))
    reports = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    (err,) = reports
    assert err is not None, "produce to a missing topic succeeded with auto-creation off"
    assert err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), err
    md = admin_client(b.bootstrap).list_topics(timeout=15)
    assert topic not in md.topics


def test_topic_with_200_partitions_takes_and_returns_data_in_every_partition(broker, topic):
    n = 200
    create_topic(broker.bootstrap, topic, partitions=n, timeout=60)
    delivered = produce(broker.bootstrap, topic, [(None, f"p{p}-{i}".encode(), None, p)
                                                  for i in range(5) for p in range(n)],
                        conf={"linger.ms": 20})
    assert sorted((d.partition, d.offset) for d in delivered) == [(p, o) for p in range(n) for o in range(5)]
    rows = consume_all(broker.bootstrap, topic, range(n), timeout=120)
    for p in range(n):
        assert [(r.offset, r.value) for r in rows[p]] == [(i, f"p{p}-{i}".encode()) for i in range(5)]


def test_small_fetch_limits_still_return_every_record_in_order(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    values = [f"small-{i}-".encode() + b"s" * (i % 90) for i in range(400)]
    produce(broker.bootstrap, topic, [(None, v, None, 0) for v in values],
            conf={"linger.ms": 5, "batch.num.messages": 7})
    rows = consume_all(broker.bootstrap, topic, [0], conf={
        "fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024, "message.max.bytes": 1000})[0]
    assert [(r.offset, r.value) for r in rows] == list(enumerate(values))


def create_error(bootstrap, topic, partitions=1, config=None):
    """Create a topic expecting failure; returns the KafkaError."""
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                            config=config or {})], request_timeout=15)
    with pytest.raises(KafkaException) as exc:
        resolve(admin, futures, timeout=20)
    return exc.value.args[0]


def test_creating_an_existing_topic_fails_with_topic_already_exists(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=2)
    err = create_error(broker.bootstrap, topic, partitions=5)
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err
    assert len(topic_metadata(broker.bootstrap, topic).partitions) == 2


@pytest.mark.parametrize("config", [
    {"segment.bytes": "100"},            # below the 1024 minimum
    {"retention.ms": "not-a-number"},
    {"cleanup.policy": "sometimes"},
    {"flush.policy": "never"},
    {"no.such.config": "1"},
], ids=["segment-bytes-too-small", "retention-not-a-number", "bad-cleanup-policy", "bad-flush-policy",
        "unknown-key"])
def test_creating_a_topic_with_an_invalid_config_fails_with_invalid_config(broker, topic, config):
    err = create_error(broker.bootstrap, topic, config=config)
    assert err.code() == KafkaError.INVALID_CONFIG, err
    md = admin_client(broker.bootstrap).list_topics(timeout=15)
    assert topic not in md.topics, f"topic created despite invalid config {config}"


def test_describe_configs_of_a_missing_topic_fails_with_unknown_topic(broker, topic):
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = admin_client(broker.bootstrap)
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=15)
    with pytest.raises(KafkaException) as exc:
        resolve(admin, futures, timeout=20)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, exc.value
