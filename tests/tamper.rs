//! Tamper evidence end to end: someone with write access to the store (but not the node's
//! key) edits a recording's row, or someone with the disk rewrites a recording a crash cut
//! short; `gatehouse recordings verify` must say TAMPERED. The store is edited the way such
//! a person would: with the stock `sqlite3` shell.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{Gatehouse, World, stderr, stdout, tool, wait_until};

/// Runs `sql` on the broker's SQLite store and returns its output.
fn sqlite(g: &Gatehouse, sql: &str) -> String {
    let out = Command::new(tool("sqlite3", "sqlite3"))
        .arg(g.dir().join("gatehouse.db"))
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn verify(g: &Gatehouse, what: &str) -> (bool, String) {
    let out = g.cli(&["recordings", "verify", what]);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn editing_a_sealed_recordings_row_is_reported_tampered() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "echo sealed-and-safe");
    assert!(out.status.success(), "{}", stderr(&out));
    let s = w.gatehouse.wait_session_closed();
    let g = &w.gatehouse;
    let id = s["id"].as_str().unwrap();
    let path = s["recording_path"].as_str().unwrap().to_owned();
    let (ok, text) = verify(g, id);
    assert!(ok && text.contains("ok ("), "{text}");

    // another, untouched recording for the row to point at
    let decoy = format!("{path}.decoy.cast");
    std::fs::copy(&path, &decoy).unwrap();
    std::fs::copy(format!("{path}.chain"), format!("{decoy}.chain")).unwrap();

    let edits = [
        ("recording_state = 'pruned'", "recording_state = 'sealed'"),
        ("recording_state = 'failed'", "recording_state = 'sealed'"),
        (
            &format!("recording_path = '{decoy}'") as &str,
            &format!("recording_path = '{path}'") as &str,
        ),
    ];
    for (edit, undo) in edits {
        sqlite(g, &format!("UPDATE sessions SET {edit} WHERE id = '{id}'"));
        let (ok, text) = verify(g, id);
        assert!(!ok && text.contains("TAMPERED"), "{edit}: {text}");
        let all = g.cli(&["recordings", "verify", "--all"]);
        assert!(!all.status.success(), "{edit}: {}", stdout(&all));
        assert!(
            stdout(&all).contains("TAMPERED"),
            "{edit}: {}",
            stdout(&all)
        );
        // undone, the row checks out again: it was the edit that was caught
        sqlite(g, &format!("UPDATE sessions SET {undo} WHERE id = '{id}'"));
        let (ok, text) = verify(g, id);
        assert!(ok, "{undo}: {text}");
    }
}

#[test]
fn a_killed_brokers_recording_is_verified_to_its_last_checkpoint() {
    let mut w = World::new();
    // the broker is killed: nothing ends the target's command (sshd leaves it running
    // when the connection drops, as after a network cut)
    w.sshd.expect_leftover_processes();
    let mut ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("for i in $(seq 1 40); do echo tick-$i; sleep 0.05; done; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // within 10 s of the last output the store has a checkpoint covering all of it
    let query = "SELECT recording_checkpoint_events, recording_path FROM sessions WHERE recording_checkpoint_events IS NOT NULL";
    let (checkpoint, path) = wait_until(
        Duration::from_secs(25),
        || {
            let row = sqlite(&w.gatehouse, query);
            let (n, path) = row.split_once('|')?;
            let n = n.parse::<usize>().ok()?;
            let text = std::fs::read_to_string(path).ok()?;
            (text.contains("tick-40") && text.lines().count() == n + 1)
                .then(|| (n, path.to_owned()))
        },
        || {
            let row = sqlite(&w.gatehouse, query);
            format!(
                "no checkpoint of the output in the store ({row:?})\n{}",
                w.gatehouse.log()
            )
        },
    );
    assert!(
        checkpoint > 9,
        "too few events for the cut below: {checkpoint}"
    );
    w.gatehouse.kill_hard();
    let _ = ssh.kill();
    let _ = ssh.wait();
    w.gatehouse.restart();
    let s = &w.gatehouse.sessions()[0];
    assert_eq!(s["recording_state"], "interrupted");
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["recording_path"].as_str(), Some(path.as_str()));
    let (ok, text) = verify(&w.gatehouse, &id);
    assert!(ok, "{text}");
    assert!(
        text.contains("truncated (interrupted)")
            && text.contains(&format!("verified to checkpoint at event {checkpoint}")),
        "{text}"
    );

    // cut the recording and its sidecar back consistently to before the checkpoint: the
    // unkeyed chain still agrees with itself, the checkpoint does not
    let keep = |file: &str, lines: usize| {
        let text = std::fs::read_to_string(file).unwrap();
        let kept: Vec<&str> = text.lines().take(lines).collect();
        std::fs::write(file, kept.join("\n") + "\n").unwrap();
    };
    keep(&path, 10);
    keep(&format!("{path}.chain"), 10);
    let (ok, text) = verify(&w.gatehouse, &id);
    assert!(!ok && text.contains("TAMPERED"), "{text}");
    // by its chain alone the cut file passes: only the checkpoint caught it
    assert_eq!(
        gatehouse_recorder::verify(std::path::Path::new(&path), None).unwrap(),
        gatehouse_recorder::Verdict::Truncated { events: 9 }
    );
}
