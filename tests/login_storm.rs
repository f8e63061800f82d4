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
