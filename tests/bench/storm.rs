//! A login storm: 1,000 OpenSSH clients started at once, each running `echo` on the target
//! through Gatehouse, on the default SQLite store and on PostgreSQL; the baseline is the
//! same storm straight to the target's sshd in the same run. Reports successes, time to the
//! first byte of output (p50/p99) and logins per second, and the ratio to direct.
//! Run with `./bench/run` (release build); `STORM_LOGINS` overrides the count.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_e2e::{World, tool};

struct Storm {
    ok: usize,
    failures: Vec<String>,
    first_byte: Vec<Duration>,
    wall: Duration,
}

impl Storm {
    fn pct(&self, p: f64) -> Duration {
        if self.first_byte.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.first_byte.len() - 1) as f64 * p).round() as usize;
        self.first_byte[i]
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
}

/// Starts `logins` clients built by `command` at once; each thread times its client's first
/// byte of output.
fn storm(logins: usize, command: impl Fn(usize) -> Command) -> Storm {
    let start = Instant::now();
    let threads: Vec<_> = (0..logins)
        .map(|i| {
            let mut cmd = command(i);
            std::thread::spawn(move || {
                let began = Instant::now();
                let mut child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut out = child.stdout.take().unwrap();
                let mut first = [0u8; 1];
                let got = out.read(&mut first).unwrap_or(0);
                let ttfb = began.elapsed();
                let mut rest = Vec::new();
                let _ = out.read_to_end(&mut rest);
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                let status = child.wait().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&first[..got]),
                    String::from_utf8_lossy(&rest)
                );
                if status.success() && text.contains(&format!("storm-{i}")) {
                    Ok(ttfb)
                } else {
                    Err(format!("{status}: {}", err.trim()))
                }
            })
        })
        .collect();
    let mut s = Storm {
        ok: 0,
        failures: Vec::new(),
        first_byte: Vec::new(),
        wall: Duration::ZERO,
    };
    for t in threads {
        match t.join().unwrap() {
            Ok(d) => {
                s.ok += 1;
                s.first_byte.push(d);
            }
            Err(e) => s.failures.push(e),
        }
    }
    s.wall = start.elapsed();
    s.first_byte.sort();
    s
}

fn ssh_to(port: u16, login: &str, key: &Path, known_hosts: Option<&Path>, i: usize) -> Command {
    let mut c = Command::new(tool("ssh", "openssh-client"));
    c.args(["-F", "/dev/null", "-p", &port.to_string(), "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "ConnectTimeout=120",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]);
    match known_hosts {
        Some(k) => c
            .arg("-o")
            .arg("StrictHostKeyChecking=yes")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", k.display())),
        None => c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ]),
    };
    c.arg(format!("{login}@127.0.0.1"))
        .arg(format!("echo storm-{i}"));
    c
}

fn report(name: &str, s: &Storm, logins: usize, direct: &Storm) {
    println!(
        "{name:<28} {:>5}/{logins} ok  first byte p50 {:>7.0} ms  p99 {:>7.0} ms  {:>6.1} logins/s  ({:.2}× direct)",
        s.ok,
        s.pct(0.5).as_secs_f64() * 1e3,
        s.pct(0.99).as_secs_f64() * 1e3,
        s.rate(),
        s.rate() / direct.rate()
    );
    if !std::ptr::eq(s, direct) {
        gatehouse_testbed::bench_summary::record(&gatehouse_testbed::bench_summary::Row {
            what: &format!("{logins} concurrent `ssh … echo` logins, {name}"),
            gatehouse: format!(
                "{}/{logins} ok, {:.1} logins/s, first byte p99 {:.1} s",
                s.ok,
                s.rate(),
                s.pct(0.99).as_secs_f64()
            ),
            baseline: format!(
                "direct sshd {}/{logins} ok, {:.1} logins/s",
                direct.ok,
                direct.rate()
            ),
            ratio: format!("{:.2}× logins/s", s.rate() / direct.rate()),
            target: "0 failures",
            met: Some(s.ok == logins),
        });
    }
    let mut distinct: Vec<&String> = s.failures.iter().collect();
    distinct.sort();
    distinct.dedup();
    for f in distinct.iter().take(5) {
        println!("    failure: {f}");
    }
}

fn main() {
    let logins: usize = std::env::var("STORM_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!("login storm: {logins} `ssh … echo` started at once");

    let w = World::new();
    let direct = storm(logins, |i| {
        ssh_to(w.sshd.port(), w.sshd.user(), &w.target_identity, None, i)
    });
    report("direct to sshd", &direct, logins, &direct);
    let sqlite = storm(logins, |i| {
        let g = &w.gatehouse;
        ssh_to(
            g.port(),
            "alice+web1",
            &w.alice_key,
            Some(&g.known_hosts()),
            i,
        )
    });
    report("gatehouse (SQLite store)", &sqlite, logins, &direct);
    drop(w);

    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse_storm").unwrap();
    let w = World::with_config(&format!(
        "[store]\nurl = \"{}\"\n",
        pg.url("gatehouse_storm")
    ));
    let on_pg = storm(logins, |i| {
        let g = &w.gatehouse;
        ssh_to(
            g.port(),
            "alice+web1",
            &w.alice_key,
            Some(&g.known_hosts()),
            i,
        )
    });
    report("gatehouse (PostgreSQL store)", &on_pg, logins, &direct);
}
