//! The group coordinator across restarts, session expiry and offset retention.

use bytes::Bytes;
use sluice_core::groups::{ConsumerHeartbeat, JoinRequest, SyncRequest};
use sluice_core::{
    now_ms, Broker, BrokerConfig, CommittedOffset, CoreError, GroupState, TopicConfig,
};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir.to_path_buf());
    c.groups.initial_rebalance_delay_ms = 0;
    c.groups.min_session_timeout_ms = 1;
    c
}

fn join_request(group: &str, member: &str, session_ms: i32) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        subscribed_topics: vec!["t".into()],
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

/// Joins and syncs a single-member classic group; returns (member id, generation).
async fn stable_group(broker: &Broker, group: &str, session_ms: i32) -> (String, i32) {
    let joined = broker
        .groups()
        .join(join_request(group, "", session_ms))
        .await
        .unwrap();
    let synced = broker
        .groups()
        .sync(SyncRequest {
            group_id: group.into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: vec![(
                joined.member_id.clone(),
                Bytes::from_static(b"assigned"),
                vec![("t".into(), 0)],
            )],
        })
        .await
        .unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));
    (joined.member_id, joined.generation_id)
}

fn committed(offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: now_ms(),
    }
}

#[tokio::test]
async fn a_stable_classic_group_survives_a_restart_without_rejoining() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(tmp.path())).unwrap();
    broker
        .create_topic("t", 2, 1, TopicConfig::default(), false)
        .unwrap();
    let (member, generation) = stable_group(&broker, "g", 30_000).await;
    broker.begin_shutdown(); // writes the pending group image
    drop(broker);

    let broker = Broker::open(config(tmp.path())).unwrap();
    let d = broker.describe_group("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.generation, generation);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, member);
    assert_eq!(d.members[0].assigned, vec![("t".to_string(), 0)]);
    assert_eq!(d.members[0].assignment, b"assigned");
    // The member carries on with its generation: heartbeats and commits work.
    broker
        .groups()
        .heartbeat("g", &member, None, generation)
        .unwrap();
    let results = broker
        .commit_offsets(
            "g",
            generation,
            &member,
            None,
            vec![("t".into(), 0, committed(5))],
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_consumer_protocol_member_keeps_its_epoch_and_partitions_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(tmp.path())).unwrap();
    broker
        .create_topic("t", 3, 1, TopicConfig::default(), false)
        .unwrap();
    let joined = broker
        .consumer_heartbeat(ConsumerHeartbeat {
            group_id: "kg".into(),
            member_id: "m1".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 10_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    let assigned = joined.assignment.clone().unwrap();
    assert_eq!(assigned.len(), 3);
    broker.begin_shutdown();
    drop(broker);

    let broker = Broker::open(config(tmp.path())).unwrap();
    let again = broker
        .consumer_heartbeat(ConsumerHeartbeat {
            group_id: "kg".into(),
            member_id: "m1".into(),
            member_epoch: joined.member_epoch,
            rebalance_timeout_ms: -1,
            owned: Some(assigned.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.member_epoch, joined.member_epoch);
    // After a restart the broker restates the assignment once; it is unchanged.
    assert!(again.assignment.as_ref().is_none_or(|a| *a == assigned));
    let d = broker.describe_group("kg").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members[0].assigned, assigned);
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_removed_after_its_session() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(tmp.path())).unwrap();
    let (member, generation) = stable_group(&broker, "g", 50).await;
    // Upper bound only: the member must be gone within this many ticks.
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        broker.groups().tick(&broker.partition_counts(), |_| true);
        if broker.describe_group("g").unwrap().state == GroupState::Empty {
            break;
        }
    }
    assert_eq!(broker.describe_group("g").unwrap().state, GroupState::Empty);
    let err = broker
        .groups()
        .heartbeat("g", &member, None, generation)
        .unwrap_err();
    assert!(matches!(err, CoreError::UnknownMemberId { .. }), "{err}");
}

#[tokio::test]
async fn offsets_of_empty_groups_expire_after_the_retention_and_active_groups_keep_theirs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.groups.offsets_retention_ms = 60_000;
    let broker = Broker::open(c).unwrap();
    broker
        .create_topic("t", 1, 1, TopicConfig::default(), false)
        .unwrap();
    broker
        .commit_offsets("idle", -1, "", None, vec![("t".into(), 0, committed(7))])
        .await
        .unwrap();
    let (member, generation) = stable_group(&broker, "busy", 30_000).await;
    broker
        .commit_offsets(
            "busy",
            generation,
            &member,
            None,
            vec![("t".into(), 0, committed(9))],
        )
        .await
        .unwrap();

    broker.expire_offsets(now_ms() + 30_000).await.unwrap();
    assert_eq!(
        broker.committed_offsets("idle").len(),
        1,
        "not old enough yet"
    );
    broker.expire_offsets(now_ms() + 120_000).await.unwrap();
    assert!(broker.committed_offsets("idle").is_empty());
    assert_eq!(
        broker.committed_offsets("busy").len(),
        1,
        "the group has a member"
    );
}

#[tokio::test]
async fn consumer_protocol_members_are_not_fenced_after_a_restart_that_follows_epoch_bumps() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(tmp.path())).unwrap();
    broker
        .create_topic("t", 2, 1, TopicConfig::default(), false)
        .unwrap();
    // (member, epoch, owned) per member; heartbeat all until they settle.
    type Member = (String, i32, Vec<(String, i32)>);
    let mut members: Vec<Member> = Vec::new();
    for name in ["a", "b", "c"] {
        members.push((name.to_string(), 0, Vec::new()));
        for _ in 0..6 {
            for (id, epoch, owned) in members.iter_mut() {
                let reply = broker
                    .consumer_heartbeat(ConsumerHeartbeat {
                        group_id: "kg".into(),
                        member_id: id.clone(),
                        member_epoch: *epoch,
                        rebalance_timeout_ms: 10_000,
                        subscribed_topic_names: (*epoch == 0).then(|| vec!["t".into()]),
                        owned: Some(owned.clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                *epoch = reply.member_epoch;
                if let Some(a) = reply.assignment {
                    *owned = a;
                }
            }
        }
    }
    assert_eq!(
        broker.describe_group("kg").unwrap().state,
        GroupState::Stable
    );
    let owned: usize = members.iter().map(|m| m.2.len()).sum();
    assert_eq!(owned, 2, "two partitions over three members");
    broker.begin_shutdown();
    drop(broker);

    let broker = Broker::open(config(tmp.path())).unwrap();
    for (id, epoch, owned) in &members {
        let reply = broker
            .consumer_heartbeat(ConsumerHeartbeat {
                group_id: "kg".into(),
                member_id: id.clone(),
                member_epoch: *epoch,
                rebalance_timeout_ms: -1,
                owned: Some(owned.clone()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("member {id} at epoch {epoch}: {e}"));
        assert_eq!(reply.member_epoch, *epoch);
    }
}
