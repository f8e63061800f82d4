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
            EndReason::Error(_) => "error",
        }
    }

    /// Stored text: the code, plus `: detail` for errors.
    pub fn to_stored(&self) -> String {
        match self {
            EndReason::Error(detail) => format!("error: {detail}"),
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
