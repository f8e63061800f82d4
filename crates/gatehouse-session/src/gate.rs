//! The session gate: the one place every front asks before forwarding an operator action
//! to the target. It holds the session's state (open, locked, ending), which only the
//! guard changes, and applies the core's rule (`gatehouse_core::admit`). Fronts keep the
//! sending half of their relays behind it, so a handler cannot forward without asking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use gatehouse_core::{Admission, ChannelStart, OperatorAction, SessionState, admit};
use tokio::sync::watch;

/// One session's gate, shared by the guard (which moves it) and the front's handlers and
/// relays (which ask it).
#[derive(Debug)]
pub struct SessionGate {
    /// The state, readable without a lock on every keystroke.
    state: AtomicU8,
    tx: watch::Sender<SessionState>,
    /// Why the session is ending, once the guard ended it (what a front tells an operator
    /// whose request the closed gate refused).
    end_message: std::sync::OnceLock<String>,
}

fn encode(s: SessionState) -> u8 {
    match s {
        SessionState::Open => 0,
        SessionState::Locked => 1,
        SessionState::Ending => 2,
    }
}

fn decode(v: u8) -> SessionState {
    match v {
        0 => SessionState::Open,
        1 => SessionState::Locked,
        _ => SessionState::Ending,
    }
}

impl SessionGate {
    pub fn new() -> Arc<SessionGate> {
        Arc::new(SessionGate {
            state: AtomicU8::new(encode(SessionState::Open)),
            tx: watch::channel(SessionState::Open).0,
            end_message: std::sync::OnceLock::new(),
        })
    }

    pub fn state(&self) -> SessionState {
        decode(self.state.load(Ordering::Acquire))
    }

    /// What becomes of `action` on a channel whose program stands at `channel`.
    pub fn admit(&self, channel: Option<ChannelStart>, action: OperatorAction) -> Admission {
        admit(self.state(), channel, action)
    }

    /// True while locked or ending: operator input must not reach the target.
    pub fn is_closed(&self) -> bool {
        self.state() != SessionState::Open
    }

    pub fn is_locked(&self) -> bool {
        self.state() == SessionState::Locked
    }

    /// Moves the gate. Only the guard calls this. Ending is final: a late unlock cannot
    /// reopen an ended session.
    pub(crate) fn set(&self, state: SessionState) {
        if self.state() == SessionState::Ending {
            return;
        }
        self.state.store(encode(state), Ordering::Release);
        self.tx.send_replace(state);
    }

    /// The guard ends the session: the gate closes for good, with the reason the operator
    /// is told.
    pub(crate) fn end_with(&self, message: &str) {
        let _ = self.end_message.set(message.to_owned());
        self.set(SessionState::Ending);
    }

    /// Why the guard ended the session, if it did.
    pub fn end_message(&self) -> Option<&str> {
        self.end_message.get().map(String::as_str)
    }

    /// Closes the gate for good: the session is ending (a front's own teardown, e.g. the
    /// connection is going away).
    pub fn close(&self) {
        self.set(SessionState::Ending);
    }

    /// Follows the gate's changes.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.tx.subscribe()
    }

    /// Waits while the session is locked. `false` when the session is ending.
    pub async fn wait_open(&self) -> bool {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(|g| *g != SessionState::Locked).await {
            Ok(g) => *g == SessionState::Open,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::Refusal;

    #[tokio::test]
    async fn ending_is_final_and_wakes_waiters() {
        let gate = SessionGate::new();
        gate.set(SessionState::Locked);
        assert!(gate.is_closed() && gate.is_locked());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.wait_open().await })
        };
        gate.set(SessionState::Ending);
        assert!(!waiter.await.expect("waiter"));
        gate.set(SessionState::Open);
        assert_eq!(gate.state(), SessionState::Ending);
        assert_eq!(
            gate.admit(None, OperatorAction::OpenChannel),
            Admission::Refuse(Refusal::Ending)
        );
    }

    #[tokio::test]
    async fn unlock_reopens() {
        let gate = SessionGate::new();
        gate.set(SessionState::Locked);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.wait_open().await })
        };
        gate.set(SessionState::Open);
        assert!(waiter.await.expect("waiter"));
        assert_eq!(
            gate.admit(None, OperatorAction::OpenChannel),
            Admission::Forward
        );
    }
}
