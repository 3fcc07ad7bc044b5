//! The group coordinator: membership, rebalancing and assignment of consumer
//! groups, for both the classic protocol (clients assign) and the consumer
//! protocol of KIP-848 (the broker assigns).
//!
//! All groups live in one map behind one lock; every operation is a short state
//! transition under it. Requests that must wait (a JoinGroup until the rebalance
//! completes, a follower's SyncGroup until the leader's) get a oneshot channel and
//! are answered by a later transition or by [`GroupCoordinator::tick`], which the
//! broker's maintenance task calls every 100 ms to expire sessions and end
//! rebalances that ran out of time.
//!
//! Durability: group metadata (generation, members, assignments) is written to the
//! internal offsets log whenever a group becomes stable or empty, asynchronously
//! and coalesced per group. It lets members carry on after a broker restart
//! without rejoining; losing the last image in a crash only costs a rebalance.
//! Committed offsets are written synchronously (see [`crate::offsets`]).

pub mod assignor;
mod classic;
mod consumer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

pub use classic::{JoinRequest, Joined, JoinedMember, MemberAssignment, SyncRequest, Synced};
pub use consumer::{ConsumerHeartbeat, ConsumerHeartbeatReply};

use classic::{ClassicGroup, ClassicSnapshot, Outcome};
use consumer::{ConsumerGroup, ConsumerSnapshot};

use crate::error::CoreError;
use crate::offsets::OffsetStore;

/// Coordinator settings; the defaults are Kafka's, except where a bound is needed.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// How long a new group waits for more members before its first rebalance
    /// (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// Allowed range of classic session timeouts.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Most members per group (`group.max.size`).
    pub max_size: usize,
    /// Most groups the coordinator keeps; joins of new groups beyond it fail.
    pub max_groups: usize,
    /// Session timeout of consumer-protocol members (`group.consumer.session.timeout.ms`).
    pub consumer_session_timeout_ms: i32,
    /// Heartbeat interval told to consumer-protocol members.
    pub consumer_heartbeat_interval_ms: i32,
    /// Committed offsets of a group without members expire this long after the
    /// group became empty (and after their commit); -1 keeps them forever
    /// (`offsets.retention.minutes`).
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: 1_000,
            max_groups: 100_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// Where a group is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (committed offsets may remain).
    Empty,
    /// Classic: waiting for members to (re)join.
    PreparingRebalance,
    /// Classic: waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Consumer protocol: members are moving towards a new target assignment.
    Reconciling,
    /// The group does not exist.
    Dead,
}

impl GroupState {
    /// The name Kafka tools show.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Reconciling => "Reconciling",
            GroupState::Dead => "Dead",
        }
    }
}

/// Which protocol a group's members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// JoinGroup/SyncGroup; clients assign.
    Classic,
    /// ConsumerGroupHeartbeat; the broker assigns.
    Consumer,
    /// Only committed offsets (simple consumers, admin tools).
    OffsetsOnly,
}

/// One member, for describe.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Classic: the member's metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Classic: the assignment bytes the leader gave it.
    pub assignment: Vec<u8>,
    /// Its partitions, as far as the broker could read them.
    pub assigned: Vec<(String, i32)>,
    pub subscribed_topics: Vec<String>,
    /// Classic: the generation; consumer protocol: the member epoch.
    pub member_epoch: i32,
}

/// A group, for describe and list.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub kind: GroupKind,
    /// "consumer" for consumer groups; what classic members declared otherwise.
    pub protocol_type: String,
    /// Classic: the chosen protocol (assignor); consumer protocol: empty.
    pub protocol_name: String,
    /// Classic generation or consumer-protocol group epoch.
    pub generation: i32,
    pub members: Vec<MemberDescription>,
}

enum Group {
    Classic(Box<ClassicGroup>),
    Consumer(Box<ConsumerGroup>),
}

impl Group {
    fn is_empty(&self) -> bool {
        match self {
            Group::Classic(g) => g.is_empty(),
            Group::Consumer(g) => g.is_empty(),
        }
    }

    fn take_dirty(&mut self) -> bool {
        let d = match self {
            Group::Classic(g) => &mut g.dirty,
            Group::Consumer(g) => &mut g.dirty,
        };
        std::mem::take(d)
    }

    fn snapshot(&self) -> Snapshot {
        match self {
            Group::Classic(g) => Snapshot::Classic(g.snapshot()),
            Group::Consumer(g) => Snapshot::Consumer(g.snapshot()),
        }
    }

    fn empty_since_ms(&self) -> i64 {
        match self {
            Group::Classic(g) => g.empty_since_ms,
            Group::Consumer(g) => g.empty_since_ms,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Snapshot {
    Classic(ClassicSnapshot),
    Consumer(ConsumerSnapshot),
}

/// Writes group images to the store off the request path, in order, keeping only
/// the newest pending image per group (so memory is bounded by the group count).
struct SnapshotWriter {
    store: Arc<OffsetStore>,
    pending: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    write_lock: Mutex<()>,
    scheduled: AtomicBool,
}

impl SnapshotWriter {
    /// Queues an image without starting a write.
    fn schedule_only(&self, group: &str, image: Vec<u8>) {
        self.pending.lock().insert(group.to_string(), Some(image));
    }

    fn schedule(self: &Arc<Self>, group: &str, image: Option<Vec<u8>>) {
        self.pending.lock().insert(group.to_string(), image);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let writer = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || writer.drain());
                }
                Err(_) => writer.drain(),
            }
        }
    }

    /// Writes everything pending (including what callers scheduled before this
    /// call) off the async threads, and returns once it is on disk.
    async fn flush(self: &Arc<Self>) {
        let writer = self.clone();
        let _ = tokio::task::spawn_blocking(move || writer.drain()).await;
    }

    fn drain(&self) {
        let _order = self.write_lock.lock();
        self.scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *self.pending.lock());
        let now = crate::broker::now_ms();
        for (group, image) in batch {
            if let Err(e) = self.store.put_group_metadata(&group, image.as_deref(), now) {
                tracing::error!(group = %group, error = %e, "could not persist group metadata");
            }
        }
    }
}

/// Longest group id: ids are stored with a 16-bit length, as Kafka's
/// non-flexible string encoding has them.
pub const GROUP_ID_BYTES_MAX: usize = i16::MAX as usize;

/// Fails for an empty or over-long group id.
pub fn check_group_id(group: &str) -> Result<(), CoreError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        let shown: String = group.chars().take(64).collect();
        return Err(CoreError::InvalidGroupId(shown));
    }
    Ok(())
}

/// The coordinator of every group on this broker.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    writer: Arc<SnapshotWriter>,
    closed: AtomicBool,
}

impl GroupCoordinator {
    /// A coordinator that restores the groups persisted in `store`.
    pub(crate) fn open(config: GroupConfig, store: Arc<OffsetStore>) -> Self {
        let now = Instant::now();
        let mut groups = HashMap::new();
        for (name, image) in store.group_metadata() {
            match serde_json::from_slice::<Snapshot>(&image) {
                Ok(Snapshot::Classic(s)) => {
                    groups.insert(
                        name.clone(),
                        Group::Classic(Box::new(ClassicGroup::restore(&name, s, now))),
                    );
                }
                Ok(Snapshot::Consumer(s)) => {
                    groups.insert(
                        name.clone(),
                        Group::Consumer(Box::new(ConsumerGroup::restore(&name, s, &config, now))),
                    );
                }
                Err(e) => {
                    tracing::warn!(group = %name, error = %e, "ignoring unreadable group metadata")
                }
            }
        }
        GroupCoordinator {
            config,
            groups: Mutex::new(groups),
            writer: Arc::new(SnapshotWriter {
                store,
                pending: Mutex::new(BTreeMap::new()),
                write_lock: Mutex::new(()),
                scheduled: AtomicBool::new(false),
            }),
            closed: AtomicBool::new(false),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn persist_if_dirty(&self, name: &str, g: &mut Group) {
        if g.take_dirty() {
            match serde_json::to_vec(&g.snapshot()) {
                Ok(image) => self.writer.schedule(name, Some(image)),
                Err(e) => tracing::error!(group = %name, error = %e, "could not encode group"),
            }
        }
    }

    /// Runs `f` on the classic group `name`, creating it when `create` allows.
    fn with_classic<T>(
        &self,
        name: &str,
        create: bool,
        f: impl FnOnce(&mut ClassicGroup) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let mut groups = self.groups.lock();
        // Checked under the lock: shutdown fails every waiter parked before it.
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::CoordinatorNotAvailable);
        }
        if !groups.contains_key(name) {
            if !create {
                return Err(CoreError::UnknownMemberId {
                    group: name.to_string(),
                    member: String::new(),
                });
            }
            if !self.room_for_group(&groups) {
                return Err(CoreError::CoordinatorNotAvailable);
            }
            groups.insert(
                name.to_string(),
                Group::Classic(Box::new(ClassicGroup::new(name, crate::broker::now_ms()))),
            );
        }
        let Some(g) = groups.get_mut(name) else {
            return Err(CoreError::CoordinatorNotAvailable);
        };
        if let Group::Consumer(c) = g {
            if !c.is_empty() {
                return Err(CoreError::InconsistentGroupProtocol(name.to_string()));
            }
            *g = Group::Classic(Box::new(ClassicGroup::new(name, c.empty_since_ms)));
        }
        let Group::Classic(c) = g else {
            return Err(CoreError::CoordinatorNotAvailable);
        };
        let out = f(c);
        self.persist_if_dirty(name, g);
        out
    }

    /// Whether another group may be created: groups without members (kept for
    /// their offsets) do not count.
    fn room_for_group(&self, groups: &HashMap<String, Group>) -> bool {
        groups.len() < self.config.max_groups
            || groups.values().filter(|g| !g.is_empty()).count() < self.config.max_groups
    }

    /// JoinGroup: resolves when the rebalance this join takes part in completes.
    pub async fn join(&self, req: JoinRequest) -> Result<Joined, CoreError> {
        check_group_id(&req.group_id)?;
        let name = req.group_id.clone();
        let create = req.member_id.is_empty();
        let outcome = self.with_classic(&name, create, |g| {
            Ok(g.join(req, &self.config, Instant::now()))
        })?;
        match outcome {
            Outcome::Now(r) => r,
            Outcome::Wait(rx) => rx.await.unwrap_or(Err(CoreError::CoordinatorNotAvailable)),
        }
    }

    /// SyncGroup: the leader's call stores every assignment; each member's call
    /// resolves with its own once the leader's has arrived.
    pub async fn sync(&self, req: SyncRequest) -> Result<Synced, CoreError> {
        check_group_id(&req.group_id)?;
        let name = req.group_id.clone();
        let outcome = self.with_classic(&name, false, |g| Ok(g.sync(req, Instant::now())))?;
        match outcome {
            Outcome::Now(r) => r,
            Outcome::Wait(rx) => rx.await.unwrap_or(Err(CoreError::CoordinatorNotAvailable)),
        }
    }

    /// Heartbeat of a classic member.
    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), CoreError> {
        check_group_id(group)?;
        self.with_classic(group, false, |g| {
            g.heartbeat(member_id, instance_id, generation, Instant::now())
        })
    }

    /// LeaveGroup: one result per (member id, instance id).
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), CoreError>>, CoreError> {
        check_group_id(group)?;
        self.with_classic(group, false, |g| {
            Ok(g.leave(members, &self.config, Instant::now()))
        })
    }

    /// ConsumerGroupHeartbeat. `topics` maps every topic to its partition count.
    /// A reply that hands out partitions is sent only once the group image that
    /// records it is on disk, so a crash cannot give them to two members.
    pub async fn consumer_heartbeat(
        &self,
        req: ConsumerHeartbeat,
        topics: &BTreeMap<String, i32>,
    ) -> Result<ConsumerHeartbeatReply, CoreError> {
        let (reply, gained) = self.consumer_heartbeat_locked(req, topics)?;
        if gained {
            self.writer.flush().await;
        }
        Ok(reply)
    }

    fn consumer_heartbeat_locked(
        &self,
        req: ConsumerHeartbeat,
        topics: &BTreeMap<String, i32>,
    ) -> Result<(ConsumerHeartbeatReply, bool), CoreError> {
        check_group_id(&req.group_id)?;
        let name = req.group_id.clone();
        let mut groups = self.groups.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::CoordinatorNotAvailable);
        }
        if !groups.contains_key(&name) {
            if req.member_epoch != 0 {
                return Err(CoreError::UnknownMemberId {
                    group: name,
                    member: req.member_id,
                });
            }
            if !self.room_for_group(&groups) {
                return Err(CoreError::CoordinatorNotAvailable);
            }
            groups.insert(
                name.clone(),
                Group::Consumer(Box::new(ConsumerGroup::new(&name, crate::broker::now_ms()))),
            );
        }
        let Some(g) = groups.get_mut(&name) else {
            return Err(CoreError::CoordinatorNotAvailable);
        };
        if let Group::Classic(c) = g {
            if !c.is_empty() {
                return Err(CoreError::InconsistentGroupProtocol(name));
            }
            *g = Group::Consumer(Box::new(ConsumerGroup::new(&name, c.empty_since_ms)));
        }
        let Group::Consumer(c) = g else {
            return Err(CoreError::CoordinatorNotAvailable);
        };
        let out = c.heartbeat(req, &self.config, topics, Instant::now());
        self.persist_if_dirty(&name, g);
        out
    }

    /// Checks that an offset commit comes from a current member (or, with
    /// generation -1 and no member id, that the group has no members).
    pub fn validate_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), CoreError> {
        check_group_id(group)?;
        let mut groups = self.groups.lock();
        match groups.get_mut(group) {
            Some(Group::Classic(g)) => {
                g.validate_commit(member_id, instance_id, generation, Instant::now())
            }
            Some(Group::Consumer(g)) => g.validate_commit(member_id, generation),
            None if generation >= 0 => Err(CoreError::IllegalGeneration {
                group: group.to_string(),
                generation,
            }),
            None if !member_id.is_empty() => Err(CoreError::UnknownMemberId {
                group: group.to_string(),
                member: member_id.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The group as the coordinator knows it (`None` if it has no state here).
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        Some(match groups.get(group)? {
            Group::Classic(g) => GroupDescription {
                group_id: group.to_string(),
                state: g.state,
                kind: GroupKind::Classic,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol_name: g.protocol_name.clone().unwrap_or_default(),
                generation: g.generation,
                members: g.describe_members(),
            },
            Group::Consumer(g) => GroupDescription {
                group_id: group.to_string(),
                state: g.state(),
                kind: GroupKind::Consumer,
                protocol_type: "consumer".to_string(),
                protocol_name: String::new(),
                generation: g.epoch,
                members: g.describe_members(),
            },
        })
    }

    /// Names of the groups with coordinator state.
    pub fn names(&self) -> Vec<String> {
        self.groups.lock().keys().cloned().collect()
    }

    /// Whether a group has members (or members about to join).
    pub fn is_active(&self, group: &str) -> bool {
        self.groups.lock().get(group).is_some_and(|g| !g.is_empty())
    }

    /// Topics the group's members subscribe to.
    pub fn subscribed_topics(
        &self,
        group: &str,
        topics: &BTreeMap<String, i32>,
    ) -> BTreeSet<String> {
        match self.groups.lock().get(group) {
            Some(Group::Classic(g)) => g.subscribed_topics(),
            Some(Group::Consumer(g)) => g.subscribed_topics(topics),
            None => BTreeSet::new(),
        }
    }

    /// When the group last became empty, if it is empty and known here.
    pub fn empty_since_ms(&self, group: &str) -> Option<i64> {
        self.groups
            .lock()
            .get(group)
            .filter(|g| g.is_empty())
            .map(Group::empty_since_ms)
    }

    /// Forgets a group without members; fails with NonEmptyGroup otherwise.
    pub fn remove_if_empty(&self, group: &str) -> Result<bool, CoreError> {
        let mut groups = self.groups.lock();
        match groups.get(group) {
            Some(g) if !g.is_empty() => Err(CoreError::NonEmptyGroup(group.to_string())),
            Some(_) => {
                groups.remove(group);
                self.writer.schedule(group, None);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Fails with NonEmptyGroup while the group has members.
    pub fn check_empty(&self, group: &str) -> Result<(), CoreError> {
        if self.is_active(group) {
            return Err(CoreError::NonEmptyGroup(group.to_string()));
        }
        Ok(())
    }

    /// Expires sessions and ends overdue rebalances; forgets empty groups for
    /// which `keep` says there is nothing to remember (no committed offsets).
    pub fn tick(&self, topics: &BTreeMap<String, i32>, keep: impl Fn(&str) -> bool) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let mut forget = Vec::new();
        for (name, g) in groups.iter_mut() {
            match g {
                Group::Classic(c) => c.tick(&self.config, now),
                Group::Consumer(c) => c.tick(topics, now),
            }
            self.persist_if_dirty(name, g);
            if g.is_empty() && !keep(name) {
                forget.push(name.clone());
            }
        }
        for name in forget {
            groups.remove(&name);
            self.writer.schedule(&name, None);
        }
    }

    /// Refuses new requests, fails the waiting ones and writes pending group
    /// images; for shutdown.
    pub fn shutdown(&self) {
        let mut groups = self.groups.lock();
        self.closed.store(true, Ordering::Release);
        for (name, g) in groups.iter_mut() {
            if let Group::Classic(c) = g {
                c.abort_waiters();
            }
            // The newest state of every group, not only what was queued.
            if !g.is_empty() {
                if let Ok(image) = serde_json::to_vec(&g.snapshot()) {
                    self.writer.schedule_only(name, image);
                }
            }
        }
        drop(groups);
        self.writer.drain();
    }
}
