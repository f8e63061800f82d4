//! Recording end to end: what the real broker writes for real sessions, read back with
//! stock `asciinema` and checked with `gatehouse recordings verify`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Gatehouse, World, asciinema_cat, stderr, stdout, target_dir, tool, wait_until,
};

/// Lines of a recording after its header, parsed.
fn events(path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

fn of_code<'a>(ev: &'a [serde_json::Value], code: &str) -> Vec<&'a str> {
    ev.iter()
        .filter(|e| e[1] == code)
        .map(|e| e[2].as_str().unwrap())
        .collect()
}

fn verify(g: &Gatehouse, what: &str) -> (bool, String) {
    let out = g.cli(&["recordings", "verify", what]);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn an_interactive_session_is_recorded_and_plays_in_asciinema() {
    let w = World::new();
    let tmux = w.interactive("alice+web1");
    tmux.type_line("echo marker-$((1000+337))");
    tmux.wait_for("marker-1337");
    tmux.run(&["resize-window", "-x", "120", "-y", "40"]);
    // the new size reached the target's pty (through Gatehouse, which recorded it)
    tmux.type_line("stty size");
    tmux.wait_for("40 120");
    tmux.type_line("echo after-resize");
    tmux.wait_for("\nafter-resize");
    tmux.type_line("exit");
    tmux.wait_for("EXIT=");
    let s = w.gatehouse.wait_session_closed();
    let path = s["recording_path"].as_str().unwrap().to_owned();
    assert_eq!(s["recording_state"], "sealed", "{s}");
    let id = s["id"].as_str().unwrap();
    assert!(path.ends_with(&format!("{id}.cast")), "{path}");
    assert!(path.contains("/recordings/20"), "{path}");

    // stock asciinema reads it
    let cat = asciinema_cat(&path);
    assert!(cat.status.success(), "asciinema cat: {}", stderr(&cat));
    assert!(stdout(&cat).contains("marker-1337"), "{}", stdout(&cat));

    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["env"]["TERM"], "xterm");
    assert_eq!(header["title"], "alice → web1");
    assert_eq!(header["env"]["GATEHOUSE_ENVIRONMENT"], "prod");
    let ev = events(&path);
    let input: String = of_code(&ev, "i").concat();
    assert!(input.contains("echo marker-$((1000+337))"), "{input:?}");
    assert!(
        of_code(&ev, "r").contains(&"120x40"),
        "{:?}",
        of_code(&ev, "r")
    );
    assert!(
        of_code(&ev, "m")
            .iter()
            .any(|m| m.starts_with("session end: target_closed"))
    );
    // times never go backwards
    let times: Vec<f64> = ev.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let (ok, text) = verify(&w.gatehouse, id);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{id}  ok (")), "{text}");
}

#[test]
fn enforcement_markers_are_recorded_and_the_lock_password_is_not() {
    let w = World::new();
    let out = w.gatehouse.cli_with_stdin(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("rec-secret-5"),
    );
    assert!(out.status.success());
    w.gatehouse.set_policy(&[
        "--idle-timeout",
        "3s",
        "--warn-before",
        "1s",
        "--idle-action",
        "lock",
        "--lock-grace",
        "3s",
    ]);
    let tmux = w.interactive("alice+web1");
    tmux.wait_for("[gatehouse] password for alice: ");
    tmux.type_line("rec-secret-5");
    tmux.wait_for("unlocked; resuming");
    // lock again and let the grace run out
    tmux.wait_for("EXIT=");
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "reauth_timeout");
    let path = s["recording_path"].as_str().unwrap();
    let ev = events(path);
    let markers = of_code(&ev, "m");
    for prefix in [
        "warning: idle for",
        "locked: session locked after 3s idle",
        "unlocked",
        "end: reauthentication not completed within 3s",
    ] {
        assert!(
            markers.iter().any(|m| m.starts_with(prefix)),
            "{prefix}: {markers:?}"
        );
    }
    let raw = std::fs::read_to_string(path).unwrap();
    assert!(!raw.contains("rec-secret-5"), "password recorded");
    assert!(verify(&w.gatehouse, s["id"].as_str().unwrap()).0);
}

#[test]
fn tampering_is_detected_and_named() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "for i in 1 2 3 4 5; do echo line-$i; done");
    assert_eq!(stdout(&out).lines().count(), 5);
    let s = w.gatehouse.wait_session_closed();
    let id = s["id"].as_str().unwrap();
    let path = s["recording_path"].as_str().unwrap();
    let pristine = std::fs::read(path).unwrap();
    assert!(verify(&w.gatehouse, id).0);
    // by file path too
    let (ok, text) = verify(&w.gatehouse, path);
    assert!(ok, "{text}");

    let lines = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = String::from_utf8(pristine.clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut l);
        std::fs::write(path, l.join("\n") + "\n").unwrap();
    };
    // flip one byte
    let mut flipped = pristine.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x01;
    std::fs::write(path, &flipped).unwrap();
    let (ok, text) = verify(&w.gatehouse, id);
    assert!(!ok && text.contains("TAMPERED at event"), "{text}");
    // delete one line
    lines(&|l| {
        l.remove(2);
    });
    let (ok, text) = verify(&w.gatehouse, id);
    assert!(!ok && text.contains("TAMPERED at event 2"), "{text}");
    // append one line
    lines(&|l| l.push(r#"[99.0, "o", "forged"]"#.into()));
    let (ok, text) = verify(&w.gatehouse, id);
    assert!(!ok && text.contains("TAMPERED at event"), "{text}");
    // restored: ok again, and --all agrees
    std::fs::write(path, &pristine).unwrap();
    assert!(verify(&w.gatehouse, id).0);
    let all = w.gatehouse.cli(&["recordings", "verify", "--all"]);
    assert!(all.status.success(), "{}", stdout(&all));
}

#[test]
fn a_killed_broker_leaves_a_parseable_truncated_recording() {
    let mut w = World::new();
    // the broker is killed: nothing ends the target's command (sshd leaves it running
    // when the connection drops, as after a network cut)
    w.sshd.expect_leftover_processes();
    let mut ssh = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("for i in $(seq 1 50); do echo tick-$i; sleep 0.05; done; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // wait until output reached the recording
    let path = wait_until(
        Duration::from_secs(10),
        || {
            let s = w.gatehouse.sessions();
            let p = s.first()?["recording_path"].as_str()?.to_owned();
            std::fs::read_to_string(&p)
                .is_ok_and(|t| t.contains("tick-50"))
                .then_some(p)
        },
        || "recording never showed the output".into(),
    );
    w.gatehouse.kill_hard();
    let _ = ssh.kill();
    let _ = ssh.wait();
    // every complete line parses
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines().skip(1) {
        let _: serde_json::Value = serde_json::from_str(line).unwrap();
    }
    w.gatehouse.restart();
    let s = &w.gatehouse.sessions()[0];
    assert_eq!(s["end_reason"], "interrupted");
    assert_eq!(s["recording_state"], "interrupted");
    let (ok, out) = verify(&w.gatehouse, s["id"].as_str().unwrap());
    assert!(ok, "{out}");
    assert!(out.contains("truncated (interrupted)"), "{out}");
    let cat = asciinema_cat(&path);
    assert!(stdout(&cat).contains("tick-50"), "{}", stderr(&cat));
}

#[test]
fn an_unwritable_recordings_root_refuses_sessions() {
    let w = World::new();
    let root = w.gatehouse.dir().join("recordings");
    std::fs::remove_dir_all(&root).unwrap();
    // a file where the directory should be: nothing can be created below it, even as root
    std::fs::write(&root, "not a directory").unwrap();
    let out = w.ssh_exec("alice+web1", "echo should-not-run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stdout(&out).contains("should-not-run"));
    assert!(
        stderr(&out).contains("this session cannot be recorded")
            && stderr(&out).contains("does not open unrecorded sessions"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "recording_failed"
    );
    w.gatehouse.wait_audit("recording_failed");
}

#[test]
fn prune_removes_old_recordings_with_a_dry_run_first() {
    let w = World::new();
    let _ = w.ssh_exec("alice+web1", "echo keep");
    let s = w.gatehouse.wait_session_closed();
    let path = s["recording_path"].as_str().unwrap().to_owned();
    let dry = w
        .gatehouse
        .cli_ok(&["recordings", "prune", "--older-than", "1ms", "--dry-run"]);
    assert!(dry.contains("would remove"), "{dry}");
    assert!(std::path::Path::new(&path).exists());
    let none = w
        .gatehouse
        .cli_ok(&["recordings", "prune", "--older-than", "90d"]);
    assert!(none.contains("0 recording(s) removed"), "{none}");
    assert!(std::path::Path::new(&path).exists());
    let done = w
        .gatehouse
        .cli_ok(&["recordings", "prune", "--older-than", "1ms"]);
    assert!(done.contains("1 recording(s) removed"), "{done}");
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(w.gatehouse.sessions()[0]["recording_state"], "pruned");
}

#[test]
fn scp_and_sftp_sessions_record_a_transfer_log_not_the_bytes() {
    let w = World::new();
    let work = target_dir();
    let local = work.path().join("payload.bin");
    let mut data = vec![0u8; 1024 * 1024];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    std::fs::write(&local, &data).unwrap();
    let remote = work.path().join("remote.bin");
    let scp = |from: &str, to: &str| {
        let out = Command::new(tool("scp", "openssh-client"))
            .args(w.gatehouse.client_options("-P", &w.alice_key))
            .args(["-q", from, to])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    scp(
        &local.display().to_string(),
        &format!("alice+web1@127.0.0.1:{}", remote.display()),
    );
    let up = w.gatehouse.wait_session_closed();
    let back = work.path().join("back.bin");
    scp(
        &format!("alice+web1@127.0.0.1:{}", remote.display()),
        &back.display().to_string(),
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let sessions = w.gatehouse.wait_all_closed();
    let down = &sessions[0];
    assert_ne!(down["id"], up["id"]);

    let markers = |s: &serde_json::Value| {
        let path = s["recording_path"].as_str().unwrap();
        assert!(
            std::fs::metadata(path).unwrap().len() < 64 * 1024,
            "raw bytes recorded"
        );
        of_code(&events(path), "m")
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    };
    let remote_s = remote.display().to_string();
    let up_markers = markers(&up);
    assert!(
        up_markers.contains(&format!("sftp upload {remote_s} (1048576 bytes)")),
        "{up_markers:?}"
    );
    let down_markers = markers(down);
    assert!(
        down_markers.contains(&format!("sftp download {remote_s} (1048576 bytes)")),
        "{down_markers:?}"
    );
    let audit = w.gatehouse.audit();
    let transfers: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "file_transfer")
        .map(|e| e["detail"]["transfer"].as_str().unwrap().to_owned())
        .collect();
    // the upload and the download, plus the size scp sets on the file it wrote (a SETSTAT
    // changes the target, so it is logged too)
    let moved = transfers
        .iter()
        .filter(|t| t.starts_with("sftp upload") || t.starts_with("sftp download"))
        .count();
    assert_eq!(moved, 2, "{transfers:?}");
    assert!(
        transfers.iter().any(|t| t.starts_with("sftp fsetstat")),
        "{transfers:?}"
    );
    assert!(verify(&w.gatehouse, up["id"].as_str().unwrap()).0);
}

/// A tiny tmpfs, unmounted on drop: a disk that fills up mid-session.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a 256 KiB tmpfs to fill the recordings disk and needs root (or CAP_SYS_ADMIN): {}",
            stderr(&out)
        );
        SmallDisk(path.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_mid_session_ends_the_session() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&scratch.path().join("small-disk"));
    let w = World::with_config(&format!("[recordings]\nroot = \"{}\"\n", disk.0.display()));
    let g = &w.gatehouse;
    let start = Instant::now();
    let out = g
        .ssh("alice+web1", &w.alice_key)
        .arg("for i in $(seq 1 4000); do echo filling-the-recordings-disk-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done; sleep 20")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the session outlived its recording"
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("recording failed; the session cannot continue unrecorded"),
        "{}",
        stderr(&out)
    );
    let s = g.wait_session_closed();
    assert_eq!(s["end_reason"], "recording_failed", "{s}");
    assert_eq!(s["recording_state"], "failed", "{s}");
    drop(w);
}

#[test]
fn a_session_ended_by_the_idle_limit_carries_its_markers() {
    let w = World::new();
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--warn-before", "1s"]);
    let out = w.ssh_exec("alice+web1", "echo started; sleep 20");
    assert!(
        stderr(&out).contains("idle timeout 2s reached"),
        "{}",
        stderr(&out)
    );
    let s = w.gatehouse.wait_session_closed();
    let ev = events(s["recording_path"].as_str().unwrap());
    let markers = of_code(&ev, "m");
    assert!(
        markers
            .iter()
            .any(|m| m.starts_with("warning: idle for 1s")),
        "{markers:?}"
    );
    assert!(
        markers.contains(&"end: idle timeout 2s reached (idle_timeout)"),
        "{markers:?}"
    );
    assert!(
        markers.contains(&"session end: idle_timeout"),
        "{markers:?}"
    );
    // the markers sit at the times they happened
    let end_at = ev
        .iter()
        .find(|e| e[2] == "end: idle timeout 2s reached (idle_timeout)")
        .unwrap()[0]
        .as_f64()
        .unwrap();
    assert!((2.0..3.0).contains(&end_at), "{end_at}");
    assert!(verify(&w.gatehouse, s["id"].as_str().unwrap()).0);
}
