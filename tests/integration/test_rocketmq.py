"""rocketmq-python-client 5.1.2 (the official RocketMQ 5 gRPC client for Python) against the
broker's `apache.rocketmq.v2.MessagingService`: Telemetry settings, tag and SQL92 filters,
keys, properties and message ids kept end to end, SimpleConsumer receive / ack /
change_invisible_duration, redelivery with a growing delivery attempt, dead-lettering to
`%DLQ%<group>`, delayed delivery, PushConsumer, bad input (unknown topic, forged receipt
handles, invalid SQL, oversized bodies) and transactional messages with check-back.

What the client expects of a server (read from its source, rocketmq/v5/...), which these
tests lean on:
- Settings on Telemetry only count when the TelemetryCommand carries status OK; the
  producer then takes `publishing.max_body_size` as its body limit (0 refuses every
  send) and a PushConsumer refuses to start without Settings within 10 s.
- Every delivered message needs `body_encoding` IDENTITY or GZIP (otherwise the whole
  ReceiveMessage call raises); a `body_digest` of CRC32 / MD5 / SHA1 is compared with
  the body as upper-case hex and a mismatch marks the message corrupted.
- Status codes reach the caller as `ClientException` subclasses with `.code`; an Ack
  is judged by the response's top-level status only.
- Delivery timestamps go on the wire as `Timestamp.seconds` of the value the user set;
  the consumer reads them back in milliseconds.

A new consumer group starts at the earliest retained message of each queue (the
dead-letter test reads a `%DLQ%` topic with a group created after the message landed).

Every client call is bounded: unary RPCs by `ClientConfiguration.request_timeout`
(REQUEST_TIMEOUT_S), a receive by that plus its long-polling wait, startup and shutdown by
explicit waits here. Timeouts are upper bounds; no test asserts speed. The only timing
checks are "not before" checks with slack (a message must not come back more than
EARLY_SLACK_S before its invisible duration ends, a delayed message not more than 1 s
before its delivery time). The client logs to ~/logs/rocketmq_python/rocketmq_client.log; warnings and errors
also go to the test's captured stderr, and a test fails if the client logged a complaint
about what the broker sent (see CLIENT_COMPLAINTS).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter

import grpc
import pytest
from rocketmq import (
    ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message, MessageListener,
    Producer, PushConsumer, SimpleConsumer, TransactionChecker, TransactionResolution,
)
from rocketmq.grpc_protocol import (
    Code, Encoding, FilterType, MessageType, MessagingServiceStub, QueryRouteRequest,
    SendMessageRequest,
)
from rocketmq.v5.exception import (
    BadRequestException, ClientException, IllegalArgumentException, PayloadTooLargeException,
)
from rocketmq.v5.util import MessageIdCodec, Signature

from conftest import create_topic, sluice_bin

# gRPC deadline of every unary call the client makes (ClientConfiguration.request_timeout);
# generous for a debug build on a 2-core machine.
REQUEST_TIMEOUT_S = 10
# Long-polling wait of one SimpleConsumer receive; its deadline is REQUEST_TIMEOUT_S more.
AWAIT_S = 2
# How long a started client may wait for the broker's Settings on Telemetry.
SETTINGS_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 30.0
# Default wait for messages that should arrive.
RECEIVE_TIMEOUT_S = 60.0
# Slack of the "not before" checks.
EARLY_SLACK_S = 0.5

CLIENT_LOGGER = "rocketmq-python-client"
# Lines the client logs when what the broker sent is wrong (substring -> meaning).
CLIENT_COMPLAINTS = {
    "unsupported message encoding algorithm": "a delivered message's body_encoding is neither IDENTITY nor GZIP",
    "body_check_sum exception": "a delivered message's body_digest does not match its body",
    "unsupported message body digest algorithm": "a delivered message has no body_digest type (CRC32/MD5/SHA1)",
    "status is None": "a ReceiveMessage stream carried no status",
    "response is illegal": "a response's status code was unset (0)",
    "unrecognized status code": "a status code the client does not know",
}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def client_config(broker) -> ClientConfiguration:
    return ClientConfiguration(broker.grpc_endpoint, Credentials(), request_timeout=REQUEST_TIMEOUT_S)


def new_group(what: str = "g") -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


def wait_for_tcp(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing accepts TCP on 127.0.0.1:{port} (--grpc-listen) "
                                     f"within {timeout:.0f} s")
            time.sleep(0.05)


def start_rocketmq_broker(broker_factory, *extra_args: str):
    """A broker (conftest.Broker) whose gRPC listener accepts connections."""
    broker = broker_factory(*extra_args)
    wait_for_tcp(broker.grpc_port)
    return broker


def new_message(topic: str, body: bytes, tag: str | None = None, keys=(), properties: dict | None = None,
                delivery_timestamp_s: int | None = None) -> Message:
    m = Message()
    m.topic = topic
    m.body = body
    if tag is not None:
        m.tag = tag
    for k in keys:
        m.keys = k  # the setter adds one key per assignment
    for k, v in (properties or {}).items():
        m.add_property(k, v)
    if delivery_timestamp_s is not None:
        # The producer writes this value into SystemProperties.delivery_timestamp.seconds.
        m.delivery_timestamp = delivery_timestamp_s
    return m


def describe(m: Message) -> str:
    return (f"<id={m.message_id} tag={m.tag} keys={sorted(m.keys)} props={m.properties} "
            f"attempt={m.delivery_attempt} body={m.body[:40]!r}>")


def check_delivered(m: Message, topic: str) -> None:
    """What every delivered message must carry for the client to use it."""
    assert not m.corrupted, f"client marked {describe(m)} corrupted (body_digest does not match the body)"
    assert m.message_id, f"delivered message without message_id: {describe(m)}"
    assert m.receipt_handle, f"delivered message without receipt_handle: {describe(m)}"
    assert m.topic == topic, f"delivered message names topic {m.topic!r}, expected {topic!r}"


def assert_same_message(got: Message, sent: Message, receipt_id: str) -> None:
    """Body, tag, keys, user properties and message id as sent."""
    assert got.message_id == receipt_id, f"message id {got.message_id} != send receipt's {receipt_id}"
    assert got.body == sent.body, f"{describe(got)}: body differs from the sent {sent.body[:40]!r}"
    assert got.tag == sent.tag, f"{describe(got)}: tag differs from the sent {sent.tag!r}"
    assert got.keys == sent.keys, f"{describe(got)}: keys differ from the sent {sorted(sent.keys)}"
    assert got.properties == sent.properties, \
        f"{describe(got)}: user properties differ from the sent {sent.properties}"


def only(messages: list[Message], what: str) -> Message:
    assert len(messages) == 1, f"{what}: expected one message, received {[describe(m) for m in messages]}"
    return messages[0]


def receive_ids(consumer: SimpleConsumer, topic: str, want_ids, invisible_s: int,
                timeout_s: float = RECEIVE_TIMEOUT_S) -> list[Message]:
    """Receive until every id in want_ids has been seen; returns everything received
    (in order, possibly more than wanted)."""
    want = set(want_ids)
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while not want <= {m.message_id for m in got}:
        if time.monotonic() > deadline:
            missing = want - {m.message_id for m in got}
            raise AssertionError(f"{len(missing)} of {len(want)} messages not received within "
                                 f"{timeout_s:.0f} s: missing {sorted(missing)}; received "
                                 f"{[describe(m) for m in got]}")
        for m in consumer.receive(32, invisible_s):
            check_delivered(m, topic)
            got.append(m)
    return got


def receive_count(consumer: SimpleConsumer, topic: str, count: int, invisible_s: int,
                  timeout_s: float = RECEIVE_TIMEOUT_S) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"received {len(got)} of {count} messages within {timeout_s:.0f} s: "
                                 f"{[describe(m) for m in got]}")
        for m in consumer.receive(32, invisible_s):
            check_delivered(m, topic)
            got.append(m)
    return got


def receive_until(consumer: SimpleConsumer, topic: str, end_monotonic: float, invisible_s: int) -> list[Message]:
    """Keep receiving until time.monotonic() passes end_monotonic; returns what arrived."""
    got: list[Message] = []
    while time.monotonic() < end_monotonic:
        for m in consumer.receive(32, invisible_s):
            check_delivered(m, topic)
            got.append(m)
    return got


def expect_status(call, code: int, what: str) -> ClientException:
    """Run call(); it must raise a ClientException carrying status `code`."""
    try:
        call()
    except ClientException as e:
        assert e.code == code, (f"{what}: expected status {Code.Name(code)} ({code}), got "
                                f"{type(e).__name__} code={e.code}: {e}")
        return e
    raise AssertionError(f"{what}: accepted, expected status {Code.Name(code)} ({code})")


def http_address(broker) -> str:
    found = re.findall(r"http_listen=([0-9.]+:[0-9]+)", broker.log_path.read_text(errors="replace"))
    assert found, f"no http_listen=... in {broker.log_path}"
    return found[-1]


def admin_topic(broker, name: str) -> dict | None:
    """GET /api/topics/{name} of the broker's HTTP admin API; None on 404."""
    url = f"http://{http_address(broker)}/api/topics/{urllib.parse.quote(name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def stored_records(view: dict) -> int:
    return sum(p["log_end_offset"] - p["log_start_offset"] for p in view["partitions"])


class RawGrpc:
    """The protocol's own stubs (shipped with the client) on a plain channel, for the
    status codes the client keeps to itself, and for exact Settings exchanges."""

    def __init__(self, broker):
        self.config = client_config(broker)
        self.channel = grpc.insecure_channel(broker.grpc_endpoint)
        self.stub = MessagingServiceStub(self.channel)
        # the same headers the client sends, under a client id of our own
        self.metadata = Signature.metadata(self.config, f"sluice-it-raw@{os.getpid()}@{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> "RawGrpc":
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def query_route(self, topic: str):
        req = QueryRouteRequest()
        req.topic.name = topic
        req.endpoints.CopyFrom(self.config.rpc_endpoints.endpoints)
        return self.stub.QueryRoute(req, metadata=self.metadata, timeout=REQUEST_TIMEOUT_S)

    def send_message(self, topic: str, body: bytes):
        """One NORMAL message, built as the client's Producer builds it."""
        req = SendMessageRequest()
        msg = req.messages.add()
        msg.topic.name = topic
        msg.body = body
        msg.system_properties.message_id = MessageIdCodec().next_message_id()
        msg.system_properties.message_type = MessageType.NORMAL
        msg.system_properties.born_timestamp.seconds = int(time.time())
        msg.system_properties.born_host = "127.0.0.1"
        msg.system_properties.body_encoding = Encoding.IDENTITY
        return self.stub.SendMessage(req, metadata=self.metadata, timeout=REQUEST_TIMEOUT_S)

    def telemetry(self, command, timeout: float = SETTINGS_TIMEOUT_S):
        """Send one TelemetryCommand (the client's Settings) and return the broker's first
        answer, with the stream held open meanwhile as the client holds it."""
        done = threading.Event()

        def requests():
            yield command
            done.wait(timeout)

        responses = self.stub.Telemetry(requests(), metadata=self.metadata, timeout=timeout)
        try:
            for resp in responses:
                return resp
            raise AssertionError("Telemetry stream ended without an answer to the client's Settings")
        except grpc.RpcError as e:
            raise AssertionError(f"Telemetry failed before answering the client's Settings: "
                                 f"{e.code()} {e.details()}") from e
        finally:
            done.set()
            responses.cancel()


class _ClientLog(logging.Handler):
    """Keeps the client's log lines; copies warnings and errors to stderr (shown by
    pytest when a test fails)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def emit(self, record):
        try:
            line = f"{time.strftime('%H:%M:%S')} [{record.levelname}] {record.getMessage()}"
        except Exception:  # a broken format string in the client must not break the test
            line = f"[{record.levelname}] {record.msg!r}"
        with self._lock:
            self.lines.append((record.levelno, line))
        if record.levelno >= logging.WARNING:
            try:
                sys.stderr.write(f"rocketmq client: {line}\n")
            except Exception:
                pass

    def matching(self, needle: str, level: int = logging.DEBUG) -> list[str]:
        with self._lock:
            return [line for lvl, line in self.lines if lvl >= level and needle in line]


class RocketMQClients:
    """Starts clients for one test; close() shuts each down within SHUTDOWN_TIMEOUT_S."""

    def __init__(self):
        self.log = _ClientLog()
        self._logger = logging.getLogger(CLIENT_LOGGER)
        self._logger.addHandler(self.log)
        self._started: list = []

    def _start(self, client, wait_settings: bool):
        self._started.append(client)
        try:
            client.startup()
        except Exception as e:
            # A PushConsumer that got no Settings raises IllegalStateException, then an
            # AttributeError from its own cleanup; report the first.
            cause = f" (while handling {e.__context__!r})" if e.__context__ is not None else ""
            raise AssertionError(f"{client} did not start: {e!r}{cause}") from e
        if wait_settings:
            # Set by the client when a Telemetry answer with status OK carried Settings.
            assert client._init_settings_event.wait(SETTINGS_TIMEOUT_S), (
                f"{client} got no Settings from the broker on Telemetry within "
                f"{SETTINGS_TIMEOUT_S:.0f} s (the client ignores a TelemetryCommand whose status "
                f"is not OK)")
        return client

    def producer(self, broker, topics, checker: TransactionChecker | None = None,
                 wait_settings: bool = True) -> Producer:
        return self._start(Producer(client_config(broker), topics=list(topics), checker=checker), wait_settings)

    def simple(self, broker, group: str, subscription: dict, await_s: int = AWAIT_S,
               wait_settings: bool = True) -> SimpleConsumer:
        return self._start(SimpleConsumer(client_config(broker), group, subscription, await_duration=await_s),
                           wait_settings)

    def push(self, broker, group: str, subscription: dict, listener: MessageListener) -> PushConsumer:
        # startup() itself waits (10 s, fixed by the client) for the broker's Settings and
        # raises IllegalStateException without them.
        return self._start(PushConsumer(client_config(broker), group, listener, subscription,
                                        consumption_thread_count=4), wait_settings=False)

    def close(self) -> list[str]:
        problems = []
        for client in reversed(self._started):
            errors = []

            def stop(c=client):
                try:
                    c.shutdown()
                except Exception as e:  # reported below
                    errors.append(e)

            t = threading.Thread(target=stop, daemon=True, name="rocketmq-shutdown")
            t.start()
            t.join(SHUTDOWN_TIMEOUT_S)
            if t.is_alive():
                problems.append(f"{client}: shutdown did not finish within {SHUTDOWN_TIMEOUT_S:.0f} s")
            elif errors:
                problems.append(f"{client}: shutdown raised {errors[0]!r}")
        self._started.clear()
        for needle, meaning in CLIENT_COMPLAINTS.items():
            lines = self.log.matching(needle)
            if lines:
                problems.append(f"client complained {len(lines)} times: {meaning}; first: {lines[0]}")
        self._logger.removeHandler(self.log)
        return problems


class RecordingListener(MessageListener):
    """Records (message_id, body, delivery_attempt, receipt_handle) of every delivery;
    fails the first delivery of the bodies in fail_once, succeeds otherwise."""

    def __init__(self, fail_once=()):
        self.fail_once = set(fail_once)
        self.failed: set[bytes] = set()
        self.deliveries: list[tuple[str, bytes, int | None, str]] = []
        self.lock = threading.Lock()

    def consume(self, message: Message) -> ConsumeResult:
        with self.lock:
            self.deliveries.append((message.message_id, message.body, message.delivery_attempt,
                                    message.receipt_handle))
            if message.body in self.fail_once and message.body not in self.failed:
                self.failed.add(message.body)
                return ConsumeResult.FAILURE
        return ConsumeResult.SUCCESS

    def ids(self) -> list[str]:
        with self.lock:
            return [d[0] for d in self.deliveries]

    def snapshot(self) -> list[tuple]:
        with self.lock:
            return list(self.deliveries)


class RecordingChecker(TransactionChecker):
    """Answers the broker's check-back by body; records what it was asked."""

    def __init__(self, decisions: dict[bytes, int]):
        self.decisions = decisions
        self.asked: list[tuple[str, bytes, str]] = []
        self.lock = threading.Lock()

    def check(self, message: Message) -> int:
        with self.lock:
            self.asked.append((message.message_id, message.body, message.topic))
        return self.decisions.get(message.body, TransactionResolution.ROLLBACK)

    def asked_ids(self) -> set[str]:
        with self.lock:
            return {a[0] for a in self.asked}


@pytest.fixture
def rbroker(broker_factory):
    """A broker with its RocketMQ gRPC listener up."""
    return start_rocketmq_broker(broker_factory)


@pytest.fixture
def rmq(broker_factory):
    """RocketMQ clients of this test. Depends on broker_factory so that the clients shut
    down before the brokers stop. Fails the test if a client did not shut down or logged
    a complaint about what the broker sent."""
    clients = RocketMQClients()
    yield clients
    problems = clients.close()
    if problems:
        pytest.fail("RocketMQ clients: " + "; ".join(problems))


# --------------------------------------------------------------------------------------
# Telemetry
# --------------------------------------------------------------------------------------

def test_telemetry_answers_each_client_kind_with_settings_it_can_use(rbroker, topic):
    """Exactly the Settings each client kind sends on Telemetry (built by the client's own
    sync_setting_req) are answered with a TelemetryCommand with status OK and Settings
    (without OK the client ignores them); the producer gets a positive max_body_size (the
    client enforces it on every send; 0 refuses all) and a backoff policy; the push consumer
    gets a backoff policy, a positive long_polling_timeout (it becomes the client's
    long-polling wait and, plus request_timeout, the receive deadline) and fifo=false for a
    plain group; the simple consumer gets Settings too."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    config = client_config(rbroker)
    group = new_group("settings")
    commands = {
        "producer": Producer(config, topics=[topic]).sync_setting_req(config.rpc_endpoints),
        "push consumer": PushConsumer(config, group, RecordingListener(), {topic: FilterExpression()})
        .sync_setting_req(config.rpc_endpoints),
        "simple consumer": SimpleConsumer(config, group + "-simple", {topic: FilterExpression()},
                                          await_duration=AWAIT_S).sync_setting_req(config.rpc_endpoints),
    }
    with RawGrpc(rbroker) as raw:
        answers = {kind: raw.telemetry(cmd) for kind, cmd in commands.items()}

    for kind, resp in answers.items():
        assert resp.status.code == Code.OK, \
            f"{kind}: Telemetry answer has status {resp.status.code} {resp.status.message!r}, not OK: {resp}"
        assert resp.HasField("settings"), f"{kind}: Telemetry answer without Settings: {resp}"

    producer = answers["producer"].settings
    assert producer.publishing.max_body_size > 0, f"producer Settings without max_body_size: {producer}"
    assert producer.backoff_policy.WhichOneof("strategy") is not None, \
        f"producer Settings without a backoff policy strategy: {producer}"
    assert producer.backoff_policy.max_attempts >= 1, f"producer backoff max_attempts < 1: {producer}"

    push = answers["push consumer"].settings
    assert push.backoff_policy.WhichOneof("strategy") is not None, \
        f"push consumer Settings without a backoff policy strategy: {push}"
    assert push.backoff_policy.max_attempts >= 1, f"push consumer backoff max_attempts < 1: {push}"
    assert push.subscription.long_polling_timeout.seconds > 0, \
        f"push consumer Settings without subscription.long_polling_timeout: {push}"
    assert not push.subscription.fifo, f"a plain group's Settings say fifo: {push}"


# --------------------------------------------------------------------------------------
# filters, keys, properties, ids
# --------------------------------------------------------------------------------------

def test_tag_filter_delivers_only_subscribed_tags_with_keys_properties_and_ids(rbroker, topic, rmq):
    """Nine messages tagged TagA/TagB/TagC, each with two keys and a user property: a
    SimpleConsumer filtering "TagA || TagB" receives exactly the six TagA/TagB ones, once,
    with body, tag, keys, properties, delivery attempt 1 and the message id of the send
    receipt (which is the id the client gave the message); acked, none comes back after
    the invisible duration. Another group filtering "TagC" receives exactly the other
    three: the filter of one group takes nothing from another."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    ab = rmq.simple(rbroker, new_group("ab"), {topic: FilterExpression("TagA || TagB")})
    c = rmq.simple(rbroker, new_group("c"), {topic: FilterExpression("TagC")})
    producer = rmq.producer(rbroker, [topic])

    sent: dict[str, Message] = {}
    for i in range(9):
        tag = ("TagA", "TagB", "TagC")[i % 3]
        msg = new_message(topic, f"tagged {i} {tag}".encode(), tag=tag,
                          keys=(f"key-{i}", f"parity-{i % 2}"), properties={"seq": str(i)})
        receipt = producer.send(msg)
        assert receipt.message_id == msg.message_id, \
            f"send receipt id {receipt.message_id} is not the id the client gave the message ({msg.message_id})"
        sent[receipt.message_id] = msg

    invisible_s = 5
    for consumer, tags in ((ab, {"TagA", "TagB"}), (c, {"TagC"})):
        want = {mid for mid, m in sent.items() if m.tag in tags}
        got = receive_ids(consumer, topic, want, invisible_s)
        last_receive = time.monotonic()
        ids = [m.message_id for m in got]
        assert Counter(ids) == Counter(want), \
            f"filter {sorted(tags)}: received {[describe(m) for m in got]}, wanted {sorted(want)}"
        for m in got:
            assert_same_message(m, sent[m.message_id], m.message_id)
            assert m.delivery_attempt == 1, f"first delivery has attempt {m.delivery_attempt}: {describe(m)}"
        for m in got:
            consumer.ack(m)
        late = receive_until(consumer, topic, last_receive + invisible_s + 3, invisible_s)
        assert late == [], (f"filter {sorted(tags)}: after acking, received again (or newly): "
                            f"{[describe(m) for m in late]}")


def test_sql92_filter_over_user_properties_delivers_only_matching_messages(rbroker, topic, rmq):
    """A SimpleConsumer with the SQL92 filter `a > 5 AND b = 'x'` receives exactly the
    messages whose user properties satisfy it, comparing `a` as a number ('12' > 5), and
    never those with a <= 5, b != 'x' or either property missing."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("sql"),
                          {topic: FilterExpression("a > 5 AND b = 'x'", FilterType.SQL)})
    producer = rmq.producer(rbroker, [topic])
    cases = [  # (a, b, matches)
        ("3", "x", False), ("6", "x", True), ("12", "x", True), ("5", "x", False),
        ("7", "y", False), (None, "x", False), ("9", None, False), ("100", "x", True),
    ]
    sent: dict[str, Message] = {}
    matching = set()
    for i, (a, b, matches) in enumerate(cases):
        props = {"case": str(i)}
        if a is not None:
            props["a"] = a
        if b is not None:
            props["b"] = b
        msg = new_message(topic, f"sql case {i} a={a} b={b}".encode(), properties=props)
        receipt = producer.send(msg)
        sent[receipt.message_id] = msg
        if matches:
            matching.add(receipt.message_id)

    invisible_s = 10
    got = receive_ids(consumer, topic, matching, invisible_s)
    # anything else that would pass through the filter arrives in this window too
    got += receive_until(consumer, topic, time.monotonic() + 3 * AWAIT_S, invisible_s)
    assert Counter(m.message_id for m in got) == Counter(matching), \
        f"received {[describe(m) for m in got]}; matching cases are " \
        f"{sorted(sent[mid].properties['case'] for mid in matching)}"
    for m in got:
        assert_same_message(m, sent[m.message_id], m.message_id)
        consumer.ack(m)


# --------------------------------------------------------------------------------------
# invisibility, redelivery, dead letters
# --------------------------------------------------------------------------------------

def test_unacked_message_is_redelivered_then_dead_lettered_after_max_delivery_attempts(broker_factory, topic, rmq):
    """With --max-delivery-attempts 2 and a 2 s invisible duration: a message received and
    not acked comes back, not before the 2 s are over, with delivery_attempt 2 and a new
    receipt handle; not acked again, it does not come back a third time; it is in the
    one-partition topic %DLQ%<group> (HTTP admin API: one record), and a SimpleConsumer
    of another group reads it there with the original message id, body (all 256 byte
    values), tag, keys and user properties."""
    broker = start_rocketmq_broker(broker_factory, "--max-delivery-attempts", "2")
    create_topic(broker.bootstrap, topic, partitions=1)
    group = new_group("dlq")
    consumer = rmq.simple(broker, group, {topic: FilterExpression()})
    producer = rmq.producer(broker, [topic])
    msg = new_message(topic, bytes(range(256)) * 4, tag="TagD", keys=("dlq-key",),
                      properties={"origin": "dead-letter-test", "n": "1"})
    receipt = producer.send(msg)

    invisible_s = 2
    t0 = time.monotonic()
    first = only(receive_ids(consumer, topic, {receipt.message_id}, invisible_s), "first delivery")
    assert_same_message(first, msg, receipt.message_id)
    assert first.delivery_attempt == 1, describe(first)

    second = only(receive_ids(consumer, topic, {receipt.message_id}, invisible_s), "redelivery")
    t2 = time.monotonic()
    assert t2 >= t0 + invisible_s - EARLY_SLACK_S, \
        f"redelivered {t2 - t0:.2f} s after the receive began, before its {invisible_s} s invisible duration ended"
    assert_same_message(second, msg, receipt.message_id)
    assert second.delivery_attempt == 2, f"redelivery has attempt {second.delivery_attempt}: {describe(second)}"
    assert second.receipt_handle != first.receipt_handle, "redelivery reuses the first delivery's receipt handle"

    after = receive_until(consumer, topic, t2 + invisible_s + 6, invisible_s)
    assert after == [], (f"delivered again after its 2nd (= max) delivery: "
                         f"{[describe(m) for m in after]}")

    dlq = f"%DLQ%{group}"
    deadline = time.monotonic() + 30
    view = admin_topic(broker, dlq)
    while view is None or stored_records(view) < 1:
        assert time.monotonic() < deadline, f"{dlq} holds no message 30 s after the last delivery: {view}"
        time.sleep(0.2)
        view = admin_topic(broker, dlq)
    assert len(view["partitions"]) == 1, f"{dlq} has {len(view['partitions'])} partitions: {view}"
    assert stored_records(view) == 1, f"{dlq} holds {stored_records(view)} records, expected 1: {view}"

    reader = rmq.simple(broker, new_group("dlq-reader"), {dlq: FilterExpression()})
    dead = only(receive_count(reader, dlq, 1, 30), dlq)
    assert_same_message(dead, msg, receipt.message_id)
    reader.ack(dead)

    # The CLI lists, shows and re-sends it; a new group of the original topic gets it.
    def cli(*args: str) -> str:
        done = subprocess.run([str(sluice_bin()), "dlq", *args, "--bootstrap", broker.bootstrap, "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"sluice dlq {args}: {done.stderr}"
        return done.stdout
    listed = json.loads(cli("list"))
    assert {"group": group, "topic": dlq, "messages": 1} in listed, listed
    shown = [json.loads(line) for line in cli("show", group).splitlines()]
    assert len(shown) == 1, shown
    assert shown[0]["message_id"] == receipt.message_id
    assert shown[0]["origin_topic"] == topic and shown[0]["attempts"] == "2", shown
    assert shown[0]["tag"] == "TagD" and shown[0]["keys"] == ["dlq-key"], shown
    assert shown[0]["properties"] == {"origin": "dead-letter-test", "n": "1"}, shown
    cli("resend", group, "--offset", str(shown[0]["offset"]))
    again = rmq.simple(broker, new_group("after-resend"), {topic: FilterExpression()})
    resent = [m for m in receive_count(again, topic, 2, 30) if m.message_id == receipt.message_id]
    assert len(resent) == 2, "the original and the re-sent copy"
    for m in resent:
        assert_same_message(m, msg, receipt.message_id)
        again.ack(m)


def test_change_invisible_duration_extends_and_shortens_and_its_new_handle_acks(rbroker, topic, rmq):
    """A message received with a 3 s invisible duration, extended to 30 s, does not come
    back after the 3 s; shortened again to 2 s (using the handle the extension returned)
    it comes back, not before those 2 s, with delivery_attempt 2; changed to 5 s and acked
    with the handle that change returned, it does not come back after the 5 s."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("cid"), {topic: FilterExpression()})
    producer = rmq.producer(rbroker, [topic])
    msg = new_message(topic, b"change my invisibility", tag="TagI", keys=("cid",))
    receipt = producer.send(msg)

    m = only(receive_ids(consumer, topic, {receipt.message_id}, 3), "first delivery")
    received = time.monotonic()
    first_handle = m.receipt_handle
    consumer.change_invisible_duration(m, 30)  # the client replaces m.receipt_handle with the new one
    assert m.receipt_handle, "ChangeInvisibleDuration answered without a receipt handle"
    back = receive_until(consumer, topic, received + 3 + 4, 30)
    assert back == [], (f"came back after its first 3 s although extended to 30 s: "
                        f"{[describe(x) for x in back]}")

    changed = time.monotonic()
    consumer.change_invisible_duration(m, 2)
    assert m.receipt_handle, "ChangeInvisibleDuration answered without a receipt handle"
    again = only(receive_ids(consumer, topic, {receipt.message_id}, 3, timeout_s=20), "redelivery")
    returned = time.monotonic()
    assert returned >= changed + 2 - EARLY_SLACK_S, \
        f"came back {returned - changed:.2f} s after being shortened to 2 s"
    assert again.delivery_attempt == 2, describe(again)
    assert again.receipt_handle not in (first_handle, m.receipt_handle), \
        "the redelivery reuses an earlier receipt handle"
    assert_same_message(again, msg, receipt.message_id)

    changed = time.monotonic()
    consumer.change_invisible_duration(again, 5)
    consumer.ack(again)  # with the handle ChangeInvisibleDuration returned
    after = receive_until(consumer, topic, changed + 5 + 4, 3)
    assert after == [], f"acked with the changed handle, yet delivered again: {[describe(x) for x in after]}"


# --------------------------------------------------------------------------------------
# delay
# --------------------------------------------------------------------------------------

def test_delayed_message_is_held_until_its_delivery_timestamp(rbroker, topic, rmq):
    """A message with a delivery timestamp 3-4 s ahead, sent before an ordinary one, is
    not returned by any receive that ends more than 1 s before that time while the
    ordinary one is delivered; it arrives afterwards with its delivery timestamp (ms),
    tag and body."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("delay"), {topic: FilterExpression()}, await_s=1)
    producer = rmq.producer(rbroker, [topic])
    due_s = math.ceil(time.time()) + 3
    delayed = new_message(topic, b"delayed by 3 s", tag="TagDelay", delivery_timestamp_s=due_s)
    delayed_receipt = producer.send(delayed)
    ordinary = new_message(topic, b"ordinary")
    ordinary_receipt = producer.send(ordinary)

    arrivals: dict[str, tuple[float, Message]] = {}
    deadline = time.monotonic() + RECEIVE_TIMEOUT_S
    while len(arrivals) < 2:
        assert time.monotonic() < deadline, \
            f"received only {[describe(m) for _, m in arrivals.values()]} within {RECEIVE_TIMEOUT_S:.0f} s"
        for m in consumer.receive(32, 30):
            check_delivered(m, topic)
            returned_at = time.time()
            assert m.message_id not in arrivals, f"delivered twice: {describe(m)}"
            arrivals[m.message_id] = (returned_at, m)
            consumer.ack(m)

    assert set(arrivals) == {delayed_receipt.message_id, ordinary_receipt.message_id}, \
        [describe(m) for _, m in arrivals.values()]
    at, m = arrivals[delayed_receipt.message_id]
    assert at >= due_s - 1.0, f"delayed message received {due_s - at:.2f} s before its delivery time"
    assert_same_message(m, delayed, delayed_receipt.message_id)
    assert m.delivery_timestamp == due_s * 1000, \
        f"delivery timestamp {m.delivery_timestamp} ms, sent {due_s} s"


# --------------------------------------------------------------------------------------
# PushConsumer
# --------------------------------------------------------------------------------------

def test_push_consumer_consumes_every_message_once_and_acks_it(rbroker, topic, rmq):
    """A PushConsumer (QueryAssignment, long-polling receives, an ack per successful
    listener call) on a 2-partition topic gets each of 20 messages exactly once, at
    delivery attempt 1, and every ack succeeds (the client logs no ack failure); nothing
    is delivered again in the following seconds."""
    create_topic(rbroker.bootstrap, topic, partitions=2)
    listener = RecordingListener()
    rmq.push(rbroker, new_group("push"), {topic: FilterExpression()}, listener)
    producer = rmq.producer(rbroker, [topic])
    sent = {}
    for i in range(20):
        msg = new_message(topic, f"push {i}".encode(), tag="TagP", keys=(f"push-{i}",))
        sent[producer.send(msg).message_id] = msg

    deadline = time.monotonic() + 90
    while not set(sent) <= set(listener.ids()):
        assert time.monotonic() < deadline, \
            f"listener got {len(set(listener.ids()) & set(sent))} of {len(sent)} messages within 90 s"
        time.sleep(0.2)
    time.sleep(5)  # room for duplicates to show up

    deliveries = listener.snapshot()
    counts = Counter(d[0] for d in deliveries)
    assert counts == Counter(sent.keys()), f"deliveries per id: {dict(counts)}"
    for mid, body, attempt, _ in deliveries:
        assert body == sent[mid].body, f"{mid}: body {body!r} != sent {sent[mid].body!r}"
        assert attempt == 1, f"{mid}: delivered with attempt {attempt}"
    failures = rmq.log.matching("ack or nack raise exception")
    assert not failures, f"acks failed: {failures[:3]}"


def test_push_consumer_redelivers_a_message_its_listener_failed(rbroker, topic, rmq):
    """A message whose first listener call returns FAILURE is made visible again by the
    client (ChangeInvisibleDuration with its backoff) and comes back with delivery_attempt
    2, a different receipt handle, and is then acked; the other messages arrive once."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    listener = RecordingListener(fail_once={b"fail once"})
    rmq.push(rbroker, new_group("push-retry"), {topic: FilterExpression()}, listener)
    producer = rmq.producer(rbroker, [topic])
    bodies = [b"before", b"fail once", b"after"]
    ids = {}
    for body in bodies:
        ids[body] = producer.send(new_message(topic, body)).message_id

    deadline = time.monotonic() + 90
    while Counter(listener.ids())[ids[b"fail once"]] < 2 or not set(ids.values()) <= set(listener.ids()):
        assert time.monotonic() < deadline, f"deliveries within 90 s: {listener.snapshot()}"
        time.sleep(0.2)
    time.sleep(3)

    deliveries = listener.snapshot()
    counts = Counter(d[0] for d in deliveries)
    assert counts == Counter({ids[b"before"]: 1, ids[b"fail once"]: 2, ids[b"after"]: 1}), deliveries
    retried = [d for d in deliveries if d[0] == ids[b"fail once"]]
    assert [d[2] for d in retried] == [1, 2], f"delivery attempts of the failed message: {retried}"
    assert retried[0][3] != retried[1][3], "the redelivery reuses the first receipt handle"
    failures = rmq.log.matching("ack or nack raise exception")
    assert not failures, f"ack or ChangeInvisibleDuration failed: {failures[:3]}"


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------

def test_send_to_unknown_topic_fails_with_topic_not_found_and_creates_nothing(rbroker, rmq):
    """RocketMQ clients do not create topics: a send to an unknown topic fails (the client
    raises its generic "failed to fetch topic route" after QueryRoute answered
    TOPIC_NOT_FOUND, which it only logs); QueryRoute and SendMessage on the wire both
    answer TOPIC_NOT_FOUND; the topic does not appear in the admin API."""
    name = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    producer = rmq.producer(rbroker, [], wait_settings=False)
    with pytest.raises(Exception, match="route"):
        producer.send(new_message(name, b"to nowhere"))
    assert rmq.log.matching(str(Code.TOPIC_NOT_FOUND)), \
        f"the client did not log status TOPIC_NOT_FOUND for QueryRoute: {rmq.log.matching(name)[:5]}"

    with RawGrpc(rbroker) as raw:
        route = raw.query_route(name)
        assert route.status.code == Code.TOPIC_NOT_FOUND, f"QueryRoute of an unknown topic: {route}"
        sent = raw.send_message(name, b"to nowhere")
        assert sent.status.code == Code.TOPIC_NOT_FOUND, f"SendMessage to an unknown topic: {sent}"
    assert admin_topic(rbroker, name) is None, f"{name} was created"


def _tamper(handle: str) -> str:
    """The handle with its middle character replaced by another of the same kind."""
    i = len(handle) // 2
    ch = handle[i]
    if ch.isdigit():
        repl = "7" if ch != "7" else "3"
    elif ch.isalpha():
        repl = "Q" if ch != "Q" else "R"
    else:
        repl = "A"
    return handle[:i] + repl + handle[i + 1:]


def test_forged_receipt_handles_are_refused_and_the_real_one_still_acks(rbroker, topic, rmq):
    """Ack with a garbage, empty, 4 KiB or tampered receipt handle fails with
    INVALID_RECEIPT_HANDLE (a BadRequestException carrying the code), and so does
    ChangeInvisibleDuration with a garbage handle; none of this disturbs the delivery:
    the real handle then acks the message, which does not come back, and the broker goes
    on serving sends and receives."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("forged"), {topic: FilterExpression()})
    producer = rmq.producer(rbroker, [topic])
    receipt = producer.send(new_message(topic, b"ack me properly"))
    invisible_s = 10
    m = only(receive_ids(consumer, topic, {receipt.message_id}, invisible_s), "delivery")
    received = time.monotonic()
    real = m.receipt_handle

    forged = {
        "garbage": "not-a-receipt-handle",
        "empty": "",
        "4 KiB": "A" * 4096,
        "tampered": _tamper(real),
    }
    for what, handle in forged.items():
        m.receipt_handle = handle
        e = expect_status(lambda: consumer.ack(m), Code.INVALID_RECEIPT_HANDLE, f"ack with a {what} handle")
        assert isinstance(e, BadRequestException), f"{type(e).__name__}: {e}"
    m.receipt_handle = "not-a-receipt-handle"
    expect_status(lambda: consumer.change_invisible_duration(m, 30), Code.INVALID_RECEIPT_HANDLE,
                  "ChangeInvisibleDuration with a garbage handle")

    m.receipt_handle = real
    consumer.ack(m)
    again = receive_until(consumer, topic, received + invisible_s + 3, invisible_s)
    assert again == [], f"acked with its real handle, yet delivered again: {[describe(x) for x in again]}"

    follow_up = producer.send(new_message(topic, b"still serving"))
    n = only(receive_ids(consumer, topic, {follow_up.message_id}, invisible_s), "follow-up")
    consumer.ack(n)


def test_invalid_sql_filter_fails_at_receive_with_illegal_filter_expression(rbroker, topic, rmq):
    """A SimpleConsumer whose SQL92 filter does not parse gets ILLEGAL_FILTER_EXPRESSION
    (BadRequestException) from receive; a group with a valid filter on the same topic
    still receives the message."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    producer = rmq.producer(rbroker, [topic])
    receipt = producer.send(new_message(topic, b"filtered", properties={"a": "1"}))
    bad = rmq.simple(rbroker, new_group("bad-sql"),
                     {topic: FilterExpression("a >>> AND ((", FilterType.SQL)}, wait_settings=False)
    e = expect_status(lambda: bad.receive(1, 10), Code.ILLEGAL_FILTER_EXPRESSION, "receive with invalid SQL")
    assert isinstance(e, BadRequestException), f"{type(e).__name__}: {e}"

    good = rmq.simple(rbroker, new_group("good-sql"), {topic: FilterExpression("a = 1", FilterType.SQL)})
    m = only(receive_ids(good, topic, {receipt.message_id}, 10), "valid SQL group")
    good.ack(m)


def test_body_over_the_topic_max_message_bytes_is_refused_and_not_stored(rbroker, topic, rmq):
    """On a topic with max.message.bytes=10000, a 20000-byte body is refused: by the
    broker with MESSAGE_BODY_TOO_LARGE (PayloadTooLargeException), or by the client
    itself if the broker advertised a max_body_size below 20000 for this producer; on
    the wire SendMessage answers MESSAGE_BODY_TOO_LARGE either way. Nothing is stored:
    a consumer then receives only the 5000-byte message sent afterwards."""
    create_topic(rbroker.bootstrap, topic, partitions=1, config={"max.message.bytes": "10000"})
    consumer = rmq.simple(rbroker, new_group("big"), {topic: FilterExpression()})
    producer = rmq.producer(rbroker, [topic])
    try:
        producer.send(new_message(topic, os.urandom(20000)))
    except IllegalArgumentException as e:  # the client's own check against the advertised limit
        assert "exceeds the threshold" in str(e), f"{type(e).__name__}: {e}"
    except ClientException as e:
        assert isinstance(e, PayloadTooLargeException) and e.code == Code.MESSAGE_BODY_TOO_LARGE, \
            f"20000-byte body on a 10000-byte topic: {type(e).__name__} code={e.code}: {e}"
    else:
        raise AssertionError("a 20000-byte body was accepted by a topic with max.message.bytes=10000")
    with RawGrpc(rbroker) as raw:
        resp = raw.send_message(topic, os.urandom(20000))
        assert resp.status.code == Code.MESSAGE_BODY_TOO_LARGE, f"SendMessage of 20000 bytes: {resp}"

    small = producer.send(new_message(topic, os.urandom(5000)))
    got = receive_ids(consumer, topic, {small.message_id}, 10)
    got += receive_until(consumer, topic, time.monotonic() + 2 * AWAIT_S, 10)
    assert [m.message_id for m in got] == [small.message_id], \
        f"the refused body was stored: {[describe(m) for m in got]}"


def test_body_over_the_advertised_max_body_size_is_refused_with_message_body_too_large(rbroker, topic, rmq):
    """The max_body_size the broker advertises to a producer is a limit it enforces: a
    SendMessage with one byte more gets status MESSAGE_BODY_TOO_LARGE (not a gRPC-level
    error from a transport limit below it), and the client refuses that size too."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    config = client_config(rbroker)
    with RawGrpc(rbroker) as raw:
        answer = raw.telemetry(Producer(config, topics=[topic]).sync_setting_req(config.rpc_endpoints))
        limit = answer.settings.publishing.max_body_size
        assert 0 < limit <= 64 * 1024 * 1024, f"advertised max_body_size {limit}: {answer}"
        try:
            resp = raw.send_message(topic, b"z" * (limit + 1))
        except grpc.RpcError as e:
            raise AssertionError(f"SendMessage of {limit + 1} bytes (advertised max_body_size {limit}) failed "
                                 f"at the gRPC level, not with a status: {e.code()} {e.details()}") from e
        assert resp.status.code == Code.MESSAGE_BODY_TOO_LARGE, \
            f"SendMessage of {limit + 1} bytes (advertised max_body_size {limit}): {resp.status}"

    producer = rmq.producer(rbroker, [topic])
    with pytest.raises(ClientException):
        producer.send(new_message(topic, b"z" * (limit + 1)))


# --------------------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------------------

def test_transaction_commit_is_delivered_once_and_rollback_never(rbroker, topic, rmq):
    """Two half messages (transactional sends with a TransactionChecker) are invisible while
    their transactions are open (checked by one receive right after the sends, before any
    check-back is due); after commit of one and rollback of the other the
    consumer receives the committed one exactly once, with its body, tag, keys, properties
    and message id, and never the rolled-back one."""
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("txn"), {topic: FilterExpression()})
    checker = RecordingChecker({b"txn commit": TransactionResolution.COMMIT,
                                b"txn rollback": TransactionResolution.ROLLBACK})
    producer = rmq.producer(rbroker, [topic], checker=checker)

    commit_txn = producer.begin_transaction()
    to_commit = new_message(topic, b"txn commit", tag="TagT", keys=("txn-c",), properties={"kind": "commit"})
    commit_receipt = producer.send(to_commit, commit_txn)
    rollback_txn = producer.begin_transaction()
    to_roll_back = new_message(topic, b"txn rollback", tag="TagT", keys=("txn-r",), properties={"kind": "rollback"})
    rollback_receipt = producer.send(to_roll_back, rollback_txn)
    assert commit_receipt.transaction_id and rollback_receipt.transaction_id, \
        "send receipts of half messages without transaction ids"

    invisible_s = 10
    # One long poll (AWAIT_S) right after the sends: too early for a check-back.
    early = consumer.receive(32, invisible_s)
    assert early == [], f"half messages visible before commit: {[describe(m) for m in early]}"

    commit_txn.commit()
    rollback_txn.rollback()
    got = receive_ids(consumer, topic, {commit_receipt.message_id}, invisible_s)
    got += receive_until(consumer, topic, time.monotonic() + 3 * AWAIT_S, invisible_s)
    assert [m.message_id for m in got] == [commit_receipt.message_id], \
        f"after commit/rollback received {[describe(m) for m in got]}"
    assert_same_message(got[0], to_commit, commit_receipt.message_id)
    consumer.ack(got[0])


def test_unresolved_transactions_are_checked_back_and_resolved_by_the_checker(broker_factory, topic, rmq):
    """Two half messages whose transactions are neither committed nor rolled back: the
    broker asks the producer's TransactionChecker about each over Telemetry
    (RecoverOrphanedTransactionCommand, with the half message's id and topic); the
    checker's COMMIT makes one visible to the consumer (once, intact), its ROLLBACK keeps
    the other invisible."""
    rbroker = start_rocketmq_broker(broker_factory, "--transaction-check-interval-ms", "2000")
    create_topic(rbroker.bootstrap, topic, partitions=1)
    consumer = rmq.simple(rbroker, new_group("txn-check"), {topic: FilterExpression()})
    checker = RecordingChecker({b"checked: commit": TransactionResolution.COMMIT,
                                b"checked: rollback": TransactionResolution.ROLLBACK})
    producer = rmq.producer(rbroker, [topic], checker=checker)

    commit_msg = new_message(topic, b"checked: commit", tag="TagT", keys=("chk-c",), properties={"kind": "commit"})
    commit_receipt = producer.send(commit_msg, producer.begin_transaction())
    rollback_msg = new_message(topic, b"checked: rollback", tag="TagT", keys=("chk-r",))
    rollback_receipt = producer.send(rollback_msg, producer.begin_transaction())
    wanted = {commit_receipt.message_id, rollback_receipt.message_id}

    invisible_s = 10
    got: list[Message] = []
    deadline = time.monotonic() + 150
    while not (wanted <= checker.asked_ids() and commit_receipt.message_id in {m.message_id for m in got}):
        assert time.monotonic() < deadline, (
            f"within 150 s: checker asked about {checker.asked}, consumer received "
            f"{[describe(m) for m in got]}")
        for m in consumer.receive(32, invisible_s):
            check_delivered(m, topic)
            got.append(m)
    got += receive_until(consumer, topic, time.monotonic() + 2 * AWAIT_S, invisible_s)

    assert [m.message_id for m in got] == [commit_receipt.message_id], \
        f"received {[describe(m) for m in got]}"
    assert_same_message(got[0], commit_msg, commit_receipt.message_id)
    consumer.ack(got[0])
    for mid, body, asked_topic in checker.asked:
        assert asked_topic == topic, f"check-back for {mid} names topic {asked_topic!r}"
        assert body in (commit_msg.body, rollback_msg.body), f"check-back for an unknown message {mid}: {body!r}"


# --------------------------------------------------------------------------------------
# Restarts: delayed and half messages are durable
# --------------------------------------------------------------------------------------

def test_delayed_messages_survive_a_kill_9_and_are_each_delivered_once(broker_factory, topic, rmq):
    """1,000 messages, each due 3 s after it was sent, are acknowledged (fsynced in the
    delay log); the broker is killed with SIGKILL while deliveries are under way and
    restarted. Every message then arrives, none twice (by message id), none before its
    delivery time."""
    rbroker = start_rocketmq_broker(broker_factory)
    create_topic(rbroker.bootstrap, topic, partitions=2)
    producer = rmq.producer(rbroker, [topic])
    sent: dict[str, int] = {}
    for i in range(1000):
        due_s = math.ceil(time.time()) + 3
        receipt = producer.send(new_message(topic, f"delayed {i}".encode(), delivery_timestamp_s=due_s))
        sent[receipt.message_id] = due_s
    rbroker.kill9()
    rbroker.start()
    wait_for_tcp(rbroker.grpc_port)
    consumer = rmq.simple(rbroker, new_group("delay-restart"), {topic: FilterExpression()})
    seen: Counter = Counter()
    deadline = time.monotonic() + 180
    while len(seen) < len(sent):
        assert time.monotonic() < deadline, f"received {len(seen)} of {len(sent)} delayed messages"
        for m in consumer.receive(32, 60):
            check_delivered(m, topic)
            assert m.message_id in sent, f"unexpected message {describe(m)}"
            assert time.time() >= sent[m.message_id] - 1.0, f"{describe(m)} arrived before its time"
            seen[m.message_id] += 1
            consumer.ack(m)
    # Anything delivered twice would show up as a second copy: look a little longer.
    for m in receive_until(consumer, topic, time.monotonic() + 3 * AWAIT_S, 60):
        seen[m.message_id] += 1
    twice = [mid for mid, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} delayed messages delivered more than once"


def test_half_messages_survive_a_kill_9_and_their_checks_resume(broker_factory, topic, rmq):
    """A half message is acknowledged, then the broker is killed with SIGKILL before any
    check. After the restart the broker checks it back with a (new) producer of the topic,
    whose checker commits it: it becomes visible exactly once."""
    rbroker = start_rocketmq_broker(broker_factory, "--transaction-check-interval-ms", "3000")
    create_topic(rbroker.bootstrap, topic, partitions=1)
    # Both producers would commit: whichever the broker reaches after the restart.
    decisions = {b"half before crash": TransactionResolution.COMMIT}
    first_checker = RecordingChecker(decisions)
    first = rmq.producer(rbroker, [topic], checker=first_checker)
    msg = new_message(topic, b"half before crash", tag="TagT", keys=("crash-1",))
    receipt = first.send(msg, first.begin_transaction())
    rbroker.kill9()
    rbroker.start()
    wait_for_tcp(rbroker.grpc_port)
    checker = RecordingChecker(decisions)
    rmq.producer(rbroker, [topic], checker=checker)
    consumer = rmq.simple(rbroker, new_group("half-restart"), {topic: FilterExpression()})
    got = receive_ids(consumer, topic, [receipt.message_id], 30, timeout_s=120)
    assert receipt.message_id in checker.asked_ids() | first_checker.asked_ids()
    got += receive_until(consumer, topic, time.monotonic() + 2 * AWAIT_S, 30)
    assert [m.message_id for m in got] == [receipt.message_id], [describe(m) for m in got]
    assert_same_message(got[0], msg, receipt.message_id)
