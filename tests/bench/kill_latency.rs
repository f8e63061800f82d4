//! Kill propagation across nodes: two `gatehouse serve` nodes on one PostgreSQL store; a
//! running session through node B (its command printed its first line) is ended by a store
//! write made beside node A — a session kill (what `sessions kill` does, without the CLI's
//! process start) or a user lock (`users lock`), alternately, 100 times in all. Reports for
//! each the time from the request to the session's row closed by node B's guard, and to the
//! ssh client's exit (p50/p99); the target is 200 ms p99. The baseline is the poll the notifications
//! replace (500 ms). Run with `./bench/run`; `KILL_BENCH_COUNT` overrides the count.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_e2e::fleet::Fleet;
use gatehouse_store::{MasterKey, Store};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let count: usize = std::env::var("KILL_BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let fleet = Fleet::start(["a", "b"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = MasterKey::load_or_create(&fleet.shared.path().join("gatehouse_secret.key")).unwrap();
    let store = rt
        .block_on(Store::open(&fleet.pg.url("gatehouse"), key))
        .unwrap();
    // [kill, user lock]
    let mut to_row = [Vec::with_capacity(count), Vec::with_capacity(count)];
    let mut to_exit = [Vec::with_capacity(count), Vec::with_capacity(count)];
    for i in 0..count {
        let by_lock = i % 2;
        let mut child = fleet.b().spawn_ssh(
            "alice+web1",
            &fleet.world.alice_key,
            "echo ready; sleep 60",
            Stdio::piped(),
        );
        // the command runs on the target: the session is past its setup
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert_eq!(first.trim(), "ready", "session {i} did not start");
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            let live = rt.block_on(store.list_sessions(5)).unwrap();
            if let Some(s) = live.into_iter().find(|s| s.ended_at.is_none()) {
                break s.id;
            }
            assert!(Instant::now() < deadline, "session {i} never went live");
            std::thread::sleep(Duration::from_millis(20));
        };
        let start = Instant::now();
        if by_lock == 1 {
            rt.block_on(store.set_operator_locked("alice", true))
                .unwrap();
        } else {
            rt.block_on(store.request_kill(&id, "bench")).unwrap();
        }
        let mut row = None;
        let exit = loop {
            if row.is_none() && rt.block_on(store.session(&id)).unwrap().ended_at.is_some() {
                row = Some(start.elapsed());
            }
            if child.try_wait().unwrap().is_some() {
                break start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "kill {i} not carried out"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        while row.is_none() {
            if rt.block_on(store.session(&id)).unwrap().ended_at.is_some() {
                row = Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        to_row[by_lock].push(row.unwrap_or_default());
        to_exit[by_lock].push(exit);
        if by_lock == 1 {
            rt.block_on(store.set_operator_locked("alice", false))
                .unwrap();
        }
    }
    if std::env::var_os("KILL_BENCH_VERBOSE").is_some() {
        println!("row: {to_row:?}");
    }
    println!(
        "kill propagation, a store write beside node A -> node B's session ({count} in all, PostgreSQL LISTEN/NOTIFY)"
    );
    for (what, (rows, exits)) in ["session kill", "user lock"]
        .iter()
        .zip(to_row.iter_mut().zip(to_exit.iter_mut()))
    {
        rows.sort();
        exits.sort();
        println!(
            "  {what:<12}  row closed by B's guard  p50 {:>6.1} ms  p99 {:>6.1} ms",
            pct(rows, 0.5).as_secs_f64() * 1000.0,
            pct(rows, 0.99).as_secs_f64() * 1000.0
        );
        println!(
            "  {what:<12}  ssh client exited        p50 {:>6.1} ms  p99 {:>6.1} ms  (target: 200 ms p99; poll alone: up to 500 ms)",
            pct(exits, 0.5).as_secs_f64() * 1000.0,
            pct(exits, 0.99).as_secs_f64() * 1000.0
        );
        let p99 = pct(exits, 0.99).as_secs_f64() * 1000.0;
        gatehouse_testbed::bench_summary::record(&gatehouse_testbed::bench_summary::Row {
            what: &format!("{what} on node A → ssh client on node B gone, p99"),
            gatehouse: format!("{p99:.1} ms"),
            baseline: "watcher poll alone: up to 500 ms".into(),
            ratio: "—".into(),
            target: "≤ 200 ms",
            met: Some(p99 <= 200.0),
        });
    }
}
