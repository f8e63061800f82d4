//! How sessions end and are recorded: operator gone, broker shut down, broker killed, and the
//! failed-login lockout.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_e2e::{World, keygen, stderr, stdout, wait_until};

/// Waits until the registry shows a live session.

#[test]
fn operator_going_away_is_client_closed() {
    let w = World::new();
    let mut ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    w.gatehouse.wait_live();
    ssh.kill().unwrap();
    ssh.wait().unwrap();
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "client_closed", "{s}");
}

#[test]
fn graceful_shutdown_ends_live_sessions_as_shutdown() {
    let mut w = World::new();
    let ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 30")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.gatehouse.wait_live();
    let started = Instant::now();
    w.gatehouse.restart();
    let out = ssh.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("gatehouse is shutting down"),
        "{}",
        stderr(&out)
    );
    let s = w.gatehouse.sessions();
    assert_eq!(s[0]["end_reason"], "shutdown", "{s:?}");
    // and the restarted broker serves again on the same port with the same host key
    let out = w.ssh_exec("alice+web1", "echo back");
    assert_eq!(stdout(&out), "back\n", "{}", stderr(&out));
}

#[test]
fn a_killed_broker_leaves_sessions_interrupted_after_restart() {
    let mut w = World::new();
    let mut ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 30")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    w.gatehouse.wait_live();
    w.gatehouse.kill_hard();
    let _ = ssh.wait();
    // while it is down, the row is still open
    assert!(w.gatehouse.sessions()[0]["end_reason"].is_null());
    w.gatehouse.restart();
    assert_eq!(w.gatehouse.sessions()[0]["end_reason"], "interrupted");
}

#[test]
fn repeated_failures_lock_the_source_out() {
    let w = World::with_config(
        "login_failure_limit = 3\nlogin_failure_window = \"1m\"\nlogin_lockout = \"1h\"\n",
    );
    let g = &w.gatehouse;
    let ok = g
        .ssh("alice+web1", &w.alice_key)
        .arg("echo in")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&ok), "in\n", "{}\n{}", stderr(&ok), g.log());

    let (mallory, _) = keygen(w.keys.path(), "mallory");
    for _ in 0..3 {
        let out = g
            .ssh("alice+web1", &mallory)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(255));
    }
    // the source is now locked out: even the right key is refused (a key-only failure is
    // counted when its connection ends, just after the client gave up)
    wait_until(
        Duration::from_secs(5),
        || {
            let failures = g
                .audit()
                .iter()
                .filter(|e| e["kind"] == "auth_failure")
                .count();
            (failures == 3).then_some(())
        },
        || format!("failures not all counted:\n{}", g.log()),
    );
    let out = g
        .ssh("alice+web1", &w.alice_key)
        .arg("echo in")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let audit = g.audit();
    let failures: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures.iter().all(|e| e["detail"]["method"] == "publickey"
        && e["operator"] == "alice"
        && e["source"].as_str().unwrap().starts_with("127.0.0.1:")));
    assert_eq!(failures[2]["detail"]["source_locked_out"], true);
    assert!(
        g.log()
            .contains("login refused: too many failures from this source"),
        "{}",
        g.log()
    );
}
