//! Topics and their partitions as the broker holds them in memory.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sluice_cluster::PartitionReplica;
use tokio::sync::watch;

use crate::producer_state::ProducerStates;
use crate::topic_config::TopicConfig;

/// What is persisted about a topic in `topic.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TopicManifest {
    pub id: String,
    pub partitions: i32,
    #[serde(default)]
    pub config: TopicConfig,
}

pub(crate) struct Partition {
    pub index: i32,
    pub replica: PartitionReplica,
    pub producers: Mutex<ProducerStates>,
    /// Log end offset after every append; fetchers wait on it.
    pub end_tx: watch::Sender<i64>,
    /// fsyncs of `always` topics, at most one blocking task at a time.
    pub syncer: Syncer,
}

/// What producers waiting for durability can learn from a partition's flusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// Appends up to this number are on disk.
    Synced(u64),
    /// An fsync failed; the log refuses further appends until restart.
    Failed(String),
}

/// Coalesces a partition's fsyncs: however many produces wait, one blocking task
/// syncs on their behalf, round after round while new appends arrive, and
/// publishes how far it got. Without it every waiting request would occupy a
/// blocking thread of its own just to join the same group commit.
pub(crate) struct Syncer {
    pub state: watch::Sender<SyncState>,
    pub running: std::sync::atomic::AtomicBool,
}

impl Partition {
    pub fn new(index: i32, replica: PartitionReplica) -> Self {
        let end = replica.log().log_end_offset();
        Partition {
            index,
            replica,
            producers: Mutex::new(ProducerStates::default()),
            end_tx: watch::Sender::new(end),
            syncer: Syncer {
                state: watch::Sender::new(SyncState::Synced(0)),
                running: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }
}

pub(crate) struct Topic {
    pub name: String,
    pub id: [u8; 16],
    pub dir: PathBuf,
    pub config: RwLock<TopicConfig>,
    pub partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned())
    }

    pub fn manifest(&self) -> TopicManifest {
        TopicManifest {
            id: hex(&self.id),
            partitions: self.partitions.read().len() as i32,
            config: self.config.read().clone(),
        }
    }
}

pub(crate) fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
