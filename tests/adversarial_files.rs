//! Files and file operations against the real broker: every SFTP request that changes the
//! target (as stock `sftp` sends it) leaves a recording marker and a `file_transfer` audit
//! row; operator-chosen names never reach the reviewer's terminal as escapes; recordings and
//! the store are private on disk.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gatehouse_e2e::{TARGET_USER, World, stderr, stdout, target_dir, tool, wait_until};

/// The markers of a recording, in order.
fn markers(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e[1] == "m")
        .map(|e| e[2].as_str().unwrap().to_owned())
        .collect()
}

/// `sftp -b BATCH` as `alice+web1` through the broker.
fn sftp_batch(w: &World, batch: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch");
    std::fs::write(&file, batch).unwrap();
    let out = Command::new(tool("sftp", "openssh-client"))
        .args(w.gatehouse.client_options("-P", &w.alice_key))
        .arg("-b")
        .arg(&file)
        .arg("alice+web1@127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp failed: {}", stderr(&out));
    out
}

/// The `file_transfer` audit rows, once at least `count` of them are there (the broker
/// writes them after the markers, off the session's path).
fn transfer_rows(w: &World, count: usize) -> Vec<String> {
    let rows = || -> Vec<String> {
        w.gatehouse
            .audit()
            .iter()
            .filter(|e| e["kind"] == "file_transfer")
            .map(|e| e["detail"]["transfer"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(
        Duration::from_secs(10),
        || Some(rows()).filter(|r| r.len() >= count),
        || format!("fewer than {count} transfer rows: {:?}", rows()),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn every_sftp_change_leaves_a_marker_and_an_audit_row() {
    let w = World::new();
    // the target sshd runs on this machine: its files are ours to check
    let work = target_dir();
    let d = work.path().display().to_string();
    let id = Command::new("id")
        .args(["-u", TARGET_USER])
        .output()
        .unwrap();
    let uid = stdout(&id).trim().to_owned();
    let local = work.path().join("local.txt");
    std::fs::write(&local, "payload\n").unwrap();
    sftp_batch(
        &w,
        &format!(
            "put {l} {d}/a.txt\nrename {d}/a.txt {d}/b.txt\nchmod 600 {d}/b.txt\nchown {uid} {d}/b.txt\nln -s {d}/b.txt {d}/sym\nln {d}/b.txt {d}/hard\n",
            l = local.display()
        ),
    );

    // the operations really happened on the target
    let b = work.path().join("b.txt");
    assert!(!work.path().join("a.txt").exists());
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "payload\n");
    assert_eq!(mode(&b), 0o600);
    assert_eq!(std::fs::metadata(&b).unwrap().uid().to_string(), uid);
    assert_eq!(std::fs::read_link(work.path().join("sym")).unwrap(), b);
    assert_eq!(
        std::fs::metadata(work.path().join("hard")).unwrap().ino(),
        std::fs::metadata(&b).unwrap().ino()
    );

    let s = w.gatehouse.wait_session_closed();
    let recorded = markers(s["recording_path"].as_str().unwrap());
    let expected = [
        format!("sftp upload {d}/a.txt (8 bytes)"),
        format!("sftp posix-rename {d}/a.txt -> {d}/b.txt"),
        format!("sftp setstat {d}/b.txt (mode 0600)"),
        format!("sftp setstat {d}/b.txt (uid {uid} gid "),
        format!("sftp symlink {d}/sym -> {d}/b.txt"),
        format!("sftp hardlink {d}/hard to {d}/b.txt"),
    ];
    let rows = transfer_rows(&w, expected.len());
    for e in &expected {
        assert!(
            recorded.iter().any(|m| m.starts_with(e.as_str())),
            "no marker {e:?} in {recorded:?}"
        );
        assert!(
            rows.iter().any(|r| r.starts_with(e.as_str())),
            "no audit row {e:?} in {rows:?}"
        );
    }
    // one row per change: the read-only requests sftp also sent (stat, realpath, …) are
    // not logged
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
}

#[test]
fn a_file_name_with_escapes_is_shown_escaped_to_the_reviewer() {
    let w = World::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // an OSC 52 (write the reviewer's clipboard) and a line erase, in a file name
    let evil = "x\u{1b}]52;c;cm0gLXJmIH4=\u{7}\r\u{1b}[2K";
    let target = work.path().join(evil);
    // mkdir, not rm: sftp globs rm's argument, and `[2K` is a glob
    sftp_batch(&w, &format!("mkdir \"{}\"\n", target.display()));
    assert!(target.is_dir());
    let s = w.gatehouse.wait_session_closed();
    let id = s["id"].as_str().unwrap();
    let recorded = markers(s["recording_path"].as_str().unwrap());
    assert!(
        recorded.iter().any(|m| m.contains(evil)),
        "the recording keeps the name as it was: {recorded:?}"
    );

    let txt = w
        .gatehouse
        .cli(&["recordings", "export", id, "--format", "txt"]);
    assert!(txt.status.success(), "{}", stderr(&txt));
    assert!(!txt.stdout.contains(&0x1b), "{:?}", stdout(&txt));
    assert!(!txt.stdout.contains(&b'\r'), "{:?}", stdout(&txt));
    assert!(
        stdout(&txt).contains("x\\x1b]52;c;cm0gLXJmIH4=\\x07\\x0d\\x1b[2K"),
        "{}",
        stdout(&txt)
    );
}

#[test]
fn play_replays_drawing_but_not_a_clipboard_write() {
    let w = World::new();
    let out = w.ssh_exec(
        "alice+web1",
        "printf 'drawn-\\033[1mbold\\033[0m \\033]52;c;cm0gLXJmIH4=\\007\\033[6nend\\n'",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\u{1b}]52;c;"),
        "the target really sent it"
    );
    let s = w.gatehouse.wait_session_closed();
    let played = w
        .gatehouse
        .cli(&["play", s["id"].as_str().unwrap(), "--speed", "16"]);
    assert!(played.status.success(), "{}", stderr(&played));
    let text = stdout(&played);
    assert!(
        text.contains("drawn-\u{1b}[1mbold\u{1b}[0m end"),
        "{text:?}"
    );
    assert!(!text.contains("]52;"), "{text:?}");
    assert!(!text.contains("\u{1b}[6n"), "{text:?}");
}

#[test]
fn recordings_and_the_store_are_private_on_disk() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "echo private-$((6*7))");
    assert!(stdout(&out).contains("private-42"), "{}", stderr(&out));
    let s = w.gatehouse.wait_session_closed();
    let cast = Path::new(s["recording_path"].as_str().unwrap()).to_owned();
    let root = w.gatehouse.dir().join("recordings");
    assert!(cast.starts_with(&root), "{}", cast.display());
    assert_eq!(mode(&cast), 0o600, "{}", cast.display());
    let chain = format!("{}.chain", cast.display());
    assert_eq!(mode(Path::new(&chain)), 0o600, "{chain}");
    // every directory from the recordings root down to the day's
    let mut dir = cast.parent().unwrap();
    loop {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        if dir == root {
            break;
        }
        dir = dir.parent().unwrap();
    }
    let db_files: Vec<_> = std::fs::read_dir(w.gatehouse.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.to_string_lossy().starts_with("db"))
        })
        .collect();
    assert!(
        db_files.iter().any(|p| p.extension().unwrap() == "db"),
        "no SQLite store in {}: {db_files:?}",
        w.gatehouse.dir().display()
    );
    for f in &db_files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}
