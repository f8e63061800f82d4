//! How late do sessions end? 10,000 concurrent guards with staggered idle limits (1–3 s,
//! two warnings each) on one runtime, against bare tokio timers with the same deadlines.
//! Reports p50/p99/max lateness and the guard/timer ratio; the product promise is that a
//! session ends within 100 ms of its limit.

use std::time::Duration;

use gatehouse_session::bench::{guard_lateness, timer_lateness};

const SESSIONS: usize = 10_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let (p50, p99, max) = (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        *v.last().unwrap_or(&Duration::ZERO),
    );
    println!(
        "{name:<22} n={:<6} p50={p50:>10.3?} p99={p99:>10.3?} max={max:>10.3?}",
        v.len()
    );
    (p50, p99, max)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (first, spread) = (Duration::from_secs(1), Duration::from_secs(2));
    let base = rt.block_on(timer_lateness(SESSIONS, first, spread));
    let guard = rt.block_on(guard_lateness(SESSIONS, first, spread));
    println!(
        "enforcement lateness, {SESSIONS} concurrent sessions, limits {first:?}..{:?}",
        first + spread
    );
    let (b50, b99, bmax) = report("baseline tokio timer", base);
    let (g50, g99, gmax) = report("gatehouse guard", guard);
    let ratio = |g: Duration, b: Duration| g.as_secs_f64() / b.as_secs_f64().max(1e-6);
    println!(
        "ratio guard/baseline: p50 {:.2}x  p99 {:.2}x  max {:.2}x",
        ratio(g50, b50),
        ratio(g99, b99),
        ratio(gmax, bmax)
    );
    gatehouse_testbed::bench_summary::record(&gatehouse_testbed::bench_summary::Row {
        what: "guard lateness p99, 10,000 guards, idle machine",
        gatehouse: format!("{:.1} ms", g99.as_secs_f64() * 1e3),
        baseline: format!("bare tokio timers {:.1} ms", b99.as_secs_f64() * 1e3),
        ratio: format!("{:.2}×", ratio(g99, b99)),
        target: "max ≤ 100 ms",
        met: Some(gmax <= Duration::from_millis(100)),
    });
    println!(
        "within the 100 ms promise: {}",
        if gmax <= Duration::from_millis(100) {
            "yes"
        } else {
            "NO"
        }
    );
}
