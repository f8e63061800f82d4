//! The session model shared by every front: which protocol, and why a session ended.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ssh,
    Postgres,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Postgres => "postgres",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ssh" => Ok(Protocol::Ssh),
            "postgres" => Ok(Protocol::Postgres),
            other => Err(format!("unknown protocol '{other}'")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended, as stored in the session registry (`end_reason` column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The operator closed the connection.
    ClientClosed,
    /// The target closed the connection or its last channel.
    TargetClosed,
    /// The operator was refused: unknown target, no grant, locked account.
    AccessDenied,
    /// The target presented a host key other than the pinned one.
    HostKeyMismatch,
    /// The target could not be reached or refused Gatehouse's credential.
    TargetUnreachable,
    /// The broker shut down gracefully.
    Shutdown,
    /// The broker died while the session was live (found at the next start).
    Interrupted,
    /// No operator activity for the environment's idle timeout.
    IdleTimeout,
    /// The environment's maximum session length was reached.
    MaxSession,
    /// Wrong password (or code) too many times at an in-band reauthentication.
    ReauthFailed,
    /// A locked session was not unlocked within the lock grace.
    ReauthTimeout,
    /// Reauthentication was due and the session cannot reauthenticate in-band.
    ReauthRequired,
    /// Ended by `gatehouse sessions kill`, with the admin's reason (may be empty).
    AdminKill(String),
    /// The operator's account was locked by an admin.
    OperatorLocked,
    /// The session could not be recorded (fail closed: never an unrecorded session).
    RecordingFailed,
    /// A protocol or internal error; the text says which.
    Error(String),
}

impl EndReason {
    pub fn as_code(&self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::TargetClosed => "target_closed",
            EndReason::AccessDenied => "access_denied",
            EndReason::HostKeyMismatch => "host_key_mismatch",
            EndReason::TargetUnreachable => "target_unreachable",
            EndReason::Shutdown => "shutdown",
            EndReason::Interrupted => "interrupted",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxSession => "max_session",
            EndReason::ReauthFailed => "reauth_failed",
            EndReason::ReauthTimeout => "reauth_timeout",
            EndReason::ReauthRequired => "reauth_required",
            EndReason::AdminKill(_) => "admin_kill",
            EndReason::OperatorLocked => "operator_locked",
            EndReason::RecordingFailed => "recording_failed",
            EndReason::Error(_) => "error",
        }
    }

    /// Stored text: the code, plus `: detail` for errors.
    pub fn to_stored(&self) -> String {
        match self {
            EndReason::Error(detail) => format!("error: {detail}"),
            EndReason::AdminKill(why) if !why.is_empty() => format!("admin_kill: {why}"),
            other => other.as_code().to_owned(),
        }
    }

    pub fn from_stored(s: &str) -> EndReason {
        match s {
            "client_closed" => EndReason::ClientClosed,
            "target_closed" => EndReason::TargetClosed,
            "access_denied" => EndReason::AccessDenied,
            "host_key_mismatch" => EndReason::HostKeyMismatch,
            "target_unreachable" => EndReason::TargetUnreachable,
            "shutdown" => EndReason::Shutdown,
            "interrupted" => EndReason::Interrupted,
            "idle_timeout" => EndReason::IdleTimeout,
            "max_session" => EndReason::MaxSession,
            "reauth_failed" => EndReason::ReauthFailed,
            "reauth_timeout" => EndReason::ReauthTimeout,
            "reauth_required" => EndReason::ReauthRequired,
            "admin_kill" => EndReason::AdminKill(String::new()),
            "operator_locked" => EndReason::OperatorLocked,
            "recording_failed" => EndReason::RecordingFailed,
            other if other.starts_with("admin_kill: ") => {
                EndReason::AdminKill(other["admin_kill: ".len()..].to_owned())
            }
            other => EndReason::Error(other.strip_prefix("error: ").unwrap_or(other).to_owned()),
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_through_storage() {
        for r in [
            EndReason::ClientClosed,
            EndReason::TargetClosed,
            EndReason::AccessDenied,
            EndReason::HostKeyMismatch,
            EndReason::TargetUnreachable,
            EndReason::Shutdown,
            EndReason::Interrupted,
            EndReason::IdleTimeout,
            EndReason::MaxSession,
            EndReason::ReauthFailed,
            EndReason::ReauthTimeout,
            EndReason::ReauthRequired,
            EndReason::AdminKill(String::new()),
            EndReason::AdminKill("maintenance window".into()),
            EndReason::OperatorLocked,
            EndReason::RecordingFailed,
            EndReason::Error("channel reset".into()),
        ] {
            assert_eq!(EndReason::from_stored(&r.to_stored()), r);
        }
    }

    #[test]
    fn protocol_parses() {
        assert_eq!("ssh".parse::<Protocol>(), Ok(Protocol::Ssh));
        assert_eq!("postgres".parse::<Protocol>(), Ok(Protocol::Postgres));
        assert!("rdp".parse::<Protocol>().is_err());
    }
}
