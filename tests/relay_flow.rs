//! The relay's flow control (issue 14 §2): bulk transfers with requests flowing one way and
//! data the other (SFTP downloads by paramiko and by asyncssh with 1,024 requests in flight)
//! never wedge, and a kill or a shutdown ends a connection whose peers both stopped reading.
//!
//! The clients are Debian's python3-paramiko and python3-asyncssh run by `/usr/bin/python3`,
//! driven by `support/flow_client.py`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gatehouse_e2e::{World, stdout, wait_until};

fn python_with(module: &str, package: &str) -> PathBuf {
    let py = PathBuf::from("/usr/bin/python3");
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "/usr/bin/python3 cannot import {module}: install Debian's {package}"
    );
    py
}

/// A running `flow_client.py` and its stdout lines.
struct FlowClient {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl FlowClient {
    fn start(w: &World, lib: &str, mode: &str, args: &[&str]) -> FlowClient {
        let package = format!("python3-{lib}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/flow_client.py");
        let mut child = Command::new(python_with(lib, &package))
            .arg(script)
            .arg(lib)
            .arg(w.gatehouse.port().to_string())
            .arg(&w.alice_key)
            .arg("alice+web1")
            .arg(mode)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run flow_client.py");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        FlowClient {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix`; fails (killing the client) after `limit`.
    fn wait_line(&mut self, w: &World, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let out = self.child.wait_with_output_lossy();
                    panic!(
                        "no {prefix:?} line within {limit:?} (client hung or failed); lines \
                         {:?}\nclient stderr:\n{out}\nbroker log:\n{}",
                        self.seen,
                        w.gatehouse.log()
                    );
                }
            }
        }
    }
}

trait LossyStderr {
    fn wait_with_output_lossy(&mut self) -> String;
}

impl LossyStderr for Child {
    fn wait_with_output_lossy(&mut self) -> String {
        use std::io::Read;
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.wait();
        err
    }
}

impl Drop for FlowClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file of `mib` MiB of pseudo-random bytes (xorshift: no compression helps anyone) and
/// its SHA-256 as `sha256sum` prints it.
fn random_file(dir: &Path, mib: usize) -> (PathBuf, String) {
    let path = dir.join("download.bin");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::with_capacity(mib << 20);
    while bytes.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&path, &bytes).expect("write download.bin");
    let sum = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum (coreutils)");
    let hash = stdout(&sum)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned();
    (path, hash)
}

fn downloads_are_byte_identical(lib: &str) {
    const RUNS: usize = 10;
    const MIB: usize = 64;
    let w = World::new();
    let (remote, hash) = random_file(w.keys.path(), MIB);
    let local = w.keys.path().join(format!("got-{lib}.bin"));
    let mut client = FlowClient::start(
        &w,
        lib,
        "get",
        &[
            &remote.display().to_string(),
            &local.display().to_string(),
            &RUNS.to_string(),
        ],
    );
    for i in 0..RUNS {
        // A wedged relay never finishes; a working one moves 64 MiB in a few seconds.
        let line = client.wait_line(&w, "GOT ", Duration::from_secs(120));
        assert_eq!(
            line,
            format!("GOT {i} {hash} {}", MIB << 20),
            "download {i} by {lib} differs from the file on the target"
        );
    }
    client.wait_line(&w, "DONE get", Duration::from_secs(30));
}

#[test]
fn paramiko_sftp_downloads_never_wedge_and_arrive_intact() {
    downloads_are_byte_identical("paramiko");
}

#[test]
fn asyncssh_sftp_downloads_with_1024_requests_in_flight_arrive_intact() {
    downloads_are_byte_identical("asyncssh");
}

/// A session whose client stopped reading while flooding a target that stopped reading too
/// (`cat` blocked on its own output).
fn stalled_session(w: &World) -> (FlowClient, String) {
    let mut client = FlowClient::start(w, "paramiko", "stall", &[]);
    client.wait_line(w, "STALLED", Duration::from_secs(90));
    let id = w.gatehouse.wait_live();
    (client, id)
}

/// The registry's row of session `id`.
fn session(w: &World, id: &str) -> serde_json::Value {
    w.gatehouse
        .sessions()
        .into_iter()
        .find(|s| s["id"] == id)
        .expect("the session is listed")
}

#[test]
fn a_kill_ends_a_session_whose_peers_both_stopped_reading() {
    let w = World::new();
    let (mut client, id) = stalled_session(&w);
    let start = Instant::now();
    w.gatehouse
        .cli_ok(&["sessions", "kill", &id, "--reason", "stuck transfer"]);
    let ended = wait_until(
        Duration::from_secs(2).saturating_sub(start.elapsed()),
        || Some(session(&w, &id)).filter(|s| !s["end_reason"].is_null()),
        || {
            let log = w.gatehouse.log();
            format!("session still live 2 s after the kill; log:\n{log}")
        },
    );
    assert_eq!(ended["end_reason"], "admin_kill: stuck transfer", "{ended}");
    // The operator's connection is gone too, not only the row.
    client.wait_line(&w, "CLOSED", Duration::from_secs(2));
    // ...and the broker serves the next session as before.
    let out = w.ssh_exec("alice+web1", "echo still-$((6*7))");
    assert!(
        stdout(&out).contains("still-42"),
        "broker stuck after the kill: {out:?}\n{}",
        w.gatehouse.log()
    );
}

#[test]
fn sigterm_stops_serve_while_a_session_is_stuck() {
    let mut w = World::new();
    let (mut client, id) = stalled_session(&w);
    let took = w.gatehouse.terminate();
    assert!(
        took < Duration::from_secs(2),
        "serve took {took:?} to exit after SIGTERM; log:\n{}",
        w.gatehouse.log()
    );
    client.wait_line(&w, "CLOSED", Duration::from_secs(2));
    // The session was closed in the registry, as ended by the shutdown.
    w.gatehouse.restart();
    let s = session(&w, &id);
    assert_eq!(s["end_reason"], "shutdown", "{s}");
}
