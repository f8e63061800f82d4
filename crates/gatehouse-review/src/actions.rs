//! What a reviewer may do to a live session from the TUI: end it (`K`, with a reason the
//! operator sees) or lock its operator (`L`, which ends all their live sessions). Both go
//! through the same store calls as `gatehouse sessions kill` and `gatehouse user lock`, and
//! the audit event names the reviewer. `gatehouse review --read-only` has no actions.

use gatehouse_store::{Actor, Store};

/// The TUI's way to act on sessions (the store; a recorder of calls in tests).
pub trait Actions {
    /// Asks the session's node to end it with `reason`.
    fn kill(&mut self, session: &str, reason: &str) -> anyhow::Result<()>;
    /// Locks `operator`; returns the live sessions that will end.
    fn lock(&mut self, operator: &str) -> anyhow::Result<Vec<String>>;
}

/// Actions through the store, read through a runtime handle like [`crate::StoreCatalog`].
pub struct StoreActions {
    store: Store,
    runtime: tokio::runtime::Handle,
    /// Who the audit events name.
    reviewer: String,
}

impl StoreActions {
    pub fn new(store: Store, runtime: tokio::runtime::Handle, reviewer: String) -> StoreActions {
        StoreActions {
            store,
            runtime,
            reviewer,
        }
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            name: &self.reviewer,
            via: "review",
        }
    }
}

impl Actions for StoreActions {
    fn kill(&mut self, session: &str, reason: &str) -> anyhow::Result<()> {
        let by = self.actor();
        Ok(self
            .runtime
            .block_on(self.store.kill_session_by(session, reason, &by))?)
    }

    fn lock(&mut self, operator: &str) -> anyhow::Result<Vec<String>> {
        let by = self.actor();
        Ok(self
            .runtime
            .block_on(self.store.lock_operator_by(operator, &by))?)
    }
}
