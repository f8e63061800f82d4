//! What one operator connection shares with its relays, its guard and the task that ends
//! it: the session's identity and end reason, the recording, the operator-to-target backlog
//! that throttles the operator's window, the relay tasks, the severing of a connection whose
//! client will not leave, and the connection's entry in the node's live registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gatehouse_core::EndReason;
use gatehouse_session::{EndReasonCell, MarkerSink, Registration, SessionIdentity};
use gatehouse_store::AuditEvent;
use serde_json::json;

use crate::upstream::Upstream;

/// Operator bytes queued for a connection's targets above which the operator's window
/// shrinks to [`THROTTLED_WINDOW`] (see `relay`'s module docs).
pub(crate) const BACKLOG_HIGH: usize = 4 << 20;
/// The window granted per adjust while the backlog is over [`BACKLOG_HIGH`]: the operator
/// may send this much per round trip. It must stay ≥ 2, or russh would never send the next
/// adjust (it adjusts when the window falls below half the target) and the channel would
/// stay shut after the backlog drained.
pub(crate) const THROTTLED_WINDOW: u32 = 2;
/// Operator bytes queued for a connection's targets above which the operator's session
/// loop waits for the writers (see `relay`'s module docs).
pub(crate) const BACKLOG_HARD: usize = 16 << 20;

/// What the connection-closing task needs, shared with relays.
pub(crate) struct ConnectionState {
    pub(crate) peer: SocketAddr,
    pub(crate) span: tracing::Span,
    inner: Mutex<StateInner>,
    /// Why the session ends: the first reason given wins.
    pub(crate) end: Arc<EndReasonCell>,
    /// The connection's entry in the node's live registry (dropped when it ends).
    pub(crate) registration: Mutex<Option<Registration>>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// The session's recording, once its first shell/exec/subsystem started.
    pub(crate) recorder: OnceLock<gatehouse_recorder::RecorderHandle>,
    /// Signalled when an ended session could not be disconnected politely (the client
    /// stopped reading and the SSH session is stuck behind it): the socket is dropped.
    pub(crate) sever: Arc<tokio::sync::Notify>,
    /// How many of the operator's session channels are open (the client has not closed
    /// them): an ended session disconnects as soon as the client closed them all.
    pub(crate) open_channels: tokio::sync::watch::Sender<usize>,
    /// Operator payload bytes queued for the target and not yet written (all channels):
    /// what the operator's window is throttled on (see `relay`'s module docs).
    pub(crate) to_target_backlog: AtomicUsize,
    /// Signalled when the backlog shrinks or the relays stop (a handler may wait on it).
    backlog_drained: tokio::sync::Notify,
    /// The relays' tasks, stopped when the connection ends whatever they wait on; `None`
    /// once stopped.
    relay_tasks: Mutex<Option<Vec<crate::relay::RelayTasks>>>,
    store: gatehouse_store::Store,
}

/// Longest a connection's end spends hanging up its channels' programs on the target (a
/// target that stopped reading does not hold the end).
const HANGUPS_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

#[derive(Default)]
pub(crate) struct StateInner {
    /// Authentication bookkeeping, for counting a key-only failed connection once.
    pub(crate) authenticated: bool,
    /// The session holds a room under the node's session limit (its login slot released).
    pub(crate) admitted: bool,
    pub(crate) keys_rejected: u32,
    pub(crate) failures_recorded: u32,
    pub(crate) last_user: Option<String>,
    /// The registered session (allowed or denied), once authentication succeeded.
    pub(crate) session: Option<SessionIdentity>,
    pub(crate) upstream: Option<Arc<Upstream>>,
}

impl ConnectionState {
    pub(crate) fn new(
        peer: SocketAddr,
        span: tracing::Span,
        store: gatehouse_store::Store,
    ) -> Self {
        ConnectionState {
            store,
            peer,
            span,
            inner: Mutex::new(StateInner::default()),
            end: Arc::default(),
            registration: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            recorder: OnceLock::new(),
            sever: Arc::new(tokio::sync::Notify::new()),
            open_channels: tokio::sync::watch::Sender::new(0),
            to_target_backlog: AtomicUsize::new(0),
            backlog_drained: tokio::sync::Notify::new(),
            relay_tasks: Mutex::new(Some(Vec::new())),
        }
    }

    /// Takes charge of a relay's tasks: [`ConnectionState::finish`] stops them (at once,
    /// if the connection has ended already).
    pub(crate) fn own_relay_tasks(&self, tasks: crate::relay::RelayTasks) {
        if let Ok(mut t) = self.relay_tasks.lock()
            && let Some(owned) = t.as_mut()
        {
            owned.push(tasks);
            return;
        }
        tasks.abort();
    }

    /// Stops every relay task: a relay waiting on a peer that stopped reading would
    /// otherwise hold the target connection (and russh's session loops) open for ever.
    /// Then each channel's program still running on the target gets its hangup, from here
    /// rather than from the relay's writer task: the hangup must be queued before the
    /// target connection's disconnect, whatever the load (a task not scheduled in time —
    /// 2,000 sessions ending at once — would miss it), within [`HANGUPS_WAIT`] in all.
    async fn stop_relays(&self) {
        let tasks = self
            .relay_tasks
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_default();
        for t in &tasks {
            t.abort();
        }
        self.backlog_drained.notify_waiters();
        let _ = tokio::time::timeout(HANGUPS_WAIT, async {
            for t in &tasks {
                t.hang_up().await;
            }
        })
        .await;
    }

    fn relays_stopped(&self) -> bool {
        self.relay_tasks.lock().map(|t| t.is_none()).unwrap_or(true)
    }

    /// `len` queued operator bytes were written to the target (or dropped).
    pub(crate) fn backlog_done(&self, len: usize) {
        let before = self.to_target_backlog.fetch_sub(len, Ordering::Relaxed);
        // only a handler over the hard limit waits: wake it when the backlog crosses back
        if before > BACKLOG_HARD && before - len <= BACKLOG_HARD {
            self.backlog_drained.notify_waiters();
        }
    }

    /// Waits while the operator is more than `BACKLOG_HARD` ahead of the target (see
    /// `relay`'s module docs); returns at once when the relays have stopped.
    pub(crate) async fn backlog_room(&self) {
        loop {
            let drained = self.backlog_drained.notified();
            if self.to_target_backlog.load(Ordering::Relaxed) <= BACKLOG_HARD
                || self.relays_stopped()
            {
                return;
            }
            drained.await;
        }
    }

    /// Whether the operator completed authentication on this connection.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.inner.lock().map(|i| i.authenticated).unwrap_or(false)
    }

    /// Whether the connection's session was admitted (holds a room): a connection that was
    /// not by the end of its login grace (refused for a full node) holds a login slot.
    pub(crate) fn is_admitted(&self) -> bool {
        self.inner.lock().map(|i| i.admitted).unwrap_or(false)
    }

    /// Records why the session ends; the first reason given wins.
    pub(crate) fn set_end_reason(&self, reason: EndReason) {
        self.end.set(reason);
    }

    /// The registered session, once authentication succeeded.
    pub(crate) fn session(&self) -> Option<SessionIdentity> {
        self.inner.lock().ok().and_then(|i| i.session.clone())
    }

    /// Logs file transfers seen on an SFTP channel: recording markers and audit events.
    pub(crate) fn log_transfers(&self, transfers: Vec<gatehouse_recorder::sftp::Transfer>) {
        if transfers.is_empty() {
            return;
        }
        let Some(session) = self.session() else {
            return;
        };
        let (session_id, operator) = (Some(session.id), Some(session.operator));
        let lines: Vec<String> = transfers.iter().map(ToString::to_string).collect();
        if let Some(rec) = self.recorder.get() {
            for l in &lines {
                rec.marker(l.clone());
            }
        }
        // one task for the batch, so the rows keep the order of the operations
        let store = self.store.clone();
        tokio::spawn(async move {
            for l in lines {
                let _ = store
                    .audit(&AuditEvent {
                        kind: "file_transfer",
                        operator: operator.as_deref(),
                        session_id: session_id.as_deref(),
                        source: None,
                        detail: json!({"transfer": l}),
                    })
                    .await;
            }
        });
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut StateInner)) {
        if let Ok(mut i) = self.inner.lock() {
            f(&mut i);
        }
    }

    /// A client that only offered keys nobody authorized failed to log in: the user it
    /// tried, to be counted once for the connection (each offered key is not a guess; an
    /// agent may hold many).
    pub(crate) fn key_only_failure(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|i| {
            (!i.authenticated && i.keys_rejected > 0 && i.failures_recorded == 0)
                .then(|| i.last_user.clone().unwrap_or_default())
        })
    }

    /// Called once the operator connection is gone: closes the target connection and the
    /// session row.
    pub(crate) async fn finish(&self, store: &gatehouse_store::Store) {
        let (session, upstream) = match self.inner.lock() {
            Ok(mut i) => (i.session.take(), i.upstream.take()),
            Err(_) => return,
        };
        let reason = self.end.get().unwrap_or(EndReason::ClientClosed);
        self.stop_relays().await;
        // out of the node's registry: nothing more is delivered to this connection
        drop(self.registration.lock().ok().and_then(|mut r| r.take()));
        if let Some(up) = upstream {
            up.disconnect().await;
        }
        let Some(session) = session else { return };
        let bytes = (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        let recording = self.recorder.get();
        gatehouse_session::end_session(store, &session, &reason, bytes, recording).await;
    }
}

impl MarkerSink for ConnectionState {
    /// Markers go to the recording once it exists (before, nothing ran on the target).
    fn marker(&self, label: &str) {
        if let Some(rec) = self.recorder.get() {
            rec.marker(label);
        }
    }
}
