//! Gatehouse's front-agnostic session runtime. Every front (SSH, PostgreSQL) runs each live
//! session under a [`Guard`] that drives the pure `gatehouse_core::Enforcer`, registers it in
//! the node's [`LiveSessions`] so that policy changes and admin kills from the store reach it,
//! and reports what enforcement did through [`audit_directive`]. The enforcement rules exist
//! once, in the core; this crate is the one place they meet tokio and the store.

mod accept;
#[doc(hidden)]
pub mod bench;
mod connection_threads;
pub mod enforcement_thread;
mod front;
mod gate;
mod guard;
mod lifecycle;
mod live;
mod login;
pub mod metrics;
pub mod open_files;
pub mod passwords;
mod queue;
mod reauth;

pub use accept::{
    LISTEN_BACKLOG, LoginSlot, LoginSlots, accept_loop, drain_connections, listen, serve_front,
};
pub use connection_threads::ConnectionThreads;
pub use front::{DEFAULT_LOGIN_GRACE, FrontConfig};
pub use gate::SessionGate;
pub use guard::{
    ActivityClock, Guard, GuardEvent, GuardEvents, GuardGone, GuardInbox, GuardMoves,
    GuardObserver, GuardStatus, OperatorIo, Reauthenticator,
};
pub use lifecycle::{
    Access, Admission, Allowed, EndReasonCell, Enforcement, GuardSetup, Login, MarkerSink,
    SessionIdentity, SessionObserver, SessionRecording, admit, end_session, recording_failed,
    recording_opened, refused_busy, start_guard,
};
pub use live::{
    Control, HEARTBEAT_INTERVAL, LiveSessions, Registration, WATCH_INTERVAL, audit_directive,
    marker_label,
};
pub use login::{FailedLogin, LoginGate};
pub use queue::{
    Busy, DEFAULT_MAX_STARTING, DEFAULT_START_WAIT, QueueTimeout, SessionLimit,
    SessionLimitReached, SessionRoom, StartQueue, StartSlot,
};
pub use reauth::StoreReauth;
