//! Memory per live session: the broker's resident set (VmRSS) with `SESSIONS` live SSH
//! sessions (OpenSSH clients running `sleep` on the target through Gatehouse, recorded),
//! then with as many live PostgreSQL sessions (tokio-postgres clients, each logged in and
//! one query done; then again over TLS to the broker, each kind in a fresh broker), minus
//! the RSS before, divided by the count. The targets: SSH
//! ≤ 64 KiB, PostgreSQL ≤ 32 KiB per session. Run with `./bench/run`;
//! `SESSIONS` overrides the count (default 2,000; the target sshd and PostgreSQL are
//! configured for it, and each SSH session costs the machine an ssh client and an sshd
//! session of a few MiB, so size it to the machine). `SESSIONS_PEAK_HOOK`, when set, is a
//! program run with the broker's pid while all sessions of a kind are live, before the
//! figure is taken (a profiler's snapshot: `vgdb --pid=$1 detailed_snapshot F` for a broker
//! run under massif through `GATEHOUSE_BIN`). `SESSIONS_KINDS` picks kinds (see `main`).

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use gatehouse_e2e::World;
use gatehouse_e2e::pg::PgWorld;

/// Opened this many at a time (a login storm is another bench).
const WAVE: usize = 50;

/// (resident, of which locked in memory) in KiB: russh keeps keys and packet buffers in
/// mlocked pages (`CryptoVec`), which shows in the second figure.
fn rss_kib(pid: u32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Locked:"))
}

fn report(what: &str, before: (u64, u64), after: (u64, u64), count: usize, target: u32) {
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / count as f64;
    println!(
        "  {what:<15} RSS {} KiB -> {} KiB: {:.1} KiB per session (target {target}); of which locked {:.1} KiB",
        before.0,
        after.0,
        per(after.0, before.0),
        per(after.1, before.1)
    );
    let kib = per(after.0, before.0);
    gatehouse_testbed::bench_summary::record(&gatehouse_testbed::bench_summary::Row {
        what: &format!("RSS per live session, {what}, {count} sessions"),
        gatehouse: format!("{kib:.0} KiB"),
        baseline: "—".into(),
        ratio: "—".into(),
        target: &format!("≤ {target} KiB"),
        met: Some(kib <= f64::from(target)),
    });
}

/// Runs `SESSIONS_PEAK_HOOK` (if set) with the broker's pid.
fn peak_hook(pid: u32) {
    if let Some(hook) = std::env::var_os("SESSIONS_PEAK_HOOK") {
        let status = std::process::Command::new(hook)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "SESSIONS_PEAK_HOOK failed: {status}");
    }
}

fn ssh_sessions(w: &World, count: usize) -> Vec<Child> {
    let mut live = Vec::with_capacity(count);
    while live.len() < count {
        let wave: Vec<Child> = (0..WAVE.min(count - live.len()))
            .map(|_| {
                w.gatehouse.spawn_ssh(
                    "alice+web1",
                    &w.alice_key,
                    "echo ready; exec sleep 600",
                    Stdio::piped(),
                )
            })
            .collect();
        for mut c in wave {
            let mut line = String::new();
            BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready", "session {} did not start", live.len());
            live.push(c);
        }
    }
    live
}

fn main() {
    let count: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("memory per live session, {count} sessions of each kind");

    // `SESSIONS_KINDS` (e.g. `postgres-tls`) measures only those named: ssh, postgres,
    // postgres-tls (while profiling one of them)
    let kinds =
        std::env::var("SESSIONS_KINDS").unwrap_or_else(|_| "ssh,postgres,postgres-tls".into());
    let kinds: Vec<&str> = kinds.split(',').map(str::trim).collect();
    if kinds.contains(&"ssh") {
        ssh_memory(count);
    }
    if kinds.contains(&"postgres") {
        pg_sessions(count, false);
    }
    if kinds.contains(&"postgres-tls") {
        pg_sessions(count, true);
    }
}

fn ssh_memory(count: usize) {
    let w = World::new();
    let pid = w.gatehouse.pid();
    // warm up (allocator arenas, pools, the first recordings), then measure
    for mut c in ssh_sessions(&w, WAVE) {
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_kib(pid);
    let mut live = ssh_sessions(&w, count);
    std::thread::sleep(Duration::from_secs(6)); // a checkpoint and a flush tick have passed
    peak_hook(pid);
    let after = rss_kib(pid);
    report("ssh (recorded)", before, after, count, 64);
    for c in &mut live {
        let _ = c.kill();
    }
    for c in &mut live {
        let _ = c.wait();
    }
    // the broker ends them all (and hangs up their commands on the target) before the
    // world is dropped: a shutdown while 2,000 ends are still in flight would cut them short
    w.gatehouse.wait_all_closed_within(Duration::from_secs(120));
}

/// `count` live PostgreSQL sessions through a fresh broker, each logged in and one query
/// done, over TLS to Gatehouse (`sslmode=require`) or not; the target link is plain in
/// both.
fn pg_sessions(count: usize, tls: bool) {
    let w = PgWorld::with(
        &gatehouse_testbed::PgOptions {
            password_auth: true,
            max_connections: Some(u32::try_from(count).unwrap() + 20),
            ..Default::default()
        },
        "disable",
        "",
    );
    let pid = w.gatehouse.pid();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config: tokio_postgres::Config = w.tokio_config().parse().unwrap();
    let port = w.gatehouse.pg_port();
    let connect = |n: usize| {
        let config = config.clone();
        rt.block_on(async move {
            let mut clients = Vec::with_capacity(n);
            for chunk in (0..n).collect::<Vec<_>>().chunks(WAVE) {
                let wave = chunk.iter().map(|_| {
                    let config = config.clone();
                    async move {
                        let client = if tls {
                            connect_tls(&config, port).await
                        } else {
                            let (client, conn) =
                                config.connect(tokio_postgres::NoTls).await.unwrap();
                            tokio::spawn(conn);
                            client
                        };
                        client.simple_query("SELECT 1").await.unwrap();
                        client
                    }
                });
                clients.extend(futures_util::future::join_all(wave).await);
            }
            clients
        })
    };
    drop(connect(WAVE));
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_kib(pid);
    let clients = connect(count);
    std::thread::sleep(Duration::from_secs(6));
    peak_hook(pid);
    let after = rss_kib(pid);
    if tls {
        report("postgres (TLS)", before, after, count, 32);
    } else {
        report("postgres", before, after, count, 32);
    }
    drop(clients);
}

/// A tokio-postgres client over TLS as libpq's `sslmode=require` does it: SSLRequest, the
/// broker's `S`, a TLS handshake (the broker's certificate is self-signed, not verified),
/// then the login inside TLS.
async fn connect_tls(config: &tokio_postgres::Config, port: u16) -> tokio_postgres::Client {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = gatehouse_pg::tls::client_config(gatehouse_core::TlsMode::Require, None)
        .unwrap()
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // SSLRequest: length 8, code 80877103
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S', "the broker refused TLS");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (client, conn) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}
