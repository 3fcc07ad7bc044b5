"""Per-group consumer settings of RocketMQ groups, set with `sluice group config` (Kafka
DescribeConfigs / IncrementalAlterConfigs on GROUP resources) and used by the broker:

- consume.mode=broadcast: every SimpleConsumer (client id) of the group receives every
  message, with acks and redeliveries of one consumer not touching another's;
- max.delivery.attempts per group: dead-lettering after that many deliveries, while another
  group on the same topic keeps the broker's default;
- retry.policy and its parameters reach consumers in the Settings answer on Telemetry;
- bad values and unknown keys are refused (INVALID_CONFIG) and change nothing;
- settings survive a broker restart.

Clients are rocketmq-python-client 5.1.2, started and bounded as in test_rocketmq.py (whose
helpers are reused). Timeouts are upper bounds; nothing asserts speed. The only timing is in
waiting windows: "nothing more arrives within N s" checks.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from rocketmq import FilterExpression, SimpleConsumer
from rocketmq.grpc_protocol import Code

from conftest import create_topic, sluice_bin
from test_rocketmq import (
    AWAIT_S, RawGrpc, RocketMQClients, admin_topic, client_config, describe, new_group,
    new_message, receive_count, receive_ids, receive_until, start_rocketmq_broker,
    stored_records, wait_for_tcp,
)

CLI_TIMEOUT_S = 60
# RocketMQ's 16 default back-off levels (ms), as `group config` describes the default.
DEFAULT_BACKOFF_MS = ("10000,30000,60000,120000,180000,240000,300000,360000,420000,480000,"
                      "540000,600000,1200000,1800000,3600000,7200000")


@pytest.fixture
def rbroker(broker_factory):
    return start_rocketmq_broker(broker_factory)


@pytest.fixture
def rmq(broker_factory):
    """RocketMQ clients of this test; shut down before the brokers stop. Fails the test if
    a client did not shut down or complained about what the broker sent."""
    clients = RocketMQClients()
    yield clients
    problems = clients.close()
    if problems:
        pytest.fail("RocketMQ clients: " + "; ".join(problems))


def group_config(broker, group: str, *args: str) -> subprocess.CompletedProcess:
    """`sluice group config GROUP ARGS --json` against the broker."""
    return subprocess.run(
        [str(sluice_bin()), "group", "config", group, *args, "--bootstrap", broker.bootstrap, "--json"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def configure(broker, group: str, *settings: str) -> dict:
    """Sets KEY=VALUE settings; returns {name: (value, is_default)} afterwards."""
    args = [a for s in settings for a in ("--set", s)]
    done = group_config(broker, group, *args)
    assert done.returncode == 0, f"sluice group config {group} {args}: {done.stderr}"
    return settings_of(json.loads(done.stdout))


def settings_of(out: dict) -> dict:
    return {c["name"]: (c["value"], c["default"]) for c in out["configs"]}


def describe_settings(broker, group: str) -> dict:
    done = group_config(broker, group)
    assert done.returncode == 0, f"sluice group config {group}: {done.stderr}"
    return settings_of(json.loads(done.stdout))


def consumer_settings_answer(broker, group: str, topic: str):
    """The Settings the broker answers a SimpleConsumer of `group` with on Telemetry."""
    config = client_config(broker)
    command = SimpleConsumer(config, group, {topic: FilterExpression()}, await_duration=AWAIT_S) \
        .sync_setting_req(config.rpc_endpoints)
    with RawGrpc(broker) as raw:
        resp = raw.telemetry(command)
    assert resp.status.code == Code.OK, f"Telemetry answer not OK: {resp}"
    assert resp.HasField("settings"), f"Telemetry answer without Settings: {resp}"
    return resp.settings


def test_broadcast_group_delivers_every_message_to_every_consumer(rbroker, topic, rmq):
    """With consume.mode=broadcast, two SimpleConsumers of one group (two client ids) each
    receive all 12 messages of a 2-queue topic sent after they started, once each (attempt
    1). The first acks everything; the second acks nothing but shortens its invisible time
    to 1 s and gets all 12 again (attempt 2), while the first gets nothing more. A consumer of a
    clustering group on the same topic still gets each message once."""
    create_topic(rbroker.bootstrap, topic, partitions=2)
    group = new_group("bcast")
    after = configure(rbroker, group, "consume.mode=broadcast")
    assert after["consume.mode"] == ("broadcast", False), after

    first = rmq.simple(rbroker, group, {topic: FilterExpression()})
    second = rmq.simple(rbroker, group, {topic: FilterExpression()})
    shared = rmq.simple(rbroker, new_group("shared"), {topic: FilterExpression()})
    producer = rmq.producer(rbroker, [topic])
    ids = {producer.send(new_message(topic, f"broadcast {i}".encode())).message_id for i in range(12)}

    received = {}
    for name, consumer in (("first", first), ("second", second), ("clustering", shared)):
        got = receive_ids(consumer, topic, ids, invisible_s=60)
        assert sorted(m.message_id for m in got) == sorted(ids), \
            f"{name} consumer received {[describe(m) for m in got]}, wanted each of {sorted(ids)} once"
        assert all(m.delivery_attempt == 1 for m in got), [describe(m) for m in got]
        received[name] = got
    for m in received["first"]:
        first.ack(m)
    for m in received["clustering"]:
        shared.ack(m)
    # The second consumer gives its messages back (its handles name its own deliveries).
    for m in received["second"]:
        second.change_invisible_duration(m, 1)

    again = receive_ids(second, topic, ids, invisible_s=30)
    assert sorted(m.message_id for m in again) == sorted(ids), [describe(m) for m in again]
    assert all(m.delivery_attempt == 2 for m in again), [describe(m) for m in again]
    for m in again:
        second.ack(m)
    late = receive_until(first, topic, time.monotonic() + 2 * AWAIT_S, invisible_s=30)
    assert late == [], f"the first consumer acked everything, yet got {[describe(m) for m in late]}"


def test_max_delivery_attempts_is_per_group(rbroker, topic, rmq):
    """max.delivery.attempts=2 on one group: its unacked message comes back once, then
    moves to %DLQ%<group>. Another group on the same topic with the default (16) gets the
    same message a third time, and has no dead-letter topic."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    strict, lenient = new_group("strict"), new_group("lenient")
    configure(rbroker, strict, "max.delivery.attempts=2")
    c_strict = rmq.simple(rbroker, strict, {topic: FilterExpression()})
    c_lenient = rmq.simple(rbroker, lenient, {topic: FilterExpression()})
    producer = rmq.producer(rbroker, [topic])
    mid = producer.send(new_message(topic, b"retry me")).message_id

    invisible_s = 2
    attempts = {strict: [], lenient: []}
    for _ in range(2):
        for group, consumer in ((strict, c_strict), (lenient, c_lenient)):
            got = receive_ids(consumer, topic, {mid}, invisible_s)
            attempts[group].extend(m.delivery_attempt for m in got)
    assert attempts == {strict: [1, 2], lenient: [1, 2]}, attempts

    third = receive_ids(c_lenient, topic, {mid}, invisible_s)
    assert [m.delivery_attempt for m in third] == [3], [describe(m) for m in third]
    c_lenient.ack(third[0])

    dlq = f"%DLQ%{strict}"
    deadline = time.monotonic() + 30
    view = admin_topic(rbroker, dlq)
    while view is None or stored_records(view) < 1:
        assert time.monotonic() < deadline, f"{dlq} holds no message 30 s after the last delivery: {view}"
        time.sleep(0.2)
        view = admin_topic(rbroker, dlq)
    assert stored_records(view) == 1, view
    late = receive_until(c_strict, topic, time.monotonic() + 2 * AWAIT_S, invisible_s)
    assert late == [], f"delivered after its 2nd (= max) attempt: {[describe(m) for m in late]}"
    assert admin_topic(rbroker, f"%DLQ%{lenient}") is None

    reader = rmq.simple(rbroker, new_group("dlq-reader"), {dlq: FilterExpression()})
    dead = receive_count(reader, dlq, 1, 30)
    assert [m.message_id for m in dead] == [mid], [describe(m) for m in dead]
    reader.ack(dead[0])


def test_consumers_get_their_groups_retry_policy_in_settings(rbroker, topic):
    """A group with retry.policy=exponential (initial 500 ms, max 8 s, multiplier 3) and
    max.delivery.attempts=4 is answered with exactly that ExponentialBackoff; a group with
    custom steps gets them; a group without settings gets RocketMQ's 16 levels and the
    broker's default attempts (16)."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    exp, steps, plain = new_group("exp"), new_group("steps"), new_group("plain")
    configure(rbroker, exp, "retry.policy=exponential", "retry.initial.backoff.ms=500",
              "retry.max.backoff.ms=8000", "retry.backoff.multiplier=3", "max.delivery.attempts=4")
    configure(rbroker, steps, "retry.backoff.ms=1000,5000,20000")

    policy = consumer_settings_answer(rbroker, exp, topic).backoff_policy
    assert policy.WhichOneof("strategy") == "exponential_backoff", policy
    assert policy.max_attempts == 4, policy
    e = policy.exponential_backoff
    assert (e.initial.seconds, e.initial.nanos) == (0, 500_000_000), policy
    assert (e.max.seconds, e.max.nanos) == (8, 0), policy
    assert e.multiplier == pytest.approx(3.0), policy

    policy = consumer_settings_answer(rbroker, steps, topic).backoff_policy
    assert policy.WhichOneof("strategy") == "customized_backoff", policy
    assert [d.seconds for d in policy.customized_backoff.next] == [1, 5, 20], policy
    assert policy.max_attempts == 16, policy

    policy = consumer_settings_answer(rbroker, plain, topic).backoff_policy
    assert policy.WhichOneof("strategy") == "customized_backoff", policy
    assert [d.seconds * 1000 for d in policy.customized_backoff.next] == \
        [int(ms) for ms in DEFAULT_BACKOFF_MS.split(",")], policy
    assert policy.max_attempts == 16, policy


def test_bad_settings_are_refused_and_change_nothing(rbroker):
    """Out-of-range or malformed values, unknown keys, a bad key among good ones and an
    initial back-off above the maximum each fail with INVALID_CONFIG and leave the group's
    settings as they were; an invalid group name fails with INVALID_GROUP_ID. Describe
    lists every key with its value and whether it is the default; deleting a setting
    brings the default back."""
    group = new_group("bad")
    before = configure(rbroker, group, "max.delivery.attempts=5", "retry.policy=exponential")
    assert before == {
        "consume.mode": ("clustering", True),
        "max.delivery.attempts": ("5", False),
        "retry.policy": ("exponential", False),
        "retry.backoff.ms": (DEFAULT_BACKOFF_MS, True),
        "retry.initial.backoff.ms": ("1000", True),
        "retry.max.backoff.ms": ("60000", True),
        "retry.backoff.multiplier": ("2.0", True),
    }, before

    bad = [
        ["--set", "consume.mode=everyone"],
        ["--set", "max.delivery.attempts=0"],
        ["--set", "max.delivery.attempts=1001"],
        ["--set", "max.delivery.attempts=two"],
        ["--set", "retry.policy=linear"],
        ["--set", "retry.backoff.ms="],
        ["--set", "retry.backoff.ms=1000,-5"],
        ["--set", "retry.backoff.ms=" + ",".join(["1000"] * 65)],
        ["--set", "retry.initial.backoff.ms=0"],
        ["--set", "retry.max.backoff.ms=86400000"],
        ["--set", "retry.backoff.multiplier=0.5"],
        ["--set", "retry.initial.backoff.ms=90000"],  # above the max (60 s)
        ["--set", "no.such.key=1"],
        ["--delete", "no.such.key"],
        ["--set", "consume.mode=broadcast", "--set", "max.delivery.attempts=-1"],
    ]
    for args in bad:
        done = group_config(rbroker, group, *args)
        assert done.returncode != 0, f"{args} accepted: {done.stdout}"
        assert "INVALID_CONFIG" in done.stderr, f"{args}: {done.stderr}"
        assert describe_settings(rbroker, group) == before, f"{args} changed the settings"

    done = group_config(rbroker, "not.a.rocketmq.group", "--set", "consume.mode=broadcast")
    assert done.returncode != 0 and "INVALID_GROUP_ID" in done.stderr, done.stderr

    done = group_config(rbroker, group, "--delete", "max.delivery.attempts")
    assert done.returncode == 0, done.stderr
    after = settings_of(json.loads(done.stdout))
    assert after["max.delivery.attempts"] == ("16", True), after
    assert after["retry.policy"] == ("exponential", False), after


def test_group_settings_survive_a_restart(broker_factory, topic):
    """Settings of two groups (one changed twice, one set and then deleted again) read
    back the same after a SIGTERM restart and after a kill -9; the Settings answer on
    Telemetry follows them."""
    broker = start_rocketmq_broker(broker_factory)
    create_topic(broker.bootstrap, topic, partitions=1)
    a, b = new_group("a"), new_group("b")
    configure(broker, a, "consume.mode=broadcast", "max.delivery.attempts=3")
    configure(broker, a, "retry.policy=exponential", "retry.max.backoff.ms=9000")
    configure(broker, b, "max.delivery.attempts=7")
    done = group_config(broker, b, "--delete", "max.delivery.attempts")
    assert done.returncode == 0, done.stderr
    want_a, want_b = describe_settings(broker, a), describe_settings(broker, b)
    assert want_a["consume.mode"] == ("broadcast", False) and want_a["retry.max.backoff.ms"] == ("9000", False)
    assert all(default for _, default in want_b.values()), want_b

    for how in ("sigterm", "sigkill"):
        broker.restart(how)
        wait_for_tcp(broker.grpc_port)
        assert describe_settings(broker, a) == want_a, f"after {how}"
        assert describe_settings(broker, b) == want_b, f"after {how}"
        policy = consumer_settings_answer(broker, a, topic).backoff_policy
        assert policy.max_attempts == 3, f"after {how}: {policy}"
        assert policy.exponential_backoff.max.seconds == 9, f"after {how}: {policy}"
