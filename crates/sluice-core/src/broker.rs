//! The broker: the one handle every front end talks to.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sluice_cluster::{NodeId, PartitionReplica};
use sluice_storage::{
    BatchError, BatchHeader, Durability, FileSlice, FlushPolicy, LogConfig, ReadOutcome,
    StorageError, VerifiedBatches,
};
use tokio::sync::watch;

use crate::error::CoreError;
use crate::groups::{
    ConsumerHeartbeat, ConsumerHeartbeatReply, GroupConfig, GroupCoordinator, GroupDescription,
    GroupKind, GroupState,
};
use crate::ids::{random_bytes16, write_atomically, ProducerIdAllocator};
use crate::names::validate_topic_name;
use crate::offsets::{CommittedOffset, OffsetStore};
use crate::producer_state::SequenceCheck;
use crate::topic::{hex, unhex, Partition, SyncState, Topic, TopicManifest};
use crate::topic_config::{ConfigEntry, TopicConfig, TopicDefaults};

/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Broker-wide settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Root of all data.
    pub data_dir: PathBuf,
    /// This broker's id.
    pub node_id: i32,
    /// Create unknown topics when a client produces to them or asks for them.
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics without a count.
    pub default_partitions: i32,
    /// Log settings topics inherit unless they override them.
    pub log_defaults: LogConfig,
    /// How often retention runs.
    pub retention_check_ms: u64,
    /// Group coordinator settings.
    pub groups: GroupConfig,
}

impl BrokerConfig {
    /// Defaults for a broker with data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        BrokerConfig {
            data_dir,
            node_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            log_defaults: LogConfig::default(),
            retention_check_ms: 300_000,
            groups: GroupConfig::default(),
        }
    }
}

/// A partition as clients see it in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
}

/// A topic as clients see it in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
}

/// A successful produce to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the first record (of the original append, for a duplicate).
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// Whether the records were fsynced before this returned.
    pub durability: Durability,
    /// The batch had been stored before (an idempotent producer's retry).
    pub duplicate: bool,
}

/// Records verified by [`Broker::check_produce`], not yet stored.
pub struct CheckedProduce<'a> {
    part: Arc<Partition>,
    flush: FlushPolicy,
    verified: VerifiedBatches<'a>,
    delivery_time: bool,
}

impl CheckedProduce<'_> {
    /// Whether a record carries a delivery-time header (`sluice-deliver-at` or
    /// `sluice-delay-level`), so the records must go through the delay
    /// scheduler instead of straight into the log.
    pub fn has_delivery_time(&self) -> bool {
        self.delivery_time
    }
}

/// What [`Broker::divert_checked`] decided.
pub enum Diverted {
    /// New batches, counted as taken; store them elsewhere, or undo.
    Taken(DivertedBatches),
    /// An idempotent producer's retry of batches taken before.
    Duplicate { base_offset: i64 },
}

/// Batches counted as taken by their idempotent producer but stored elsewhere.
pub struct DivertedBatches {
    part: Arc<Partition>,
    headers: Vec<BatchHeader>,
}

impl DivertedBatches {
    /// Undoes the count after the records could not be stored, so that the
    /// producer's retry is taken as new rather than as a duplicate.
    pub fn undo(self) {
        let mut producers = self.part.producers.lock();
        for header in &self.headers {
            producers.forget(header);
        }
    }
}

/// Records appended by [`Broker::produce_append`], not yet acknowledged.
#[must_use = "the records are acknowledged only after `sync().wait()`"]
pub struct AppendedProduce {
    part: Arc<Partition>,
    produced: Produced,
    /// The append number that must be on disk first (`always` topics only).
    fsync_through: Option<u64>,
}

impl AppendedProduce {
    /// Makes sure the partition's flusher will sync this append (under `always`)
    /// and returns the handle to wait on. Under the other policies the records are
    /// visible, and waiting fetchers woken, right away; under `always` the flusher
    /// does both once the fsync is done, even if nobody waits for the handle.
    pub fn sync(self) -> ProduceSync {
        match self.fsync_through {
            Some(_) => start_flusher(&self.part),
            None if !self.produced.duplicate => {
                self.part
                    .end_tx
                    .send_replace(self.part.replica.high_watermark());
            }
            None => {}
        }
        ProduceSync {
            part: self.part,
            produced: self.produced,
            fsync_through: self.fsync_through,
        }
    }
}

/// Runs the partition's flusher on the blocking pool unless it already runs. It
/// syncs everything written, publishes the result, and goes round again while
/// appends arrived meanwhile, so one task serves every waiting produce.
fn start_flusher(part: &Arc<Partition>) {
    if part.syncer.running.swap(true, Ordering::SeqCst) {
        // The running flusher checks for newer appends before it stops.
        return;
    }
    let part = part.clone();
    tokio::task::spawn_blocking(move || loop {
        let log = part.replica.log();
        match log.flush(now_ms()) {
            Ok(()) => {
                part.syncer
                    .state
                    .send_replace(SyncState::Synced(log.durable_seq()));
                part.end_tx.send_replace(part.replica.high_watermark());
            }
            Err(e) => {
                part.syncer
                    .state
                    .send_replace(SyncState::Failed(e.to_string()));
                part.syncer.running.store(false, Ordering::SeqCst);
                return;
            }
        }
        part.syncer.running.store(false, Ordering::SeqCst);
        let behind = log.written_seq() > log.durable_seq();
        if !behind || part.syncer.running.swap(true, Ordering::SeqCst) {
            return;
        }
    });
}

/// An append waiting for its fsync (if its topic's policy asks for one).
#[must_use = "the records are acknowledged only after `wait`"]
pub struct ProduceSync {
    part: Arc<Partition>,
    produced: Produced,
    fsync_through: Option<u64>,
}

impl ProduceSync {
    /// Waits for the fsync; the returned [`Produced`] says how durable the records
    /// are.
    pub async fn wait(self) -> Result<Produced, CoreError> {
        let mut produced = self.produced;
        let Some(seq) = self.fsync_through else {
            return Ok(produced);
        };
        let mut state = self.part.syncer.state.subscribe();
        let done = state
            .wait_for(|s| match s {
                SyncState::Synced(synced) => *synced >= seq,
                SyncState::Failed(_) => true,
            })
            .await
            .map(|s| s.clone());
        let dir = self.part.replica.log().dir();
        match done {
            Ok(SyncState::Synced(_)) => {
                produced.durability = Durability::Fsynced;
                Ok(produced)
            }
            Ok(SyncState::Failed(e)) => Err(io_err(dir, std::io::Error::other(e))),
            Err(_) => Err(io_err(dir, std::io::Error::other("partition closed"))),
        }
    }
}

/// Data read from one partition.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    /// Offset below which records are visible.
    pub high_watermark: i64,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Whole stored batches, starting with the one that holds the requested offset.
    pub records: Option<FileSlice>,
}

/// A group's progress on one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// -1 when the partition no longer exists.
    pub log_end_offset: i64,
    pub lag: i64,
    pub metadata: String,
}

/// Size and offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
}

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// First record with timestamp >= this (ms).
    Timestamp(i64),
    /// The record with the largest timestamp.
    MaxTimestamp,
}

/// A topic config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// Waits for appends to a set of partitions.
pub struct AppendWatch {
    receivers: Vec<watch::Receiver<i64>>,
}

impl AppendWatch {
    /// Completes when any watched partition got new data (or disappeared) since the
    /// watch was made or last completed. Never completes for an empty watch.
    pub async fn changed(&mut self) {
        if self.receivers.is_empty() {
            return std::future::pending().await;
        }
        let closed = {
            type Changed<'a> =
                Pin<Box<dyn Future<Output = Result<(), watch::error::RecvError>> + Send + 'a>>;
            let mut waits: Vec<Changed<'_>> = self
                .receivers
                .iter_mut()
                .map(|rx| Box::pin(rx.changed()) as Changed<'_>)
                .collect();
            std::future::poll_fn(|cx| {
                for w in waits.iter_mut() {
                    if let Poll::Ready(result) = w.as_mut().poll(cx) {
                        return Poll::Ready(result.is_err());
                    }
                }
                Poll::Pending
            })
            .await
        };
        if closed {
            // The partition is gone: report it once, then stop watching it, or
            // every later wait would return at once.
            self.receivers.retain(|rx| rx.has_changed().is_ok());
        }
    }
}

struct Inner {
    config: BrokerConfig,
    defaults: TopicDefaults,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and partition changes (file work).
    admin: Mutex<()>,
    producer_ids: Mutex<ProducerIdAllocator>,
    offsets: Arc<OffsetStore>,
    groups: GroupCoordinator,
}

/// The broker. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io_err(path: &std::path::Path, source: std::io::Error) -> CoreError {
    CoreError::Storage(StorageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &std::path::Path) -> Result<(), CoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BrokerMeta {
    cluster_id: String,
}

impl Broker {
    /// Opens the data directory, recovering every topic found in it.
    pub fn open(config: BrokerConfig) -> Result<Broker, CoreError> {
        let topics_dir = config.data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|e| io_err(&topics_dir, e))?;
        let meta_path = config.data_dir.join("meta.json");
        let cluster_id = match std::fs::read(&meta_path) {
            Ok(bytes) => {
                serde_json::from_slice::<BrokerMeta>(&bytes)
                    .map_err(|e| io_err(&meta_path, std::io::Error::other(e)))?
                    .cluster_id
            }
            Err(_) => {
                let meta = BrokerMeta {
                    cluster_id: crate::ids::base64url(&random_bytes16()),
                };
                let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
                write_atomically(&meta_path, &json)?;
                meta.cluster_id
            }
        };
        let trash = config.data_dir.join("trash");
        if trash.exists() {
            std::fs::remove_dir_all(&trash).map_err(|e| io_err(&trash, e))?;
        }
        let producer_ids = ProducerIdAllocator::open(config.data_dir.join("producer_ids"))?;
        let offsets = Arc::new(OffsetStore::open(&config.data_dir, now_ms())?);
        let groups = GroupCoordinator::open(config.groups.clone(), offsets.clone());
        let defaults = TopicDefaults {
            log: config.log_defaults.clone(),
        };
        let broker = Broker {
            inner: Arc::new(Inner {
                defaults,
                cluster_id,
                topics: RwLock::new(BTreeMap::new()),
                admin: Mutex::new(()),
                producer_ids: Mutex::new(producer_ids),
                offsets,
                groups,
                config,
            }),
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(|e| io_err(&topics_dir, e))? {
            let entry = entry.map_err(|e| io_err(&topics_dir, e))?;
            if entry.path().join("topic.json").exists() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        let now = now_ms();
        for name in names {
            let topic = broker.load_topic(&name, now)?;
            broker.inner.topics.write().insert(name, Arc::new(topic));
        }
        tracing::info!(
            topics = broker.inner.topics.read().len(),
            cluster_id = %broker.inner.cluster_id,
            "broker state recovered"
        );
        Ok(broker)
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.inner.config.data_dir.join("topics").join(name)
    }

    fn load_topic(&self, name: &str, now: i64) -> Result<Topic, CoreError> {
        let dir = self.topic_dir(name);
        let path = dir.join("topic.json");
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let manifest: TopicManifest =
            serde_json::from_slice(&bytes).map_err(|e| io_err(&path, std::io::Error::other(e)))?;
        let id = unhex(&manifest.id).unwrap_or_else(random_bytes16);
        let log_config = manifest.config.log_config(&self.inner.defaults);
        let mut partitions = Vec::new();
        for p in 0..manifest.partitions {
            partitions.push(Arc::new(self.open_partition(
                &dir,
                p,
                log_config.clone(),
                now,
            )?));
        }
        Ok(Topic {
            name: name.to_string(),
            id,
            dir,
            config: RwLock::new(manifest.config),
            partitions: RwLock::new(partitions),
        })
    }

    fn open_partition(
        &self,
        topic_dir: &std::path::Path,
        index: i32,
        config: LogConfig,
        now: i64,
    ) -> Result<Partition, CoreError> {
        let dir = topic_dir.join(index.to_string());
        let mut producers = crate::producer_state::ProducerStates::default();
        let (replica, recovery) = PartitionReplica::open(
            NodeId(self.inner.config.node_id),
            &dir,
            config,
            now,
            &mut |header| producers.record(header),
        )?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                truncated_bytes = recovery.truncated_bytes,
                "recovered partition with a torn tail"
            );
        }
        let partition = Partition::new(index, replica);
        *partition.producers.lock() = producers;
        Ok(partition)
    }

    fn persist(&self, topic: &Topic) -> Result<(), CoreError> {
        let json = serde_json::to_vec_pretty(&topic.manifest()).unwrap_or_default();
        write_atomically(&topic.dir.join("topic.json"), &json)
    }

    /// The cluster's id (stable across restarts).
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.inner.config.node_id
    }

    /// Broker settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    fn info(topic: &Topic) -> TopicInfo {
        TopicInfo {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic
                .partitions
                .read()
                .iter()
                .map(|p| PartitionInfo {
                    index: p.index,
                    leader: p.replica.leader().0,
                    replicas: p.replica.replicas().iter().map(|n| n.0).collect(),
                    in_sync_replicas: p.replica.in_sync_replicas().iter().map(|n| n.0).collect(),
                })
                .collect(),
        }
    }

    /// All topics, by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        self.inner
            .topics
            .read()
            .values()
            .map(|t| Self::info(t))
            .collect()
    }

    /// One topic, if it exists.
    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.inner.topics.read().get(name).map(|t| Self::info(t))
    }

    /// Finds a topic by id.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<TopicInfo> {
        self.inner
            .topics
            .read()
            .values()
            .find(|t| &t.id == id)
            .map(|t| Self::info(t))
    }

    fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.read().get(name).cloned()
    }

    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION for a topic-level request.
    fn existing_topic(&self, name: &str) -> Result<Arc<Topic>, CoreError> {
        self.get_topic(name)
            .ok_or_else(|| CoreError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            })
    }

    fn get_partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, CoreError> {
        self.get_topic(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| CoreError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Creates a topic. `partitions`/`replication_factor` of -1 mean the defaults.
    /// With `validate_only` nothing changes.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<TopicInfo, CoreError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.inner.config.default_partitions
        } else {
            partitions
        };
        if partitions <= 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(CoreError::InvalidPartitions(format!(
                "{partitions}: must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(CoreError::InvalidReplicationFactor(format!(
                "{replication_factor}: this cluster has 1 broker"
            )));
        }
        let _admin = self.inner.admin.lock();
        if self.inner.topics.read().contains_key(name) {
            return Err(CoreError::TopicAlreadyExists(name.to_string()));
        }
        let id = random_bytes16();
        if validate_only {
            return Ok(TopicInfo {
                name: name.to_string(),
                id,
                partitions: (0..partitions)
                    .map(|index| PartitionInfo {
                        index,
                        leader: self.node_id(),
                        replicas: vec![self.node_id()],
                        in_sync_replicas: vec![self.node_id()],
                    })
                    .collect(),
            });
        }
        let dir = self.topic_dir(name);
        if dir.exists() {
            // Left over from a crash during create or delete: not a live topic.
            std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        // The topic's directory entry must be durable before anything in it is
        // acknowledged.
        sync_dir(&self.inner.config.data_dir.join("topics"))?;
        let log_config = config.log_config(&self.inner.defaults);
        let now = now_ms();
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Arc::new(self.open_partition(
                &dir,
                p,
                log_config.clone(),
                now,
            )?));
        }
        let topic = Topic {
            name: name.to_string(),
            id,
            dir,
            config: RwLock::new(config),
            partitions: RwLock::new(parts),
        };
        self.persist(&topic)?;
        let info = Self::info(&topic);
        self.inner
            .topics
            .write()
            .insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(info)
    }

    /// Returns the topic, creating it with the defaults when auto-creation is on.
    /// `Ok(None)` when it does not exist and may not be created.
    pub fn ensure_topic(&self, name: &str) -> Result<Option<TopicInfo>, CoreError> {
        if let Some(info) = self.topic(name) {
            return Ok(Some(info));
        }
        if !self.inner.config.auto_create_topics {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, TopicConfig::default(), false) {
            Ok(info) => Ok(Some(info)),
            Err(CoreError::TopicAlreadyExists(_)) => Ok(self.topic(name)),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), CoreError> {
        let _admin = self.inner.admin.lock();
        let Some(topic) = self.inner.topics.write().remove(name) else {
            return Err(CoreError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        };
        // Stale handles (a retention pass, an in-flight produce) must not touch the
        // directory once it is gone or re-created under the same name.
        for p in topic.partitions.read().iter() {
            p.replica.log().close();
        }
        // Move it out of the way first, so a crash leaves no half-deleted topic.
        let trash = self.inner.config.data_dir.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| io_err(&trash, e))?;
        let target = trash.join(format!("{}-{}", hex(&topic.id), now_ms()));
        std::fs::rename(&topic.dir, &target).map_err(|e| io_err(&topic.dir, e))?;
        sync_dir(&self.inner.config.data_dir.join("topics"))?;
        // Wake fetchers so they see the topic is gone.
        for p in topic.partitions.read().iter() {
            p.end_tx.send_modify(|_| {});
        }
        std::fs::remove_dir_all(&target).map_err(|e| io_err(&target, e))?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), CoreError> {
        let _admin = self.inner.admin.lock();
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.read().len() as i32;
        if total <= current {
            return Err(CoreError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count {total} must be larger"
            )));
        }
        if total > PARTITIONS_PER_TOPIC_MAX {
            return Err(CoreError::InvalidPartitions(format!(
                "{total} exceeds the limit of {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic.config.read().log_config(&self.inner.defaults);
        let now = now_ms();
        let mut added = Vec::new();
        for p in current..total {
            added.push(Arc::new(self.open_partition(
                &topic.dir,
                p,
                log_config.clone(),
                now,
            )?));
        }
        topic.partitions.write().extend(added);
        self.persist(&topic)?;
        tracing::info!(topic = name, partitions = total, "added partitions");
        Ok(())
    }

    /// Every known config of a topic with its effective value.
    pub fn describe_topic_config(&self, name: &str) -> Result<Vec<ConfigEntry>, CoreError> {
        let topic = self.existing_topic(name)?;
        let config = topic.config.read().clone();
        Ok(config.describe(&self.inner.defaults))
    }

    /// Applies config changes to a topic atomically: all or none.
    pub fn alter_topic_config(
        &self,
        name: &str,
        changes: &[ConfigChange],
        validate_only: bool,
    ) -> Result<(), CoreError> {
        let _admin = self.inner.admin.lock();
        let topic = self.existing_topic(name)?;
        let mut config = topic.config.read().clone();
        for change in changes {
            match change {
                ConfigChange::Set(k, v) => config.set(k, v)?,
                ConfigChange::Delete(k) => config.remove(k)?,
            }
        }
        if validate_only {
            return Ok(());
        }
        let log_config = config.log_config(&self.inner.defaults);
        *topic.config.write() = config;
        self.persist(&topic)?;
        for p in topic.partitions.read().iter() {
            p.replica.log().set_config(log_config.clone());
        }
        tracing::info!(topic = name, "altered topic config");
        Ok(())
    }

    /// Appends record batches to a partition. Verifies every batch (format, CRC,
    /// size), de-duplicates idempotent producers' retries, and returns once the
    /// records are in the log, and on disk when the topic's flush policy is
    /// `always` (concurrent producers share fsyncs).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<Produced, CoreError> {
        self.produce_append(topic, partition, records)?
            .sync()
            .wait()
            .await
    }

    /// The first half of [`Broker::produce`]: verifies and appends, in the caller's
    /// order, without waiting for the disk. Under `always` the records become
    /// visible only once fsynced, and may be acknowledged only after
    /// [`ProduceSync::wait`]; a caller can append several requests before waiting
    /// and let them share one fsync. Under the other policies they are readable at
    /// once; [`AppendedProduce::sync`] wakes the fetchers waiting for them.
    pub fn produce_append(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<AppendedProduce, CoreError> {
        let checked = self.check_produce(topic, partition, records)?;
        self.append_checked(checked)
    }

    /// Verifies records for a partition (made when the topic is missing and its
    /// name valid) without storing anything: format, CRCs, sizes, every record.
    /// Notes each batch's tag summary and whether any record asks for a later
    /// delivery time (header `sluice-deliver-at` or `sluice-delay-level`).
    pub fn check_produce<'a>(
        &self,
        topic: &str,
        partition: i32,
        records: &'a [u8],
    ) -> Result<CheckedProduce<'a>, CoreError> {
        if self.get_topic(topic).is_none() {
            validate_topic_name(topic)?;
            self.ensure_topic(topic)?;
        }
        let part = self.get_partition(topic, partition)?;
        let config = part.replica.log().config();
        let mut delivery_time = false;
        let verified =
            VerifiedBatches::summarized(records, config.max_message_bytes, &mut |key, value| {
                match key {
                    b"sluice-tag" => value.map_or(0, |v| {
                        crate::filter::tag_summary_bit(&String::from_utf8_lossy(v))
                    }),
                    b"sluice-deliver-at" | b"sluice-delay-level" => {
                        delivery_time = true;
                        0
                    }
                    _ => 0,
                }
            })?;
        if verified.headers().len() > 1 && verified.headers().iter().any(|h| h.has_producer_id()) {
            // Sequence checks work batch by batch per request, as clients send them;
            // Kafka refuses several batches of one producer in one request too.
            return Err(CoreError::InvalidBatch(BatchError::InvalidRecord {
                index: 0,
                reason: "an idempotent producer must send one batch per partition per request",
            }));
        }
        Ok(CheckedProduce {
            part,
            flush: config.flush,
            verified,
            delivery_time,
        })
    }

    /// The second half of [`Broker::produce_append`]: de-duplicates idempotent
    /// producers' retries and appends.
    pub fn append_checked(
        &self,
        checked: CheckedProduce<'_>,
    ) -> Result<AppendedProduce, CoreError> {
        let CheckedProduce {
            part,
            flush,
            verified,
            ..
        } = checked;
        let log = part.replica.log();
        let now = now_ms();
        let appended_seq;
        let (result, duplicate) = {
            let mut producers = part.producers.lock();
            let mut duplicate = None;
            for header in verified.headers() {
                if let SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } = producers.check(header)?
                {
                    duplicate = Some((base_offset, last_offset));
                }
            }
            match duplicate {
                Some(d) => {
                    appended_seq = log.written_seq();
                    (d, true)
                }
                None => {
                    let appended = part.replica.append(&verified, now)?.appended;
                    appended_seq = appended.seq;
                    let mut base = appended.base_offset;
                    for header in verified.headers() {
                        let mut stored = *header;
                        stored.base_offset = base;
                        producers.record(&stored);
                        base = stored.last_offset() + 1;
                    }
                    ((appended.base_offset, appended.last_offset), false)
                }
            }
        };
        // A duplicate's original append may itself still await its fsync: wait
        // for everything written so far.
        let fsync_through = (flush == FlushPolicy::Always).then_some(appended_seq);
        Ok(AppendedProduce {
            fsync_through,
            produced: Produced {
                base_offset: result.0,
                last_offset: result.1,
                log_start_offset: log.log_start_offset(),
                durability: Durability::PageCache,
                duplicate,
            },
            part,
        })
    }

    /// For records that are stored elsewhere instead of being appended (delayed
    /// ones): runs the idempotent producer's sequence check and counts the
    /// batch as taken, so the producer's next batch is in order. A retry of a
    /// batch taken before is [`Diverted::Duplicate`]: nothing must be stored
    /// again.
    pub fn divert_checked(&self, checked: CheckedProduce<'_>) -> Result<Diverted, CoreError> {
        let mut producers = checked.part.producers.lock();
        for header in checked.verified.headers() {
            if let SequenceCheck::Duplicate { base_offset, .. } = producers.check(header)? {
                return Ok(Diverted::Duplicate { base_offset });
            }
        }
        let mut headers = Vec::with_capacity(checked.verified.headers().len());
        for header in checked.verified.headers() {
            let mut taken = *header;
            // Not in the log: a retry is answered with offset -1.
            taken.base_offset = -1;
            producers.record(&taken);
            headers.push(taken);
        }
        drop(producers);
        Ok(Diverted::Taken(DivertedBatches {
            part: checked.part,
            headers,
        }))
    }

    /// Tag summaries of the batches that start in `[from, to)` of a partition,
    /// as (base offset, summary), at most `max`: the OR of
    /// [`crate::filter::tag_summary_bit`] over each batch's tagged records. A
    /// batch left out has no summary (stored before a crash lost it) and must
    /// be decoded to know its tags.
    pub fn batch_summaries(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
    ) -> Result<Vec<(i64, u64)>, CoreError> {
        let part = self.get_partition(topic, partition)?;
        Ok(part.replica.log().summaries(from, to, max)?)
    }

    /// Reads stored batches from `offset`, up to `max_bytes` (at least one batch).
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<PartitionRead, CoreError> {
        let part = self.get_partition(topic, partition)?;
        let log = part.replica.log();
        let high_watermark = part.replica.high_watermark();
        match log.read(offset, max_bytes)? {
            ReadOutcome::Data(slice) => Ok(PartitionRead {
                high_watermark,
                log_start_offset: log.log_start_offset(),
                records: Some(slice),
            }),
            ReadOutcome::AtEnd => Ok(PartitionRead {
                high_watermark,
                log_start_offset: log.log_start_offset(),
                records: None,
            }),
            ReadOutcome::OutOfRange {
                log_start_offset,
                log_end_offset,
            } => Err(CoreError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            }),
        }
    }

    /// A watch that completes when any of these partitions gets new data. Make it
    /// before reading so that no append between the read and the wait is missed.
    pub fn watch_appends<'a>(
        &self,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> AppendWatch {
        let receivers = partitions
            .into_iter()
            .filter_map(|(t, p)| self.get_partition(t, p).ok())
            .map(|p| p.end_tx.subscribe())
            .collect();
        AppendWatch { receivers }
    }

    /// Resolves an offset query: (offset, timestamp); timestamp -1 when not known.
    /// A timestamp after every record answers (-1, -1), as Kafka does.
    pub fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        query: OffsetQuery,
    ) -> Result<(i64, i64), CoreError> {
        let part = self.get_partition(topic, partition)?;
        let log = part.replica.log();
        Ok(match query {
            OffsetQuery::Earliest => (log.log_start_offset(), -1),
            OffsetQuery::Latest => (part.replica.high_watermark(), -1),
            OffsetQuery::Timestamp(ts) => log.offset_for_timestamp(ts)?.unwrap_or((-1, -1)),
            OffsetQuery::MaxTimestamp => match log.max_timestamp() {
                Some(ts) => log.offset_for_timestamp(ts)?.unwrap_or((-1, -1)),
                None => (-1, -1),
            },
        })
    }

    /// Offsets of a partition: (log start, high watermark).
    pub fn partition_offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), CoreError> {
        let part = self.get_partition(topic, partition)?;
        Ok((
            part.replica.log().log_start_offset(),
            part.replica.high_watermark(),
        ))
    }

    /// A new producer id with epoch 0, or, given an existing (id, epoch), the same
    /// id with the next epoch (fencing the older one).
    pub fn init_producer_id(&self, existing: Option<(i64, i16)>) -> Result<(i64, i16), CoreError> {
        match existing {
            Some((id, epoch)) if id >= 0 && (0..i16::MAX - 1).contains(&epoch) => {
                Ok((id, epoch + 1))
            }
            _ => Ok((self.inner.producer_ids.lock().allocate()?, 0)),
        }
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.inner
            .topics
            .read()
            .values()
            .flat_map(|t| t.partitions.read().clone())
            .collect()
    }

    /// Runs interval flushes and retention until `shutdown` resolves.
    pub async fn run_maintenance(&self, shutdown: impl Future<Output = ()>) {
        let flush_tick = Duration::from_millis(100);
        let retention_every = Duration::from_millis(self.inner.config.retention_check_ms.max(10));
        let mut flush_timer = tokio::time::interval(flush_tick);
        let mut retention_timer = tokio::time::interval(retention_every);
        flush_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Group timers run on their own task, so slow storage work cannot delay
        // session expiry or the end of a rebalance.
        let groups = {
            let broker = self.clone();
            tokio::spawn(async move {
                let mut timer = tokio::time::interval(Duration::from_millis(100));
                timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    timer.tick().await;
                    broker.tick_groups();
                }
            })
        };
        let _stop_groups = AbortOnDrop(groups);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = flush_timer.tick() => {
                    self.for_each_log("interval flush", |log, now| log.flush_if_due(now).map(|_| ())).await;
                }
                _ = retention_timer.tick() => {
                    self.for_each_log("retention", |log, now| log.apply_retention(now).map(|_| ())).await;
                    if let Err(e) = self.expire_offsets(now_ms()).await {
                        tracing::error!(error = %e, "offset expiry failed");
                    }
                }
            }
        }
    }

    /// Runs `task` on every partition's log on a blocking thread, logging failures.
    async fn for_each_log(
        &self,
        what: &'static str,
        task: fn(&sluice_storage::PartitionLog, i64) -> Result<(), StorageError>,
    ) {
        let parts = self.all_partitions();
        let _ = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            for p in parts {
                if let Err(e) = task(p.replica.log(), now) {
                    tracing::error!(error = %e, task = what, "maintenance failed");
                }
            }
        })
        .await;
    }

    /// Size and offsets of every partition, for monitoring.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .read()
                    .iter()
                    .map(|p| {
                        let log = p.replica.log();
                        PartitionStats {
                            topic: t.name.clone(),
                            partition: p.index,
                            log_start_offset: log.log_start_offset(),
                            log_end_offset: log.log_end_offset(),
                            size_bytes: log.size_bytes(),
                            segments: log.segment_count(),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Commits offsets. A member of a coordinated group commits with its
    /// generation (classic) or member epoch (consumer protocol) and member id;
    /// simple consumers and admin tools commit with generation -1 and no member
    /// id, which is accepted only while the group has no members. Each partition
    /// gets its own result; the valid ones are fsynced together before this
    /// returns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Result<(), CoreError>>, CoreError> {
        self.inner
            .groups
            .validate_commit(group, generation, member_id, instance_id)?;
        let mut results = Vec::with_capacity(entries.len());
        let mut valid = Vec::new();
        for (topic, partition, committed) in entries {
            let check = if committed.metadata.len() > crate::offsets::METADATA_BYTES_MAX {
                Err(CoreError::OffsetMetadataTooLarge {
                    bytes: committed.metadata.len(),
                    max: crate::offsets::METADATA_BYTES_MAX,
                })
            } else {
                self.get_partition(&topic, partition).map(|_| ())
            };
            if check.is_ok() {
                valid.push((topic, partition, Some(committed)));
            }
            results.push(check);
        }
        self.store_offsets(group, valid).await?;
        Ok(results)
    }

    /// Writes offset changes durably on a blocking thread (the store fsyncs).
    async fn store_offsets(
        &self,
        group: &str,
        entries: Vec<(String, i32, Option<CommittedOffset>)>,
    ) -> Result<(), CoreError> {
        let broker = self.clone();
        let group = group.to_string();
        tokio::task::spawn_blocking(move || broker.inner.offsets.commit(&group, &entries, now_ms()))
            .await
            .map_err(|e| io_err(&self.inner.config.data_dir, std::io::Error::other(e)))?
    }

    /// A group's committed offsets, by (topic, partition).
    pub fn committed_offsets(
        &self,
        group: &str,
    ) -> std::collections::BTreeMap<(String, i32), CommittedOffset> {
        self.inner.offsets.fetch(group)
    }

    /// Per committed partition of a group: progress and lag (log end − committed,
    /// counted from the visible end; 0 when the partition no longer exists).
    pub fn group_lag(&self, group: &str) -> Vec<PartitionLag> {
        self.committed_offsets(group)
            .into_iter()
            .map(|((topic, partition), c)| {
                let log_end_offset = self
                    .partition_offsets(&topic, partition)
                    .map_or(-1, |(_, end)| end);
                PartitionLag {
                    lag: if log_end_offset >= 0 && c.offset >= 0 {
                        (log_end_offset - c.offset).max(0)
                    } else {
                        0
                    },
                    topic,
                    partition,
                    committed_offset: c.offset,
                    log_end_offset,
                    metadata: c.metadata,
                }
            })
            .collect()
    }

    /// Groups known to the broker: with members, or with committed offsets.
    pub fn list_groups(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.inner.offsets.groups().into_iter().collect();
        names.extend(self.inner.groups.names());
        names.into_iter().collect()
    }

    /// A group's state and members; groups that only have committed offsets are
    /// Empty, unknown groups `None`.
    pub fn describe_group(&self, group: &str) -> Option<GroupDescription> {
        self.inner.groups.describe(group).or_else(|| {
            self.inner
                .offsets
                .has_offsets(group)
                .then(|| GroupDescription {
                    group_id: group.to_string(),
                    state: GroupState::Empty,
                    kind: GroupKind::OffsetsOnly,
                    protocol_type: String::new(),
                    protocol_name: String::new(),
                    generation: 0,
                    members: Vec::new(),
                })
        })
    }

    /// Every known group, described.
    pub fn describe_groups(&self) -> Vec<GroupDescription> {
        self.list_groups()
            .iter()
            .filter_map(|g| self.describe_group(g))
            .collect()
    }

    /// The group coordinator (membership and rebalancing).
    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// Partition count of every topic.
    pub fn partition_counts(&self) -> BTreeMap<String, i32> {
        self.inner
            .topics
            .read()
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.read().len() as i32))
            .collect()
    }

    /// ConsumerGroupHeartbeat (KIP-848) against the current topic metadata.
    pub async fn consumer_heartbeat(
        &self,
        req: ConsumerHeartbeat,
    ) -> Result<ConsumerHeartbeatReply, CoreError> {
        let topics = self.partition_counts();
        self.inner.groups.consumer_heartbeat(req, &topics).await
    }

    fn tick_groups(&self) {
        let topics = self.partition_counts();
        let offsets = &self.inner.offsets;
        self.inner.groups.tick(&topics, |g| offsets.has_offsets(g));
    }

    /// Deletes committed offsets of groups without members once they are older
    /// than the retention (counted from the commit and from when the group became
    /// empty, whichever is later).
    /// Then rewrites the offsets log if most of it is superseded.
    pub async fn expire_offsets(&self, now: i64) -> Result<(), CoreError> {
        let retention = self.inner.config.groups.offsets_retention_ms;
        for group in self.inner.offsets.groups() {
            if retention < 0 {
                break;
            }
            if self.inner.groups.is_active(&group) {
                continue;
            }
            let empty_since = self.inner.groups.empty_since_ms(&group).unwrap_or(0);
            let expired: Vec<(String, i32, Option<CommittedOffset>)> = self
                .committed_offsets(&group)
                .into_iter()
                .filter(|(_, c)| c.commit_timestamp_ms.max(empty_since) + retention <= now)
                .map(|((t, p), _)| (t, p, None))
                .collect();
            if !expired.is_empty() {
                tracing::info!(group = %group, partitions = expired.len(), "expiring committed offsets");
                self.store_offsets(&group, expired).await?;
            }
        }
        let offsets = self.inner.offsets.clone();
        tokio::task::spawn_blocking(move || offsets.compact_if_needed(now))
            .await
            .map_err(|e| io_err(&self.inner.config.data_dir, std::io::Error::other(e)))??;
        Ok(())
    }

    /// Deletes committed offsets of some partitions (OffsetDelete). Refused for
    /// topics the group's members subscribe to; one result per partition.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), CoreError>>, CoreError> {
        if group.is_empty() {
            return Err(CoreError::InvalidGroupId(group.to_string()));
        }
        let committed = self.committed_offsets(group);
        let described = self.inner.groups.describe(group);
        if committed.is_empty() && described.is_none() {
            return Err(CoreError::GroupIdNotFound(group.to_string()));
        }
        // Members of other protocols (Connect, …) have subscriptions the broker
        // cannot read: treat an active one as subscribed to everything.
        if let Some(d) = &described {
            if !d.members.is_empty() && d.protocol_type != "consumer" {
                return Err(CoreError::NonEmptyGroup(group.to_string()));
            }
        }
        let subscribed = self
            .inner
            .groups
            .subscribed_topics(group, &self.partition_counts());
        let mut results = Vec::with_capacity(partitions.len());
        let mut doomed = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(&topic) {
                results.push(Err(CoreError::GroupSubscribedToTopic {
                    group: group.to_string(),
                    topic,
                }));
                continue;
            }
            if let Err(e) = self.get_partition(&topic, partition) {
                results.push(Err(e));
                continue;
            }
            if committed.contains_key(&(topic.clone(), partition)) {
                doomed.push((topic, partition, None));
            }
            results.push(Ok(()));
        }
        self.store_offsets(group, doomed).await?;
        Ok(results)
    }

    /// Deletes a group without members: its committed offsets and its state.
    pub async fn delete_group(&self, group: &str) -> Result<(), CoreError> {
        self.inner.groups.check_empty(group)?;
        let entries: Vec<(String, i32, Option<CommittedOffset>)> = self
            .committed_offsets(group)
            .into_keys()
            .map(|(t, p)| (t, p, None))
            .collect();
        let had_offsets = !entries.is_empty();
        self.store_offsets(group, entries).await?;
        let had_state = self.inner.groups.remove_if_empty(group)?;
        if !had_offsets && !had_state {
            return Err(CoreError::GroupIdNotFound(group.to_string()));
        }
        Ok(())
    }

    /// Stops the group coordinator: waiting joins and syncs fail with
    /// COORDINATOR_NOT_AVAILABLE and pending group images are written. Call
    /// before draining the front ends.
    pub fn begin_shutdown(&self) {
        self.inner.groups.shutdown();
    }

    /// Flushes every partition to disk; for a clean shutdown.
    pub fn flush_all(&self) -> Result<(), CoreError> {
        let now = now_ms();
        for p in self.all_partitions() {
            let log = p.replica.log();
            log.write_summaries();
            log.flush(now)?;
        }
        Ok(())
    }
}
