//! Gatehouse's pure domain core: login names, access decisions, the session model and
//! failed-login rate limiting.
//!
//! Nothing in this crate performs I/O or reads a clock: callers pass `now` in. That keeps
//! every rule testable exactly and in isolation (see `ARCHITECTURE.md`). A test in
//! `tests/no_io.rs` checks with `cargo tree` that no async runtime, database, SSH or TUI
//! crate is pulled in.

pub mod access;
pub mod calendar;
pub mod detective;
pub mod enforcement;
pub mod gate;
pub mod login;
pub mod names;
pub mod policy;
pub mod ratelimit;
pub mod session;
pub mod ssh_policy;
pub mod target;
pub mod target_addr;

pub use access::{AccessDecision, AccessFacts, DenyReason, decide_access};
pub use calendar::{TimeStyle, civil_from_days, days_from_civil, format_time};
pub use enforcement::{Directive, Enforcer, LockReason, WarnKind};
pub use gate::{
    Admission, ChannelStart, OperatorAction, RecordingMode, Refusal, SessionState, admit,
};
pub use login::{LoginName, LoginNameError};
pub use names::{NameError, validate_name};
pub use policy::{EnvPolicy, IdleAction, PolicyError, format_duration, format_elapsed};
pub use ratelimit::{
    FailedLoginLimiter, FailureOutcome, LimiterConfig, LoginLimiter, LoginLimits, LoginRefusal,
    SourceBucket,
};
pub use session::{EndReason, Protocol};
pub use ssh_policy::{ForwardingKind, ForwardingPolicy, env_var_allowed};
pub use target::{TargetKind, TlsMode};
pub use target_addr::{PgAddress, SshAddress, SshAddressError};
