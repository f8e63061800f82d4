//! The node's audit writer: the events callers hand over without waiting
//! ([`Store::audit_later`]: enforcement actions, refusals on a connection's path) go through
//! one bounded queue to one task that writes them in batches, one transaction per batch.
//! Ten thousand guards warning at the same second cost a few commits, not ten thousand
//! tasks each waiting for a pooled connection. What must be durable before a session goes
//! on (its row and login audits, its recording) is not written here but in the caller's
//! own transaction.
//!
//! Nothing is dropped silently: an event the queue cannot take (full) or the store does not
//! take (after the same retries as [`Store::audit`]) is logged at error level with its whole
//! content and counted in [`Store::audit_failures`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{insert_audit_on, log_audit, lost, retrying};
use crate::{AuditEvent, Result, Store, now_millis};

/// Events waiting for the writer at most; past it, an event is lost to the store (logged in
/// full and counted).
pub const AUDIT_QUEUE: usize = 8192;
/// Events written in one transaction at most.
const BATCH: usize = 256;

/// An event as the queue holds it, stamped when it happened.
#[derive(Debug)]
struct Queued {
    at: i64,
    kind: String,
    operator: Option<String>,
    session_id: Option<String>,
    source: Option<String>,
    detail: serde_json::Value,
}

impl Queued {
    fn of(e: &AuditEvent<'_>) -> Queued {
        Queued {
            at: now_millis(),
            kind: e.kind.to_owned(),
            operator: e.operator.map(str::to_owned),
            session_id: e.session_id.map(str::to_owned),
            source: e.source.map(str::to_owned),
            detail: e.detail.clone(),
        }
    }

    fn event(&self) -> AuditEvent<'_> {
        AuditEvent {
            kind: &self.kind,
            operator: self.operator.as_deref(),
            session_id: self.session_id.as_deref(),
            source: self.source.as_deref(),
            detail: self.detail.clone(),
        }
    }
}

#[derive(Debug)]
enum Job {
    Event(Queued),
    /// Answered once every event queued before it has been written (or counted lost).
    Flush(oneshot::Sender<()>),
}

/// The sending side, created with the first event (the writer needs a running runtime).
#[derive(Debug, Default)]
pub(crate) struct AuditQueue {
    sender: std::sync::OnceLock<mpsc::Sender<Job>>,
}

impl Store {
    /// Hands `e` to the node's audit writer without waiting (see the module comment): for
    /// callers that must not wait on the store (an enforcement action, a refusal on the
    /// connection's path). Logged now, written within moments, in order.
    pub fn audit_later(&self, e: &AuditEvent<'_>) {
        log_audit(e);
        let job = Job::Event(Queued::of(e));
        if let Err(err) = self.audit_sender().try_send(job) {
            let reason = match &err {
                mpsc::error::TrySendError::Full(_) => "the audit queue is full",
                mpsc::error::TrySendError::Closed(_) => "the audit writer has stopped",
            };
            if let Job::Event(q) = err.into_inner() {
                lost(&self.audit_failures, q.at, &q.event(), 0, &reason);
            }
        }
    }

    /// Waits until every event handed to [`Store::audit_later`] before this call is written
    /// (or counted lost), at most `limit`. False if the writer did not get there in time.
    pub async fn flush_audits(&self, limit: Duration) -> bool {
        let Some(sender) = self.audit_queue.sender.get() else {
            return true; // nothing was ever queued
        };
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout(limit, sender.send(Job::Flush(tx))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(())))
    }

    fn audit_sender(&self) -> &mpsc::Sender<Job> {
        self.audit_queue.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(AUDIT_QUEUE);
            // the writer holds the pool, not a `Store`: when the last handle goes, the
            // sender goes with it and the writer drains and stops
            let writer = Writer {
                pool: self.pool.clone(),
                turns: self.write_turns.clone(),
                limit: self.timeouts.audit,
                failures: self.audit_failures.clone(),
            };
            tokio::spawn(writer.run(rx));
            tx
        })
    }
}

struct Writer {
    pool: AnyPool,
    turns: crate::WriteTurns,
    limit: Duration,
    failures: Arc<AtomicU64>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut jobs, BATCH).await > 0 {
            let mut batch = Vec::with_capacity(jobs.len());
            let mut flushes = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Event(q) => batch.push(q),
                    Job::Flush(done) => flushes.push(done),
                }
            }
            if !batch.is_empty() {
                self.write(&batch).await;
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// One transaction for the batch, retried like [`Store::audit`]; a batch the store
    /// still refuses is logged event by event and counted.
    async fn write(&self, batch: &[Queued]) {
        let written = retrying(self.limit, "audit batch", || self.insert(batch)).await;
        if let Err((error, attempts)) = written {
            for q in batch {
                lost(&self.failures, q.at, &q.event(), attempts, &error);
            }
        }
    }

    async fn insert(&self, batch: &[Queued]) -> Result<()> {
        let _turn = self.turns.take().await?;
        let mut tx = self.pool.begin().await?;
        for q in batch {
            insert_audit_on(&mut tx, q.at, &q.event()).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
