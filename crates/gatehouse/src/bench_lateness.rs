//! Benchmark-only (cargo feature `bench-lateness`; `bench/run` builds it as
//! `target/release/gatehouse-lateness`): enforcement lateness measured inside a busy broker.
//! When `GATEHOUSE_BENCH_LATENESS` names a file, `serve` runs, for as long as it serves,
//! rounds of 10,000 real guards on the node's enforcement thread, where real guards run
//! (idle limits spread over 1–3 s, two warnings each), together with 10,000 bare tokio
//! timers with the same deadlines on the broker's main runtime — the baseline measured under
//! the same load at the same time — and appends one JSON line per round: when it started and
//! ended (Unix ms) and each side's p50/p99/max lateness in ms.
//! `tests/bench/lateness_under_load.rs` loads the broker with logins and bulk traffic and
//! reads the rounds. No normal build has this code.

use std::io::Write;
use std::time::Duration;

use gatehouse_session::bench::{guard_lateness, timer_lateness};

const SESSIONS: usize = 10_000;
const FIRST: Duration = Duration::from_secs(1);
const SPREAD: Duration = Duration::from_secs(2);

fn summary(mut v: Vec<Duration>) -> [f64; 3] {
    v.sort();
    let at = |p: f64| {
        let i = ((v.len().saturating_sub(1)) as f64 * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    [at(0.5), at(0.99), at(1.0)]
}

pub fn spawn() -> Option<tokio::task::JoinHandle<()>> {
    let path = std::env::var_os("GATEHOUSE_BENCH_LATENESS")?;
    tracing::warn!(
        "benchmark build: running synthetic guards for the lateness benchmark (never in production)"
    );
    Some(tokio::spawn(async move {
        loop {
            let started = gatehouse_store::now_millis();
            let (guards, timers) = tokio::join!(
                guard_lateness(SESSIONS, FIRST, SPREAD),
                timer_lateness(SESSIONS, FIRST, SPREAD)
            );
            let line = serde_json::json!({
                "started": started,
                "ended": gatehouse_store::now_millis(),
                "guard_ms": summary(guards),
                "timer_ms": summary(timers),
            });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot write the lateness benchmark's rounds");
                return;
            }
        }
    }))
}
