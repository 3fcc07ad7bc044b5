//! The consumer group protocol of KIP-848: members send ConsumerGroupHeartbeat and
//! the broker computes the assignment.
//!
//! Any change of membership, subscriptions or partition counts bumps the group
//! epoch and computes a new target assignment. Each member then converges on its
//! target one heartbeat at a time: first it is told to give up partitions it owns
//! that are no longer its own (keeping its epoch until it confirms), then it moves
//! to the new epoch and receives its new partitions as soon as no other member
//! still holds them. A partition is therefore never owned by two members at once,
//! and partitions that stay with a member are never revoked (incremental).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{self, AssignorMember, TopicPartition, ASSIGNORS};
use super::{GroupConfig, GroupState, MemberDescription};
use crate::error::CoreError;

/// A ConsumerGroupHeartbeat in the core's terms. `None` fields did not change
/// since the member's previous heartbeat.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    /// Chosen by the client (v1) or empty to have the broker choose (v0).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's temporary leave.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// Partitions the member owns now.
    pub owned: Option<Vec<TopicPartition>>,
    pub client_id: String,
    pub client_host: String,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's full assignment, when it changed.
    pub assignment: Option<Vec<TopicPartition>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConsumerMember {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    epoch: i32,
    previous_epoch: i32,
    subscribed: BTreeSet<String>,
    regex: Option<String>,
    #[serde(skip)]
    compiled: Option<regex::Regex>,
    assignor: Option<String>,
    rebalance_timeout_ms: i32,
    assigned: BTreeSet<TopicPartition>,
    revoking: BTreeSet<TopicPartition>,
    owned: BTreeSet<TopicPartition>,
    /// A static member that left temporarily (epoch -2) keeps its partitions
    /// until its session ends.
    left: bool,
    #[serde(skip, default = "Instant::now")]
    session_deadline: Instant,
    #[serde(skip)]
    revoke_deadline: Option<Instant>,
    #[serde(skip)]
    last_sent: Option<BTreeSet<TopicPartition>>,
}

/// A persisted image of a consumer group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConsumerSnapshot {
    epoch: i32,
    assignment_epoch: i32,
    empty_since_ms: i64,
    members: Vec<ConsumerMember>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    #[serde(default)]
    fingerprint: BTreeMap<String, i32>,
}

#[derive(Debug)]
pub(crate) struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    assignment_epoch: i32,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    members: BTreeMap<String, ConsumerMember>,
    /// Partition counts of the subscribed topics when the target was computed.
    fingerprint: BTreeMap<String, i32>,
    pub empty_since_ms: i64,
    pub dirty: bool,
}

/// A subscription pattern matches whole topic names, as in Kafka.
fn compile(pattern: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{pattern})$")).ok()
}

impl ConsumerGroup {
    pub fn new(id: &str, now_ms: i64) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            target: BTreeMap::new(),
            members: BTreeMap::new(),
            fingerprint: BTreeMap::new(),
            empty_since_ms: now_ms,
            dirty: false,
        }
    }

    pub fn restore(id: &str, snap: ConsumerSnapshot, cfg: &GroupConfig, now: Instant) -> Self {
        let mut g = ConsumerGroup::new(id, snap.empty_since_ms);
        g.epoch = snap.epoch;
        g.assignment_epoch = snap.assignment_epoch;
        g.target = snap.target;
        g.fingerprint = snap.fingerprint;
        for mut m in snap.members {
            m.session_deadline = now + session(cfg);
            m.compiled = m.regex.as_deref().and_then(compile);
            g.members.insert(m.id.clone(), m);
        }
        g
    }

    pub fn snapshot(&self) -> ConsumerSnapshot {
        ConsumerSnapshot {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            empty_since_ms: self.empty_since_ms,
            members: self.members.values().cloned().collect(),
            target: self.target.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let settled = self.members.values().all(|m| {
            m.epoch == self.assignment_epoch
                && m.revoking.is_empty()
                && Some(&m.assigned) == self.target.get(&m.id)
        });
        if settled {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Topics any member subscribes to, by name or by pattern.
    pub fn subscribed_topics(&self, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| self.member_topics(m, topics))
            .collect()
    }

    fn member_topics(
        &self,
        m: &ConsumerMember,
        topics: &BTreeMap<String, i32>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = m
            .subscribed
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(r) = &m.compiled {
            out.extend(topics.keys().filter(|t| r.is_match(t)).cloned());
        }
        out
    }

    pub fn describe_members(&self) -> Vec<MemberDescription> {
        self.members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: Vec::new(),
                assignment: Vec::new(),
                assigned: m.assigned.iter().cloned().collect(),
                subscribed_topics: m.subscribed.iter().cloned().collect(),
                member_epoch: m.epoch,
            })
            .collect()
    }

    /// The assignor most members ask for, or the default.
    fn assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map_or(ASSIGNORS[0].to_string(), |(a, _)| a.to_string())
    }

    /// Bumps the group epoch and computes a new target assignment.
    fn retarget(&mut self, topics: &BTreeMap<String, i32>) {
        self.epoch += 1;
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), self.member_topics(m, topics)))
            .collect();
        let empty = BTreeSet::new();
        let inputs: BTreeMap<String, AssignorMember<'_>> = subscriptions
            .iter()
            .map(|(id, t)| {
                (
                    id.clone(),
                    AssignorMember {
                        topics: t,
                        previous: self.target.get(id).unwrap_or(&empty),
                    },
                )
            })
            .collect();
        let used: BTreeSet<&String> = subscriptions.values().flatten().collect();
        let partitions: BTreeMap<String, i32> = topics
            .iter()
            .filter(|(t, _)| used.contains(t))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        let target = assignor::assign(&self.assignor(), &inputs, &partitions);
        self.fingerprint = partitions;
        self.target = target;
        self.assignment_epoch = self.epoch;
        self.dirty = true;
    }

    fn fingerprint_now(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        let used = self.subscribed_topics(topics);
        topics
            .iter()
            .filter(|(t, _)| used.contains(*t))
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    /// Handles one heartbeat. The flag says whether the member gained partitions.
    pub fn heartbeat(
        &mut self,
        req: ConsumerHeartbeat,
        cfg: &GroupConfig,
        topics: &BTreeMap<String, i32>,
        now: Instant,
    ) -> Result<(ConsumerHeartbeatReply, bool), CoreError> {
        if let Some(a) = &req.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(CoreError::UnsupportedAssignor(a.clone()));
            }
        }
        if let Some(re) = &req.subscribed_topic_regex {
            if !re.is_empty() && compile(re).is_none() {
                return Err(CoreError::InvalidRequest(format!(
                    "invalid subscription regex {re:?}"
                )));
            }
        }
        let interval = cfg.consumer_heartbeat_interval_ms;
        match req.member_epoch {
            -1 | -2 => {
                let id = self.resolve_leaving(&req)?;
                if req.member_epoch == -2 && req.instance_id.is_some() {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.left = true;
                        m.session_deadline = now + session(cfg);
                    }
                } else {
                    self.members.remove(&id);
                    self.target.remove(&id);
                    self.after_membership_change(topics);
                }
                self.dirty = true;
                return Ok((
                    ConsumerHeartbeatReply {
                        member_id: id,
                        member_epoch: req.member_epoch,
                        heartbeat_interval_ms: interval,
                        assignment: None,
                    },
                    false,
                ));
            }
            _ => {}
        }
        let (id, mut changed) = match req.member_epoch {
            0 => self.join(&req, cfg, now)?,
            epoch if epoch > 0 => {
                self.check_epoch(&req)?;
                (req.member_id.clone(), false)
            }
            epoch => {
                return Err(CoreError::InvalidRequest(format!(
                    "member epoch {epoch} is not valid"
                )))
            }
        };
        if let Some(m) = self.members.get_mut(&id) {
            m.session_deadline = now + session(cfg);
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            }
            if req.rack_id.is_some() {
                m.rack_id = req.rack_id.clone();
            }
            if let Some(names) = &req.subscribed_topic_names {
                let names: BTreeSet<String> = names.iter().cloned().collect();
                changed |= names != m.subscribed;
                m.subscribed = names;
            }
            if let Some(re) = &req.subscribed_topic_regex {
                let re = (!re.is_empty()).then(|| re.clone());
                changed |= re != m.regex;
                m.compiled = re.as_deref().and_then(compile);
                m.regex = re;
            }
            if let Some(a) = &req.server_assignor {
                changed |= Some(a) != m.assignor.as_ref();
                m.assignor = Some(a.clone());
            }
            if let Some(owned) = &req.owned {
                m.owned = owned.iter().cloned().collect();
            }
        }
        if changed || self.fingerprint_now(topics) != self.fingerprint {
            self.retarget(topics);
        }
        let full = req.member_epoch == 0 || req.owned.is_some();
        let gained = self.reconcile(&id, now);
        let m = self
            .members
            .get_mut(&id)
            .ok_or_else(|| CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: id.clone(),
            })?;
        let send = full && m.owned != m.assigned || m.last_sent.as_ref() != Some(&m.assigned);
        let assignment = send.then(|| {
            m.last_sent = Some(m.assigned.clone());
            m.assigned.iter().cloned().collect()
        });
        if assignment.is_some() {
            self.dirty = true;
        }
        Ok((
            ConsumerHeartbeatReply {
                member_id: id,
                member_epoch: m.epoch,
                heartbeat_interval_ms: interval,
                assignment,
            },
            gained,
        ))
    }

    fn resolve_leaving(&self, req: &ConsumerHeartbeat) -> Result<String, CoreError> {
        if self.members.contains_key(&req.member_id) {
            return Ok(req.member_id.clone());
        }
        Err(CoreError::UnknownMemberId {
            group: self.id.clone(),
            member: req.member_id.clone(),
        })
    }

    fn join(
        &mut self,
        req: &ConsumerHeartbeat,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Result<(String, bool), CoreError> {
        if req.rebalance_timeout_ms <= 0 {
            return Err(CoreError::InvalidRequest(
                "a joining member must send its rebalance timeout".into(),
            ));
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return Err(CoreError::InvalidRequest(
                "a joining member must send its subscription".into(),
            ));
        }
        let id = if req.member_id.is_empty() {
            let b = crate::ids::random_bytes16();
            crate::ids::base64url(&b)
        } else {
            req.member_id.clone()
        };
        // A static member that comes back takes over its predecessor's partitions.
        let mut inherited: Option<ConsumerMember> = None;
        if let Some(instance) = &req.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != id)
                .map(|m| (m.id.clone(), m.left));
            match holder {
                Some((old, true)) => {
                    inherited = self.members.remove(&old);
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(id.clone(), t);
                    }
                }
                Some((_, false)) => {
                    return Err(CoreError::UnreleasedInstanceId {
                        group: self.id.clone(),
                        instance_id: instance.clone(),
                    })
                }
                None => {}
            }
        }
        let rejoin = self.members.remove(&id).is_some();
        if inherited.is_none() && !rejoin && self.members.len() >= cfg.max_size {
            return Err(CoreError::GroupMaxSizeReached {
                group: self.id.clone(),
                max: cfg.max_size,
            });
        }
        let mut m = ConsumerMember {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            rack_id: req.rack_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            epoch: 0,
            previous_epoch: -1,
            subscribed: BTreeSet::new(),
            regex: None,
            compiled: None,
            assignor: None,
            rebalance_timeout_ms: req.rebalance_timeout_ms.max(0),
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            owned: BTreeSet::new(),
            left: false,
            session_deadline: now + session(cfg),
            revoke_deadline: None,
            last_sent: None,
        };
        if let Some(old) = inherited {
            m.epoch = old.epoch;
            m.previous_epoch = old.previous_epoch;
            m.assigned = old.assigned;
            m.subscribed = old.subscribed;
            m.compiled = old.regex.as_deref().and_then(compile);
            m.regex = old.regex;
            m.assignor = old.assignor;
            self.members.insert(id.clone(), m);
            return Ok((id, false));
        }
        if rejoin {
            self.target.remove(&id);
        }
        self.members.insert(id.clone(), m);
        // The caller applies the subscription and computes the new target.
        Ok((id, true))
    }

    fn check_epoch(&self, req: &ConsumerHeartbeat) -> Result<(), CoreError> {
        let Some(m) = self.members.get(&req.member_id) else {
            return Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: req.member_id.clone(),
            });
        };
        let fenced = || CoreError::FencedMemberEpoch {
            group: self.id.clone(),
            member: req.member_id.clone(),
            epoch: req.member_epoch,
        };
        if req.member_epoch > m.epoch {
            return Err(fenced());
        }
        if req.member_epoch < m.epoch {
            // The member may have missed our last answer: accept its previous epoch
            // if it owns nothing it was not given.
            let subset = req.owned.as_ref().is_some_and(|o| {
                o.iter()
                    .all(|tp| m.assigned.contains(tp) || m.revoking.contains(tp))
            });
            if req.member_epoch != m.previous_epoch || !subset {
                return Err(fenced());
            }
        }
        Ok(())
    }

    fn after_membership_change(&mut self, topics: &BTreeMap<String, i32>) {
        self.retarget(topics);
        if self.members.is_empty() {
            self.empty_since_ms = crate::broker::now_ms();
        }
    }

    /// Moves one member a step towards its target (see the module comment).
    /// Returns whether the member gained partitions (the caller makes that
    /// durable before answering, so a crash cannot hand them out twice).
    fn reconcile(&mut self, id: &str, now: Instant) -> bool {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|o| o.id != id)
            .flat_map(|o| o.assigned.iter().chain(o.revoking.iter()).cloned())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return false;
        };
        let before = (m.epoch, m.assigned.len(), m.revoking.len());
        // A member may own partitions the broker does not know it has (its state
        // was restored from an older image): adopt those that are its own and free,
        // and make it release the rest before anyone else gets them.
        let unknown: Vec<TopicPartition> = m
            .owned
            .iter()
            .filter(|tp| !m.assigned.contains(*tp) && !m.revoking.contains(*tp))
            .cloned()
            .collect();
        for tp in unknown {
            if target.contains(&tp) && !held_by_others.contains(&tp) {
                m.assigned.insert(tp);
            } else {
                m.revoking.insert(tp);
                m.revoke_deadline.get_or_insert(
                    now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                );
            }
        }
        let gained = self.step(id, &target, &held_by_others, assignment_epoch, now);
        if let Some(m) = self.members.get(id) {
            if (m.epoch, m.assigned.len(), m.revoking.len()) != before {
                self.dirty = true;
            }
        }
        gained
    }

    fn step(
        &mut self,
        id: &str,
        target: &BTreeSet<TopicPartition>,
        held_by_others: &BTreeSet<TopicPartition>,
        assignment_epoch: i32,
        now: Instant,
    ) -> bool {
        let Some(m) = self.members.get_mut(id) else {
            return false;
        };
        if !m.revoking.is_empty() {
            if m.owned.iter().any(|tp| m.revoking.contains(tp)) {
                return false;
            }
            m.revoking.clear();
            m.revoke_deadline = None;
        }
        if m.epoch != assignment_epoch {
            let to_revoke: BTreeSet<TopicPartition> =
                m.assigned.difference(target).cloned().collect();
            if !to_revoke.is_empty() {
                m.assigned.retain(|tp| !to_revoke.contains(tp));
                m.revoking = to_revoke;
                m.revoke_deadline =
                    Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
                return false;
            }
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        let mut gained = false;
        for tp in target {
            if !m.assigned.contains(tp) && !held_by_others.contains(tp) {
                m.assigned.insert(tp.clone());
                gained = true;
            }
        }
        gained
    }

    /// Checks an offset commit against the member and its epoch.
    pub fn validate_commit(&self, member_id: &str, epoch: i32) -> Result<(), CoreError> {
        if epoch < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        };
        if epoch != m.epoch {
            return Err(CoreError::StaleMemberEpoch {
                group: self.id.clone(),
                member: member_id.to_string(),
                epoch,
            });
        }
        Ok(())
    }

    /// Removes members whose session ended or that did not give up partitions in
    /// time.
    pub fn tick(&mut self, topics: &BTreeMap<String, i32>, now: Instant) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "consumer member expired; removing it");
            self.members.remove(id);
            self.target.remove(id);
        }
        self.after_membership_change(topics);
    }
}

fn session(cfg: &GroupConfig) -> Duration {
    Duration::from_millis(cfg.consumer_session_timeout_ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ConsumerGroup {
        fn reply(
            &mut self,
            req: ConsumerHeartbeat,
            cfg: &GroupConfig,
            topics: &BTreeMap<String, i32>,
            now: Instant,
        ) -> Result<ConsumerHeartbeatReply, CoreError> {
            self.heartbeat(req, cfg, topics, now).map(|(r, _)| r)
        }
    }

    fn cfg() -> GroupConfig {
        GroupConfig::default()
    }

    fn hb(member: &str, epoch: i32) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 30_000,
            ..Default::default()
        }
    }

    fn join(member: &str, topics: &[&str]) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            subscribed_topic_names: Some(topics.iter().map(|s| s.to_string()).collect()),
            owned: Some(vec![]),
            ..hb(member, 0)
        }
    }

    fn owned(r: &ConsumerHeartbeatReply, prev: &[TopicPartition]) -> Vec<TopicPartition> {
        r.assignment.clone().unwrap_or_else(|| prev.to_vec())
    }

    #[test]
    fn members_converge_without_sharing_a_partition() {
        let topics: BTreeMap<String, i32> = [("t".to_string(), 6)].into();
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.reply(join("a", &["t"]), &cfg(), &topics, now).unwrap();
        let a_owned = owned(&a, &[]);
        assert_eq!(a_owned.len(), 6);
        // b joins: it gets nothing until a has released its share.
        let b = g.reply(join("b", &["t"]), &cfg(), &topics, now).unwrap();
        assert_eq!(b.assignment, Some(vec![]));
        let a2 = g
            .reply(
                ConsumerHeartbeat {
                    owned: None,
                    ..hb("a", a.member_epoch)
                },
                &cfg(),
                &topics,
                now,
            )
            .unwrap();
        let a_kept = owned(&a2, &a_owned);
        assert_eq!(a_kept.len(), 3);
        assert_eq!(
            a2.member_epoch, a.member_epoch,
            "epoch waits for the revocation"
        );
        // a confirms the revocation, moves to the new epoch.
        let a3 = g
            .reply(
                ConsumerHeartbeat {
                    owned: Some(a_kept.clone()),
                    ..hb("a", a2.member_epoch)
                },
                &cfg(),
                &topics,
                now,
            )
            .unwrap();
        assert!(a3.member_epoch > a.member_epoch);
        let b2 = g
            .reply(
                ConsumerHeartbeat {
                    owned: Some(vec![]),
                    ..hb("b", b.member_epoch)
                },
                &cfg(),
                &topics,
                now,
            )
            .unwrap();
        let b_owned = owned(&b2, &[]);
        assert_eq!(b_owned.len(), 3);
        let all: BTreeSet<_> = a_kept.iter().chain(b_owned.iter()).cloned().collect();
        assert_eq!(all.len(), 6);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn wrong_epochs_and_unknown_members_are_fenced() {
        let topics: BTreeMap<String, i32> = [("t".to_string(), 2)].into();
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.reply(join("a", &["t"]), &cfg(), &topics, now).unwrap();
        let err = g
            .reply(hb("a", a.member_epoch + 5), &cfg(), &topics, now)
            .unwrap_err();
        assert!(matches!(err, CoreError::FencedMemberEpoch { .. }));
        let err = g.reply(hb("nobody", 3), &cfg(), &topics, now).unwrap_err();
        assert!(matches!(err, CoreError::UnknownMemberId { .. }));
        let err = g
            .reply(
                ConsumerHeartbeat {
                    server_assignor: Some("magic".into()),
                    ..join("c", &["t"])
                },
                &cfg(),
                &topics,
                now,
            )
            .unwrap_err();
        assert!(matches!(err, CoreError::UnsupportedAssignor(_)));
    }

    #[test]
    fn a_leaving_member_frees_its_partitions() {
        let topics: BTreeMap<String, i32> = [("t".to_string(), 4)].into();
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.reply(join("a", &["t"]), &cfg(), &topics, now).unwrap();
        let b = g.reply(join("b", &["t"]), &cfg(), &topics, now).unwrap();
        let a_kept = owned(
            &g.reply(hb("a", a.member_epoch), &cfg(), &topics, now)
                .unwrap(),
            &[],
        );
        g.reply(
            ConsumerHeartbeat {
                owned: Some(a_kept),
                ..hb("a", a.member_epoch)
            },
            &cfg(),
            &topics,
            now,
        )
        .unwrap();
        g.reply(hb("a", -1), &cfg(), &topics, now).unwrap();
        let b2 = g
            .reply(
                ConsumerHeartbeat {
                    owned: Some(vec![]),
                    ..hb("b", b.member_epoch)
                },
                &cfg(),
                &topics,
                now,
            )
            .unwrap();
        assert_eq!(owned(&b2, &[]).len(), 4);
    }
}
