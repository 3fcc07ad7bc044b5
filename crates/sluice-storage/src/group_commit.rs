//! Group commit: many appenders waiting for durability share one fsync.
//!
//! Appends are numbered. A caller that needs append `n` on disk either finds it
//! already synced, waits for an fsync in progress and checks again, or runs the next
//! fsync itself, covering everything written up to the moment it starts. Under load
//! one fsync therefore acknowledges every append that arrived while the previous one
//! ran.

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    synced_seq: u64,
    syncing: bool,
}

/// Coordinates fsyncs of one log.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    /// Returns once append `seq` is durable. `sync` must capture the latest written
    /// append number, fsync, and return that number.
    pub fn sync_through<E>(&self, seq: u64, sync: impl Fn() -> Result<u64, E>) -> Result<(), E> {
        let mut state = self.state.lock();
        loop {
            if state.synced_seq >= seq {
                return Ok(());
            }
            if state.syncing {
                self.done.wait(&mut state);
                continue;
            }
            state.syncing = true;
            drop(state);
            let result = sync();
            state = self.state.lock();
            state.syncing = false;
            self.done.notify_all();
            let covered = result?;
            state.synced_seq = state.synced_seq.max(covered);
        }
    }

    /// Highest append number known to be durable.
    pub fn synced_seq(&self) -> u64 {
        self.state.lock().synced_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_waiters_share_fsyncs() {
        let gc = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, fsyncs) = (gc.clone(), written.clone(), fsyncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let seq = written.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.sync_through(seq, || -> Result<u64, ()> {
                            let covered = written.load(Ordering::SeqCst);
                            fsyncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            Ok(covered)
                        })
                        .unwrap();
                        assert!(gc.synced_seq() >= seq);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gc.synced_seq(), 400);
        assert!(fsyncs.load(Ordering::SeqCst) <= 400);
    }

    #[test]
    fn failed_sync_is_reported_and_not_counted() {
        let gc = GroupCommit::default();
        assert_eq!(gc.sync_through(1, || Err::<u64, &str>("disk")), Err("disk"));
        assert_eq!(gc.synced_seq(), 0);
    }
}
