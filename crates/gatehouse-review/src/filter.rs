//! List filters, typed as one line: `op:alice env:prod end:idle from:2026-11-01 to:2026-11-30`.
//! A bare word matches any of id, operator, target, environment and end reason.

pub use gatehouse_core::days_from_civil;

use crate::catalog::SessionEntry;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub operator: Option<String>,
    pub target: Option<String>,
    pub environment: Option<String>,
    /// Substring of the end reason; `live` matches live sessions.
    pub end_reason: Option<String>,
    pub protocol: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub to: Option<i64>,
    pub words: Vec<String>,
}

const DAY_MS: i64 = 86_400_000;

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for term in text.split_whitespace() {
            let Some((key, value)) = term.split_once(':') else {
                f.words.push(term.to_lowercase());
                continue;
            };
            let value = value.to_owned();
            match key {
                "op" | "operator" => f.operator = Some(value),
                "target" => f.target = Some(value),
                "env" | "environment" => f.environment = Some(value),
                "end" | "reason" => f.end_reason = Some(value.to_lowercase()),
                "proto" | "protocol" => f.protocol = Some(value.to_lowercase()),
                "from" | "since" => f.from = Some(parse_day(&value)?),
                "to" | "until" => f.to = Some(parse_day(&value)? + DAY_MS),
                other => {
                    return Err(format!(
                        "unknown filter '{other}': use op, target, env, end, proto, from, to"
                    ));
                }
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, s: &SessionEntry) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let end = s.end_reason.as_deref().unwrap_or("live").to_lowercase();
        eq(&self.operator, &s.operator)
            && eq(&self.target, &s.target)
            && eq(&self.environment, s.environment.as_deref().unwrap_or("-"))
            && eq(&self.protocol, &s.protocol)
            && self.end_reason.as_deref().is_none_or(|e| end.contains(e))
            && self.from.is_none_or(|f| s.started_at >= f)
            && self.to.is_none_or(|t| s.started_at < t)
            && self.words.iter().all(|w| {
                [
                    s.id.as_str(),
                    &s.operator,
                    &s.target,
                    s.environment.as_deref().unwrap_or(""),
                    &end,
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(w))
            })
    }
}

/// `YYYY-MM-DD` (UTC) as Unix milliseconds at midnight.
pub fn parse_day(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a date like 2026-11-30");
    let mut parts = s.splitn(3, '-');
    let mut next =
        || -> Result<i64, String> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
    let (y, m, d) = (next()?, next()?, next()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds (the core's one formatter of record
/// times).
pub fn format_time(millis: i64) -> String {
    gatehouse_core::format_time(millis, gatehouse_core::TimeStyle::Plain)
}

/// `mm:ss.d` (or `h:mm:ss`) of a position in a recording.
pub fn format_position(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{:02}:{:02}.{}", s / 60, s % 60, d.subsec_millis() / 100)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::catalog::RecordingStatus;

    fn entry(op: &str, env: &str, end: Option<&str>, started: i64) -> SessionEntry {
        SessionEntry {
            id: "0190-abc".into(),
            operator: op.into(),
            target: "web1".into(),
            environment: Some(env.into()),
            protocol: "ssh".into(),
            started_at: started,
            ended_at: end.map(|_| started + 1000),
            end_reason: end.map(str::to_owned),
            recording: None,
            status: RecordingStatus::None,
            live: None,
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(
            format_time(19_782 * DAY_MS + 3_723_000),
            "2024-02-29 01:02:03"
        );
        assert!(parse_day("2024-13-01").is_err());
        assert!(parse_day("yesterday").is_err());
    }

    #[test]
    fn filters_combine() {
        let day = parse_day("2026-11-20").unwrap();
        let a = entry("alice", "prod", Some("idle_timeout"), day + 5000);
        let b = entry("bob", "dev", None, day - 5000);
        let f = Filter::parse("op:alice env:prod end:idle from:2026-11-20 to:2026-11-20").unwrap();
        assert!(f.matches(&a));
        assert!(!f.matches(&b));
        assert!(Filter::parse("end:live").unwrap().matches(&b));
        assert!(!Filter::parse("to:2026-11-19").unwrap().matches(&a));
        assert!(Filter::parse("BOB").unwrap().matches(&b));
        assert!(Filter::parse("").unwrap().is_empty());
        assert!(Filter::parse("colour:red").is_err());
    }

    #[test]
    fn durations_and_positions() {
        use std::time::Duration;
        assert_eq!(format_position(Duration::from_millis(65_400)), "01:05.4");
        assert_eq!(format_position(Duration::from_secs(3725)), "1:02:05");
    }
}
