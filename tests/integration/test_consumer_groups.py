"""Consumer groups with real clients: subscribe() instead of assign(), so the broker's
group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, and KIP-848
ConsumerGroupHeartbeat) decides who reads what.

- librdkafka 2.16, classic protocol with the range, roundrobin and
  cooperative-sticky assignors and the KIP-848 consumer protocol: three members
  share six partitions disjointly and read everything; a member killed with
  SIGKILL is evicted after the session timeout and the survivors take over; a
  new member gets its share back; incremental protocols never revoke what a
  member keeps; committed messages are not delivered again to the next member.
- static membership (KIP-345): a member that restarts with the same
  group.instance.id within the session timeout gets its partitions back without
  a rebalance of the others.
- kafka-python 3.0 (its own classic group client) shares, commits and reads
  committed offsets.
- a group resumes from its committed offsets after SIGTERM and kill -9 restarts.
- AdminClient: DescribeConsumerGroups (Stable, members, assignments),
  ListConsumerGroupOffsets, DeleteGroups refused while members are active.
- raw frames: a stale generation and an unknown member id are refused
  (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) by Heartbeat, SyncGroup and
  OffsetCommit, and a refused commit changes nothing.

Every wait is a bounded poll loop; the bounds are generous upper limits for a
debug build on a small machine and nothing asserts how fast a group settles.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
    TopicPartition,
)

from conftest import admin_client, consumer_config, create_topic, produce, recv_frame

# Broker flags that make groups settle quickly: a short initial rebalance delay,
# session timeouts down to 1 s allowed for classic members, and a 6 s session /
# 0.5 s heartbeat interval for KIP-848 members (which the broker, not the
# client, decides).
FAST_GROUPS = ("--group-initial-rebalance-delay-ms", "300", "--group-min-session-timeout-ms", "1000",
               "--group-consumer-session-timeout-ms", "6000", "--group-consumer-heartbeat-interval-ms", "500")

# Upper bound for a group to reach an expected state after a change (members
# joining, a member's session expiring, a restart). Never asserted as a speed.
GROUP_TIMEOUT_S = 60.0
# Extra polling after a state is reached, so that callbacks still in flight are
# seen before the state is judged final.
SETTLE_S = 3.0
# How long one member's consume() may block in a round-robin pass.
POLL_S = 0.1
OFFSET_INVALID = -1001  # librdkafka's "no committed offset"

CLASSIC_TIMEOUTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
# librdkafka refuses session.timeout.ms, heartbeat.interval.ms and
# partition.assignment.strategy with group.protocol=consumer: the broker owns them.
PROTOCOL_VARIANTS = {
    "range": {"partition.assignment.strategy": "range", **CLASSIC_TIMEOUTS},
    "roundrobin": {"partition.assignment.strategy": "roundrobin", **CLASSIC_TIMEOUTS},
    "cooperative-sticky": {"partition.assignment.strategy": "cooperative-sticky", **CLASSIC_TIMEOUTS},
    "consumer": {"group.protocol": "consumer"},
}
INCREMENTAL_VARIANTS = {"cooperative-sticky", "consumer"}

# Commit errors that only say "a rebalance overtook this commit". The member
# keeps the offsets and retries while it owns the partitions; if it loses them
# the next owner re-reads from the last successful commit (at least once).
REBALANCE_COMMIT_ERRORS = {
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.STALE_MEMBER_EPOCH, KafkaError.FENCED_MEMBER_EPOCH, KafkaError._ASSIGNMENT_LOST,
}

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------
# group members
# --------------------------------------------------------------------------------------

class Member:
    """One subscribed confluent-kafka consumer, polled by whoever owns it (the test
    thread, or child_main in a member process), with its rebalance history.

    owned follows the rebalance callbacks. Eager protocols revoke the whole
    assignment before assigning the new one and incremental ones pass only the
    change, so adding assigned and removing revoked partitions is right for both.
    With commit_each_poll, what a poll returned is committed synchronously right
    after it (the application "processed" it), and a partition's unfinished
    offsets are committed when it is revoked, as a careful application does.
    """

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, conf: dict,
                 commit_each_poll: bool = True, emit=None):
        self.name = name
        self.topic = topic
        self.commit_each_poll = commit_each_poll
        self.emit = emit or (lambda **_: None)
        self.owned: set[int] = set()
        self.events: list[tuple[str, tuple[int, ...]]] = []  # ("assign"|"revoke"|"lost", partitions)
        self.received: list[tuple[int, int]] = []            # (partition, offset), in arrival order
        self.pending: dict[int, int] = {}                    # partition -> next offset to commit
        self.errors: list = []
        self.commit_errors: list = []
        self.closed = False
        self.consumer = Consumer(consumer_config(bootstrap, **{
            "group.id": group, "client.id": name, "auto.offset.reset": "earliest", **conf}))
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _record(self, kind: str, partitions) -> set[int]:
        ps = sorted(tp.partition for tp in partitions if tp.topic == self.topic)
        self.events.append((kind, tuple(ps)))
        self.emit(ev=kind, p=ps)
        return set(ps)

    def _on_assign(self, consumer, partitions):
        self.owned |= self._record("assign", partitions)

    def _on_revoke(self, consumer, partitions):
        ps = self._record("revoke", partitions)
        if self.commit_each_poll:
            self._commit({p: o for p, o in self.pending.items() if p in ps})
        for p in ps:
            self.pending.pop(p, None)
        self.owned -= ps

    def _on_lost(self, consumer, partitions):
        # Lost partitions may already belong to someone else: committing them
        # could move that member's offsets backwards.
        ps = self._record("lost", partitions)
        for p in ps:
            self.pending.pop(p, None)
        self.owned -= ps

    def poll(self, timeout: float = POLL_S) -> None:
        for msg in self.consumer.consume(num_messages=500, timeout=timeout):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise AssertionError(f"{self.name}: fatal consumer error {err}")
                self.errors.append(err)
                self.emit(ev="error", e=str(err))
                continue
            p, o = msg.partition(), msg.offset()
            self.received.append((p, o))
            self.emit(ev="msg", p=p, o=o)
            self.pending[p] = max(self.pending.get(p, 0), o + 1)
        if self.commit_each_poll:
            self._commit({p: o for p, o in self.pending.items() if p in self.owned})

    def _commit(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        try:
            result = self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())],
                asynchronous=False)
        except KafkaException as e:
            err = e.args[0]
            if getattr(err, "code", lambda: None)() in REBALANCE_COMMIT_ERRORS:
                self.commit_errors.append(err)
                return
            raise AssertionError(f"{self.name}: commit of {offsets} failed: {err}") from e
        for tp in result or []:
            if tp.topic != self.topic:
                continue
            if tp.error is not None:
                if tp.error.code() in REBALANCE_COMMIT_ERRORS:
                    self.commit_errors.append(tp.error)
                    continue
                raise AssertionError(f"{self.name}: commit of partition {tp.partition} at {tp.offset} "
                                     f"failed: {tp.error}")
            if self.pending.get(tp.partition) == tp.offset:
                del self.pending[tp.partition]
            self.emit(ev="commit", p=tp.partition, o=tp.offset)

    def describe(self) -> str:
        return (f"  {self.name}: owns {sorted(self.owned)}, received {len(self.received)}, "
                f"pending commits {self.pending}, last events {self.events[-8:]}, "
                f"errors {[str(e) for e in self.errors[-3:]]}, "
                f"rebalance-overtaken commits {len(self.commit_errors)}"
                f"{' ' + str(self.commit_errors[-1]) if self.commit_errors else ''}")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


# A member process imports this module and runs child_main: the same Member,
# reporting what happens to it as JSON lines the test reads back.
CHILD_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); import test_consumer_groups as t; t.child_main(sys.argv[2])"
CHILD_MAX_LIFE_S = 280.0


def child_main(args_json: str) -> None:
    args = json.loads(args_json)
    parent = os.getppid()
    with open(args["events"], "a", buffering=1) as out:  # line-buffered: one write per event
        def emit(**event):
            out.write(json.dumps(event) + "\n")

        m = Member(args["name"], args["bootstrap"], args["group"], args["topic"], args["conf"], emit=emit)
        # Bounded, and gone with the test process: never an orphan in the group.
        deadline = time.monotonic() + CHILD_MAX_LIFE_S
        try:
            while time.monotonic() < deadline and os.getppid() == parent:
                m.poll(0.2)
        finally:
            m.close()


class ChildMember:
    """A Member in its own process, so that it can die for real. librdkafka
    heartbeats from a background thread: a consumer in this process that just
    stops polling stays in the group, one killed with SIGKILL does not.
    Mirrors Member's owned/events/received from the events the process reports."""

    def __init__(self, name: str, workdir: Path, bootstrap: str, group: str, topic: str, conf: dict):
        self.name = name
        self.owned: set[int] = set()
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self.received: list[tuple[int, int]] = []
        self.pending: dict[int, int] = {}  # commits are the process's business
        self.errors: list[str] = []
        self.killed = False
        self.events_path = workdir / f"{name}.events.jsonl"
        self.stderr_path = workdir / f"{name}.stderr"
        self._read = 0
        args = json.dumps({"name": name, "bootstrap": bootstrap, "group": group, "topic": topic,
                           "conf": conf, "events": str(self.events_path)})
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD_BOOT, str(HERE), args],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=HERE)

    def _read_events(self) -> None:
        try:
            with open(self.events_path, "rb") as f:
                f.seek(self._read)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self._read += len(complete)
        for line in complete.splitlines():
            ev = json.loads(line)
            kind = ev["ev"]
            if kind in ("assign", "revoke", "lost"):
                self.events.append((kind, tuple(ev["p"])))
                if kind == "assign":
                    self.owned |= set(ev["p"])
                else:
                    self.owned -= set(ev["p"])
            elif kind == "msg":
                self.received.append((ev["p"], ev["o"]))
            elif kind == "error":
                self.errors.append(ev["e"])

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(none)"

    def poll(self, timeout: float = POLL_S) -> None:
        time.sleep(min(timeout, 0.05))  # the process does the waiting; don't spin on its file
        self._read_events()
        if not self.killed and self.proc.poll() is not None:
            raise AssertionError(f"member process {self.name} exited on its own with code "
                                 f"{self.proc.returncode}; its stderr:\n{self.stderr_tail()}")

    def kill(self) -> None:
        self.killed = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._read_events()  # what it received before dying still counts as received

    def describe(self) -> str:
        state = "killed" if self.killed else ("running" if self.proc.poll() is None
                                               else f"exited {self.proc.returncode}")
        return (f"  {self.name} (process, {state}): owns {sorted(self.owned)}, received "
                f"{len(self.received)}, last events {self.events[-8:]}, errors {self.errors[-3:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()


# --------------------------------------------------------------------------------------
# polling and group state
# --------------------------------------------------------------------------------------

def describe_members(members) -> str:
    return "\n".join(m.describe() for m in members)


def poll_until(members, done, what: str, timeout: float = GROUP_TIMEOUT_S) -> list[tuple[str, int, int]]:
    """Poll the members round-robin until done() holds; returns the (member, partition,
    offset) of the messages received meanwhile. Fails with every member's state if
    done() does not hold within `timeout`."""
    start = {id(m): len(m.received) for m in members}
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.poll(POLL_S)
        if done():
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s\n{describe_members(members)}")
    return [(m.name, p, o) for m in members for (p, o) in m.received[start[id(m)]:]]


def poll_for(members, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll(POLL_S)


def poll_until_quiet(members, quiet_s: float, what: str, timeout: float = GROUP_TIMEOUT_S) -> None:
    """Poll until no member has seen a rebalance callback for `quiet_s`."""
    deadline = time.monotonic() + timeout
    seen = [len(m.events) for m in members]
    last_change = time.monotonic()
    while time.monotonic() - last_change < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: rebalance callbacks kept coming for {timeout:.0f} s\n"
                                 f"{describe_members(members)}")
        for m in members:
            m.poll(POLL_S)
        now_seen = [len(m.events) for m in members]
        if now_seen != seen:
            seen, last_change = now_seen, time.monotonic()


def balanced(members, partitions) -> bool:
    """Every partition owned by exactly one member, and shares differ by at most one.
    All assignors used here balance a single topic that way."""
    sets = [m.owned for m in members]
    n, k = len(partitions), len(sets)
    return (set().union(*sets) == set(partitions) and sum(len(s) for s in sets) == n
            and all(n // k <= len(s) <= -(-n // k) for s in sets))


def assert_balanced(members, partitions, what: str) -> None:
    assert balanced(members, partitions), f"{what}: assignment not disjoint/complete/balanced\n" \
                                          f"{describe_members(members)}"


def received_all(members, expected: set[tuple[int, int]]) -> bool:
    got = set()
    for m in members:
        got.update(m.received)
    return expected <= got


def positions(delivered) -> set[tuple[int, int]]:
    return {(d.partition, d.offset) for d in delivered}


def committed_offsets(consumer: Consumer, topic: str, partitions) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch), as seen by `consumer`'s group.id."""
    got = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
    for tp in got:
        assert tp.error is None, f"OffsetFetch for partition {tp.partition}: {tp.error}"
    return {tp.partition: tp.offset for tp in got}


def read_committed(bootstrap: str, group: str, topic: str, partitions) -> dict[int, int]:
    c = Consumer(consumer_config(bootstrap, **{"group.id": group}))
    try:
        return committed_offsets(c, topic, partitions)
    finally:
        c.close()


def high_watermarks(consumer: Consumer, topic: str, partitions) -> dict[int, int]:
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)[1]
            for p in partitions}


def settle(members, observer: Consumer, topic: str, partitions, expected: set, what: str) -> dict[int, int]:
    """Poll until the assignment is balanced, every position in `expected` has been
    received by someone, and the group has committed everything (committed offset ==
    high watermark on every partition). The last condition also covers partitions
    that changed hands with uncommitted messages: their new owner must re-read and
    commit them first. Then keep polling a little and require the assignment to
    still be balanced, so a state passed through mid-rebalance does not count.
    Returns the high watermarks."""
    high = high_watermarks(observer, topic, partitions)
    poll_until(members, lambda: balanced(members, partitions) and received_all(members, expected)
               and committed_offsets(observer, topic, partitions) == high, what)
    poll_for(members, SETTLE_S)
    assert_balanced(members, partitions, what)
    return high


def revoked_since(member, mark: int) -> tuple[set[int], set[int]]:
    """(revoked, lost) partitions in the member's callbacks after events[mark]."""
    revoked, lost = set(), set()
    for kind, ps in member.events[mark:]:
        if kind == "revoke":
            revoked |= set(ps)
        elif kind == "lost":
            lost |= set(ps)
    return revoked, lost


def assert_survivors_kept_their_partitions(survivors, marks: dict, incremental: bool, what: str) -> None:
    for m in survivors:
        revoked, lost = revoked_since(m, marks[m.name])
        assert not lost, f"{what}: healthy member {m.name} lost {sorted(lost)} (fenced?)\n" \
                         f"{describe_members(survivors)}"
        if incremental:
            # Incremental protocols revoke only what moves: anything revoked
            # from a member that it still owns at the end was stopped for nothing.
            kept_but_revoked = revoked & m.owned
            assert not kept_but_revoked, (
                f"{what}: {m.name} had {sorted(kept_but_revoked)} revoked and still owns them "
                f"(not incremental); callbacks since the change: {m.events[marks[m.name]:]}")


def close_all(members) -> None:
    errors = []
    for m in reversed(members):
        try:
            m.close()
        except Exception as e:  # close the rest anyway; report the first failure
            errors.append(f"{m.name}: {e!r}")
    assert not errors, f"closing members failed: {errors}"


# --------------------------------------------------------------------------------------
# librdkafka groups
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(PROTOCOL_VARIANTS))
def test_three_consumers_share_six_partitions_and_take_over_on_failure(broker_factory, topic, tmp_path, variant):
    broker = broker_factory(*FAST_GROUPS)
    partitions = list(range(6))
    create_topic(broker.bootstrap, topic, partitions=6)
    group = f"{topic}-group"
    conf = PROTOCOL_VARIANTS[variant]
    incremental = variant in INCREMENTAL_VARIANTS

    def batch(label: str, n: int):
        return produce(broker.bootstrap, topic,
                       [(f"key-{i}".encode(), f"{label}-{i}".encode(), None, i % 6) for i in range(n)])

    first = batch("first", 600)
    observer = Consumer(consumer_config(broker.bootstrap, **{"group.id": group}))  # never joins
    members: list = []
    try:
        # The member that will be killed starts first and alone, so that the
        # others' arrival is a rebalance of a group that is already reading.
        doomed = ChildMember("doomed", tmp_path, broker.bootstrap, group, topic, conf)
        members.append(doomed)
        poll_until([doomed], lambda: bool(doomed.owned), "the member process gets partitions")
        a = Member("a", broker.bootstrap, group, topic, conf)
        members.append(a)
        b = Member("b", broker.bootstrap, group, topic, conf)
        members.append(b)

        # 1. Three members: disjoint, complete, everything read and committed.
        settle(members, observer, topic, partitions, positions(first), "three members settle on 600 messages")

        # 2. One dies without leaving: after its session times out the other two
        # own everything and read what comes next.
        survivors = [a, b]
        marks = {m.name: len(m.events) for m in survivors}
        doomed.kill()
        poll_until(survivors, lambda: balanced(survivors, partitions),
                   "the survivors take over the killed member's partitions")
        second = batch("second", 120)
        settle(survivors, observer, topic, partitions, positions(second),
               "the survivors read messages produced after the failure")
        assert_survivors_kept_their_partitions(survivors, marks, incremental, "after a member died")

        # 3. A new member joins: the load spreads over three again.
        marks = {m.name: len(m.events) for m in survivors}
        c = Member("c", broker.bootstrap, group, topic, conf)
        members.append(c)
        third = batch("third", 120)
        high = settle([a, b, c], observer, topic, partitions, positions(third),
                      "a new member gets its share")
        assert_survivors_kept_their_partitions(survivors, marks, incremental, "when a member joined")

        close_all([a, b, c])
    finally:
        close_all(members)
        observer.close()

    # 4. The next member of the group starts where the others committed: nothing
    # committed is delivered again, everything after it is.
    committed = read_committed(broker.bootstrap, group, topic, partitions)
    assert committed == high, f"committed {committed}, high watermarks {high}"
    fourth = positions(batch("fourth", 60))
    fresh = Member("fresh", broker.bootstrap, group, topic, conf, commit_each_poll=False)
    try:
        poll_until([fresh], lambda: fresh.owned == set(partitions) and received_all([fresh], fourth),
                   "a new member of the emptied group reads what was produced after the last commit")
    finally:
        fresh.close()
    redelivered = sorted((p, o) for p, o in fresh.received if o < committed[p])
    assert not redelivered, f"committed messages delivered again: {redelivered[:10]} (committed {committed})"
    assert set(fresh.received) == fourth
    first_offsets = {p: min(o for pp, o in fresh.received if pp == p) for p in partitions}
    assert first_offsets == committed


def test_static_member_restarts_without_rebalancing_others(broker_factory, topic):
    broker = broker_factory(*FAST_GROUPS)
    partitions = list(range(6))
    create_topic(broker.bootstrap, topic, partitions=6)
    group = f"{topic}-group"

    def conf(instance_id: str) -> dict:
        return {"partition.assignment.strategy": "range", "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000, "group.instance.id": instance_id}

    members: list = []
    try:
        for n in "abc":
            members.append(Member(n, broker.bootstrap, group, topic, conf(n)))
        a, b, c = members
        poll_until(members, lambda: balanced(members, partitions), "three static members settle")
        poll_until_quiet(members, SETTLE_S, "three static members settle")
        assert_balanced(members, partitions, "three static members")
        before = {m.name: set(m.owned) for m in members}
        marks = {m.name: len(m.events) for m in (a, c)}

        # librdkafka sends no LeaveGroup when a static member closes (KIP-345):
        # to the broker, "b" is just quiet until its session times out.
        b.close()
        closed_at = time.monotonic()
        b2 = Member("b-restarted", broker.bootstrap, group, topic, conf("b"))
        members.append(b2)
        others = [a, c, b2]
        poll_until(others, lambda: bool(b2.owned), "the restarted static member gets an assignment")
        rejoined_after = time.monotonic() - closed_at
        # Long enough for a and c to hear of any rebalance through their 1 s heartbeats.
        poll_for(others, 5.0)

        note = (f"(b rejoined {rejoined_after:.1f} s after closing; session timeout 10 s)\n"
                f"{describe_members(others)}")
        assert b2.owned == before["b"], f"restarted member got {sorted(b2.owned)}, had {sorted(before['b'])} {note}"
        for m in (a, c):
            assert m.events[marks[m.name]:] == [], f"{m.name} went through a rebalance {note}"
            assert m.owned == before[m.name], note
    finally:
        close_all(members)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_group_resumes_from_committed_offsets_after_restart(broker_factory, topic, how):
    broker = broker_factory(*FAST_GROUPS)
    partitions = [0, 1]
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, [(f"k{i}".encode(), f"v{i}".encode(), None, i % 2) for i in range(200)])
    group = f"{topic}-group"
    conf = {"partition.assignment.strategy": "range", **CLASSIC_TIMEOUTS}
    # Different cut points per partition, so offsets mixed up between
    # partitions would show.
    cut = {0: 40, 1: 70}

    m = Member("before", broker.bootstrap, group, topic, conf, commit_each_poll=False)
    try:
        poll_until([m], lambda: m.owned == set(partitions) and all(
            any(pp == p and o >= cut[p] - 1 for pp, o in m.received) for p in partitions),
            "the group member reads past the cut points")
        result = m.consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in cut.items()],
                                   asynchronous=False)
        assert all(tp.error is None for tp in result), result
    finally:
        m.close()
    assert read_committed(broker.bootstrap, group, topic, partitions) == cut

    broker.restart(how)

    assert read_committed(broker.bootstrap, group, topic, partitions) == cut
    m2 = Member("after", broker.bootstrap, group, topic, conf, commit_each_poll=False)
    rest = {(p, o) for p in partitions for o in range(cut[p], 100)}
    try:
        poll_until([m2], lambda: received_all([m2], rest), "the group member after the restart reads the rest")
    finally:
        m2.close()
    for p in partitions:
        got = [o for pp, o in m2.received if pp == p]
        assert got == list(range(cut[p], 100)), \
            f"partition {p}: expected offsets {cut[p]}..99 once each, got {got[:5]}...{got[-5:]} ({len(got)})"


def test_admin_describe_and_lag(broker_factory, topic):
    # The broker's HTTP lag endpoint is left out: its port is not known here.
    broker = broker_factory(*FAST_GROUPS)
    partitions = list(range(4))
    create_topic(broker.bootstrap, topic, partitions=4)
    delivered = produce(broker.bootstrap, topic, [(None, f"v{i}".encode(), None, i % 4) for i in range(100)])
    group = f"{topic}-group"
    conf = {"partition.assignment.strategy": "range", **CLASSIC_TIMEOUTS}
    admin = admin_client(broker.bootstrap)
    observer = Consumer(consumer_config(broker.bootstrap, **{"group.id": group}))
    members: list = []
    try:
        members += [Member(f"sluice-describe-{i}", broker.bootstrap, group, topic, conf) for i in (1, 2)]
        high = settle(members, observer, topic, partitions, positions(delivered), "two members settle")

        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while True:
            desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
            if desc.state == ConsumerGroupState.STABLE and len(desc.members) == 2:
                break
            assert time.monotonic() < deadline, f"group not described as Stable with 2 members: {desc}"
            poll_for(members, 0.5)
        assert desc.group_id == group
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor == "range"
        by_client = {m.name: m for m in members}
        assert sorted(d.client_id for d in desc.members) == sorted(by_client)
        assert len({d.member_id for d in desc.members}) == 2 and all(d.member_id for d in desc.members)
        for d in desc.members:
            assert "127.0.0.1" in d.host, d.host
            described = {tp.partition for tp in d.assignment.topic_partitions if tp.topic == topic}
            assert described == by_client[d.client_id].owned, (d.client_id, described)

        listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                   request_timeout=15)[group].result(timeout=20)
        offsets = {tp.partition: tp.offset for tp in listed.topic_partitions if tp.topic == topic}
        assert offsets == high
        assert {p: high[p] - offsets[p] for p in partitions} == {p: 0 for p in partitions}  # lag

        with pytest.raises(KafkaException) as refused:
            admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
        assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, refused.value
        assert committed_offsets(observer, topic, partitions) == high

        close_all(members)
        # The members' LeaveGroups may still be on their way: retry while the
        # group is non-empty, fail on anything else.
        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while True:
            try:
                admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
                break
            except KafkaException as e:
                assert e.args[0].code() == KafkaError.NON_EMPTY_GROUP, e
                assert time.monotonic() < deadline, "group still non-empty after its members closed"
                time.sleep(0.2)
        assert committed_offsets(observer, topic, partitions) == {p: OFFSET_INVALID for p in partitions}
        listed_groups = admin.list_consumer_groups(request_timeout=15).result(timeout=20)
        assert group not in [g.group_id for g in listed_groups.valid]
    finally:
        close_all(members)
        observer.close()


# --------------------------------------------------------------------------------------
# kafka-python's group client
# --------------------------------------------------------------------------------------

def test_kafka_python_consumer_group(broker_factory, topic):
    from kafka import KafkaConsumer, TopicPartition as KTopicPartition
    from kafka.errors import IllegalStateError

    broker = broker_factory(*FAST_GROUPS)
    partitions = list(range(4))
    create_topic(broker.bootstrap, topic, partitions=4)
    delivered = produce(broker.bootstrap, topic, [(f"k{i}".encode(), f"v{i}".encode(), None, i % 4)
                                                  for i in range(400)])
    expected = positions(delivered)
    high = {p: sum(1 for d in delivered if d.partition == p) for p in partitions}
    group = f"{topic}-group"

    consumers = []
    received: list[list[tuple[int, int]]] = [[], []]
    try:
        for i in range(2):
            consumers.append(KafkaConsumer(
                topic, bootstrap_servers=broker.bootstrap, group_id=group, client_id=f"kafka-python-{i}",
                auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=1000,
                session_timeout_ms=6000, heartbeat_interval_ms=1000))

        def assigned(c) -> set[int]:
            return {tp.partition for tp in (c.assignment() or ()) if tp.topic == topic}

        def caught_up() -> bool:
            # Each consumer's next fetch position is the end of each of its partitions.
            try:
                return all(c.position(KTopicPartition(topic, p), timeout_ms=5000) == high[p]
                           for c in consumers for p in assigned(c))
            except IllegalStateError:  # assignment changed under us: not settled
                return False

        def settled() -> bool:
            sets = [assigned(c) for c in consumers]
            return (set().union(*sets) == set(partitions) and sum(map(len, sets)) == len(partitions)
                    and all(sets) and expected <= set(received[0]) | set(received[1]) and caught_up())

        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while not settled():
            assert time.monotonic() < deadline, (
                f"kafka-python group not settled: assignments {[sorted(assigned(c)) for c in consumers]}, "
                f"received {[len(r) for r in received]} of {len(expected)}")
            for i, c in enumerate(consumers):
                for recs in c.poll(timeout_ms=200, max_records=500).values():
                    received[i].extend((r.partition, r.offset) for r in recs)

        for c in consumers:
            c.commit(timeout_ms=15000)
        for c in consumers:  # an owner and a non-owner read the same offsets back
            got = {p: c.committed(KTopicPartition(topic, p), timeout_ms=15000) for p in partitions}
            assert got == high
    finally:
        errors = []
        for c in consumers:
            try:
                c.close(autocommit=False, timeout_ms=15000)
            except Exception as e:  # close the other one anyway
                errors.append(repr(e))
        assert not errors, f"closing kafka-python consumers failed: {errors}"
    assert read_committed(broker.bootstrap, group, topic, partitions) == high


# --------------------------------------------------------------------------------------
# raw frames: fencing of stale generations and unknown members
# --------------------------------------------------------------------------------------

ERR_NONE = 0
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
RAW_TIMEOUT_S = 30.0
RAW_SESSION_MS = 30000


class RawConn:
    """One TCP connection speaking the group APIs with kafka-python's message
    classes (which encode every version), each at the highest version both the
    broker (ApiVersions) and the cap allow. Used where librdkafka cannot be made
    to send a stale generation or a made-up member id."""

    def __init__(self, bootstrap: str):
        from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=RAW_TIMEOUT_S)
        self.correlation = 0
        resp = self.call(ApiVersionsRequest(), ApiVersionsResponse, version=0)
        assert resp.error_code == ERR_NONE, resp
        self.ranges = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}

    def version_for(self, request_cls, cap: int) -> int:
        if request_cls.API_KEY not in self.ranges:
            pytest.fail(f"broker does not advertise {request_cls.name} (API key {request_cls.API_KEY})")
        lo, hi = self.ranges[request_cls.API_KEY]
        v = min(cap, hi, request_cls.max_version)
        assert v >= lo, f"{request_cls.name}: broker supports v{lo}..v{hi}, this test encodes up to v{cap}"
        return v

    def send(self, request, response_cls, cap: int = 0, version: int | None = None):
        v = version if version is not None else self.version_for(type(request), cap)
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="sluice-raw-groups")
        self.sock.sendall(bytes(request.encode(version=v, header=True, framed=True)))
        return self.correlation, v, response_cls

    def recv(self, pending):
        correlation, v, response_cls = pending
        resp = response_cls.decode(recv_frame(self.sock), version=v, header=True)
        assert resp.header.correlation_id == correlation, (resp.header, correlation)
        return resp

    def call(self, request, response_cls, cap: int = 0, version: int | None = None):
        return self.recv(self.send(request, response_cls, cap, version))

    def close(self):
        self.sock.close()


def kstr(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def subscription_v0(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, [topic], null user data."""
    return b"\x00\x00" + (1).to_bytes(4, "big") + kstr(topic) + (-1).to_bytes(4, "big", signed=True)


def assignment_v0(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0: version, [topic, [partition]], null user data."""
    body = b"\x00\x00" + (1).to_bytes(4, "big") + kstr(topic) + len(partitions).to_bytes(4, "big")
    body += b"".join(p.to_bytes(4, "big") for p in partitions)
    return body + (-1).to_bytes(4, "big", signed=True)


def test_stale_generation_and_unknown_member_are_refused(broker_factory, topic):
    from kafka.protocol.consumer.group import (
        HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest,
        OffsetCommitResponse, SyncGroupRequest, SyncGroupResponse,
    )

    broker = broker_factory(*FAST_GROUPS)
    create_topic(broker.bootstrap, topic, partitions=1)
    group = f"{topic}-group"

    def join(member_id: str):
        return JoinGroupRequest(group_id=group, session_timeout_ms=RAW_SESSION_MS,
                                rebalance_timeout_ms=RAW_SESSION_MS, member_id=member_id,
                                group_instance_id=None, protocol_type="consumer",
                                protocols=[("range", subscription_v0(topic))], reason=None)

    def heartbeat(conn, generation: int, member_id: str) -> int:
        return conn.call(HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id,
                                          group_instance_id=None), HeartbeatResponse, cap=4).error_code

    def sync(conn, generation: int, member_id: str, assignments):
        return conn.call(SyncGroupRequest(group_id=group, generation_id=generation, member_id=member_id,
                                          group_instance_id=None, protocol_type="consumer",
                                          protocol_name="range", assignments=assignments),
                         SyncGroupResponse, cap=5)

    def commit(conn, generation: int, member_id: str, offset: int) -> list[int]:
        T = OffsetCommitRequest.OffsetCommitRequestTopic
        P = T.OffsetCommitRequestPartition
        resp = conn.call(OffsetCommitRequest(
            group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
            group_instance_id=None, retention_time_ms=-1,
            topics=[T(name=topic, partitions=[P(partition_index=0, committed_offset=offset,
                                                committed_leader_epoch=-1, commit_timestamp=-1,
                                                committed_metadata="")])]),
            OffsetCommitResponse, cap=8)  # v9+ is KIP-848's, v10+ names topics by id
        return [p.error_code for t in resp.topics for p in t.partitions]

    a, b = RawConn(broker.bootstrap), RawConn(broker.bootstrap)
    try:
        # A joins alone (after MEMBER_ID_REQUIRED if the version asks for it),
        # leads, syncs, heartbeats and commits in generation g1.
        resp = a.call(join(""), JoinGroupResponse, cap=9)
        if resp.error_code == MEMBER_ID_REQUIRED:
            resp = a.call(join(resp.member_id), JoinGroupResponse, cap=9)
        assert resp.error_code == ERR_NONE, resp
        a_id, g1 = resp.member_id, resp.generation_id
        assert a_id and resp.leader == a_id, resp
        mine = assignment_v0(topic, [0])
        synced = sync(a, g1, a_id, [(a_id, mine)])
        assert synced.error_code == ERR_NONE and bytes(synced.assignment) == mine, synced
        assert heartbeat(a, g1, a_id) == ERR_NONE
        assert commit(a, g1, a_id, 3) == [ERR_NONE]

        # Made-up member ids and generations that do not exist are refused.
        assert heartbeat(a, g1, "sluice-no-such-member") == UNKNOWN_MEMBER_ID
        assert heartbeat(a, g1 + 1, a_id) == ILLEGAL_GENERATION
        assert commit(a, g1, "sluice-no-such-member", 4) == [UNKNOWN_MEMBER_ID]

        # B joins; A hears of the rebalance through its heartbeat and rejoins;
        # both land in generation g2. B's JoinGroup only returns early with
        # MEMBER_ID_REQUIRED; otherwise it waits for A.
        b_pending = b.send(join(""), JoinGroupResponse, cap=9)
        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while True:
            if select.select([b.sock], [], [], 0)[0]:
                early = b.recv(b_pending)
                assert early.error_code == MEMBER_ID_REQUIRED, early
                b_pending = b.send(join(early.member_id), JoinGroupResponse, cap=9)
                continue
            code = heartbeat(a, g1, a_id)
            if code == REBALANCE_IN_PROGRESS:
                break
            assert code == ERR_NONE, code
            assert time.monotonic() < deadline, "A's heartbeats never reported the rebalance B's join started"
            time.sleep(0.1)
        a_rejoin = a.call(join(a_id), JoinGroupResponse, cap=9)
        b_join = b.recv(b_pending)
        assert a_rejoin.error_code == ERR_NONE and b_join.error_code == ERR_NONE, (a_rejoin, b_join)
        g2 = a_rejoin.generation_id
        assert b_join.generation_id == g2 and g2 > g1, (g1, a_rejoin, b_join)
        assert a_rejoin.member_id == a_id

        # A, still a member, speaking for the old generation is fenced everywhere.
        assert heartbeat(a, g1, a_id) == ILLEGAL_GENERATION
        assert sync(a, g1, a_id, [(a_id, mine)]).error_code == ILLEGAL_GENERATION
        assert commit(a, g1, a_id, 5) == [ILLEGAL_GENERATION]
        assert heartbeat(a, g2, "sluice-no-such-member") == UNKNOWN_MEMBER_ID
    finally:
        a.close()
        b.close()
    # The refused commits changed nothing.
    assert read_committed(broker.bootstrap, group, topic, [0]) == {0: 3}
