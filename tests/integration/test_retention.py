"""Retention by size and by time deletes old segments and moves the log start offset;
fetching below the log start gives OFFSET_OUT_OF_RANGE, and auto.offset.reset=earliest
resumes from the new start."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition
from kafka.errors import OffsetOutOfRangeError

from conftest import consume_all, consumer_config, create_topic, produce, watermarks

RETENTION_ARGS = ("--retention-check-ms", "200")
VALUE_BYTES = 200
# smallest possible on-disk size of one of our one-record batches: 61-byte batch header
# + record overhead + value
MIN_RECORD_BYTES = 61 + 8 + VALUE_BYTES + 7


@pytest.fixture
def rbroker(broker_factory):
    return broker_factory(*RETENTION_ARGS)


def fill(bootstrap, topic, n, timestamp=None):
    """n one-record batches (flushed one at a time so segments roll at segment.bytes)."""
    msgs = [(None, f"r-{i:05d}-".encode().ljust(VALUE_BYTES, b"x"), None, 0, timestamp) for i in range(n)]
    delivered = produce(bootstrap, topic, msgs, conf={"linger.ms": 0}, flush_each=True)
    assert [d.offset for d in delivered] == list(range(n))
    return [m[1] for m in msgs]


def wait_for_low_watermark(bootstrap, topic, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    lo, hi = watermarks(bootstrap, topic, 0)
    while not predicate(lo, hi) and time.monotonic() < deadline:
        time.sleep(0.2)
        lo, hi = watermarks(bootstrap, topic, 0)
    return lo, hi


def size_retained_topic(bootstrap, topic, n=200):
    create_topic(bootstrap, topic, 1, {"segment.bytes": "1024", "retention.bytes": "4096"})
    values = fill(bootstrap, topic, n)
    lo, hi = wait_for_low_watermark(bootstrap, topic, lambda lo, hi: lo > 0)
    assert hi == n
    assert lo > 0, "earliest offset still 0: retention.bytes=4096 deleted nothing"
    return values, lo, hi


def test_size_retention_deletes_old_segments_and_advances_earliest_offset(rbroker, topic):
    values, lo, hi = size_retained_topic(rbroker.bootstrap, topic)
    # let the retention pass settle, then check how much is left
    time.sleep(1.0)
    lo, hi = watermarks(rbroker.bootstrap, topic, 0)
    retained = hi - lo
    assert retained * MIN_RECORD_BYTES <= 4096 + 2 * 1024, \
        f"{retained} records (>= {retained * MIN_RECORD_BYTES} bytes) retained with retention.bytes=4096"
    assert retained * (MIN_RECORD_BYTES + 40) >= 4096 - 1024, \
        f"only {retained} records retained: retention deleted far below retention.bytes=4096"
    # what is left is exactly the newest records, at their original offsets
    (rows,) = consume_all(rbroker.bootstrap, topic, [0]).values()
    assert [(r.offset, r.value) for r in rows] == [(o, values[o]) for o in range(lo, hi)]


def test_time_retention_deletes_aged_segments(rbroker, topic):
    control = topic + "-control"
    create_topic(rbroker.bootstrap, topic, 1, {"segment.bytes": "1024", "retention.ms": "1000"})
    create_topic(rbroker.bootstrap, control, 1, {"segment.bytes": "1024"})
    fill(rbroker.bootstrap, topic, 60)
    fill(rbroker.bootstrap, control, 60)
    # once the records are older than 1 s every closed segment must go; at most the
    # active segment (a few 1-record batches) may remain
    lo, hi = wait_for_low_watermark(rbroker.bootstrap, topic, lambda lo, hi: lo >= hi - 4)
    assert hi == 60
    assert lo >= 56, f"earliest offset {lo} after the records aged past retention.ms=1000"
    # same data without retention.ms (default 7 days) keeps everything
    assert watermarks(rbroker.bootstrap, control, 0) == (0, 60)


def test_time_retention_uses_record_timestamps(rbroker, topic):
    create_topic(rbroker.bootstrap, topic, 1, {"segment.bytes": "1024", "retention.ms": "3600000"})
    two_hours_ago = int(time.time() * 1000) - 2 * 3_600_000
    fill(rbroker.bootstrap, topic, 40, timestamp=two_hours_ago)
    lo, hi = wait_for_low_watermark(rbroker.bootstrap, topic, lambda lo, hi: lo >= hi - 4)
    assert hi == 40
    assert lo >= 36, f"records with CreateTime 2 h ago in a 1 h retention topic: earliest offset {lo}"


def test_fetch_below_log_start_is_out_of_range_and_earliest_reset_resumes_at_new_start(rbroker, topic):
    values, lo, hi = size_retained_topic(rbroker.bootstrap, topic)
    time.sleep(1.0)
    lo, hi = watermarks(rbroker.bootstrap, topic, 0)
    assert lo > 0

    # librdkafka, auto.offset.reset=error: the fetch error surfaces
    c = Consumer(consumer_config(rbroker.bootstrap, **{"auto.offset.reset": "error"}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        err = None
        deadline = time.monotonic() + 30
        while err is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is not None, f"got a record at offset {msg.offset()} below log start {lo}"
            err = msg.error()
        assert err is not None, "no error within 30 s when fetching offset 0 below the log start"
        assert err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE), err
        assert "out of range" in err.str().lower(), err
    finally:
        c.close()

    # kafka-python with no reset policy raises the broker's OFFSET_OUT_OF_RANGE (1)
    kc = KafkaConsumer(bootstrap_servers=rbroker.bootstrap, group_id=None, enable_auto_commit=False,
                       auto_offset_reset="none", request_timeout_ms=20000)
    try:
        tp = KpTopicPartition(topic, 0)
        kc.assign([tp])
        kc.seek(tp, 0)
        with pytest.raises(OffsetOutOfRangeError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                records = kc.poll(timeout_ms=500)
                assert not records, f"kafka-python got records below log start: {records}"
    finally:
        kc.close()

    # auto.offset.reset=earliest: resumes at the new log start and reads to the end
    rows = consume_all(rbroker.bootstrap, topic, [0], start_offsets={0: 0},
                       conf={"auto.offset.reset": "earliest"})[0]
    assert rows, "nothing consumed after resetting to earliest"
    assert rows[0].offset == lo, f"reset to offset {rows[0].offset}, log start is {lo}"
    assert [(r.offset, r.value) for r in rows] == [(o, values[o]) for o in range(lo, hi)]
