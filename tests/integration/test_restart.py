"""Durability across restarts: data, topics, partition counts and topic configs survive
SIGTERM, SIGINT and kill -9; with --flush always, every acknowledged message survives a
kill -9 in the middle of a produce stream."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigSource

from conftest import (
    consume_all, create_topic, describe_topic_configs, produce, producer_config, wait_for_topic, watermarks,
)

CONFIGS = {
    "retention.ms": "123456789",
    "max.message.bytes": "300000",
    "segment.bytes": "16384",         # several segments per partition
    "cleanup.policy": "delete",
}


def fingerprint(consumed):
    return {p: [(c.offset, c.key, c.value, c.headers, c.timestamp) for c in cs] for p, cs in consumed.items()}


@pytest.mark.parametrize("how", ["sigterm", "sigint", "sigkill"])
def test_data_topics_partition_counts_and_configs_survive_restart(broker, topic, how):
    empty_topic = topic + "-empty"
    create_topic(broker.bootstrap, topic, partitions=3, config=CONFIGS)
    create_topic(broker.bootstrap, empty_topic, partitions=2)
    now_ms = int(time.time() * 1000)
    messages = [(f"key-{i % 40}".encode(), f"value-{i}-".encode() + b"z" * (i % 300),
                 [("i", str(i).encode())], i % 3, now_ms - 900 + i) for i in range(900)]
    delivered = produce(broker.bootstrap, topic, messages, conf={"linger.ms": 5})
    before = fingerprint(consume_all(broker.bootstrap, topic, range(3)))
    assert sum(len(v) for v in before.values()) == 900

    broker.restart(how)

    wait_for_topic(broker.bootstrap, topic, 3)
    wait_for_topic(broker.bootstrap, empty_topic, 2)
    entries = describe_topic_configs(broker.bootstrap, topic)
    for name, value in CONFIGS.items():
        assert entries[name].value == value, f"{name} after {how}: {entries[name].value!r}"
        source = entries[name].source
        source = source if isinstance(source, ConfigSource) else ConfigSource(source)
        assert source == ConfigSource.DYNAMIC_TOPIC_CONFIG, f"{name} after {how} reported from source {source}"

    after = fingerprint(consume_all(broker.bootstrap, topic, range(3)))
    assert after == before, f"data differs after {how}"
    assert {(d.partition, d.offset, d.value) for d in delivered} == \
        {(p, o, v) for p, rows in after.items() for (o, _, v, _, _) in rows}
    for p in range(2):
        assert watermarks(broker.bootstrap, empty_topic, p) == (0, 0)

    # offsets continue where they stopped
    more = produce(broker.bootstrap, topic, [(None, f"after-{p}".encode(), None, p) for p in range(3)])
    for d in more:
        assert d.offset == len(before[d.partition]), f"partition {d.partition}: next offset {d.offset}"


def test_broker_exits_with_code_0_on_sigterm_while_clients_are_connected(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    p = Producer(producer_config(broker.bootstrap))
    p.produce(topic, value=b"x")
    assert p.flush(30) == 0
    code = broker.stop()  # the producer's connection is still open
    assert code == 0, f"exit code {code}"


@pytest.mark.parametrize("where", ["broker-flag", "topic-config"])
def test_every_acknowledged_message_survives_kill9_mid_stream_with_flush_always(broker_factory, topic, where):
    if where == "broker-flag":
        b = broker_factory("--flush", "always")
        create_topic(b.bootstrap, topic, partitions=2)
    else:  # the default policy stays `interval`; the topic asks for fsync before acks
        b = broker_factory()
        create_topic(b.bootstrap, topic, partitions=2, config={"flush.policy": "always"})
        assert describe_topic_configs(b.bootstrap, topic)["flush.policy"].value == "always"

    acked: dict[tuple[int, int], bytes] = {}
    failures = []
    stop = threading.Event()
    thread_error = []
    sent = [0]

    def run():
        try:
            p = Producer(producer_config(b.bootstrap, **{
                "acks": "all", "linger.ms": 2, "message.timeout.ms": 10000, "retries": 0}))

            def on_delivery(err, msg):
                if err is None:
                    acked[(msg.partition(), msg.offset())] = msg.value()
                else:
                    failures.append(err)

            i = 0
            while not stop.is_set() and i < 400_000:
                try:
                    p.produce(topic, key=f"k{i % 64}".encode(),
                              value=f"msg-{i:08d}-".encode() + b"p" * 100, on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    p.poll(0.05)
                p.poll(0)
            sent[0] = i
            p.purge(in_queue=True, in_flight=True)
            p.flush(15)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            thread_error.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 3000 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.05)
    assert len(acked) >= 3000, f"only {len(acked)} acknowledged before the kill (failures: {failures[:3]})"

    assert b.kill9() == -9
    time.sleep(1.0)          # the producer keeps sending into a dead broker for a moment
    stop.set()
    t.join(60)
    assert not t.is_alive(), "producer thread did not stop"
    assert not thread_error, thread_error
    acked_at_kill = dict(acked)

    b.start()
    wait_for_topic(b.bootstrap, topic, 2)
    consumed = consume_all(b.bootstrap, topic, [0, 1], timeout=120)
    stored = {}
    for p, cs in consumed.items():
        assert [c.offset for c in cs] == list(range(len(cs))), f"partition {p}: offsets not contiguous"
        for c in cs:
            stored[(p, c.offset)] = c.value
    missing = [(pos, v) for pos, v in sorted(acked_at_kill.items()) if stored.get(pos) != v]
    assert not missing, (f"{len(missing)} of {len(acked_at_kill)} acknowledged messages lost or changed "
                         f"after kill -9, first: {[(pos, v, stored.get(pos)) for pos, v in missing[:5]]}")


def partition_segments(data_dir: Path, topic: str, partition: int) -> list[Path]:
    """The partition's segment files (*.log), oldest first. The layout is the broker's
    own (<data>/topics/<topic>/<partition>/<base offset>.log today); this only assumes
    a directory named after the topic holding a directory named after the partition."""
    hits = [p for p in data_dir.rglob("*.log")
            if p.parent.name == str(partition) and p.parent.parent.name == topic]
    assert hits, f"no segment files for {topic}/{partition} under {data_dir}"
    return sorted(hits)


@pytest.mark.parametrize("damage", ["garbage-appended", "last-batch-cut-short"])
def test_torn_segment_tail_after_kill9_is_truncated_and_earlier_records_survive(broker, topic, damage):
    create_topic(broker.bootstrap, topic, partitions=1)
    values = [f"rec-{i}-".encode() + b"t" * 50 for i in range(30)]
    # one record per batch, so cutting the file short loses exactly the last record
    produce(broker.bootstrap, topic, [(None, v, None, 0) for v in values], flush_each=True)
    assert broker.kill9() == -9

    tail = partition_segments(broker.data_dir, topic, 0)[-1]
    data = tail.read_bytes()
    if damage == "garbage-appended":
        tail.write_bytes(data + b"\x00\x00\x00\x00\x00\x00\x00\x1e" + os.urandom(93))
        expect = values
    else:
        tail.write_bytes(data[:-7])
        expect = values[:-1]

    broker.start()
    wait_for_topic(broker.bootstrap, topic, 1)
    assert watermarks(broker.bootstrap, topic, 0) == (0, len(expect))
    rows = consume_all(broker.bootstrap, topic, [0])[0]
    assert [(r.offset, r.value) for r in rows] == list(enumerate(expect))
    # the log goes on right after the last intact record
    (d,) = produce(broker.bootstrap, topic, [(None, b"after-recovery", None, 0)])
    assert d.offset == len(expect)
    rows = consume_all(broker.bootstrap, topic, [0])[0]
    assert [r.value for r in rows] == expect + [b"after-recovery"]


def test_broker_configured_only_by_environment_variables_keeps_data_in_that_dir(broker_factory, topic):
    b = broker_factory(use_env=True)
    create_topic(b.bootstrap, topic, partitions=2)
    delivered = produce(b.bootstrap, topic, [(None, f"env-{i}".encode(), None, i % 2) for i in range(20)])
    assert len(delivered) == 20
    assert any(topic in p.parts for p in b.data_dir.rglob("*")), \
        f"nothing about {topic} was written under SLUICE_DATA_DIR={b.data_dir}"
    b.restart("sigterm")
    rows = consume_all(b.bootstrap, topic, [0, 1])
    assert sorted(r.value for rs in rows.values() for r in rs) == sorted(f"env-{i}".encode() for i in range(20))
