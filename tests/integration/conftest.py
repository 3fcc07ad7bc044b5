"""Fixtures and helpers shared by the real-client integration tests.

Every test gets its own broker process (its own data directory and port), so a
test that breaks the broker cannot make the next one fail.  The broker binary
is taken from $SLUICE_BIN (scripts/test.sh points it at target/debug/sluice).

All client calls made here carry explicit timeouts: a broken broker makes a
test fail, never hang.  Timeouts are upper bounds only; no test asserts speed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 300
# Upper bound for one whole test (pytest-timeout); generous on a 2-core machine
# running a debug build.
DEFAULT_TEST_TIMEOUT_S = 300


def sluice_bin() -> Path:
    env = os.environ.get("SLUICE_BIN")
    return Path(env).resolve() if env else REPO_ROOT / "target" / "debug" / "sluice"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One `sluice serve` process on 127.0.0.1, restartable on the same port and data dir."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = (), use_env: bool = False):
        self.use_env = use_env
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        # RocketMQ 5 gRPC listener (apache.rocketmq.v2.MessagingService).
        self.grpc_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Set when the test itself stopped or killed the process, so the teardown
        # can tell a crash from an intended stop.
        self.intended_exit = True

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_endpoint(self) -> str:
        """host:port of the RocketMQ 5 gRPC listener, as RocketMQ clients take it."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.use_env:
            return [str(sluice_bin()), "serve", *self.extra_args]
        return [
            str(sluice_bin()),
            "serve",
            "--data-dir", str(self.data_dir),
            "--kafka-listen", self.bootstrap,
            "--http-listen", "127.0.0.1:0",
            "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
            *self.extra_args,
        ]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        if self.use_env:
            env.update(SLUICE_DATA_DIR=str(self.data_dir), SLUICE_KAFKA_LISTEN=self.bootstrap,
                       SLUICE_HTTP_LISTEN="127.0.0.1:0",
                       SLUICE_GRPC_LISTEN=f"127.0.0.1:{self.grpc_port}")
        return env

    def start(self) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        binary = sluice_bin()
        if not binary.exists():
            pytest.fail(f"broker binary {binary} does not exist (build it with `cargo build -p sluice` "
                        f"or set SLUICE_BIN)")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            env_note = " (configured by SLUICE_* environment variables)" if self.use_env else ""
            log.write(f"\n===== test harness: start #{self.starts}: {' '.join(self.command())}{env_note}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workdir, env=self.environment(),
            )
        self.intended_exit = False
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                self.intended_exit = True
                pytest.fail(f"broker exited with code {code} during start-up; log:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(f"broker did not accept TCP on {self.bootstrap} within "
                            f"{STARTUP_TIMEOUT_S:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_and_wait(self, sig: int, timeout: float) -> int:
        assert self.proc is not None
        self.intended_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
            raise AssertionError(
                f"broker did not exit within {timeout:.0f} s of signal {signal.Signals(sig).name}; "
                f"killed it. log:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Clean stop (SIGTERM by default); returns the exit code."""
        return self._signal_and_wait(sig, timeout)

    def kill9(self) -> int:
        return self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, how: str = "sigterm") -> "Broker":
        if how == "sigkill":
            self.kill9()
        else:
            sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[how]
            code = self.stop(sig)
            assert code == 0, f"broker exited with code {code} after {how}; log:\n{self.log_tail()}"
        return self.start()

    def rss_kib(self) -> int:
        """Resident set size of the broker process, in KiB (Linux /proc)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) if m else 0

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        all_lines = text.splitlines()
        cut = all_lines[-lines:]
        prefix = f"... ({len(all_lines) - lines} earlier lines in {self.log_path})\n" if len(all_lines) > lines else ""
        return prefix + "\n".join(cut)


# --------------------------------------------------------------------------------------
# pytest plumbing
# --------------------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): upper bound for one test (pytest-timeout)")
    # kafka-python 3.0 loads its protocol schemas with a deprecated importlib API
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for broker in getattr(item, "_sluice_brokers", []):
            state = "running" if broker.alive() else f"exited ({broker.proc.returncode if broker.proc else '-'})"
            report.sections.append(
                (f"sluice broker {broker.bootstrap} [{state}] log {broker.log_path}", broker.log_tail()))
    return report


@pytest.fixture
def broker_factory(request, tmp_path):
    """start_broker(*extra_args, use_env=False) -> running Broker; all are stopped after
    the test. With use_env=True the data dir and listeners are given only as SLUICE_*
    environment variables.

    Teardown fails the test if a broker died on its own during the test (a crash).
    """
    brokers: list[Broker] = []
    request.node._sluice_brokers = brokers

    def start_broker(*extra_args: str, use_env: bool = False) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", tuple(extra_args), use_env=use_env)
        brokers.append(b)
        return b.start()

    yield start_broker

    crashed = []
    for b in brokers:
        if b.proc is None:
            continue
        if b.proc.poll() is not None and not b.intended_exit:
            crashed.append(f"{b.bootstrap} exited with code {b.proc.returncode}")
        if b.proc.poll() is None:
            try:
                b.stop(timeout=10)
            except AssertionError:
                pass  # it was killed; SIGTERM handling is tested in test_restart.py
    if crashed:
        pytest.fail("broker died during the test: " + "; ".join(crashed))


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to this test."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------
# confluent-kafka helpers
# --------------------------------------------------------------------------------------

def producer_config(bootstrap: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "message.timeout.ms": 30000,
        "socket.timeout.ms": 15000,
        "request.timeout.ms": 15000,
    }
    conf.update(extra)
    return conf


def consumer_config(bootstrap: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        # librdkafka requires a group.id; groups are never joined (assign() only)
        # and no offsets are committed.
        "group.id": f"sluice-test-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "error",
        "socket.timeout.ms": 15000,
    }
    conf.update(extra)
    return conf


def admin_config(bootstrap: str, **extra) -> dict:
    conf = {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "socket.timeout.ms": 15000}
    conf.update(extra)
    return conf


def admin_client(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient(admin_config(bootstrap))


def resolve(admin, futures: dict, timeout: float = 30.0) -> dict:
    """Wait for AdminClient futures; `admin` is passed to keep the client alive meanwhile."""
    results = {}
    assert admin is not None
    for key, fut in futures.items():
        results[key] = fut.result(timeout=timeout)
    return results


def topic_metadata(bootstrap: str, topic: str, timeout: float = 15.0):
    admin = admin_client(bootstrap)
    md = admin.list_topics(topic=topic, timeout=timeout)
    return md.topics.get(topic)


def wait_for_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until Metadata shows `topic` with `partitions` partitions, each with a leader."""
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not visible with {partitions} led partitions within "
                         f"{timeout:.0f} s; last metadata: {last!r} "
                         f"(error={getattr(last, 'error', None)}, "
                         f"partitions={getattr(last, 'partitions', None)})")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None,
                 timeout: float = 30.0) -> None:
    from confluent_kafka.admin import NewTopic
    admin = admin_client(bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=timeout, operation_timeout=timeout)
    resolve(admin, futures, timeout=timeout + 5)
    wait_for_topic(bootstrap, topic, partitions, timeout=timeout)


def describe_topic_configs(bootstrap: str, topic: str, timeout: float = 30.0) -> dict:
    """{config name: ConfigEntry} of a topic, via confluent-kafka's DescribeConfigs."""
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = admin_client(bootstrap)
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=timeout)
    (entries,) = resolve(admin, futures, timeout=timeout + 5).values()
    return entries


@dataclass(frozen=True)
class Delivered:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def produce(bootstrap: str, topic: str, messages, conf: dict | None = None, flush_timeout: float = 60.0,
            flush_each: bool = False) -> list[Delivered]:
    """Produce (key, value[, headers[, partition[, timestamp]]]) tuples; return successful
    deliveries in delivery-report order. Fails if any delivery report carries an error."""
    from confluent_kafka import Producer
    p = Producer(producer_config(bootstrap, **(conf or {})))
    delivered: list[Delivered] = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append((err, msg.key(), msg.value()[:64] if msg.value() else msg.value()))
        else:
            delivered.append(Delivered(msg.partition(), msg.offset(), msg.key(), msg.value()))

    count = 0
    for m in messages:
        key, value = m[0], m[1]
        kwargs = {}
        if len(m) > 2 and m[2] is not None:
            kwargs["headers"] = m[2]
        if len(m) > 3 and m[3] is not None:
            kwargs["partition"] = m[3]
        if len(m) > 4 and m[4] is not None:
            kwargs["timestamp"] = m[4]
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        count += 1
        p.poll(0)
        if flush_each:
            remaining = p.flush(flush_timeout)
            assert remaining == 0, f"{remaining} messages not delivered within {flush_timeout} s"
    remaining = p.flush(flush_timeout)
    assert remaining == 0, f"{remaining} of {count} messages not delivered within {flush_timeout} s"
    assert not errors, f"{len(errors)} of {count} deliveries failed, first: {errors[:3]}"
    assert len(delivered) == count
    return delivered


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple | None
    timestamp: tuple


def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 15.0) -> tuple[int, int]:
    """(low, high) from ListOffsets (earliest, latest), never cached."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(consumer_config(bootstrap))
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()


def consume_all(bootstrap: str, topic: str, partitions, start_offsets: dict | None = None,
                timeout: float = 60.0, conf: dict | None = None) -> dict[int, list[Consumed]]:
    """Read every partition from its start (OFFSET_BEGINNING unless start_offsets says
    otherwise) up to the high watermark measured before reading.  assign() only, no group."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
    partitions = list(partitions)
    c = Consumer(consumer_config(bootstrap, **(conf or {})))
    try:
        high = {}
        for p in partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)
            high[p] = hi
        start = {p: (start_offsets or {}).get(p, OFFSET_BEGINNING) for p in partitions}
        c.assign([TopicPartition(topic, p, start[p]) for p in partitions])
        out: dict[int, list[Consumed]] = {p: [] for p in partitions}
        nxt = {p: (start[p] if start[p] >= 0 else 0) for p in partitions}

        def done():
            return all(nxt[p] >= high[p] for p in partitions)

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                got = {p: len(v) for p, v in out.items()}
                raise AssertionError(f"consumed {got} of {topic} within {timeout:.0f} s; "
                                     f"high watermarks {high}")
            batch = c.consume(num_messages=10000, timeout=0.5)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {err}")
                p = msg.partition()
                out[p].append(Consumed(p, msg.offset(), msg.key(), msg.value(),
                                       tuple(msg.headers()) if msg.headers() is not None else None,
                                       msg.timestamp()))
                nxt[p] = msg.offset() + 1
        return out
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# raw Kafka wire protocol helpers (for tests that must see the exact bytes)
# --------------------------------------------------------------------------------------

def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes:
    import struct
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 64 * 1024 * 1024, f"implausible response size {size}"
    return recv_exact(sock, size)
