"""kcat (Debian's, linking librdkafka 2.0.2) against the broker: metadata listing,
auto-creation, and a 100,000-message keyed round trip over 4 partitions."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from collections import defaultdict

import pytest

from conftest import create_topic

N_MESSAGES = 100_000
N_KEYS = 997
PARTITIONS = 4



@pytest.fixture(autouse=True)
def kcat_installed():
    # Fail rather than skip: a skip would let a missing install step pass unnoticed.
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (scripts/test.sh installs it with apt-get)")


def kcat(*args: str, stdin_path=None, timeout: float = 240.0) -> subprocess.CompletedProcess:
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        r = subprocess.run(["kcat", *args], stdin=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat {' '.join(args)} did not finish within {timeout:.0f} s; "
                             f"stderr: {(e.stderr or b'')[-2000:]!r}") from None
    finally:
        if stdin_path:
            stdin.close()
    assert r.returncode == 0, (f"kcat {' '.join(args)} exited {r.returncode}; "
                               f"stderr: {r.stderr[-3000:].decode(errors='replace')}")
    return r


def message(i: int) -> tuple[bytes, bytes]:
    key = f"key-{i % N_KEYS}".encode()
    # Varying lengths and some non-ASCII bytes; no '|' (our output field separator) and
    # no newline (kcat's message delimiter).
    value = f"value-{i}-".encode() + b"x" * (i % 50) + ("\u00fc\u20ac".encode() if i % 1000 == 0 else b"")
    return key, value


def test_kcat_metadata_lists_broker_0_at_listen_address_and_created_topic(broker):
    topic = f"kcat-meta-{broker.port}"
    create_topic(broker.bootstrap, topic, partitions=3)

    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-m", "15").stdout)
    assert md["brokers"] == [{"id": 0, "name": broker.bootstrap}], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, f"{topic} missing from {list(topics)}"
    parts = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2]
    assert all(p["leader"] == 0 for p in parts), parts
    assert "error" not in topics[topic], topics[topic]

    text = kcat("-b", broker.bootstrap, "-L", "-t", topic, "-m", "15").stdout.decode()
    assert f"broker 0 at {broker.bootstrap}" in text, text
    assert f'topic "{topic}" with 3 partitions:' in text, text
    for p in range(3):
        assert f"partition {p}, leader 0," in text, text


def test_kcat_produce_auto_creates_topic_with_one_partition(broker, tmp_path):
    topic = f"kcat-auto-{broker.port}"
    src = tmp_path / "in.txt"
    src.write_bytes(b"a:first\nb:second\nc:third\n")
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K", ":", stdin_path=src, timeout=60)

    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-t", topic, "-m", "15").stdout)
    (t,) = [t for t in md["topics"] if t["topic"] == topic]
    assert len(t["partitions"]) == 1, t

    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p|%o|%k|%s\n", timeout=60).stdout
    assert out.splitlines() == [b"0|0|a|first", b"0|1|b|second", b"0|2|c|third"]


def test_kcat_100k_keyed_messages_round_trip_byte_identical_in_order_over_4_partitions(broker, tmp_path):
    topic = f"kcat-100k-{broker.port}"
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)

    produced = [message(i) for i in range(N_MESSAGES)]
    src = tmp_path / "messages.txt"
    src.write_bytes(b"".join(k + b":" + v + b"\n" for k, v in produced))
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K", ":", stdin_path=src)

    # --- consume with a format string --------------------------------------------------
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p|%o|%k|%s\n").stdout
    lines = out.split(b"\n")
    assert lines[-1] == b""
    rows = []
    for line in lines[:-1]:
        p, o, k, v = line.split(b"|", 3)
        rows.append((int(p), int(o), k, v))
    check_round_trip(produced, rows)

    # --- and again as JSON ----------------------------------------------------------------
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-J").stdout
    json_rows = []
    for line in out.decode("utf-8").splitlines():
        m = json.loads(line)
        assert m["topic"] == topic
        json_rows.append((m["partition"], m["offset"], m["key"].encode(), m["payload"].encode()))
    check_round_trip(produced, json_rows)
    assert sorted(json_rows) == sorted(rows)


def check_round_trip(produced: list[tuple[bytes, bytes]], rows: list[tuple[int, int, bytes, bytes]]) -> None:
    assert len(rows) == len(produced), f"consumed {len(rows)} messages, produced {len(produced)}"
    # byte-identical: same multiset of (key, value); values are unique so a set suffices
    assert sorted((k, v) for _, _, k, v in rows) == sorted(produced)

    by_partition: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    for p, o, k, v in rows:
        by_partition[p].append((o, k, v))
    assert set(by_partition) <= set(range(PARTITIONS)), sorted(by_partition)
    index_of = {v: i for i, (_, v) in enumerate(produced)}
    key_partition = {}
    for p, msgs in by_partition.items():
        msgs.sort()
        offsets = [o for o, _, _ in msgs]
        assert offsets == list(range(len(msgs))), (
            f"partition {p}: offsets not contiguous from 0 (first gaps near "
            f"{[(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1][:5]})")
        for _, k, _ in msgs:
            assert key_partition.setdefault(k, p) == p, f"key {k!r} found in partitions {key_partition[k]} and {p}"
        # offset order within the partition is production order (so per key as well)
        seq = [index_of[v] for _, _, v in msgs]
        assert seq == sorted(seq), f"partition {p}: offset order differs from production order"
    # librdkafka's default partitioner for keyed messages: CRC32(key) % partition count
    for k, p in key_partition.items():
        assert p == zlib.crc32(k) % PARTITIONS, f"key {k!r} stored in partition {p}"
    assert len(by_partition) == PARTITIONS


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_compressed_produce_is_read_back_by_kcat_and_confluent_kafka(broker, tmp_path, codec):
    from conftest import consume_all
    topic = f"kcat-{codec}-{broker.port}"
    create_topic(broker.bootstrap, topic, partitions=1)
    lines = [f"k{i % 7}:{codec}-value-{i}-".encode() + b"c" * (i % 200) for i in range(5000)]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K", ":", "-z", codec, "-p", "0",
         "-X", "linger.ms=50", stdin_path=src)
    expect = [tuple(line.split(b":", 1)) for line in lines]

    rows = consume_all(broker.bootstrap, topic, [0])[0]
    assert [(r.offset, r.key, r.value) for r in rows] == [(i, k, v) for i, (k, v) in enumerate(expect)]

    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%o|%k|%s\n").stdout
    got = [tuple(line.split(b"|", 2)) for line in out.split(b"\n")[:-1]]
    assert got == [(str(i).encode(), k, v) for i, (k, v) in enumerate(expect)]
