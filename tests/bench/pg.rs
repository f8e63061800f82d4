//! The PostgreSQL front against its baselines: `pgbench -S` (read-only select by key)
//! transactions per second straight to PostgreSQL, through Gatehouse (SCRAM login, relayed,
//! every statement in the hash-chained statement log) and through PgBouncer in session
//! mode, in one run, reported as ratios to the direct baseline; Gatehouse also over TLS
//! (`sslmode=require`), against itself in plaintext (what TLS costs), next to PostgreSQL
//! directly over TLS against plaintext (what TLS costs on this machine when Gatehouse
//! is not in the way: the client's TLS runs on the same cores). Three modes: the simple
//! query protocol, prepared statements (extended protocol, parameters logged), and `-C`
//! (a new connection per transaction: what logging in through each path costs).
//!
//! This machine's pgbench figures drift by ±25 % from minute to minute (a shared VM), so
//! one run per path says little: the paths are measured in short turns, round after round
//! (each round starting at another path, so none always follows the same one), and each
//! ratio is the median over the rounds of that round's ratio, two paths measured seconds
//! apart; the tps shown are the medians of each path's rounds.
//! Run with `./bench/run`; `PG_BENCH_MODE=-C` (part of a mode's name) runs one mode.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gatehouse_e2e::pg::{OPERATOR_PASSWORD, PgWorld, TARGET_PASSWORD};
use gatehouse_e2e::{Gatehouse, files_under, tool};
use gatehouse_testbed::bench_summary::{Rounds, cpu_time};
use gatehouse_testbed::{PgOptions, Pgbouncer};

const CLIENTS: &str = "4";
const THREADS: &str = "2";

struct Mode {
    name: &'static str,
    args: &'static [&'static str],
    seconds: u32,
    rounds: usize,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "simple query protocol",
        args: &["-M", "simple"],
        seconds: 5,
        rounds: 5,
    },
    Mode {
        name: "prepared statements",
        args: &["-M", "prepared"],
        seconds: 5,
        rounds: 5,
    },
    Mode {
        name: "new connection per transaction (-C)",
        args: &["-M", "simple", "-C"],
        seconds: 4,
        rounds: 3,
    },
];

struct Route {
    name: &'static str,
    conninfo: String,
    password: &'static str,
    /// The proxy on the path (Gatehouse, PgBouncer), whose CPU time is measured.
    proxy: Option<u32>,
}

/// What one pgbench run reported, and the CPU its path's proxy used meanwhile.
struct Run {
    tps: f64,
    processed: u64,
    proxy_cpu: Option<Duration>,
}

fn pgbench(path: &Route, mode: &Mode) -> Run {
    let cpu = || path.proxy.and_then(cpu_time);
    let cpu_before = cpu();
    let out = Command::new(tool("pgbench", "postgresql"))
        .args(["-n", "-S", "-c", CLIENTS, "-j", THREADS, "-T"])
        .arg(mode.seconds.to_string())
        .args(mode.args)
        .arg(&path.conninfo)
        .env("PGPASSWORD", path.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("number of failed transactions: 0"),
        "pgbench {} via {} failed:\n{text}{}",
        mode.name,
        path.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in pgbench output:\n{text}"))
            .to_owned()
    };
    Run {
        tps: field("tps = ")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        processed: field("number of transactions actually processed: ")
            .split('/')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        proxy_cpu: cpu().zip(cpu_before).map(|(after, before)| after - before),
    }
}

/// Statement lines in every statement log under `dir`.
fn logged_statements(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".sql.jsonl"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| l.contains(r#""type":"statement""#))
                .count() as u64
        })
        .sum()
}

fn main() {
    // PostgreSQL itself also takes TLS, for the "direct over TLS" baseline; Gatehouse's
    // own connection to it stays plaintext (target added with `--tls disable`)
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let options = PgOptions {
        password_auth: true,
        tls: Some((generated.cert.pem(), generated.signing_key.serialize_pem())),
        ..Default::default()
    };
    let w = PgWorld::with(&options, "disable", "");
    let direct_with = |sslmode: &str| {
        format!(
            "host=127.0.0.1 port={} user=app dbname=orders sslmode={sslmode}",
            w.postgres.port()
        )
    };
    let direct = direct_with("disable");
    let init = Command::new(tool("pgbench", "postgresql"))
        .args(["-i", "-s", "10", "-q"])
        .arg(&direct)
        .env("PGPASSWORD", TARGET_PASSWORD)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let bouncer = Pgbouncer::start(&w.postgres, "orders", "app", TARGET_PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    // a second broker on the same store (same targets, operators and credential key),
    // keeping its target logins between sessions: PgBouncer's session mode, for `-C`
    let home = w.gatehouse.dir();
    let pooled = Gatehouse::start_with(&format!(
        "[postgres]\nlisten = \"127.0.0.1:0\"\ntarget_pool = 8\n[store]\nurl = \"sqlite://{}\"\n[secrets]\nkey_file = \"{}\"\n",
        home.join("gatehouse.db").display(),
        home.join("gatehouse_secret.key").display()
    ));
    let paths = [
        Route {
            name: "direct",
            conninfo: direct,
            password: TARGET_PASSWORD,
            proxy: None,
        },
        Route {
            name: "gatehouse",
            conninfo: w.conninfo("orders", "sslmode=disable"),
            password: OPERATOR_PASSWORD,
            proxy: Some(w.gatehouse.pid()),
        },
        Route {
            name: "pgbouncer (session)",
            conninfo: format!(
                "host=127.0.0.1 port={} user=app dbname=orders sslmode=disable",
                bouncer.port()
            ),
            password: TARGET_PASSWORD,
            proxy: Some(bouncer.pid()),
        },
        Route {
            name: "gatehouse (TLS)",
            conninfo: w.conninfo("orders", "sslmode=require"),
            password: OPERATOR_PASSWORD,
            proxy: Some(w.gatehouse.pid()),
        },
        Route {
            name: "direct (TLS)",
            conninfo: direct_with("require"),
            password: TARGET_PASSWORD,
            proxy: None,
        },
        Route {
            name: "gatehouse (target_pool)",
            conninfo: format!(
                "host=127.0.0.1 port={} user=alice dbname=orders sslmode=disable",
                pooled.pg_port()
            ),
            password: OPERATOR_PASSWORD,
            proxy: Some(pooled.pid()),
        },
    ];

    let mut through_gatehouse = 0;
    let mut report = Vec::new();
    // PG_BENCH_MODE=prepared (a part of a mode's name) runs that mode only, e.g. to profile it
    let only = std::env::var("PG_BENCH_MODE").unwrap_or_default();
    for mode in MODES.iter().filter(|m| m.name.contains(only.as_str())) {
        // per path: the proxy's CPU time and the transactions it carried meanwhile
        let mut cpu = [(Duration::ZERO, 0u64); PATHS];
        let rounds = Rounds::<PATHS>::measure(mode.rounds, |i| {
            // kept target logins matter only to a new connection per transaction
            if i == GATEHOUSE_POOLED && !pooled_mode(mode) {
                return f64::NAN;
            }
            let run = pgbench(&paths[i], mode);
            if paths[i].name.starts_with("gatehouse") {
                through_gatehouse += run.processed;
            }
            if let Some(used) = run.proxy_cpu {
                cpu[i].0 += used;
                cpu[i].1 += run.processed;
            }
            run.tps
        });
        let per_transaction =
            cpu.map(|(used, n)| (n > 0).then(|| used.as_secs_f64() * 1e6 / n as f64));
        report.push((mode, rounds, per_transaction));
    }

    // every transaction through Gatehouse is one logged statement (plus pgbench's own
    // setup queries): check the bench measured the audited path, not a shortcut
    let recordings = [w.gatehouse.dir(), pooled.dir()].map(|d| d.join("recordings"));
    let logged_by_both = || recordings.iter().map(|r| logged_statements(r)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logged = logged_by_both();
    while logged < through_gatehouse && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        logged = logged_by_both();
    }
    assert!(
        logged >= through_gatehouse,
        "{through_gatehouse} transactions went through Gatehouse but only {logged} statements were logged"
    );

    println!(
        "pgbench -S, {CLIENTS} clients, scale 10, tps (median of rounds), ratio to direct (median of the rounds' ratios)"
    );
    for (mode, rounds, per_transaction) in report {
        println!(
            "  {} ({} s x {} round{})",
            mode.name,
            mode.seconds,
            mode.rounds,
            if mode.rounds == 1 { "" } else { "s" }
        );
        for (i, path) in paths.iter().enumerate() {
            if rounds.value(i).is_nan() {
                continue;
            }
            println!(
                "    {:<22} {:>10.0} tps  {:.2}x   rounds: {}",
                path.name,
                rounds.value(i),
                rounds.ratio(i, 0),
                rounds
                    .0
                    .iter()
                    .map(|r| format!("{:.0}", r[i]))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        println!(
            "    gatehouse vs pgbouncer {:>10} {:.2}x",
            "",
            rounds.ratio(GATEHOUSE, BOUNCER)
        );
        println!(
            "    TLS vs plaintext       {:>10} {:.2}x (direct: {:.2}x)",
            "",
            rounds.ratio(GATEHOUSE_TLS, GATEHOUSE),
            rounds.ratio(DIRECT_TLS, DIRECT)
        );
        // where a gap to PgBouncer comes from: the proxies' own CPU per transaction (on
        // 2 cores shared with pgbench and PostgreSQL, a proxy's CPU is everyone's)
        let us = |i: usize| per_transaction[i].unwrap_or(f64::NAN);
        println!(
            "    proxy CPU per transaction: gatehouse {:.1} µs, gatehouse (TLS) {:.1} µs, pgbouncer {:.1} µs (gatehouse / pgbouncer {:.2}x)",
            us(GATEHOUSE),
            us(GATEHOUSE_TLS),
            us(BOUNCER),
            us(GATEHOUSE) / us(BOUNCER)
        );
        if pooled_mode(mode) {
            println!(
                "    gatehouse (target_pool) vs pgbouncer {:.2}x; proxy CPU per transaction {:.1} µs",
                rounds.ratio(GATEHOUSE_POOLED, BOUNCER),
                us(GATEHOUSE_POOLED)
            );
        }
        summary(mode, &rounds, &per_transaction);
    }
    println!(
        "  statements logged by gatehouse: {logged} (transactions through it: {through_gatehouse})"
    );
}

/// Indexes of the paths in a round.
const DIRECT: usize = 0;
const GATEHOUSE: usize = 1;
const BOUNCER: usize = 2;
const GATEHOUSE_TLS: usize = 3;
const DIRECT_TLS: usize = 4;
/// The second broker, with `target_pool` (measured in `-C` only).
const GATEHOUSE_POOLED: usize = 5;
const PATHS: usize = 6;

fn pooled_mode(mode: &Mode) -> bool {
    mode.args.contains(&"-C")
}

/// The mode's rows in bench/run's table: Gatehouse against PgBouncer (≥ 1.0×) and against
/// direct (≥ 0.7×), and over TLS against itself in plaintext (TLS costs ≤ 10 %), next to
/// what TLS costs PostgreSQL itself in the same run.
fn summary(mode: &Mode, rounds: &Rounds<PATHS>, per_transaction: &[Option<f64>; PATHS]) {
    use gatehouse_testbed::bench_summary::{Row, record};
    let [direct, gatehouse, bouncer, tls, direct_tls] =
        [DIRECT, GATEHOUSE, BOUNCER, GATEHOUSE_TLS, DIRECT_TLS].map(|i| rounds.value(i));
    let vs_bouncer = rounds.ratio(GATEHOUSE, BOUNCER);
    let vs_direct = rounds.ratio(GATEHOUSE, DIRECT);
    let what = format!(
        "`pgbench -S`, {CLIENTS} clients, {} (median of {} rounds)",
        mode.name, mode.rounds
    );
    record(&Row {
        what: &what,
        gatehouse: format!("{gatehouse:.0} tps"),
        baseline: format!("PgBouncer (session) {bouncer:.0} tps; direct {direct:.0} tps"),
        ratio: format!("{vs_bouncer:.2}× PgBouncer, {vs_direct:.2}× direct"),
        target: "≥ 1.0× PgBouncer, ≥ 0.7× direct",
        met: Some(vs_bouncer >= 1.0 && vs_direct >= 0.7),
    });
    let tls_cost = rounds.ratio(GATEHOUSE_TLS, GATEHOUSE);
    record(&Row {
        what: &format!("{what}, over TLS (`sslmode=require`)"),
        gatehouse: format!("{tls:.0} tps"),
        baseline: format!(
            "Gatehouse in plaintext {gatehouse:.0} tps (direct PostgreSQL: TLS {direct_tls:.0} / plaintext {direct:.0} tps, {:.2}×)",
            rounds.ratio(DIRECT_TLS, DIRECT)
        ),
        ratio: format!("{tls_cost:.2}×"),
        target: "≥ 0.90× (TLS costs ≤ 10 %)",
        met: Some(tls_cost >= 0.9),
    });
    if pooled_mode(mode) {
        let pooled = rounds.value(GATEHOUSE_POOLED);
        let vs_bouncer = rounds.ratio(GATEHOUSE_POOLED, BOUNCER);
        let vs_direct = rounds.ratio(GATEHOUSE_POOLED, DIRECT);
        record(&Row {
            what: &format!("{what}, target logins kept (`[postgres] target_pool = 8`)"),
            gatehouse: format!("{pooled:.0} tps"),
            baseline: format!("PgBouncer (session) {bouncer:.0} tps; direct {direct:.0} tps"),
            ratio: format!("{vs_bouncer:.2}× PgBouncer, {vs_direct:.2}× direct"),
            target: "≥ 1.0× PgBouncer",
            met: Some(vs_bouncer >= 1.0),
        });
    }
    if let (Some(g), Some(b)) = (per_transaction[GATEHOUSE], per_transaction[BOUNCER]) {
        record(&Row {
            what: &format!("{what}: the proxy's CPU per transaction"),
            gatehouse: format!("{g:.1} µs"),
            baseline: format!("PgBouncer (session) {b:.1} µs"),
            ratio: format!("{:.2}×", g / b),
            target: "(what the tps gap is made of)",
            met: None,
        });
    }
}
