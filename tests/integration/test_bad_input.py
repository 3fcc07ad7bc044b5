"""Hostile or broken input on raw sockets.  After each, a well-behaved connection opened
beforehand still works (raw ApiVersions + a librdkafka producer) and the broker lives.

Frames are built by hand with `struct`: int32 size, then the request header
(int16 api_key, int16 api_version, int32 correlation_id, nullable string client_id,
plus an empty tagged-field section for flexible versions), then the body."""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest
from confluent_kafka import Producer

from conftest import consume_all, create_topic, producer_config, recv_frame, watermarks

API_PRODUCE = 0
API_VERSIONS = 18
UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
CLOSE_TIMEOUT_S = 15.0


# ------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------

def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(n: int) -> bytes:
    """Zig-zag signed varint (record fields)."""
    return uvarint((n << 1) ^ (n >> 63))


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def header(api_key: int, api_version: int, correlation_id: int, flexible: bool,
           client_id: str | None = "sluice-bad-input") -> bytes:
    h = struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)
    return h + (b"\x00" if flexible else b"")


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_request(correlation_id: int, version: int) -> bytes:
    if version >= 3:
        body = compact_string("sluice-tests") + compact_string("1.0") + b"\x00"
        return frame(header(API_VERSIONS, version, correlation_id, flexible=True) + body)
    return frame(header(API_VERSIONS, version, correlation_id, flexible=False))


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record_batch(records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]], base_ts: int,
                 producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """A magic-2 record batch (base offset 0, no compression; no producer id unless given)."""
    body = bytearray()
    for i, (key, value, headers) in enumerate(records):
        rec = bytearray(b"\x00")            # attributes
        rec += varint(0)                     # timestamp delta
        rec += varint(i)                     # offset delta
        rec += varint(-1) if key is None else varint(len(key)) + key
        rec += varint(len(value)) + value
        rec += varint(len(headers))
        for hk, hv in headers:
            hkb = hk.encode()
            rec += varint(len(hkb)) + hkb + varint(len(hv)) + hv
        body += varint(len(rec)) + rec
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, base_ts, base_ts,
                            producer_id, producer_epoch, base_sequence, len(records)) + body
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v3_request(correlation_id: int, topic: str, partition: int, batch: bytes, acks: int = -1) -> bytes:
    body = kstring(None)                      # transactional_id
    body += struct.pack(">hi", acks, 10000)   # acks (-1 = all), timeout_ms
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(batch)) + batch
    return frame(header(API_PRODUCE, 3, correlation_id, flexible=False) + body)


# ------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def skip_tagged_fields(self) -> int:
        n = self.uvarint()
        for _ in range(n):
            self.uvarint()
            size = self.uvarint()
            self.pos += size
        return n

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def parse_api_versions_v0(payload: bytes):
    r = Reader(payload)
    corr, err, n = r.take(">ihi")
    apis = {}
    for _ in range(n):
        key, lo, hi = r.take(">hhh")
        apis[key] = (lo, hi)
    assert r.at_end(), f"{len(payload) - r.pos} trailing bytes in ApiVersions v0 response"
    return corr, err, apis


def parse_api_versions_v3(payload: bytes):
    r = Reader(payload)
    corr, err = r.take(">ih")                 # response header v0 (ApiVersions never uses v1)
    n = r.uvarint() - 1
    apis = {}
    for _ in range(n):
        key, lo, hi = r.take(">hhh")
        r.skip_tagged_fields()
        apis[key] = (lo, hi)
    r.take(">i")                               # throttle_time_ms
    r.skip_tagged_fields()
    assert r.at_end(), f"{len(payload) - r.pos} trailing bytes in ApiVersions v3 response"
    return corr, err, apis


def parse_produce_v3_response(payload: bytes):
    r = Reader(payload)
    corr = r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        name = r.string()
        for _ in range(r.take(">i")):
            index, err, base_offset, log_append_time = r.take(">ihqq")
            out[(name, index)] = (err, base_offset)
    r.take(">i")                               # throttle_time_ms
    assert r.at_end(), f"{len(payload) - r.pos} trailing bytes in Produce v3 response"
    return corr, out


# ------------------------------------------------------------------------------------
# connections
# ------------------------------------------------------------------------------------

def connect(broker) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    s.settimeout(15)
    return s


def assert_closed_by_broker(sock: socket.socket, what: str, timeout: float = CLOSE_TIMEOUT_S) -> bytes:
    """Wait until the broker closes `sock`; returns whatever it sent before closing."""
    sock.settimeout(0.5)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError(f"broker kept the connection open {timeout:.0f} s after {what} "
                         f"(received {len(received)} bytes: {bytes(received[:64])!r})")


class Health:
    """A connection opened before the bad input, plus a librdkafka producer."""

    def __init__(self, broker, topic):
        self.broker, self.topic = broker, topic
        create_topic(broker.bootstrap, topic, partitions=1)
        self.sock = connect(broker)
        self.corr = 1000
        self.producer = Producer(producer_config(broker.bootstrap, **{"linger.ms": 0}))
        self.produced = 0
        self.check("before the bad input")

    def check(self, after: str) -> None:
        assert self.broker.alive(), f"broker process died {after}"
        # raw ApiVersions v0 on the connection opened before the bad input
        self.corr += 1
        self.sock.sendall(api_versions_request(self.corr, 0))
        corr, err, apis = parse_api_versions_v0(recv_frame(self.sock))
        assert (corr, err) == (self.corr, 0), f"ApiVersions on the healthy connection {after}: {corr}, {err}"
        assert API_PRODUCE in apis and API_VERSIONS in apis
        # a real client can still produce, and gets the next offset
        reports = []
        self.producer.produce(self.topic, value=f"health-{self.produced}".encode(),
                              on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        assert self.producer.flush(30) == 0, f"producer could not deliver {after}"
        assert reports == [(None, self.produced)], f"produce {after}: {reports}"
        self.produced += 1
        assert self.broker.alive(), f"broker process died {after}"

    def close(self):
        self.sock.close()
        self.producer = None  # destroy the client before the broker stops


@pytest.fixture
def health(broker, topic):
    h = Health(broker, topic)
    yield h
    h.close()


# ------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------

def test_crc32c_and_batch_encoder_self_check():
    # Known CRC-32C check value; guards the hand-written encoder used below.
    assert crc32c(b"123456789") == 0xE3069283
    batch = record_batch([(b"k", b"v", [])], base_ts=0)
    assert len(batch) == struct.unpack_from(">i", batch, 8)[0] + 12


def test_random_bytes_do_not_disturb_other_connections(broker, health):
    rng = random.Random(20240601)
    for i in range(24):
        s = connect(broker)
        try:
            if i % 2 == 0:
                s.sendall(rng.randbytes(rng.randint(1, 8192)))          # raw noise
            else:
                body = rng.randbytes(rng.randint(8, 4096))               # noise in a well-sized frame
                s.sendall(frame(body))
            time.sleep(0.05)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the broker may already have dropped us
        finally:
            s.close()
    health.check("after 24 connections of random bytes")


def test_truncated_frames_then_close_do_not_disturb_other_connections(broker, health):
    full = api_versions_request(7, 0)
    for cut in (2, 4, 6, len(full) - 1):
        s = connect(broker)
        s.sendall(full[:cut])
        time.sleep(0.1)
        s.close()
    # a frame that announces 100 bytes and sends 20
    s = connect(broker)
    s.sendall(struct.pack(">i", 100) + header(API_VERSIONS, 0, 8, flexible=False)[:20])
    time.sleep(0.1)
    s.close()
    health.check("after truncated frames")


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x40000000, -1, -2147483648],
                         ids=["2GiB-1", "1GiB", "minus-1", "int32-min"])
def test_huge_or_negative_length_prefix_makes_broker_close_connection(broker, health, length):
    rss_before = broker.rss_kib()
    s = connect(broker)
    try:
        s.sendall(struct.pack(">i", length) + header(API_VERSIONS, 0, 9, flexible=False))
        assert_closed_by_broker(s, f"a length prefix of {length}")
    finally:
        s.close()
    rss_after = broker.rss_kib()
    assert rss_after - rss_before < 256 * 1024, \
        f"broker RSS grew from {rss_before} KiB to {rss_after} KiB after a {length}-byte length prefix"
    health.check(f"after a length prefix of {length}")


@pytest.mark.parametrize("api_key", [32000, -5, 999])
def test_unknown_api_key_makes_broker_close_connection(broker, health, api_key):
    s = connect(broker)
    try:
        s.sendall(frame(header(api_key, 0, 10, flexible=False) + b"\x00" * 16))
        assert_closed_by_broker(s, f"a request with unknown api key {api_key}")
    finally:
        s.close()
    health.check(f"after unknown api key {api_key}")


def test_api_versions_v3_is_answered_in_flexible_format(broker, health):
    s = connect(broker)
    try:
        s.sendall(api_versions_request(11, 3))
        corr, err, apis = parse_api_versions_v3(recv_frame(s))
    finally:
        s.close()
    assert (corr, err) == (11, 0)
    assert apis[API_VERSIONS][0] == 0 and apis[API_VERSIONS][1] >= 3, apis.get(API_VERSIONS)
    assert API_PRODUCE in apis


def test_api_versions_with_too_high_version_gets_unsupported_version_and_api_list(broker, health):
    s = connect(broker)
    try:
        s.sendall(api_versions_request(12, 99))
        # Kafka answers an unsupported ApiVersions version in the v0 format so any
        # client can read it, with UNSUPPORTED_VERSION and (at least) its own ApiVersions range.
        corr, err, apis = parse_api_versions_v0(recv_frame(s))
        assert corr == 12
        assert err == UNSUPPORTED_VERSION, f"error_code {err}"
        assert API_VERSIONS in apis, f"api list {apis}"
        lo, hi = apis[API_VERSIONS]
        assert lo == 0 and 3 <= hi < 99, (lo, hi)
        # the connection stays usable: the client retries with a supported version
        s.sendall(api_versions_request(13, hi))
        payload = recv_frame(s)
        corr, err, _ = parse_api_versions_v3(payload) if hi >= 3 else parse_api_versions_v0(payload)
        assert (corr, err) == (13, 0)
    finally:
        s.close()
    health.check("after ApiVersions v99")


def test_produce_with_wrong_crc_gets_corrupt_message_and_stores_nothing(broker, topic, health):
    target = topic + "-crc"
    create_topic(broker.bootstrap, target, partitions=1)
    base_ts = int(time.time() * 1000)
    value = b"payload-that-will-be-corrupted-" + bytes(range(64))
    good = record_batch([(b"key-1", value, [("h", b"hv")]), (None, b"second", [])], base_ts)
    pos = good.rindex(value) + 5
    bad = good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1:]

    s = connect(broker)
    try:
        s.sendall(produce_v3_request(21, target, 0, bad))
        corr, parts = parse_produce_v3_response(recv_frame(s))
        assert corr == 21
        assert parts[(target, 0)][0] == CORRUPT_MESSAGE, f"partition result {parts}"
        assert watermarks(broker.bootstrap, target, 0) == (0, 0), "a batch with a bad CRC was stored"

        # the very same batch with its byte intact is accepted on the same connection
        s.sendall(produce_v3_request(22, target, 0, good))
        corr, parts = parse_produce_v3_response(recv_frame(s))
        assert corr == 22
        assert parts[(target, 0)] == (0, 0), f"partition result {parts}"
    finally:
        s.close()
    assert watermarks(broker.bootstrap, target, 0) == (0, 2)
    first, second = consume_all(broker.bootstrap, target, [0])[0]
    assert (first.offset, first.key, first.value, first.headers) == (0, b"key-1", value, (("h", b"hv"),))
    assert (second.offset, second.key, second.value) == (1, None, b"second")
    assert first.timestamp[1] == base_ts
    health.check("after a corrupt batch")


UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_RECORD = 87
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43


def produce_one(sock, corr, topic, partition, batch, acks=-1):
    sock.sendall(produce_v3_request(corr, topic, partition, batch, acks))
    got_corr, parts = parse_produce_v3_response(recv_frame(sock))
    assert got_corr == corr
    return parts[(topic, partition)]


def test_produce_to_a_partition_that_does_not_exist_gets_unknown_topic_or_partition(broker, topic, health):
    target = topic + "-p"
    create_topic(broker.bootstrap, target, partitions=1)
    batch = record_batch([(None, b"nowhere", [])], int(time.time() * 1000))
    s = connect(broker)
    try:
        err, _ = produce_one(s, 31, target, 5, batch)
        assert err == UNKNOWN_TOPIC_OR_PARTITION, err
        assert produce_one(s, 32, target, 0, batch) == (0, 0)
    finally:
        s.close()
    health.check("after a produce to a missing partition")


def with_crc(batch: bytes) -> bytes:
    """Recompute batchLength and CRC of an edited batch, so only the edit is wrong."""
    batch = batch[:8] + struct.pack(">i", len(batch) - 12) + batch[12:]
    return batch[:17] + struct.pack(">I", crc32c(batch[21:])) + batch[21:]


def malformed_batch(case: str, good: bytes) -> bytes:
    """`good` holds two uncompressed records; each case breaks one thing and (where the
    CRC covers the edit) recomputes batchLength and CRC so only that thing is wrong."""
    first_len_bytes = len(varint(good[61] >> 1))
    if case == "length-beyond-data":          # batchLength claims 40 more bytes than sent
        return good[:8] + struct.pack(">i", len(good) - 12 + 40) + good[12:]
    if case == "count-above-last-offset-delta":  # header says 5 records, lastOffsetDelta 1
        return with_crc(good[:57] + struct.pack(">i", 5) + good[61:])
    if case == "count-and-delta-above-records":  # header consistently says 3, 2 are present
        return with_crc(good[:23] + struct.pack(">i", 2) + good[27:57] + struct.pack(">i", 3) + good[61:])
    if case == "magic-1":                     # Produce v3+ carries magic 2 batches only
        return good[:16] + b"\x01" + good[17:]
    if case == "record-length-beyond-batch":  # first record's length varint says 100 bytes
        return with_crc(good[:61] + varint(100) + good[61 + first_len_bytes:])
    if case == "gzip-flag-on-garbage":        # attributes say gzip; the payload is not gzip
        return with_crc(good[:21] + struct.pack(">h", 1) + good[23:61] + b"\x1f\x8b" + b"\x07" * 30)
    raise ValueError(case)


@pytest.mark.parametrize("case", ["length-beyond-data", "count-above-last-offset-delta",
                                  "count-and-delta-above-records", "magic-1",
                                  "record-length-beyond-batch", "gzip-flag-on-garbage"])
def test_malformed_batch_is_rejected_and_nothing_stored(broker, topic, health, case):
    target = topic + "-m"
    create_topic(broker.bootstrap, target, partitions=1)
    good = record_batch([(b"k", b"first", []), (b"k", b"second", [])], int(time.time() * 1000))
    s = connect(broker)
    try:
        err, _ = produce_one(s, 40, target, 0, malformed_batch(case, good))
        # Kafka: CORRUPT_MESSAGE or INVALID_RECORD (UNSUPPORTED_FOR_MESSAGE_FORMAT for magic)
        assert err in (CORRUPT_MESSAGE, INVALID_RECORD, UNSUPPORTED_FOR_MESSAGE_FORMAT), \
            f"{case}: partition error {err}, the broker accepted the batch"
        assert watermarks(broker.bootstrap, target, 0) == (0, 0), f"{case}: a malformed batch was stored"
        # the connection is still usable and the intact batch lands at offset 0
        assert produce_one(s, 50, target, 0, good) == (0, 0)
    finally:
        s.close()
    rows = consume_all(broker.bootstrap, target, [0])[0]
    assert [(r.offset, r.value) for r in rows] == [(0, b"first"), (1, b"second")]
    health.check(f"after a malformed batch ({case})")


def test_broker_assigns_offsets_whatever_base_offset_the_producer_sent(broker, topic, health):
    target = topic + "-o"
    create_topic(broker.bootstrap, target, partitions=1)
    ts = int(time.time() * 1000)
    batch = record_batch([(None, b"a", []), (None, b"b", [])], ts)
    forged = struct.pack(">q", 123456) + batch[8:]      # base offset is outside the CRC
    s = connect(broker)
    try:
        assert produce_one(s, 60, target, 0, forged) == (0, 0)
        assert produce_one(s, 61, target, 0, forged) == (0, 2)
    finally:
        s.close()
    rows = consume_all(broker.bootstrap, target, [0])[0]
    assert [(r.offset, r.value) for r in rows] == [(0, b"a"), (1, b"b"), (2, b"a"), (3, b"b")]
    health.check("after batches with a forged base offset")


def test_produce_with_acks_0_gets_no_response_and_is_stored(broker, topic, health):
    target = topic + "-a0"
    create_topic(broker.bootstrap, target, partitions=1)
    batch = record_batch([(None, b"fire-and-forget", [])], int(time.time() * 1000))
    s = connect(broker)
    try:
        s.sendall(produce_v3_request(70, target, 0, batch, acks=0))
        # the next request's response is the first thing on the wire
        s.sendall(api_versions_request(71, 0))
        corr, err, _ = parse_api_versions_v0(recv_frame(s))
        assert (corr, err) == (71, 0), f"expected the ApiVersions response, got correlation id {corr}"
    finally:
        s.close()
    deadline = time.monotonic() + 15
    while watermarks(broker.bootstrap, target, 0) != (0, 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watermarks(broker.bootstrap, target, 0) == (0, 1)
    health.check("after an acks=0 produce")


API_INIT_PRODUCER_ID = 22
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def init_producer_id(sock, corr) -> tuple[int, int]:
    body = kstring(None) + struct.pack(">i", 60000)    # transactional_id, transaction_timeout_ms
    sock.sendall(frame(header(API_INIT_PRODUCER_ID, 1, corr, flexible=False) + body))
    r = Reader(recv_frame(sock))
    got_corr, _throttle, err, pid, epoch = r.take(">iihqh")
    assert r.at_end()
    assert (got_corr, err) == (corr, 0), f"InitProducerId: correlation {got_corr}, error {err}"
    assert pid >= 0 and epoch >= 0, (pid, epoch)
    return pid, epoch


def test_retried_idempotent_batch_is_not_stored_twice_and_sequence_gaps_are_refused(broker, topic, health):
    target = topic + "-idem"
    create_topic(broker.bootstrap, target, partitions=1)
    ts = int(time.time() * 1000)
    s = connect(broker)
    try:
        pid, epoch = init_producer_id(s, 80)
        first = record_batch([(None, b"s0", []), (None, b"s1", [])], ts, pid, epoch, base_sequence=0)
        second = record_batch([(None, b"s2", [])], ts, pid, epoch, base_sequence=2)
        assert produce_one(s, 81, target, 0, first) == (0, 0)
        # a retry of the same batch (as after a lost response): acknowledged with the
        # original offset, not appended again
        assert produce_one(s, 82, target, 0, first) == (0, 0)
        assert produce_one(s, 83, target, 0, second) == (0, 2)
        assert produce_one(s, 84, target, 0, second) == (0, 2)
        # sequence 5 when 3 is due: refused
        gap = record_batch([(None, b"s5", [])], ts, pid, epoch, base_sequence=5)
        err, _ = produce_one(s, 85, target, 0, gap)
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER, f"error {err} for a sequence gap"
    finally:
        s.close()
    rows = consume_all(broker.bootstrap, target, [0])[0]
    assert [(r.offset, r.value) for r in rows] == [(0, b"s0"), (1, b"s1"), (2, b"s2")]
    health.check("after idempotent retries")
