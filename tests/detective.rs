//! The detective control end to end: a real broker and a real ssh workload leave nothing
//! to report; each kind of violation, injected the way it would happen (a session row no
//! guard holds, a kill nobody carries out, a recording edited after the fact, a broker
//! killed mid-session, a login the lock should have refused), is found by `gatehouse check`
//! with its evidence, and by the continuous pass inside `serve`, which with `action = "end"`
//! ends the live ones.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_e2e::{Gatehouse, World, stderr, stdout, wait_until};
use gatehouse_store::{AuditEvent, NewSession, Store};
use serde_json::{Value, json};

const NODE: &str = "[node]\nname = \"n1\"\n";

fn store(g: &Gatehouse) -> (tokio::runtime::Runtime, Store) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = g.dir();
    let store = rt
        .block_on(async {
            let key =
                gatehouse_store::MasterKey::load_or_create(&dir.join("gatehouse_secret.key"))?;
            let url = format!("sqlite://{}", dir.join("gatehouse.db").display());
            Store::open(&url, key).await.map_err(anyhow::Error::from)
        })
        .unwrap();
    (rt, store)
}

/// The broker's node: its name and the id it keeps beside its host key.
fn node_of(g: &Gatehouse) -> (&'static str, String) {
    let id = std::fs::read_to_string(g.dir().join("gatehouse_node_id")).unwrap();
    ("n1", id.trim().to_owned())
}

/// A session row as a front writes it at login, with no guard behind it.
fn insert_session(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    (node, node_id): (&str, &str),
    operator: &str,
) -> String {
    rt.block_on(store.start_session(&NewSession {
        node,
        node_id,
        operator,
        target: "web1",
        environment: Some("prod"),
        protocol: gatehouse_core::Protocol::Ssh,
        client_addr: "127.0.0.1:5555",
    }))
    .unwrap()
}

/// `gatehouse check --json`: (succeeded, findings).
fn check(g: &Gatehouse) -> (bool, Vec<Value>) {
    let out = g.cli(&["check", "--json"]);
    let findings: Vec<Value> = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("check --json: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.success(), findings)
}

fn find<'a>(findings: &'a [Value], rule: &str, session: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["rule"] == rule && f["session_id"] == session)
        .unwrap_or_else(|| panic!("no {rule} finding for {session}: {findings:#?}"))
}

fn violations(g: &Gatehouse) -> Vec<Value> {
    g.audit()
        .into_iter()
        .filter(|e| e["kind"] == "violation")
        .collect()
}

/// Waits until `check` reports `rule` for `session` (rules with a grace period).
fn wait_finding(g: &Gatehouse, rule: &str, session: &str, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let (_, findings) = check(g);
        if findings
            .iter()
            .any(|f| f["rule"] == rule && f["session_id"] == session)
        {
            return findings;
        }
        assert!(
            Instant::now() < deadline,
            "no {rule} for {session} within {within:?}: {findings:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_normal_workload_through_a_real_broker_has_no_findings() {
    let w = World::with_config(&format!("{NODE}[detective]\ninterval = \"1s\"\n"));
    let g = &w.gatehouse;
    g.set_policy(&[
        "--idle-timeout",
        "5m",
        "--max-session",
        "1h",
        "--warn-before",
        "1m",
    ]);
    let out = w.ssh_exec("alice+web1", "echo hello; ls / > /dev/null");
    assert!(out.status.success(), "{}", stderr(&out));

    // an interactive session, live past the time a guard has to claim it, typing now and then
    let tmux = w.interactive("alice+web1");
    for i in 0..4 {
        tmux.type_line(&format!("echo step-$(({i}*7))"));
        tmux.wait_for(&format!("step-{}", i * 7));
        std::thread::sleep(Duration::from_secs(3));
    }
    let (ok, findings) = check(g);
    assert!(ok && findings.is_empty(), "live: {findings:#?}");
    assert_eq!(stdout(&g.cli(&["check"])).trim(), "no findings");

    tmux.type_line("exit");
    tmux.wait_for("EXIT=0");
    g.wait_session_closed();
    let sessions = g.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    assert!(sessions.iter().all(|s| s["recording_state"] == "sealed"));
    let (ok, findings) = check(g);
    assert!(ok && findings.is_empty(), "ended: {findings:#?}");
    // the continuous pass inside serve agrees
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(violations(g), Vec::<Value>::new());
}

#[test]
fn a_normal_postgres_workload_has_no_findings() {
    let w = gatehouse_e2e::pg::PgWorld::with(
        &gatehouse_testbed::PgOptions {
            password_auth: true,
            ..Default::default()
        },
        "disable",
        &format!("{NODE}[detective]\ninterval = \"1s\"\n"),
    );
    let g = &w.gatehouse;
    g.set_policy(&["--idle-timeout", "5m", "--max-session", "1h"]);
    let conn = w.conninfo("orders", "sslmode=disable");
    let script = "create table t (id int);\ninsert into t select generate_series(1, 100);\nselect pg_sleep(1);\nselect count(*) from t;\n";
    let o = w.psql(&conn, &["-At"], Some(script));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("100"), "{}", stdout(&o));
    let s = g.wait_session_closed();
    assert!(
        s["recording_path"]
            .as_str()
            .unwrap()
            .ends_with(".sql.jsonl"),
        "{s}"
    );
    let (ok, findings) = check(g);
    assert!(ok && findings.is_empty(), "{findings:#?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(violations(g), Vec::<Value>::new());
}

/// Sessions the guard ended (idle limit, admin kill, user lock) are enforcement working,
/// not violations.
#[test]
fn enforcement_doing_its_job_is_not_a_finding() {
    let w = World::with_config(&format!("{NODE}[detective]\ninterval = \"1s\"\n"));
    let g = &w.gatehouse;
    g.set_policy(&["--idle-timeout", "2s"]);
    let out = w.ssh_exec("alice+web1", "sleep 20; echo not-ended");
    assert!(!stdout(&out).contains("not-ended"));
    assert_eq!(g.wait_session_closed()["end_reason"], "idle_timeout");
    g.set_policy(&["--idle-timeout", "off"]);

    let live = |g: &Gatehouse| {
        let child = g
            .ssh("alice+web1", &w.alice_key)
            .arg("sleep 30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, g.wait_live())
    };
    let (mut ssh, id) = live(g);
    g.cli_ok(&["sessions", "kill", &id, "--reason", "drill"]);
    let _ = ssh.wait();
    assert_eq!(g.wait_session_closed()["end_reason"], "admin_kill: drill");
    let (mut ssh, _) = live(g);
    g.cli_ok(&["user", "lock", "alice"]);
    let _ = ssh.wait();
    assert_eq!(g.wait_session_closed()["end_reason"], "operator_locked");
    g.cli_ok(&["user", "unlock", "alice"]);
    let out = w.ssh_exec("alice+web1", "echo back");
    assert!(out.status.success(), "{}", stderr(&out));
    g.wait_session_closed();

    let (ok, findings) = check(g);
    assert!(ok && findings.is_empty(), "{findings:#?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(violations(g), Vec::<Value>::new());
}

#[test]
fn every_injected_violation_is_found_with_its_evidence() {
    let w = World::with_config(&format!("{NODE}[detective]\ninterval = \"1s\"\n"));
    let g = &w.gatehouse;
    g.cli_ok(&["env", "add", "short"]);
    g.cli_ok(&[
        "env",
        "set",
        "short",
        "--idle-timeout",
        "1s",
        "--max-session",
        "2s",
    ]);
    let (rt, store) = store(g);
    let (name, id) = node_of(g);
    let n1 = (name, id.as_str());

    // a real session whose recording is then edited to show input after its end
    let out = w.ssh_exec("alice+web1", "echo evidence");
    assert!(out.status.success(), "{}", stderr(&out));
    let real = g.wait_session_closed();
    let real_id = real["id"].as_str().unwrap().to_owned();
    let cast = real["recording_path"].as_str().unwrap().to_owned();
    let mut text = std::fs::read_to_string(&cast).unwrap();
    text.push_str("[600.0, \"i\", \"rm -rf /srv\\r\"]\n");
    std::fs::write(&cast, text).unwrap();

    // live rows no guard holds; one with a kill request nobody carries out
    let orphan = insert_session(&rt, &store, n1, "alice");
    let killed = insert_session(&rt, &store, n1, "alice");
    rt.block_on(store.request_kill(&killed, "incident 7"))
        .unwrap();
    // a live session on a node that never heartbeated
    let elsewhere = insert_session(&rt, &store, ("n2", "n2"), "alice");
    // a live session in an environment with a 2 s maximum and a 1 s idle limit
    let short = rt
        .block_on(store.start_session(&NewSession {
            node: "n1",
            node_id: n1.1,
            operator: "alice",
            target: "web1",
            environment: Some("short"),
            protocol: gatehouse_core::Protocol::Ssh,
            client_addr: "127.0.0.1:5556",
        }))
        .unwrap();
    // bob is locked while live; then logs in again although locked
    let out = g.cli_with_stdin(
        &["user", "add", "bob", "--password-stdin"],
        Some("bob-secret-1"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bob_live = insert_session(&rt, &store, n1, "bob");
    g.cli_ok(&["user", "lock", "bob"]);
    std::thread::sleep(Duration::from_millis(20));
    let bob_later = insert_session(&rt, &store, n1, "bob");
    // an operator that does not exist
    let ghost = insert_session(&rt, &store, n1, "ghost");
    // bytes relayed, no recording
    let unrecorded = insert_session(&rt, &store, n1, "alice");
    rt.block_on(store.end_session(
        &unrecorded,
        &gatehouse_core::EndReason::ClientClosed,
        300,
        4000,
    ))
    .unwrap();

    // grace periods: kills 2 s, a guard's claim 10 s
    let findings = wait_finding(g, "no_guard", &orphan, Duration::from_secs(20));
    let (ok, findings2) = check(g);
    assert!(!ok, "check must fail on findings");
    let findings = if findings2.len() >= findings.len() {
        findings2
    } else {
        findings
    };

    let f = find(&findings, "activity_after_end", &real_id);
    assert_eq!(f["live"], false);
    assert_eq!(f["evidence"]["activity_at_ms"], 600_000);
    assert_eq!(f["evidence"]["what"], "input");
    let f = find(&findings, "recording_unverified", &real_id);
    assert!(f["message"].as_str().unwrap().contains("TAMPERED"), "{f}");

    let f = find(&findings, "no_guard", &orphan);
    assert_eq!(
        (f["live"].clone(), f["node"].clone()),
        (json!(true), json!("n1"))
    );
    assert!(f["evidence"]["owner_seen_at"] == 0, "{f}");

    let f = find(&findings, "kill_ignored", &killed);
    assert!(f["evidence"]["requested_at"].as_i64().unwrap() > 0);

    let f = find(&findings, "node_gone", &elsewhere);
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("never sent a heartbeat"),
        "{f}"
    );
    assert!(
        !findings
            .iter()
            .any(|f| f["rule"] == "node_gone" && f["session_id"] != elsewhere)
    );

    let f = find(&findings, "max_session", &short);
    assert_eq!(f["evidence"]["max_session_ms"], 2000);
    let f = find(&findings, "idle_timeout", &short);
    assert_eq!(f["evidence"]["idle_timeout_ms"], 1000);

    find(&findings, "user_lock_ignored", &bob_live);
    let f = find(&findings, "locked_operator_login", &bob_later);
    assert!(f["evidence"]["locked_at"].as_i64().unwrap() > 0);
    assert!(
        !findings
            .iter()
            .any(|f| f["rule"] == "locked_operator_login" && f["session_id"] == bob_live)
    );
    find(&findings, "deleted_operator_login", &ghost);
    let f = find(&findings, "no_recording", &unrecorded);
    assert_eq!(f["evidence"]["bytes"], 4300);

    // the continuous pass inside serve reported each one, once, as an audit event
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = violations(g);
        let all_there = findings.iter().all(|f| {
            v.iter()
                .any(|e| e["session_id"] == f["session_id"] && e["detail"]["rule"] == f["rule"])
        });
        if all_there {
            let mut keys: Vec<_> = v
                .iter()
                .filter(|e| e["source"] == "detective")
                .map(|e| (e["session_id"].to_string(), e["detail"]["rule"].to_string()))
                .collect();
            let n = keys.len();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n, "a finding was reported twice: {v:#?}");
            let e = v
                .iter()
                .find(|e| e["detail"]["rule"] == "kill_ignored")
                .unwrap();
            assert_eq!(e["operator"], "alice");
            assert_eq!(
                e["detail"]["evidence"]["requested_at"],
                find(&findings, "kill_ignored", &killed)["evidence"]["requested_at"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all findings audited: {v:#?}\n{findings:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // what serve reported first (check records new findings too) is also an error line
    let by_serve = violations(g)
        .into_iter()
        .filter(|e| e["source"] == "detective")
        .count();
    let lines = g.log().matches("policy violation").count();
    assert!(lines >= by_serve, "{lines} log lines for {by_serve} events");
}

#[test]
fn a_broker_killed_mid_session_leaves_a_session_on_a_gone_node() {
    let mut w = World::with_config(&format!("{NODE}[detective]\nnode_timeout = \"2s\"\n"));
    // the broker is killed: nothing ends the target's command (sshd leaves it running
    // when the connection drops, as after a network cut)
    w.sshd.expect_leftover_processes();
    let mut ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = w.gatehouse.wait_live();
    std::thread::sleep(Duration::from_secs(3));
    let (ok, findings) = check(&w.gatehouse);
    assert!(ok, "while the broker runs: {findings:#?}");
    w.gatehouse.kill_hard();
    // found once the node has been silent past its timeout
    let findings = wait_until(
        Duration::from_secs(10),
        || {
            let (ok, findings) = check(&w.gatehouse);
            (!ok).then_some(findings)
        },
        || "the dead node was never reported".into(),
    );
    let f = find(&findings, "node_gone", &id);
    assert!(f["message"].as_str().unwrap().contains("silent for"), "{f}");
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let _ = ssh.kill();
    let _ = ssh.wait();
}

#[test]
fn with_action_end_a_live_violating_session_is_ended_through_the_kill_path() {
    let w = World::with_config(&format!(
        "{NODE}[detective]\ninterval = \"1s\"\naction = \"end\"\n"
    ));
    let g = &w.gatehouse;
    let (rt, store) = store(g);
    // the audit log says alice was locked, but the lock never reached her account (the
    // enforcing code failed): her next login is a violation the detective must end
    rt.block_on(store.audit(&AuditEvent {
        kind: "user_locked",
        operator: None,
        session_id: None,
        source: Some("admin-cli"),
        detail: json!({"user": "alice", "sessions_ended": []}),
    }))
    .unwrap();
    // and a row no guard holds, which only the registry can close
    let (name, id) = node_of(g);
    let n1 = (name, id.as_str());
    let orphan = insert_session(&rt, &store, n1, "alice");
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 30; echo not-ended")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!stdout(&out).contains("not-ended"), "{}", stdout(&out));
    // the registry's end is written just after the disconnect
    let real = wait_until(
        Duration::from_secs(5),
        || {
            let real = g
                .sessions()
                .into_iter()
                .find(|s| s["id"] != orphan.as_str())?;
            (!real["end_reason"].is_null()).then_some(real)
        },
        || "the real session never closed".into(),
    );
    assert_eq!(
        real["end_reason"], "admin_kill: detective: locked_operator_login",
        "{real}"
    );
    let real_id = real["id"].as_str().unwrap();
    let v = violations(g);
    assert!(
        v.iter()
            .any(|e| e["session_id"] == real_id && e["detail"]["rule"] == "locked_operator_login"),
        "{v:#?}"
    );
    // the orphan is closed as interrupted once its grace is over
    let s = wait_until(
        Duration::from_secs(20),
        || {
            let s = g
                .sessions()
                .into_iter()
                .find(|s| s["id"] == orphan.as_str())?;
            (!s["end_reason"].is_null()).then_some(s)
        },
        || "orphan never closed".into(),
    );
    assert_eq!(s["end_reason"], "interrupted", "{s}");
}
