//! Several broker nodes on one real PostgreSQL store, end to end: two `gatehouse serve`
//! processes (own ports, own host keys and node ids, one store, one secret key, one shared
//! recordings root). A kill, a user lock and a policy change made through node A reach a
//! session on node B at once (LISTEN/NOTIFY); node B killed with SIGKILL has its sessions
//! closed as `interrupted` by node A within the node timeout, and `check` finds nothing live
//! on a dead node; a node that comes back after being declared lost ends its guards without
//! reopening anything; two nodes with the same name never close each other's sessions.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gatehouse_e2e::fleet::{Fleet, NODE_TIMEOUT, node_id, session, wait_exit, wait_until};
use gatehouse_e2e::{stderr, stdout};
use serde_json::Value;

fn still_running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_kill_and_a_user_lock_from_node_a_end_a_session_on_node_b_within_a_second() {
    let f = Fleet::start(["a", "b"]);
    let (a, b) = (f.a(), f.b());

    let (mut child, id) = f.session_on(b);
    let row = session(a, &id);
    assert_eq!(
        (row["node"].clone(), row["node_id"].clone()),
        ("b".into(), node_id(b).into())
    );
    a.cli_ok(&["sessions", "kill", &id, "--reason", "fleet drill"]);
    let t = Instant::now();
    let err = wait_exit(&mut child, Duration::from_secs(1));
    assert!(
        err.contains("terminated by admin: fleet drill"),
        "{err}\nnode B:\n{}",
        b.log()
    );
    let row = wait_until(Duration::from_secs(1), "the row closed", || {
        Some(session(a, &id)).filter(|s| !s["end_reason"].is_null())
    });
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(row["end_reason"], "admin_kill: fleet drill");

    let (mut child, id) = f.session_on(b);
    a.cli_ok(&["user", "lock", "alice"]);
    let t = Instant::now();
    let err = wait_exit(&mut child, Duration::from_secs(1));
    assert!(err.contains("account locked by admin"), "{err}");
    let row = wait_until(Duration::from_secs(1), "the row closed", || {
        Some(session(a, &id)).filter(|s| !s["end_reason"].is_null())
    });
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(row["end_reason"], "operator_locked");
    assert_eq!(row["node"], "b");
    // both nodes list both nodes, and the sessions table shows the node
    for g in [a, b] {
        let nodes: Vec<Value> =
            serde_json::from_str(&g.cli_ok(&["nodes", "list", "--json"])).unwrap();
        let mut names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        let table = g.cli_ok(&["nodes", "list"]);
        assert!(table.starts_with("ID"), "{table}");
        assert!(
            table.contains(&node_id(b)) && table.contains("live"),
            "{table}"
        );
    }
    let table = a.cli_ok(&["sessions", "list"]);
    assert!(table.lines().next().unwrap().contains("NODE"), "{table}");
}

#[test]
fn a_policy_change_through_node_a_reaches_a_live_session_on_node_b() {
    let f = Fleet::start(["a", "b"]);
    let (a, b) = (f.a(), f.b());
    let (mut child, id) = f.session_on(b);
    a.set_policy(&["--max-session", "1s"]);
    let t = Instant::now();
    wait_exit(&mut child, Duration::from_secs(3));
    let row = wait_until(Duration::from_secs(1), "the row closed", || {
        Some(session(a, &id)).filter(|s| !s["end_reason"].is_null())
    });
    assert_eq!(row["end_reason"], "max_session", "{row}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn a_node_killed_mid_session_has_its_sessions_closed_by_another_node() {
    let mut f = Fleet::start(["a", "b"]);
    // node B is killed: nothing ends the target's command (sshd leaves it running
    // when the connection drops, as after a network cut)
    f.world.sshd.expect_leftover_processes();
    let (mut child, id) = f.session_on(f.b());
    let b_id = node_id(f.b());
    f.node_b.kill_hard();
    let t = Instant::now();
    let a = f.a();
    // one takeover pass closes the row, then marks the node's recordings: wait for both
    let row = wait_until(NODE_TIMEOUT * 3, "node B's session closed", || {
        Some(session(a, &id))
            .filter(|s| !s["end_reason"].is_null() && s["recording_state"] != "recording")
    });
    // silent for the timeout, then found within a heartbeat or two
    assert!(
        t.elapsed() < NODE_TIMEOUT + Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(row["end_reason"], "interrupted");
    assert_eq!(row["recording_state"], "interrupted", "{row}");
    let audit = a.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "node_lost" && e["detail"]["node_id"] == b_id.as_str()),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|e| e["kind"] == "session_closed"
            && e["session_id"] == id.as_str()
            && e["detail"]["node_lost"] == b_id.as_str()),
        "{audit:#?}"
    );
    let nodes: Vec<Value> = serde_json::from_str(&a.cli_ok(&["nodes", "list", "--json"])).unwrap();
    let lost = nodes.iter().find(|n| n["id"] == b_id.as_str()).unwrap();
    assert!(lost["lost_at"].is_i64(), "{lost}");
    // nothing is left live on the dead node
    let out = a.cli(&["check", "--json"]);
    let findings: Vec<Value> = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("check --json: {e}: {}", stderr(&out)));
    assert!(
        !findings
            .iter()
            .any(|f| f["rule"] == "node_gone" || f["live"] == true),
        "{findings:#?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_node_declared_lost_that_comes_back_ends_its_guards_and_reopens_nothing() {
    let f = Fleet::start(["a", "b"]);
    let (a, b) = (f.a(), f.b());
    let (mut child, id) = f.session_on(b);
    signal(b.pid(), "-STOP");
    // one takeover pass closes the row, then marks the node's recordings: wait for both
    let row = wait_until(NODE_TIMEOUT * 3, "node B's session closed", || {
        Some(session(a, &id))
            .filter(|s| !s["end_reason"].is_null() && s["recording_state"] != "recording")
    });
    assert_eq!(row["end_reason"], "interrupted");
    assert!(still_running(&mut child));
    signal(b.pid(), "-CONT");
    // B's next heartbeat finds its row closed: the guard ends the session
    let err = wait_exit(&mut child, Duration::from_secs(5));
    assert!(err.contains("declared lost"), "{err}");
    // and nothing changed in the row: not reopened, not closed twice
    let b_id = node_id(b);
    wait_until(Duration::from_secs(5), "node B heartbeating again", || {
        let nodes: Vec<Value> =
            serde_json::from_str(&a.cli_ok(&["nodes", "list", "--json"])).unwrap();
        nodes
            .into_iter()
            .find(|n| n["id"] == b_id.as_str() && n["lost_at"].is_null())
    });
    let after = session(a, &id);
    assert_eq!(after["end_reason"], row["end_reason"]);
    assert_eq!(after["ended_at"], row["ended_at"]);
    assert_eq!(after["recording_state"], "interrupted", "{after}");
    // audited once, by the takeover: B's guard ending the connection is its enforcement
    // end, not a second end of the session
    let audit: Vec<Value> =
        serde_json::from_str(&a.cli_ok(&["audit", "list", "--json", "--session", &id])).unwrap();
    let kinds: Vec<&str> = audit.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "session_closed").count(),
        1,
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"session_end"), "{kinds:?}");
    // and B serves again
    let (mut child, id) = f.session_on(b);
    assert_eq!(session(a, &id)["node_id"], b_id.as_str());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn two_nodes_with_the_same_name_never_close_each_other_s_sessions() {
    let mut f = Fleet::start(["twin", "twin"]);
    assert_ne!(node_id(f.a()), node_id(f.b()));
    let (mut on_a, a_session) = f.session_on(f.a());
    let (mut on_b, b_session) = f.session_on(f.b());
    // B restarts: its start closes what B left open, not A's session of the same name
    f.node_b.restart();
    let a = f.a();
    let b_row = wait_until(Duration::from_secs(10), "B's own session closed", || {
        Some(session(a, &b_session)).filter(|s| !s["end_reason"].is_null())
    });
    assert_eq!(b_row["end_reason"], "shutdown");
    wait_exit(&mut on_b, Duration::from_secs(5));
    // a kill through B of A's session is carried out by A, only for that session
    let (mut on_b, b_session) = f.session_on(f.b());
    let (mut on_a2, a_session2) = f.session_on(f.a());
    f.b()
        .cli_ok(&["sessions", "kill", &a_session2, "--reason", "one only"]);
    let err = wait_exit(&mut on_a2, Duration::from_secs(2));
    assert!(err.contains("terminated by admin: one only"), "{err}");
    // through heartbeats and takeover rounds, the others stay live on both sides
    let watch = Instant::now() + NODE_TIMEOUT + Duration::from_secs(2);
    while Instant::now() < watch {
        for id in [&a_session, &b_session] {
            let s = session(f.a(), id);
            assert!(s["end_reason"].is_null(), "{s}");
        }
        assert!(still_running(&mut on_a) && still_running(&mut on_b));
        std::thread::sleep(Duration::from_millis(250));
    }
    for c in [&mut on_a, &mut on_b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
