//! The node's recording writer: live recordings' registrations and checkpoints
//! ([`Store::recording_started_later`], [`Store::checkpoint_later`]) go through one queue to
//! one task that writes them in batches, one transaction (and on SQLite one write turn) per
//! batch. It replaces a task per live recording that waited for its checkpoints (~1.2 KiB
//! of task and channel per session, idle for all but one moment every few seconds), and
//! ten thousand recordings checkpointing in the same seconds cost a few commits.
//!
//! Only a recording's latest checkpoint waits (a newer one replaces it): a store slower than
//! the recorders delays checkpoints, it does not pile them up. A session's registration is
//! always written before its checkpoints (the recorder is told where to send checkpoints
//! only after the registration was queued, and a batch writes registrations first), and
//! [`Store::recording_written`] lets a session's end wait for its registration before the
//! seal (which moves the row on from `recording`).
//!
//! A batch the store refuses (after the same retries as an audit write) is logged item by
//! item: a lost checkpoint costs nothing but a shorter verified prefix after a crash (the
//! next one replaces it); a lost registration leaves the session's row without its
//! recording, which the seal then reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};

use crate::audit::retrying;
use crate::recordings::{checkpoint_on, started_on};
use crate::{MasterKey, Result, Store};

/// What waits for the writer.
#[derive(Debug, Default)]
struct Pending {
    /// Registrations: (session id, recording path), in the order they came.
    started: Vec<(String, String)>,
    /// Each live recording's latest checkpoint: session id → (events, digest).
    checkpoints: HashMap<String, (u64, String)>,
    /// The session ids of the registrations the writer is writing, and that batch's number.
    writing: Vec<String>,
    batch: u64,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// The number of the last batch written (or given up).
    done: watch::Sender<u64>,
}

/// The queue's handle in a [`Store`]; the writer starts with the first item (it needs a
/// running runtime) and stops, once it has written what is left, when the last handle goes.
#[derive(Debug)]
pub(crate) struct RecordingQueue {
    shared: Arc<Shared>,
    wake: OnceLock<mpsc::Sender<()>>,
}

impl Default for RecordingQueue {
    fn default() -> Self {
        RecordingQueue {
            shared: Arc::new(Shared {
                pending: Mutex::default(),
                done: watch::Sender::new(0),
            }),
            wake: OnceLock::new(),
        }
    }
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    /// Queues the registration of session `session_id`'s live recording at `path` (see
    /// [`Store::recording_started`]) without waiting.
    pub fn recording_started_later(&self, session_id: &str, path: &str) {
        let shared = &self.recording_queue.shared;
        shared
            .pending()
            .started
            .push((session_id.to_owned(), path.to_owned()));
        self.wake_recording_writer();
    }

    /// Queues a live recording's checkpoint (see [`Store::recording_checkpoint`]) without
    /// waiting; replaces one of the same recording still waiting, if older.
    pub fn checkpoint_later(&self, session_id: &str, events: u64, digest: String) {
        {
            let mut p = self.recording_queue.shared.pending();
            match p.checkpoints.get_mut(session_id) {
                Some(waiting) if waiting.0 >= events => return,
                Some(waiting) => *waiting = (events, digest),
                None => {
                    p.checkpoints
                        .insert(session_id.to_owned(), (events, digest));
                }
            }
        }
        self.wake_recording_writer();
    }

    /// Returns once session `session_id`'s queued registration (if any) is written: taken
    /// from the queue and written here, or waited for if the writer has it in hand (at most
    /// the audit timeout). Call before moving the recording on (the seal).
    pub async fn recording_written(&self, session_id: &str) -> Result<()> {
        let shared = &self.recording_queue.shared;
        let (queued, in_hand) = {
            let mut p = shared.pending();
            let at = p.started.iter().position(|(id, _)| id == session_id);
            let queued = at.map(|at| p.started.remove(at));
            let in_hand = p.writing.iter().any(|id| id == session_id);
            (queued, in_hand.then_some(p.batch))
        };
        if let Some((id, path)) = queued {
            return self.recording_started(&id, &path).await;
        }
        if let Some(batch) = in_hand {
            let mut done = shared.done.subscribe();
            let _ = tokio::time::timeout(self.timeouts.audit, done.wait_for(|d| *d >= batch)).await;
        }
        Ok(())
    }

    fn wake_recording_writer(&self) {
        let queue = &self.recording_queue;
        let wake = queue.wake.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1);
            // the writer holds the pool, not a `Store`: when the last handle goes, the
            // sender goes with it and the writer writes what is left and stops
            let writer = Writer {
                pool: self.pool.clone(),
                turns: self.write_turns.clone(),
                key: self.master_key.clone(),
                limit: self.timeouts.audit,
            };
            tokio::spawn(writer.run(queue.shared.clone(), rx));
            tx
        });
        // full: a wake-up is already waiting, and it will find this item
        let _ = wake.try_send(());
    }
}

/// Registrations and checkpoints in one transaction at most.
const BATCH: usize = 512;

struct Writer {
    pool: AnyPool,
    turns: crate::WriteTurns,
    key: MasterKey,
    limit: Duration,
}

/// One batch: registrations, then checkpoints.
type Batch = (Vec<(String, String)>, Vec<(String, (u64, String))>);

impl Writer {
    async fn run(self, shared: Arc<Shared>, mut wake: mpsc::Receiver<()>) {
        loop {
            let open = wake.recv().await.is_some();
            while let Some((number, batch)) = take(&shared) {
                self.write(&batch).await;
                shared.pending().writing.clear();
                shared.done.send_replace(number);
            }
            if !open {
                break;
            }
        }
    }

    async fn write(&self, (started, checkpoints): &Batch) {
        let written = retrying(self.limit, "recording batch", || {
            self.insert(started, checkpoints)
        })
        .await;
        if let Err((error, attempts)) = written {
            for (id, path) in started {
                tracing::error!(session_id = %id, path = %path, attempts, error = %error, "cannot register the recording in the store");
            }
            for (id, (events, _)) in checkpoints {
                tracing::warn!(session_id = %id, events, attempts, error = %error, "cannot store the recording's checkpoint");
            }
        }
    }

    async fn insert(
        &self,
        started: &[(String, String)],
        checkpoints: &[(String, (u64, String))],
    ) -> Result<()> {
        let _turn = self.turns.take().await?;
        let mut tx = self.pool.begin().await?;
        for (id, path) in started {
            started_on(&mut tx, &self.key, id, path).await?;
        }
        for (id, (events, digest)) in checkpoints {
            checkpoint_on(&mut tx, &self.key, id, *events, digest).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The next batch and its number, if anything waits; the registrations it takes are marked
/// in hand until the batch is done.
fn take(shared: &Shared) -> Option<(u64, Batch)> {
    let mut p = shared.pending();
    if p.started.is_empty() && p.checkpoints.is_empty() {
        return None;
    }
    let n = p.started.len().min(BATCH);
    let started: Vec<_> = p.started.drain(..n).collect();
    // none while registrations still wait (the batch is full of them then): one of them
    // may be a waiting checkpoint's recording's
    let room = BATCH - started.len();
    let checkpoints: Vec<_> = if p.checkpoints.len() <= room {
        p.checkpoints.drain().collect()
    } else {
        let ids: Vec<String> = p.checkpoints.keys().take(room).cloned().collect();
        ids.into_iter()
            .filter_map(|id| p.checkpoints.remove_entry(&id))
            .collect()
    };
    p.writing = started.iter().map(|(id, _)| id.clone()).collect();
    p.batch += 1;
    Some((p.batch, (started, checkpoints)))
}
