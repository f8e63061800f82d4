//! What kind of target Gatehouse brokers to, and what it must know to reach it safely:
//! typed once when a target is stored, never re-parsed from strings on each connection.

use crate::Protocol;

/// How Gatehouse secures its connection to a PostgreSQL target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (loopback or a trusted network only).
    Disable,
    /// TLS without certificate checks (protects against passive snooping only).
    Require,
    /// TLS with the certificate checked against the target's CA and host name.
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    pub fn parse(s: &str) -> Result<TlsMode, String> {
        match s {
            "disable" => Ok(TlsMode::Disable),
            "require" => Ok(TlsMode::Require),
            "verify-full" => Ok(TlsMode::VerifyFull),
            other => Err(format!(
                "unknown TLS mode '{other}' (expected verify-full, require or disable)"
            )),
        }
    }
}

/// A target's protocol with what Gatehouse needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    Ssh {
        /// The pinned host key (an OpenSSH public key line), once known.
        host_key: Option<String>,
        /// Pin the first key the target presents (only while none is pinned).
        tofu: bool,
    },
    Postgres {
        /// The database connected to when the operator names none.
        database: Option<String>,
        tls: TlsMode,
        /// PEM of the CA that signed the target's certificate (`verify-full`; the system's
        /// roots when absent).
        ca: Option<String>,
        /// Gatehouse's logins to it may be kept between sessions on nodes with `[postgres]
        /// target_pool` (`false`: `target add --no-kept-logins`, every session logs in anew).
        kept_logins: bool,
    },
}

impl TargetKind {
    pub fn protocol(&self) -> Protocol {
        match self {
            TargetKind::Ssh { .. } => Protocol::Ssh,
            TargetKind::Postgres { .. } => Protocol::Postgres,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_round_trip_and_unknown_ones_are_named() {
        for m in [TlsMode::Disable, TlsMode::Require, TlsMode::VerifyFull] {
            assert_eq!(TlsMode::parse(m.as_str()), Ok(m));
        }
        let e = TlsMode::parse("prefer").unwrap_err();
        assert!(e.contains("'prefer'"), "{e}");
    }

    #[test]
    fn a_kind_knows_its_protocol() {
        let ssh = TargetKind::Ssh {
            host_key: None,
            tofu: true,
        };
        assert_eq!(ssh.protocol(), Protocol::Ssh);
        let pg = TargetKind::Postgres {
            database: None,
            tls: TlsMode::VerifyFull,
            ca: None,
            kept_logins: true,
        };
        assert_eq!(pg.protocol(), Protocol::Postgres);
    }
}
