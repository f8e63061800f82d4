//! Change notifications between the nodes of a fleet: on PostgreSQL, every write that a
//! live session's guard must act on (a policy change, a kill request, a user lock or
//! unlock) also sends `NOTIFY gatehouse_changes` in its transaction, and each node keeps one
//! `LISTEN` connection (sqlx's `PgListener`, outside the `Any` pool: `Any` has no
//! notifications) that wakes its watcher at once. A notification only says "look now": the
//! watcher reads the store as its poll does, so a lost notification costs one poll interval,
//! never a decision. On SQLite (one node) nothing is sent and the feed never fires.

use std::sync::Arc;
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
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ChangeFeed {
    /// Returns at the next notification (at once if one came since the last call). Never
    /// returns on SQLite.
    pub async fn changed(&self) {
        self.woken.notified().await;
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
                .bind(change.as_str())
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
        let task = (self.backend == Backend::Postgres).then(|| {
            let url = self.url.clone();
            let woken = woken.clone();
            tokio::spawn(async move { listen(&url, &woken).await })
        });
        ChangeFeed { woken, task }
    }
}

async fn listen(url: &str, woken: &Notify) {
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
                Ok(Some(_)) => woken.notify_one(),
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
