//! `[metrics] listen`: a Prometheus scrape during a session shows it live, after the kill
//! the end-reason counter, the enforcement end and the sealed recording's bytes have it,
//! heartbeat ages and store round trips are there, a failed login is counted, the node's
//! room (sessions admitted under `max_sessions`, connections holding a front's login slot)
//! follows a session and a silent socket, a connection past its source's share is counted; `/healthz` answers 200 while the store and the
//! recordings root work, and 503 naming the recordings root once it is unusable.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_e2e::{World, stderr};

/// `GET path` over HTTP/1.1: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits (at most 5 s) until `/metrics` contains `needle`; returns the scrape.
fn scrape_until(port: u16, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        if body.contains(needle) {
            return body;
        }
        assert!(Instant::now() < deadline, "no {needle} in:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_show_a_live_session_then_its_end_and_healthz_checks_the_recordings_root() {
    let port = gatehouse_testbed::free_port().unwrap();
    let w = World::with_config(&format!(
        "[node]\nname = \"m1\"\nmax_sessions = 40\nmax_unauthenticated = 7\nmax_unauthenticated_per_source = 2\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let g = &w.gatehouse;
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(port, "/nope").0, 404);
    let text = scrape_until(port, "gatehouse_max_sessions 40\n");
    for want in [
        "gatehouse_sessions_admitted 0\n",
        "gatehouse_max_unauthenticated{protocol=\"ssh\"} 7\n",
        "gatehouse_max_unauthenticated{protocol=\"postgres\"} 7\n",
        "gatehouse_unauthenticated_connections{protocol=\"ssh\"} 0\n",
    ] {
        assert!(text.contains(want), "no {want} in:\n{text}");
    }
    // a socket that says nothing holds one of the SSH front's login slots until it goes
    let silent = TcpStream::connect(("127.0.0.1", g.port())).unwrap();
    scrape_until(
        port,
        "gatehouse_unauthenticated_connections{protocol=\"ssh\"} 1\n",
    );
    // past the source's share of 2: closed at once, and counted
    let second = TcpStream::connect(("127.0.0.1", g.port())).unwrap();
    let mut third = TcpStream::connect(("127.0.0.1", g.port())).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(third.read(&mut [0u8; 64]).unwrap(), 0, "a third was kept");
    scrape_until(port, "gatehouse_source_share_closed_total 1\n");
    drop((silent, second));
    scrape_until(
        port,
        "gatehouse_unauthenticated_connections{protocol=\"ssh\"} 0\n",
    );

    let mut child = g
        .ssh("alice+web1", &w.alice_key)
        .arg("echo ready; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
    let text = scrape_until(
        port,
        "gatehouse_live_sessions{node=\"m1\",protocol=\"ssh\",environment=\"prod\"} 1\n",
    );
    // admitted: it holds a room, and its login slot is free again
    for want in [
        "gatehouse_sessions_admitted 1\n",
        "gatehouse_unauthenticated_connections{protocol=\"ssh\"} 0\n",
    ] {
        assert!(text.contains(want), "no {want} in:\n{text}");
    }

    let id = g.wait_live();
    g.cli_ok(&["sessions", "kill", &id, "--reason", "scrape me"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        stderr(&out).contains("terminated by admin: scrape me"),
        "{}",
        stderr(&out)
    );
    let text = scrape_until(
        port,
        "gatehouse_session_ends_total{protocol=\"ssh\",reason=\"admin_kill\"} 1\n",
    );
    assert!(
        text.contains(
            "gatehouse_live_sessions{node=\"m1\",protocol=\"ssh\",environment=\"prod\"} 0\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("scrape me"),
        "the admin's text is no label: {text}"
    );
    scrape_until(port, "gatehouse_sessions_admitted 0\n");
    // the kill was an enforcement end; the session's recording was sealed and counted; the
    // node's own heartbeat is seconds old; the store's round trips are timed
    for want in [
        "gatehouse_enforcement_actions_total{action=\"end\"} 1\n",
        "gatehouse_recording_bytes_total{protocol=\"ssh\"} ",
        "gatehouse_node_heartbeat_age_seconds{node=",
        "gatehouse_store_seconds_count{operation=\"heartbeat\"} ",
        "gatehouse_store_seconds_count{operation=\"watch\"} ",
    ] {
        scrape_until(port, want);
    }

    // a login with a key nobody registered is counted
    let (stranger, _) = gatehouse_e2e::keygen(w.keys.path(), "stranger");
    let out = g.ssh("alice+web1", &stranger).arg("true").output().unwrap();
    assert!(!out.status.success());
    scrape_until(port, "gatehouse_failed_logins_total{method=\"publickey\"}");

    // the recordings root becomes unusable: healthz says so
    let root = g.dir().join("recordings");
    std::fs::rename(&root, g.dir().join("recordings.moved")).unwrap();
    std::fs::write(&root, "not a directory").unwrap();
    let (status, body) = get(port, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("recordings root"), "{body}");
}
