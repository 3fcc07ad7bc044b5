//! The classic group protocol: JoinGroup, SyncGroup, Heartbeat and LeaveGroup.
//!
//! A group moves Empty → PreparingRebalance → CompletingRebalance → Stable and
//! back to PreparingRebalance whenever membership or subscriptions change. Every
//! completed join starts a new generation; requests carrying another generation
//! or an unknown member id are refused, which fences members that missed a
//! rebalance. The clients run the assignment (range, roundrobin,
//! cooperative-sticky): the leader receives every member's metadata and sends back
//! all assignments in its SyncGroup. Waiting requests (a join until the rebalance
//! completes, a follower's sync until the leader's arrives) are parked as oneshot
//! senders and answered when the state machine gets there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{GroupConfig, GroupState, MemberDescription};
use crate::error::CoreError;

/// A JoinGroup request in the core's terms.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Topics the member subscribes to, when the front end could read them from
    /// the metadata (consumer protocol); used for describe and OffsetDelete.
    pub subscribed_topics: Vec<String>,
    /// Join without a member id must first obtain one (JoinGroup v4+).
    pub require_known_member_id: bool,
    /// A static leader that rejoins may skip the assignment (JoinGroup v9+).
    pub supports_skip_assignment: bool,
}

/// One member as the leader sees it in the join response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A successful join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, for the leader only.
    pub members: Vec<JoinedMember>,
}

/// The leader's assignment for one member: (member id, assignment bytes, the
/// partitions the front end read from them).
pub type MemberAssignment = (String, Bytes, Vec<(String, i32)>);

/// A SyncGroup request in the core's terms.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignments.
    pub assignments: Vec<MemberAssignment>,
}

/// A successful sync: the member's assignment.
#[derive(Debug, Clone)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol_name: String,
    pub assignment: Bytes,
}

pub(crate) type JoinResult = Result<Joined, CoreError>;
pub(crate) type SyncResult = Result<Synced, CoreError>;

/// Either an answer now or one to wait for.
pub(crate) enum Outcome<T> {
    Now(Result<T, CoreError>),
    Wait(oneshot::Receiver<Result<T, CoreError>>),
}

#[derive(Debug)]
pub(crate) struct ClassicMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub subscribed_topics: Vec<String>,
    pub assignment: Bytes,
    pub assigned: Vec<(String, i32)>,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    session_deadline: Instant,
    /// Order of joining; the longest-standing member becomes leader.
    joined_seq: u64,
}

impl ClassicMember {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A persisted image of a stable or empty group, restored at start-up.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ClassicSnapshot {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub empty_since_ms: i64,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub subscribed_topics: Vec<String>,
    pub assignment: Vec<u8>,
    pub assigned: Vec<(String, i32)>,
}

/// A classic group.
#[derive(Debug)]
pub(crate) struct ClassicGroup {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, ClassicMember>,
    static_members: HashMap<String, String>,
    /// Members told MEMBER_ID_REQUIRED, until they rejoin or their session ends.
    pending: HashMap<String, Instant>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    initial_delay: Option<(Instant, Instant)>,
    rebalance_deadline: Option<Instant>,
    sync_deadline: Option<Instant>,
    next_seq: u64,
    /// Wall-clock time the group last became empty (for offset retention).
    pub empty_since_ms: i64,
    /// Set when the group reached a state worth persisting.
    pub dirty: bool,
}

fn new_member_id(client_id: &str) -> String {
    let b = crate::ids::random_bytes16();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let prefix = if client_id.is_empty() {
        "member"
    } else {
        client_id
    };
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn ms(d: i32) -> Duration {
    Duration::from_millis(d.max(0) as u64)
}

impl ClassicGroup {
    pub fn new(id: &str, now_ms: i64) -> Self {
        ClassicGroup {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            pending_sync: BTreeSet::new(),
            initial_delay: None,
            rebalance_deadline: None,
            sync_deadline: None,
            next_seq: 0,
            empty_since_ms: now_ms,
            dirty: false,
        }
    }

    /// Restores a persisted group; members keep their assignments and get a fresh
    /// session to prove they are alive.
    pub fn restore(id: &str, snap: ClassicSnapshot, now: Instant) -> Self {
        let mut g = ClassicGroup::new(id, snap.empty_since_ms);
        g.generation = snap.generation;
        g.protocol_type = snap.protocol_type;
        g.protocol_name = snap.protocol_name;
        g.leader = snap.leader;
        for m in snap.members {
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.id.clone());
            }
            g.next_seq += 1;
            let session_timeout = Duration::from_millis(m.session_timeout_ms);
            g.members.insert(
                m.id.clone(),
                ClassicMember {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|(n, b)| (n, Bytes::from(b)))
                        .collect(),
                    subscribed_topics: m.subscribed_topics,
                    assignment: Bytes::from(m.assignment),
                    assigned: m.assigned,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline: now + session_timeout,
                    joined_seq: g.next_seq,
                },
            );
        }
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        if g.leader
            .as_ref()
            .is_some_and(|l| !g.members.contains_key(l))
        {
            g.leader = g.members.keys().next().cloned();
        }
        g
    }

    pub fn snapshot(&self) -> ClassicSnapshot {
        ClassicSnapshot {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            empty_since_ms: self.empty_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    subscribed_topics: m.subscribed_topics.clone(),
                    assignment: m.assignment.to_vec(),
                    assigned: m.assigned.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Topics any member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed_topics.iter().cloned())
            .collect()
    }

    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol).to_vec(),
                assignment: m.assignment.to_vec(),
                assigned: m.assigned.clone(),
                subscribed_topics: m.subscribed_topics.clone(),
                member_epoch: self.generation,
            })
            .collect()
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            for (n, _) in &m.protocols {
                *counts.entry(n.as_str()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .filter(|(_, c)| *c == self.members.len())
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// The protocol all members support that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.clone()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(n, v)| (*v, std::cmp::Reverse(n.clone())))
            .map(|(n, _)| n)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    pub fn join(&mut self, req: JoinRequest, cfg: &GroupConfig, now: Instant) -> Outcome<Joined> {
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Outcome::Now(Err(CoreError::InvalidSessionTimeout {
                timeout_ms: req.session_timeout_ms,
                min_ms: cfg.min_session_timeout_ms,
                max_ms: cfg.max_session_timeout_ms,
            }));
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return Outcome::Now(Err(CoreError::InconsistentGroupProtocol(self.id.clone())));
        }
        if req.member_id.is_empty() {
            self.join_new(req, cfg, now)
        } else {
            self.join_known(req, cfg, now)
        }
    }

    fn join_new(&mut self, req: JoinRequest, cfg: &GroupConfig, now: Instant) -> Outcome<Joined> {
        let new_id = new_member_id(&req.client_id);
        if let Some(instance) = &req.group_instance_id {
            if let Some(old_id) = self.static_members.get(instance).cloned() {
                return self.replace_static_member(&old_id, new_id, req, cfg, now);
            }
        }
        if self.members.len() + self.pending.len() >= cfg.max_size {
            return Outcome::Now(Err(CoreError::GroupMaxSizeReached {
                group: self.id.clone(),
                max: cfg.max_size,
            }));
        }
        if req.group_instance_id.is_none() && req.require_known_member_id {
            // KIP-394: hand out the id first, so a client that times out before the
            // response arrives does not leave an orphan member behind.
            self.pending
                .insert(new_id.clone(), now + ms(req.session_timeout_ms));
            return Outcome::Now(Err(CoreError::MemberIdRequired(new_id)));
        }
        self.add_member(new_id, req, cfg, now)
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<Joined> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), id.clone());
        }
        self.next_seq += 1;
        self.members.insert(
            id.clone(),
            ClassicMember {
                id: id.clone(),
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: ms(req.session_timeout_ms),
                rebalance_timeout: ms(req.rebalance_timeout_ms),
                protocols: req.protocols,
                subscribed_topics: req.subscribed_topics,
                assignment: Bytes::new(),
                assigned: Vec::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                session_deadline: now + ms(req.session_timeout_ms),
                joined_seq: self.next_seq,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some((deadline, max)) = &mut self.initial_delay {
                    *deadline =
                        (now + Duration::from_millis(cfg.initial_rebalance_delay_ms)).min(*max);
                }
            }
            _ => self.prepare_rebalance(cfg, now),
        }
        self.maybe_complete_join(now);
        Outcome::Wait(rx)
    }

    fn update_member(
        &mut self,
        id: &str,
        req: JoinRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(id) {
            if let Some(old) = m.join_waiter.take() {
                // A member re-sent its join: the earlier request gets the rebalance
                // error rather than hanging.
                let _ = old.send(Err(CoreError::RebalanceInProgress(self.id.clone())));
            }
            m.protocols = req.protocols;
            m.subscribed_topics = req.subscribed_topics;
            m.session_timeout = ms(req.session_timeout_ms);
            m.rebalance_timeout = ms(req.rebalance_timeout_ms);
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.session_deadline = now + m.session_timeout;
            m.join_waiter = Some(tx);
        }
        rx
    }

    fn join_known(&mut self, req: JoinRequest, cfg: &GroupConfig, now: Instant) -> Outcome<Joined> {
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member(id, req, cfg, now);
        }
        if let Err(e) = self.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Outcome::Now(Err(e));
        }
        let id = req.member_id.clone();
        let same_protocols = self
            .members
            .get(&id)
            .is_some_and(|m| m.protocols == req.protocols);
        match self.state {
            GroupState::PreparingRebalance => {
                let rx = self.update_member(&id, req, now);
                self.maybe_complete_join(now);
                Outcome::Wait(rx)
            }
            GroupState::CompletingRebalance if same_protocols => {
                // The member lost our join response; answer it again.
                Outcome::Now(Ok(self.joined_for(&id, false)))
            }
            GroupState::Stable if same_protocols && self.leader.as_deref() != Some(&id) => {
                Outcome::Now(Ok(self.joined_for(&id, false)))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let rx = self.update_member(&id, req, now);
                self.prepare_rebalance(cfg, now);
                self.maybe_complete_join(now);
                Outcome::Wait(rx)
            }
            _ => Outcome::Now(Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: id,
            })),
        }
    }

    /// A static member came back with a new member id: it takes over the old
    /// member's place and assignment without a rebalance (KIP-345).
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Outcome<Joined> {
        let Some(mut m) = self.members.remove(old_id) else {
            return self.add_member(new_id, req, cfg, now);
        };
        let fenced = || CoreError::FencedInstanceId {
            group: self.id.clone(),
            instance_id: req.group_instance_id.clone().unwrap_or_default(),
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(Err(fenced()));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(fenced()));
        }
        let was_leader = self.leader.as_deref() == Some(old_id);
        m.id = new_id.clone();
        m.session_deadline = now + ms(req.session_timeout_ms);
        m.session_timeout = ms(req.session_timeout_ms);
        m.rebalance_timeout = ms(req.rebalance_timeout_ms);
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        // Metadata differs on every restart (owned partitions, generation); what
        // matters, as in Kafka, is whether the group would pick another protocol.
        m.protocols = req.protocols.clone();
        m.subscribed_topics = req.subscribed_topics.clone();
        self.members.insert(new_id.clone(), m);
        let same_protocols = self.select_protocol() == self.protocol_name;
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), new_id.clone());
        }
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            GroupState::Stable if same_protocols => {
                self.dirty = true;
                let mut joined = self.joined_for(&new_id, false);
                if was_leader {
                    if req.supports_skip_assignment {
                        joined = self.joined_for(&new_id, true);
                        joined.skip_assignment = true;
                    } else {
                        // An older leader must not think it leads and reassign a
                        // stable group; it is shown the old leader id instead.
                        joined.leader = old_id.to_string();
                    }
                }
                Outcome::Now(Ok(joined))
            }
            GroupState::PreparingRebalance => {
                let rx = self.update_member(&new_id, req, now);
                self.maybe_complete_join(now);
                Outcome::Wait(rx)
            }
            _ => {
                let rx = self.update_member(&new_id, req, now);
                self.prepare_rebalance(cfg, now);
                self.maybe_complete_join(now);
                Outcome::Wait(rx)
            }
        }
    }

    /// The join response of the current generation for `id`.
    fn joined_for(&self, id: &str, with_members: bool) -> Joined {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(id);
        let members = if is_leader || with_members {
            let mut ms: Vec<&ClassicMember> = self.members.values().collect();
            ms.sort_by_key(|m| m.joined_seq);
            ms.iter()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: id.to_string(),
            members,
        }
    }

    /// Fails if `member_id` is not a member or its instance id now belongs to
    /// another member.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), CoreError> {
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(holder) if holder != member_id => {
                    return Err(CoreError::FencedInstanceId {
                        group: self.id.clone(),
                        instance_id: i.to_string(),
                    })
                }
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        }
        Ok(())
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                m.assigned.clear();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(CoreError::RebalanceInProgress(self.id.clone())));
                }
            }
            self.pending_sync.clear();
            self.sync_deadline = None;
        }
        if self.state == GroupState::Empty && cfg.initial_rebalance_delay_ms > 0 {
            let delay = Duration::from_millis(cfg.initial_rebalance_delay_ms);
            let max = now + self.max_rebalance_timeout().max(delay);
            self.initial_delay = Some(((now + delay).min(max), max));
        } else {
            self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped and a new
    /// generation starts.
    fn complete_join(&mut self, now: Instant) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in absent {
            self.drop_member(&id);
        }
        self.initial_delay = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            self.empty_since_ms = crate::broker::now_ms();
            self.dirty = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.longest_standing_member();
        }
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined_for(&id, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.session_deadline = now + m.session_timeout;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(Ok(joined));
                }
            }
        }
    }

    /// Removes a member, failing whatever it waits for.
    fn drop_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            let gone = || CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: id.to_string(),
            };
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err(gone()));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(gone()));
            }
            if let Some(i) = &m.instance_id {
                if self.static_members.get(i).map(String::as_str) == Some(id) {
                    self.static_members.remove(i);
                }
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.longest_standing_member();
        }
    }

    /// The member that joined first: the leader when the old one is gone.
    fn longest_standing_member(&self) -> Option<String> {
        self.members
            .values()
            .min_by_key(|m| m.joined_seq)
            .map(|m| m.id.clone())
    }

    /// After members left: rebalance the rest, or finish a join that waited for them.
    fn after_removal(&mut self, cfg: &GroupConfig, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            _ => {}
        }
    }

    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> Outcome<Synced> {
        if let Err(e) = self.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Outcome::Now(Err(e));
        }
        if req.generation_id != self.generation {
            return Outcome::Now(Err(CoreError::IllegalGeneration {
                group: self.id.clone(),
                generation: req.generation_id,
            }));
        }
        let type_differs = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_differs || name_differs {
            return Outcome::Now(Err(CoreError::InconsistentGroupProtocol(self.id.clone())));
        }
        let synced = |g: &ClassicGroup, id: &str| Synced {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: g.protocol_name.clone().unwrap_or_default(),
            assignment: g
                .members
                .get(id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        };
        match self.state {
            GroupState::PreparingRebalance => {
                Outcome::Now(Err(CoreError::RebalanceInProgress(self.id.clone())))
            }
            GroupState::Stable => {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.session_deadline = now + m.session_timeout;
                }
                Outcome::Now(Ok(synced(self, &req.member_id)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.pending_sync.remove(&req.member_id);
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.session_deadline = now + m.session_timeout;
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(Err(CoreError::RebalanceInProgress(self.id.clone())));
                    }
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    for m in self.members.values_mut() {
                        m.assignment = Bytes::new();
                        m.assigned.clear();
                    }
                    for (id, bytes, partitions) in req.assignments {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = bytes;
                            m.assigned = partitions;
                        }
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    self.dirty = true;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let answer = synced(self, &id);
                        if let Some(w) =
                            self.members.get_mut(&id).and_then(|m| m.sync_waiter.take())
                        {
                            let _ = w.send(Ok(answer));
                        }
                    }
                }
                Outcome::Wait(rx)
            }
            _ => Outcome::Now(Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: req.member_id,
            })),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), CoreError> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(CoreError::IllegalGeneration {
                group: self.id.clone(),
                generation,
            });
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline = now + m.session_timeout;
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(CoreError::RebalanceInProgress(self.id.clone()));
        }
        Ok(())
    }

    /// Removes the members named by (member id, instance id); one result each.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        cfg: &GroupConfig,
        now: Instant,
    ) -> Vec<Result<(), CoreError>> {
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(i) => match self.static_members.get(i) {
                    Some(holder) if !member_id.is_empty() && holder != member_id => {
                        Err(CoreError::FencedInstanceId {
                            group: self.id.clone(),
                            instance_id: i.clone(),
                        })
                    }
                    Some(holder) => Ok(holder.clone()),
                    None => Err(CoreError::UnknownMemberId {
                        group: self.id.clone(),
                        member: member_id.clone(),
                    }),
                },
                None if self.pending.remove(member_id).is_some() => {
                    results.push(Ok(()));
                    removed = true;
                    continue;
                }
                None if self.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(CoreError::UnknownMemberId {
                    group: self.id.clone(),
                    member: member_id.clone(),
                }),
            };
            match target {
                Ok(id) => {
                    self.drop_member(&id);
                    removed = true;
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if removed {
            self.after_removal(cfg, now);
        }
        results
    }

    /// Checks an offset commit against membership and generation.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), CoreError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(()); // an admin or a simple consumer, while nobody is a member
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(CoreError::IllegalGeneration {
                    group: self.id.clone(),
                    generation,
                });
            }
        } else {
            return Err(CoreError::UnknownMemberId {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(CoreError::RebalanceInProgress(self.id.clone()));
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline = now + m.session_timeout;
        }
        Ok(())
    }

    /// Advances timers: expired sessions, joins and syncs.
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let mut changed = self.pending.len() != before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && m.sync_waiter.is_none() && m.session_deadline <= now
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "session expired; removing member");
            self.drop_member(id);
        }
        if !expired.is_empty() {
            self.after_removal(cfg, now);
            changed = false;
        }
        if changed {
            self.maybe_complete_join(now);
        }
        if self.state == GroupState::PreparingRebalance {
            if let Some((deadline, max)) = self.initial_delay {
                if now >= deadline {
                    self.initial_delay = None;
                    self.rebalance_deadline = Some(max);
                    self.maybe_complete_join(now);
                }
            } else if self.rebalance_deadline.is_some_and(|d| now >= d) {
                self.complete_join(now);
            }
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            let missing: Vec<String> = self.pending_sync.iter().cloned().collect();
            for id in &missing {
                tracing::info!(group = %self.id, member = %id, "no SyncGroup in time; removing member");
                self.drop_member(id);
            }
            self.after_removal(cfg, now);
        }
    }

    /// Fails every waiting request; used at shutdown.
    pub fn abort_waiters(&mut self) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err(CoreError::CoordinatorNotAvailable));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(CoreError::CoordinatorNotAvailable));
            }
        }
    }
}
