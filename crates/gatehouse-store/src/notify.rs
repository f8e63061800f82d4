//! Change notifications between the nodes of a fleet: on PostgreSQL, every write that a
//! live session's guard must act on (a policy change, a kill request, a user lock or
//! unlock) also sends `NOTIFY gatehouse_changes` in its transaction, and each node keeps one
//! `LISTEN` connection (sqlx's `PgListener`, outside the `Any` pool: `Any` has no
//! notifications) that wakes its watcher at once. A notification only says "look now": the
//! watcher reads the store as its poll does, so a lost notification costs one poll interval,
//! never a decision. On SQLite (one node) nothing is sent and the feed never fires.
//!
//! The payload is `kind@sent`, `sent` the sender's Unix ms: the receiver reports how long
//! a change took to be applied (the `notify_lag_seconds` metric).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::{Backend, Result, Store};

/// The channel every node listens on.
pub const CHANNEL: &str = "gatehouse_changes";
/// Wait before a broken `LISTEN` connection is opened again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What changed (the payload; receivers treat every kind alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Policy,
    Kill,
    UserLock,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Policy => "policy",
            Change::Kill => "kill",
            Change::UserLock => "user_lock",
        }
    }
}

/// Wakes its holder when another node (or the CLI) changed something guards act on. Stops
/// listening when dropped.
pub struct ChangeFeed {
    woken: Arc<Notify>,
    /// When the newest notification not yet returned by `changed` was sent (Unix ms; 0:
    /// none, or the wake-up was a reconnection).
    sent: Arc<AtomicI64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ChangeFeed {
    /// Returns at the next notification (at once if one came since the last call), with
    /// when the newest one was sent (Unix ms) if it said. Never returns on SQLite.
    pub async fn changed(&self) -> Option<i64> {
        self.woken.notified().await;
        Some(self.sent.swap(0, Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Whether notifications can arrive at all (PostgreSQL store).
    pub fn is_live(&self) -> bool {
        self.task.is_some()
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Store {
    /// Tells every node's watcher to look at the store now (PostgreSQL; nothing on SQLite).
    /// Runs on `conn` so that it is sent only if, and when, the caller's transaction commits.
    pub(crate) async fn notify_change(
        &self,
        conn: &mut sqlx::AnyConnection,
        change: Change,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("{}@{}", change.as_str(), crate::now_millis()))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Starts listening for changes (PostgreSQL); on SQLite a feed that never fires. A
    /// broken connection is logged once and opened again; the feed fires after each
    /// reconnection, since notifications sent meanwhile are lost.
    pub fn change_feed(&self) -> ChangeFeed {
        let woken = Arc::new(Notify::new());
        let sent = Arc::new(AtomicI64::new(0));
        let task = (self.backend == Backend::Postgres).then(|| {
            let url = self.url.clone();
            let (woken, sent) = (woken.clone(), sent.clone());
            tokio::spawn(async move { listen(&url, &woken, &sent).await })
        });
        ChangeFeed { woken, sent, task }
    }
}

/// When a notification's payload says it was sent (`kind@unix_ms`).
fn sent_at(payload: &str) -> Option<i64> {
    payload.rsplit_once('@')?.1.parse().ok()
}

async fn listen(url: &str, woken: &Notify, sent: &AtomicI64) {
    let mut failing = false;
    loop {
        let listener = async {
            let mut l = PgListener::connect(url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot listen for store changes; polling only until it can");
                }
                failing = true;
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        if failing {
            tracing::info!("listening for store changes again");
        }
        // anything sent while we were not listening
        woken.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(t) = sent_at(n.payload()) {
                        sent.fetch_max(t, Ordering::Relaxed);
                    }
                    woken.notify_one();
                }
                Ok(None) => {
                    // the connection dropped; try_recv reconnects on the next call
                    woken.notify_one();
                }
                Err(e) => {
                    // logged here; the reconnection attempts stay quiet until one succeeds
                    tracing::warn!(error = %e, "store change listener failed; reconnecting");
                    failing = true;
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_says_when_it_was_sent() {
        assert_eq!(sent_at("kill@1764700000123"), Some(1_764_700_000_123));
        assert_eq!(sent_at("policy"), None);
        assert_eq!(sent_at("user_lock@soon"), None);
    }
}
