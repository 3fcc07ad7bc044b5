"""Delayed delivery for Kafka producers (confluent-kafka / librdkafka).

A record with header `sluice-deliver-at` (epoch ms, decimal) or
`sluice-delay-level` (RocketMQ 4's levels 1..18) goes to the broker's delay
scheduler: it is not in the partition before its time and lands there, once,
when due, even across a kill -9. Records without the header are appended at
once. A malformed delivery header fails the produce and stores nothing.
"""

import time

from conftest import consume_all, create_topic, produce, producer_config, watermarks

# How far ahead the delayed records are due: long enough that the "not yet
# there" checks run well before it even on a slow machine.
DELAY_MS = 10_000
WAIT_S = 90


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_for_records(bootstrap: str, topic: str, count: int) -> list:
    """Polls until partition 0 holds `count` records (bounded), then reads them."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        _, high = watermarks(bootstrap, topic, 0)
        if high >= count:
            break
        time.sleep(0.25)
    return consume_all(bootstrap, topic, [0])[0]


def header(record, name: str):
    return dict(record.headers or ()).get(name)


def test_deliver_at_and_delay_level_land_when_due(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    due = now_ms() + DELAY_MS
    sent = produce(broker.bootstrap, topic, [
        (b"k-later", b"delayed", [("sluice-deliver-at", str(due).encode()), ("app", b"x1")], 0),
        (b"k-now", b"plain", [("app", b"x2")], 0),
        (b"k-level", b"level-1", [("sluice-delay-level", b"1")], 0),
    ], conf={"enable.idempotence": True})
    checked_at = now_ms()
    assert checked_at < due, "the produce took longer than the delay; the test needs a larger DELAY_MS"
    assert len(sent) == 3
    # Only the plain record is in the log now; the delayed ones wait.
    records = consume_all(broker.bootstrap, topic, [0])[0]
    assert [r.value for r in records] == [b"plain"]

    # The idempotent producer's sequence carries on after the diverted batches.
    produce(broker.bootstrap, topic, [(b"k-after", b"after", None, 0)], conf={"enable.idempotence": True})

    records = wait_for_records(broker.bootstrap, topic, 4)
    values = [r.value for r in records]
    assert sorted(values) == [b"after", b"delayed", b"level-1", b"plain"], values
    assert values.index(b"level-1") < values.index(b"delayed")
    later = next(r for r in records if r.value == b"delayed")
    assert later.key == b"k-later"
    assert header(later, "app") == b"x1"
    assert header(later, "sluice-deliver-at") == str(due).encode()
    # Appended when due, never before: its log timestamp is its delivery time.
    assert later.timestamp[1] >= due
    level = next(r for r in records if r.value == b"level-1")
    assert level.key == b"k-level"


def test_malformed_delivery_headers_fail_and_store_nothing(broker, topic):
    from confluent_kafka import KafkaError, Producer

    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, [(b"k", b"before", None, 0)])
    bad = [
        [("sluice-deliver-at", b"tomorrow")],
        [("sluice-delay-level", b"19")],
        [("sluice-deliver-at", str(now_ms() - 3_600_000).encode())],  # an hour ago
        [("sluice-deliver-at", str(now_ms() + 30 * 24 * 3_600_000).encode())],  # beyond 3 days
    ]
    for headers in bad:
        errors = []
        p = Producer(producer_config(broker.bootstrap, **{"message.send.max.retries": 0}))
        p.produce(topic, value=b"bad", headers=headers, partition=0,
                  on_delivery=lambda err, msg: errors.append(err))
        assert p.flush(30) == 0
        assert len(errors) == 1 and errors[0] is not None, headers
        assert errors[0].code() == KafkaError.INVALID_TIMESTAMP, (headers, errors[0])
    # Nothing was stored or scheduled, and the broker serves on.
    time.sleep(1.5)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 1)
    produce(broker.bootstrap, topic, [(b"k", b"after", None, 0)])
    assert [r.value for r in consume_all(broker.bootstrap, topic, [0])[0]] == [b"before", b"after"]


def test_delayed_records_survive_kill9_and_land_once(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    due = now_ms() + DELAY_MS
    count = 50
    produce(broker.bootstrap, topic, [
        (f"k{i}".encode(), f"v{i}".encode(), [("sluice-deliver-at", str(due).encode())], 0)
        for i in range(count)
    ])
    assert now_ms() < due, "the produce took longer than the delay; the test needs a larger DELAY_MS"
    broker.restart("sigkill")
    records = wait_for_records(broker.bootstrap, topic, count)
    # Give a duplicate delivery the chance to show up before counting.
    time.sleep(2)
    records = consume_all(broker.bootstrap, topic, [0])[0]
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(count))
    assert all(r.timestamp[1] >= due for r in records)
