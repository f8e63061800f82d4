//! The node's Prometheus metrics (`prometheus-client`): what the fronts count as sessions
//! end and logins fail, what the fleet and the detective report, and what is read at scrape
//! time (live sessions). One registry per process — a
//! process is one node — so the fronts count without a handle threaded through every call;
//! `serve` exposes it on `[metrics] listen` (off by default).

use std::sync::LazyLock;

use gatehouse_core::EndReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    protocol: String,
    /// The reason's code (`admin_kill`, not the admin's text: bounded label values).
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    /// `source` (an address or IPv6 /64) or `account`.
    scope: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

struct Metrics {
    registry: Registry,
    session_ends: Family<EndLabels, Counter>,
    live_sessions: Family<NodeLabels, Gauge>,
    sessions_taken_over: Counter,
    failed_logins: Family<MethodLabels, Counter>,
    login_lockouts: Family<ScopeLabels, Counter>,
    detective_findings: Family<RuleLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("gatehouse");
    let session_ends = Family::<EndLabels, Counter>::default();
    registry.register(
        "session_ends",
        "Sessions ended on this node, by protocol and end reason",
        session_ends.clone(),
    );
    let live_sessions = Family::<NodeLabels, Gauge>::default();
    registry.register(
        "live_sessions",
        "Live sessions whose guards run on this node",
        live_sessions.clone(),
    );
    let sessions_taken_over = Counter::default();
    registry.register(
        "lost_node_sessions_closed",
        "Sessions of lost nodes this node closed as interrupted",
        sessions_taken_over.clone(),
    );
    let failed_logins = Family::<MethodLabels, Counter>::default();
    registry.register(
        "failed_logins",
        "Failed logins (both fronts and the lock prompt), by method",
        failed_logins.clone(),
    );
    let login_lockouts = Family::<ScopeLabels, Counter>::default();
    registry.register(
        "login_lockouts",
        "Sources or accounts locked out by the failed-login limits",
        login_lockouts.clone(),
    );
    let detective_findings = Family::<RuleLabels, Counter>::default();
    registry.register(
        "detective_findings",
        "New findings of the detective control reported by this process, by rule",
        detective_findings.clone(),
    );
    Metrics {
        registry,
        session_ends,
        live_sessions,
        sessions_taken_over,
        failed_logins,
        login_lockouts,
        detective_findings,
    }
});

/// A front's session ended with `reason`.
pub fn session_ended(protocol: &str, reason: &EndReason) {
    METRICS
        .session_ends
        .get_or_create(&EndLabels {
            protocol: protocol.to_owned(),
            reason: reason.as_code().to_owned(),
        })
        .inc();
}

/// A login failed with `method`; `source`/`account`: this failure locked them out.
pub fn login_failed(method: &str, source: bool, account: bool) {
    METRICS
        .failed_logins
        .get_or_create(&MethodLabels {
            method: method.to_owned(),
        })
        .inc();
    for (scope, locked) in [("source", source), ("account", account)] {
        if locked {
            METRICS
                .login_lockouts
                .get_or_create(&ScopeLabels {
                    scope: scope.to_owned(),
                })
                .inc();
        }
    }
}

/// The detective control reported a new finding of `rule`.
pub fn detective_finding(rule: &str) {
    METRICS
        .detective_findings
        .get_or_create(&RuleLabels {
            rule: rule.to_owned(),
        })
        .inc();
}

/// This node closed `n` sessions of a lost node.
pub fn lost_node_sessions_closed(n: usize) {
    METRICS
        .sessions_taken_over
        .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
}

/// The exposition text, with the live-session gauge set to `live` for `node` first.
pub fn encode(node: &str, live: usize) -> Result<String, std::fmt::Error> {
    METRICS
        .live_sessions
        .get_or_create(&NodeLabels {
            node: node.to_owned(),
        })
        .set(i64::try_from(live).unwrap_or(i64::MAX));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_counted_by_protocol_and_reason_code() {
        session_ended("ssh", &EndReason::AdminKill("secret reason".into()));
        session_ended("ssh", &EndReason::AdminKill(String::new()));
        let text = encode("n1", 3).unwrap_or_default();
        assert!(
            text.contains("gatehouse_session_ends_total{protocol=\"ssh\",reason=\"admin_kill\"} 2"),
            "{text}"
        );
        assert!(!text.contains("secret reason"), "{text}");
        assert!(
            text.contains("gatehouse_live_sessions{node=\"n1\"} 3"),
            "{text}"
        );
    }
}
