//! Kill propagation across nodes: two `gatehouse serve` nodes on one PostgreSQL store; a
//! session through node B is killed by a store write made beside node A (what `sessions
//! kill` does, without the CLI's process start), 100 times. Reports the time from the kill
//! request to the session's row closed by node B's guard, and to the ssh client's exit
//! (p50/p99); the target is 200 ms p99. The baseline is the poll the notifications
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
    let mut to_row = Vec::with_capacity(count);
    let mut to_exit = Vec::with_capacity(count);
    for i in 0..count {
        let mut child = fleet
            .b()
            .ssh("alice+web1", &fleet.world.alice_key)
            .arg("sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
        rt.block_on(store.request_kill(&id, "bench")).unwrap();
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
        to_row.push(row.unwrap_or_default());
        to_exit.push(exit);
    }
    if std::env::var_os("KILL_BENCH_VERBOSE").is_some() {
        println!("row: {to_row:?}");
    }
    to_row.sort();
    to_exit.sort();
    println!(
        "kill propagation, node A's store write -> node B's session ({count} kills, PostgreSQL LISTEN/NOTIFY)"
    );
    println!(
        "  row closed by B's guard  p50 {:>6.1} ms  p99 {:>6.1} ms",
        pct(&to_row, 0.5).as_secs_f64() * 1000.0,
        pct(&to_row, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  ssh client exited        p50 {:>6.1} ms  p99 {:>6.1} ms  (target: 200 ms p99; poll alone: up to 500 ms)",
        pct(&to_exit, 0.5).as_secs_f64() * 1000.0,
        pct(&to_exit, 0.99).as_secs_f64() * 1000.0
    );
}
