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
use prometheus_client::metrics::histogram::Histogram;
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
struct LiveLabels {
    node: String,
    protocol: String,
    environment: String,
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    /// `warn`, `lock`, `unlock`, `unlock_failed`, `end`.
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// What the node asked the store: `heartbeat`, `watch`.
    operation: String,
}

/// Seconds, from 1 ms to about 16 s: lateness and store round trips.
fn seconds_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

struct Metrics {
    registry: Registry,
    session_ends: Family<EndLabels, Counter>,
    live_sessions: Family<LiveLabels, Gauge>,
    /// Every label set the live gauge ever had: one that has no session now reads 0.
    live_seen: std::sync::Mutex<std::collections::HashSet<LiveLabels>>,
    sessions_taken_over: Counter,
    failed_logins: Family<MethodLabels, Counter>,
    login_lockouts: Family<ScopeLabels, Counter>,
    detective_findings: Family<RuleLabels, Counter>,
    enforcement_actions: Family<ActionLabels, Counter>,
    enforcement_lateness: Histogram,
    recording_bytes: Family<ProtocolLabels, Counter>,
    recording_failures: Family<ProtocolLabels, Counter>,
    statements_logged: Counter,
    store_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationLabels, Counter>,
    node_heartbeat_age: Family<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    notify_lag: Histogram,
    start_queue_waiting: Gauge,
    start_queue_wait: Histogram,
    start_queue_timeouts: Counter,
    source_share_closed: Counter,
    max_sessions: Gauge,
    sessions_admitted: Gauge,
    max_unauthenticated: Family<ProtocolLabels, Gauge>,
    unauthenticated: Family<ProtocolLabels, Gauge>,
}

/// The node's room for sessions and logins, read at scrape time: its `[node] max_sessions`
/// and the sessions holding a room under it, and per front its `max_unauthenticated` login
/// slots and the connections holding one (not yet admitted to a session).
#[derive(Debug, Clone, Default)]
pub struct Capacity {
    pub max_sessions: usize,
    pub sessions_admitted: usize,
    /// (protocol, slots, slots in use) per front.
    pub login_slots: Vec<(gatehouse_core::Protocol, usize, usize)>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("gatehouse");
    let session_ends = Family::<EndLabels, Counter>::default();
    registry.register(
        "session_ends",
        "Sessions ended on this node, by protocol and end reason",
        session_ends.clone(),
    );
    let live_sessions = Family::<LiveLabels, Gauge>::default();
    registry.register(
        "live_sessions",
        "Live sessions whose guards run on this node, by protocol and environment",
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
    let enforcement_actions = Family::<ActionLabels, Counter>::default();
    registry.register(
        "enforcement_actions",
        "What the guards did: warnings, locks, unlocks, failed unlocks, ends",
        enforcement_actions.clone(),
    );
    let enforcement_lateness = seconds_buckets();
    registry.register(
        "enforcement_lateness_seconds",
        "How late a guard woke for a deadline (warning, lock or end) after it was due",
        enforcement_lateness.clone(),
    );
    let recording_bytes = Family::<ProtocolLabels, Counter>::default();
    registry.register(
        "recording_bytes",
        "Bytes of recordings and statement logs sealed on this node",
        recording_bytes.clone(),
    );
    let recording_failures = Family::<ProtocolLabels, Counter>::default();
    registry.register(
        "recording_failures",
        "Recordings that could not be created or sealed (their sessions were refused or ended)",
        recording_failures.clone(),
    );
    let statements_logged = Counter::default();
    registry.register(
        "statement_log_lines",
        "Statements written to PostgreSQL statement logs",
        statements_logged.clone(),
    );
    let store_seconds =
        Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_buckets,
        );
    registry.register(
        "store_seconds",
        "Time of the node's regular store round trips (heartbeat, watcher pass)",
        store_seconds.clone(),
    );
    let store_errors = Family::<OperationLabels, Counter>::default();
    registry.register(
        "store_errors",
        "Failed store round trips of the node's heartbeat and watcher",
        store_errors.clone(),
    );
    let node_heartbeat_age =
        Family::<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    registry.register(
        "node_heartbeat_age_seconds",
        "Age of each node's last heartbeat in the store, read at scrape time",
        node_heartbeat_age.clone(),
    );
    let notify_lag = seconds_buckets();
    registry.register(
        "notify_lag_seconds",
        "From a change's notification sent (policy, kill, user lock; any node) to this node's watcher having handed it to the guards",
        notify_lag.clone(),
    );
    let start_queue_waiting = Gauge::default();
    registry.register(
        "start_queue_waiting",
        "Sessions waiting in the node's start queue for a slot (store registration, target login)",
        start_queue_waiting.clone(),
    );
    let start_queue_wait = seconds_buckets();
    registry.register(
        "start_queue_wait_seconds",
        "How long sessions that had to queue waited for a start slot",
        start_queue_wait.clone(),
    );
    let start_queue_timeouts = Counter::default();
    registry.register(
        "start_queue_timeouts",
        "Sessions refused because the start queue did not move within its longest wait",
        start_queue_timeouts.clone(),
    );
    let source_share_closed = Counter::default();
    registry.register(
        "source_share_closed",
        "Connections closed at once because their source held its share of a front's login slots ([node] max_unauthenticated_per_source)",
        source_share_closed.clone(),
    );
    let max_sessions = Gauge::default();
    registry.register(
        "max_sessions",
        "Live sessions this node admits at most ([node] max_sessions, by default what its open-files limit leaves room for)",
        max_sessions.clone(),
    );
    let sessions_admitted = Gauge::default();
    registry.register(
        "sessions_admitted",
        "Sessions holding a room under max_sessions (admitted, until their connection ends)",
        sessions_admitted.clone(),
    );
    let max_unauthenticated = Family::<ProtocolLabels, Gauge>::default();
    registry.register(
        "max_unauthenticated",
        "Login slots of each front ([node] max_unauthenticated): connections not yet admitted to a session beyond these wait in the listen backlog",
        max_unauthenticated.clone(),
    );
    let unauthenticated = Family::<ProtocolLabels, Gauge>::default();
    registry.register(
        "unauthenticated_connections",
        "Connections holding a login slot of each front (logging in, or refused and not yet gone)",
        unauthenticated.clone(),
    );
    Metrics {
        registry,
        source_share_closed,
        max_sessions,
        sessions_admitted,
        max_unauthenticated,
        unauthenticated,
        notify_lag,
        start_queue_waiting,
        start_queue_wait,
        start_queue_timeouts,
        enforcement_actions,
        enforcement_lateness,
        recording_bytes,
        recording_failures,
        statements_logged,
        store_seconds,
        store_errors,
        node_heartbeat_age,
        session_ends,
        live_sessions,
        live_seen: Default::default(),
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

/// The guard carried out a directive (`warn`, `lock`, `unlock`, `unlock_failed`, `end`).
pub fn enforcement_action(action: &str) {
    METRICS
        .enforcement_actions
        .get_or_create(&ActionLabels {
            action: action.to_owned(),
        })
        .inc();
}

/// A guard woke `late` after its deadline was due.
pub fn enforcement_late(late: std::time::Duration) {
    METRICS.enforcement_lateness.observe(late.as_secs_f64());
}

/// A recording of `protocol` was sealed at `bytes` bytes.
pub fn recording_sealed(protocol: &str, bytes: u64) {
    METRICS
        .recording_bytes
        .get_or_create(&ProtocolLabels {
            protocol: protocol.to_owned(),
        })
        .inc_by(bytes);
}

/// A recording of `protocol` could not be created or sealed.
pub fn recording_failed(protocol: &str) {
    METRICS
        .recording_failures
        .get_or_create(&ProtocolLabels {
            protocol: protocol.to_owned(),
        })
        .inc();
}

/// A session joined (`true`) or left (`false`) the start queue's line. Counted up and down
/// rather than set from the queue's own count, which two sessions racing could set out of
/// order.
pub fn start_queue_waiting(joined: bool) {
    if joined {
        METRICS.start_queue_waiting.inc();
    } else {
        METRICS.start_queue_waiting.dec();
    }
}

/// A session queued for `waited`; `ok`: it got its slot (else it was refused).
pub fn start_queue_waited(waited: std::time::Duration, ok: bool) {
    METRICS.start_queue_wait.observe(waited.as_secs_f64());
    if !ok {
        METRICS.start_queue_timeouts.inc();
    }
}

/// A connection was closed because its source held its share of the login slots.
pub fn source_share_closed() {
    METRICS.source_share_closed.inc();
}

/// A statement was written to a statement log.
pub fn statement_logged() {
    METRICS.statements_logged.inc();
}

/// The node's `operation` on the store took `took` and succeeded or not.
pub fn store_round_trip(operation: &str, took: std::time::Duration, ok: bool) {
    let labels = OperationLabels {
        operation: operation.to_owned(),
    };
    METRICS
        .store_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        METRICS.store_errors.get_or_create(&labels).inc();
    }
}

/// A change notified by a node (or the CLI) at `sent` (Unix ms) was applied here at
/// `applied` (clocks of two machines: NTP assumed, as for heartbeat ages).
pub fn notify_applied(sent: i64, applied: i64) {
    let lag = applied.saturating_sub(sent).max(0) as f64 / 1000.0;
    METRICS.notify_lag.observe(lag);
}

/// Each node's heartbeat age, as read from the store just before a scrape.
pub fn node_heartbeat_ages(ages: &[(String, f64)]) {
    for (node, age) in ages {
        METRICS
            .node_heartbeat_age
            .get_or_create(&NodeLabels { node: node.clone() })
            .set(*age);
    }
}

/// The exposition text, with the live-session gauge set to `live` for `node` and the
/// capacity gauges to `capacity` first.
pub fn encode(
    node: &str,
    live: &[(gatehouse_core::Protocol, String, usize)],
    capacity: &Capacity,
) -> Result<String, std::fmt::Error> {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    METRICS.max_sessions.set(gauge(capacity.max_sessions));
    METRICS
        .sessions_admitted
        .set(gauge(capacity.sessions_admitted));
    for (protocol, max, in_use) in &capacity.login_slots {
        let labels = ProtocolLabels {
            protocol: protocol.as_str().to_owned(),
        };
        METRICS
            .max_unauthenticated
            .get_or_create(&labels)
            .set(gauge(*max));
        METRICS
            .unauthenticated
            .get_or_create(&labels)
            .set(gauge(*in_use));
    }
    if let Ok(mut seen) = METRICS.live_seen.lock() {
        for labels in seen.iter() {
            METRICS.live_sessions.get_or_create(labels).set(0);
        }
        for (protocol, environment, n) in live {
            let labels = LiveLabels {
                node: node.to_owned(),
                protocol: protocol.as_str().to_owned(),
                environment: environment.clone(),
            };
            METRICS
                .live_sessions
                .get_or_create(&labels)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            seen.insert(labels);
        }
    }
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
        use gatehouse_core::Protocol;
        let text = encode(
            "n1",
            &[
                (Protocol::Ssh, "prod".into(), 3),
                (Protocol::Postgres, "prod".into(), 1),
            ],
            &Capacity::default(),
        )
        .unwrap_or_default();
        assert!(
            text.contains("gatehouse_session_ends_total{protocol=\"ssh\",reason=\"admin_kill\"} 2"),
            "{text}"
        );
        assert!(!text.contains("secret reason"), "{text}");
        let live = |p: &str| {
            format!("gatehouse_live_sessions{{node=\"n1\",protocol=\"{p}\",environment=\"prod\"}} ")
        };
        assert!(text.contains(&format!("{}3\n", live("ssh"))), "{text}");
        assert!(text.contains(&format!("{}1\n", live("postgres"))), "{text}");
        // a protocol/environment whose sessions all ended reads 0, not its last value
        let text = encode(
            "n1",
            &[(Protocol::Ssh, "prod".into(), 2)],
            &Capacity::default(),
        )
        .unwrap_or_default();
        assert!(text.contains(&format!("{}2\n", live("ssh"))), "{text}");
        assert!(text.contains(&format!("{}0\n", live("postgres"))), "{text}");
    }

    #[test]
    fn lateness_recordings_store_and_heartbeats_are_exposed() {
        // (one registry per process: other tests in this binary count too, so labels of
        // their own, or presence only)
        enforcement_late(std::time::Duration::from_millis(3));
        enforcement_action("warn");
        recording_sealed("test-a", 1234);
        recording_failed("test-b");
        statement_logged();
        store_round_trip("test-op", std::time::Duration::from_millis(2), false);
        node_heartbeat_ages(&[("test-node".into(), 1.5)]);
        notify_applied(1_000, 1_250);
        let capacity = Capacity {
            max_sessions: 3129,
            sessions_admitted: 17,
            login_slots: vec![
                (gatehouse_core::Protocol::Ssh, 1024, 3),
                (gatehouse_core::Protocol::Postgres, 1024, 0),
            ],
        };
        let text = encode("n2", &[], &capacity).unwrap_or_default();
        for want in [
            "gatehouse_enforcement_lateness_seconds_bucket{le=\"0.004\"} ",
            "gatehouse_enforcement_actions_total{action=\"warn\"} ",
            "gatehouse_recording_bytes_total{protocol=\"test-a\"} 1234",
            "gatehouse_recording_failures_total{protocol=\"test-b\"} 1",
            "gatehouse_statement_log_lines_total ",
            "gatehouse_store_seconds_count{operation=\"test-op\"} 1",
            "gatehouse_store_errors_total{operation=\"test-op\"} 1",
            "gatehouse_node_heartbeat_age_seconds{node=\"test-node\"} 1.5",
            "gatehouse_notify_lag_seconds_bucket{le=\"0.256\"} 1",
            "gatehouse_max_sessions 3129\n",
            "gatehouse_sessions_admitted 17\n",
            "gatehouse_max_unauthenticated{protocol=\"ssh\"} 1024\n",
            "gatehouse_unauthenticated_connections{protocol=\"ssh\"} 3\n",
            "gatehouse_unauthenticated_connections{protocol=\"postgres\"} 0\n",
        ] {
            assert!(text.contains(want), "no {want} in:\n{text}");
        }
    }
}
