//! Per-environment session policy: idle and absolute limits, warnings, what idling does,
//! and how often an operator must prove identity again. Validated here, once, for the CLI,
//! the store and the enforcer alike.

use std::time::Duration;

use thiserror::Error;

/// What reaching the idle limit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdleAction {
    /// End the session.
    #[default]
    Disconnect,
    /// Stop relaying and ask in-band for the operator's password; the target connection
    /// stays open. Sessions that cannot ask in-band (no terminal, SQL) are disconnected.
    Lock,
}

impl IdleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IdleAction::Disconnect => "disconnect",
            IdleAction::Lock => "lock",
        }
    }

    pub fn parse(s: &str) -> Result<IdleAction, PolicyError> {
        match s {
            "disconnect" => Ok(IdleAction::Disconnect),
            "lock" => Ok(IdleAction::Lock),
            other => Err(PolicyError::IdleAction(other.to_owned())),
        }
    }
}

/// Default time an operator has to unlock a locked session.
pub const DEFAULT_LOCK_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    pub idle_timeout: Option<Duration>,
    pub max_session: Option<Duration>,
    /// Lead times of warnings before an idle end, a maximum-length end and a due
    /// reauthentication; longest first.
    pub warn_before: Vec<Duration>,
    pub idle_action: IdleAction,
    pub lock_grace: Duration,
    pub reauth_after: Option<Duration>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            idle_timeout: None,
            max_session: None,
            warn_before: Vec::new(),
            idle_action: IdleAction::Disconnect,
            lock_grace: DEFAULT_LOCK_GRACE,
            reauth_after: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("warning lead {lead} is not shorter than {limit_name} {limit}")]
    LeadNotShorter {
        lead: String,
        limit_name: &'static str,
        limit: String,
    },
    #[error("idle action '{0}' is not one of: disconnect, lock")]
    IdleAction(String),
}

impl EnvPolicy {
    /// Checks the policy and puts the warning leads in order (longest first, no repeats).
    pub fn validated(mut self) -> Result<EnvPolicy, PolicyError> {
        for (name, value) in [
            ("idle timeout", self.idle_timeout),
            ("max session", self.max_session),
            ("reauth after", self.reauth_after),
            ("lock grace", Some(self.lock_grace)),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(PolicyError::Zero(name));
            }
        }
        self.warn_before.sort_unstable_by(|a, b| b.cmp(a));
        self.warn_before.dedup();
        for lead in &self.warn_before {
            if lead.is_zero() {
                return Err(PolicyError::Zero("warning lead"));
            }
            for (limit_name, limit) in [
                ("idle timeout", self.idle_timeout),
                ("max session", self.max_session),
                ("reauth after", self.reauth_after),
            ] {
                if let Some(limit) = limit
                    && *lead >= limit
                {
                    return Err(PolicyError::LeadNotShorter {
                        lead: format_duration(*lead),
                        limit_name,
                        limit: format_duration(limit),
                    });
                }
            }
        }
        Ok(self)
    }
}

/// `15m`, `8h`, `1h30m`, `45s`, `1500ms`: the shortest exact form, for messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Like [`format_duration`], rounded to whole seconds (at least `1s`) for countdowns.
pub fn format_countdown(d: Duration) -> String {
    let secs = (d.as_millis() + 500) / 1000;
    format_duration(Duration::from_secs(secs.max(1) as u64))
}

/// An elapsed time at a glance (session lengths, idle times, time left), the one display
/// format of the review TUI and the CLI's tables: `1h02m`, `3m04s`, `12s`, and tenths under
/// ten seconds (`0.2s`, `3.4s`) so that a session shorter than a second is not `0s`. Policy
/// values are shown exactly instead ([`format_duration`]).
pub fn format_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{s}.{}s", d.subsec_millis() / 100),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn elapsed_times_at_a_glance() {
        assert_eq!(format_elapsed(12 * S), "12s");
        assert_eq!(format_elapsed(Duration::from_millis(250)), "0.2s");
        assert_eq!(format_elapsed(Duration::ZERO), "0.0s");
        assert_eq!(format_elapsed(Duration::from_millis(9_990)), "9.9s");
        assert_eq!(format_elapsed(184 * S), "3m04s");
        assert_eq!(format_elapsed(3720 * S), "1h02m");
    }
    const M: Duration = Duration::from_secs(60);

    #[test]
    fn validation_rules() {
        let ok = EnvPolicy {
            idle_timeout: Some(15 * M),
            max_session: Some(480 * M),
            warn_before: vec![M, 5 * M, M, 10 * S],
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(ok.warn_before, [5 * M, M, 10 * S]);

        let zero = EnvPolicy {
            idle_timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(
            zero.validated().unwrap_err().to_string(),
            "idle timeout must be greater than zero"
        );
        let lead = EnvPolicy {
            idle_timeout: Some(5 * M),
            warn_before: vec![5 * M],
            ..Default::default()
        };
        assert_eq!(
            lead.validated().unwrap_err().to_string(),
            "warning lead 5m is not shorter than idle timeout 5m"
        );
        let lead = EnvPolicy {
            max_session: Some(30 * S),
            warn_before: vec![M],
            ..Default::default()
        };
        assert!(lead.validated().is_err());
        let grace = EnvPolicy {
            lock_grace: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(
            grace.validated().unwrap_err(),
            PolicyError::Zero("lock grace")
        );
        assert_eq!(
            IdleAction::parse("sleep").unwrap_err().to_string(),
            "idle action 'sleep' is not one of: disconnect, lock"
        );
    }

    #[test]
    fn durations_read_like_the_cli_takes_them() {
        assert_eq!(format_duration(15 * M), "15m");
        assert_eq!(format_duration(8 * 60 * M), "8h");
        assert_eq!(format_duration(90 * M), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(2 * S), "2s");
        assert_eq!(format_countdown(Duration::from_millis(59_999)), "1m");
        assert_eq!(format_countdown(Duration::from_millis(10)), "1s");
        assert_eq!(format_countdown(Duration::from_millis(4_400)), "4s");
    }
}
