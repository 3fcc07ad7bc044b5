"""Committed offsets of simple consumers (assign + commit, no group membership):
librdkafka commits, reads them back, resumes from them after clean and kill -9
restarts; bad commits get Kafka's error codes and change nothing."""

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING

from conftest import consumer_config, create_topic, produce, admin_client


def committed(bootstrap, group, topic, partitions):
    c = Consumer(consumer_config(bootstrap, **{"group.id": group}))
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def commit(bootstrap, group, offsets):
    c = Consumer(consumer_config(bootstrap, **{"group.id": group}))
    try:
        return c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_committed_offsets_survive_restart_and_consumers_resume_from_them(broker, topic, how):
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, [(None, f"v{i}".encode(), None, i % 2) for i in range(100)])
    commit(broker.bootstrap, "g-resume", [TopicPartition(topic, 0, 17), TopicPartition(topic, 1, 33)])
    assert committed(broker.bootstrap, "g-resume", topic, [0, 1]) == {0: 17, 1: 33}

    broker.restart(how)

    assert committed(broker.bootstrap, "g-resume", topic, [0, 1]) == {0: 17, 1: 33}
    # A consumer assigned without an explicit offset starts at the committed one.
    c = Consumer(consumer_config(broker.bootstrap, **{"group.id": "g-resume"}))
    try:
        c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        first = {}
        for _ in range(60):
            m = c.poll(0.5)
            if m is not None and not m.error():
                first.setdefault(m.partition(), m.offset())
            if len(first) == 2:
                break
        assert first == {0: 17, 1: 33}
    finally:
        c.close()


def test_groups_with_commits_are_listed_described_and_deleted(broker, topic):
    create_topic(broker.bootstrap, topic)
    commit(broker.bootstrap, "g-listed", [TopicPartition(topic, 0, 5)])
    admin = admin_client(broker.bootstrap)
    listed = admin.list_consumer_groups().result(timeout=15)
    assert "g-listed" in [g.group_id for g in listed.valid]
    described = admin.describe_consumer_groups(["g-listed"])["g-listed"].result(timeout=15)
    assert described.group_id == "g-listed"
    assert str(described.state).upper().endswith("EMPTY")
    admin.delete_consumer_groups(["g-listed"])["g-listed"].result(timeout=15)
    assert committed(broker.bootstrap, "g-listed", topic, [0]) == {0: OFFSET_INVALID}


OFFSET_INVALID = -1001  # librdkafka's "no committed offset"


def test_commit_to_unknown_partition_fails_and_changes_nothing(broker, topic):
    create_topic(broker.bootstrap, topic)
    commit(broker.bootstrap, "g-bad", [TopicPartition(topic, 0, 3)])
    with pytest.raises(KafkaException) as err:
        commit(broker.bootstrap, "g-bad", [TopicPartition(topic, 7, 9)])
    assert "UNKNOWN_TOPIC_OR_PART" in str(err.value) or "Unknown" in str(err.value)
    assert committed(broker.bootstrap, "g-bad", topic, [0]) == {0: 3}
