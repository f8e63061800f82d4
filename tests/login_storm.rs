//! A login storm is served, not refused (issue 14 §1): 200 OpenSSH clients started at the
//! same moment all reach the target through one broker on the default SQLite store, and none
//! is told its target is misconfigured because the store was busy.

use std::process::Stdio;

use gatehouse_e2e::{World, stderr, stdout};

#[test]
fn a_burst_of_200_logins_is_served_in_full() {
    const LOGINS: usize = 200;
    let w = World::new();
    let clients: Vec<_> = (0..LOGINS)
        .map(|i| {
            w.gatehouse
                .ssh("alice+web1", &w.alice_key)
                .arg(format!("echo storm-{i}-$((6*7))"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start ssh")
        })
        .collect();
    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().expect("ssh output");
        if !stdout(&out).contains(&format!("storm-{i}-42")) {
            failures.push(format!("#{i}: {:?} {}", out.status, stderr(&out).trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {LOGINS} logins failed:\n{}\nbroker log (tail):\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&w.gatehouse.log(), 60)
    );
    // Every one of them is a session in the registry.
    let out = w
        .gatehouse
        .cli_ok(&["sessions", "list", "--json", "--limit", "1000"]);
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&out).expect("sessions JSON");
    assert_eq!(sessions.len(), LOGINS, "one session row per login");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The start queue is bounded in time: with one start slot held by a session whose target
/// accepts TCP and never answers, the next login waits `start_wait` and is refused with a
/// message saying the broker is busy — its command never runs —, a PostgreSQL login too
/// (one line for the node's fronts), and once the slot is free again logins go through.
#[test]
fn a_login_that_cannot_start_in_time_is_refused_as_busy_and_nothing_runs() {
    let w = World::with_config("[node]\nmax_starting_sessions = 1\nstart_wait = \"1s\"\n");
    // a target that accepts connections and never says a word
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    w.gatehouse.cli_ok(&[
        "target",
        "add",
        "mute",
        "--env",
        "prod",
        "--ssh",
        &format!("nobody@127.0.0.1:{silent_port}"),
        "--identity",
        &w.target_identity.display().to_string(),
        "--host-key",
        w.sshd.host_public_key(),
    ]);
    let holder = w
        .gatehouse
        .ssh("alice+mute", &w.alice_key)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    // the holder is in its target login (the slot held) once its session row exists
    w.gatehouse.wait_live();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ran = w.keys.path().join("ran-while-busy");
    let out = w.ssh_exec("alice+web1", &format!("touch {}", ran.display()));
    let err = stderr(&out);
    assert!(
        err.contains("too busy to open the session now") && err.contains("nothing was run"),
        "the queued login is told why: {err}"
    );
    assert!(
        !ran.exists(),
        "a refused session ran its command on the target"
    );
    // the PostgreSQL front waits in the same line: refused with 53300 too_many_connections
    w.add_password("queue-pw-1");
    let conf = format!(
        "host=127.0.0.1 port={} user=alice dbname=mute password=queue-pw-1 sslmode=disable",
        w.gatehouse.pg_port()
    );
    let pg = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(tokio_postgres::connect(&conf, tokio_postgres::NoTls))
        .map(|_| ())
        .expect_err("a PostgreSQL login while the node's only start slot is held");
    let db = pg
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {pg}"));
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS,
        "{db:?}"
    );
    assert!(db.message().contains("too busy"), "{}", db.message());
    // the holder's target login times out; the slot is free again
    let held = holder.wait_with_output().expect("holder output");
    assert!(
        stderr(&held).contains("cannot reach target 'mute'"),
        "{}",
        stderr(&held)
    );
    let out = w.ssh_exec("alice+web1", "echo after-$((5*5))");
    assert!(stdout(&out).contains("after-25"), "{}", stderr(&out));
    assert!(
        w.gatehouse
            .log()
            .contains("start queue did not move in time"),
        "the refusal is in the broker's log"
    );
    // and on record: one access_denied (busy) per front, with the operator and target
    let audit: Vec<serde_json::Value> = serde_json::from_str(&w.gatehouse.cli_ok(&[
        "audit",
        "list",
        "--json",
        "--kind",
        "access_denied",
    ]))
    .expect("audit JSON");
    let busy: Vec<(String, String, String)> = audit
        .iter()
        .filter(|e| e["detail"]["reason"] == "busy")
        .map(|e| {
            (
                e["operator"].as_str().unwrap_or("").to_owned(),
                e["detail"]["target"].as_str().unwrap_or("").to_owned(),
                e["detail"]["protocol"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        busy,
        [
            ("alice".to_owned(), "web1".to_owned(), "ssh".to_owned()),
            ("alice".to_owned(), "mute".to_owned(), "postgres".to_owned())
        ],
        "{audit:?}"
    );
}
