//! SSH clients that misbehave on purpose (issue: every operator action passes one gate,
//! every byte that reaches a target is recorded). Each test asserts the effect that
//! matters: the file the command would have created on the target is absent, the bytes are
//! in the recording, the socket is closed.
//!
//! The misbehaving client is paramiko (Debian's `python3-paramiko`, run by
//! `/usr/bin/python3`), driven by `support/ssh_attacker.py`; the ControlMaster test uses
//! stock OpenSSH.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Gatehouse, Tmux, World, files_under, spawn_ready, stderr, stdout, target_dir, tool, wait_until,
};

fn python() -> PathBuf {
    let py = PathBuf::from("/usr/bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import paramiko"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "/usr/bin/python3 cannot import paramiko: install Debian's python3-paramiko"
    );
    py
}

fn attacker(w: &World, scenario: &str, args: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/ssh_attacker.py");
    Command::new(python())
        .arg(script)
        .arg(w.gatehouse.port().to_string())
        .arg(&w.alice_key)
        .arg("alice+web1")
        .arg(scenario)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh_attacker.py")
}

/// Runs a scenario to its end and returns its `STEP` lines.
fn run_attacker(w: &World, scenario: &str, args: &[&str]) -> String {
    let out = attacker(w, scenario, args)
        .wait_with_output()
        .expect("ssh_attacker.py output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains(&format!("STEP done {scenario}")),
        "scenario {scenario} failed: {stdout}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.gatehouse.log()
    );
    stdout
}

/// Every `.cast` the broker wrote, concatenated.
fn recordings(g: &Gatehouse) -> String {
    files_under(&g.dir().join("recordings"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cast"))
        .map(|p| std::fs::read_to_string(p).expect("read recording"))
        .collect()
}

fn assert_absent(dir: &Path, names: &[&str]) {
    for name in names {
        assert!(
            !dir.join(name).exists(),
            "{name} exists: an operator action reached the target"
        );
    }
}

#[test]
fn a_stray_start_request_does_not_switch_recording_off() {
    let w = World::new();
    let stray = w.keys.path().join("stray-exec-ran");
    run_attacker(&w, "stray-requests", &[&stray.display().to_string()]);
    w.gatehouse.wait_session_closed();
    let cast = recordings(&w.gatehouse);
    // typed and shown after the stray subsystem/exec/shell requests: both in the recording
    assert!(
        cast.contains("echo after-$((7*7))"),
        "input missing:\n{cast}"
    );
    assert!(cast.contains("after-49"), "output missing:\n{cast}");
    assert!(!stray.exists(), "a second start request ran on the target");
}

#[test]
fn bytes_sent_before_the_shell_never_reach_it() {
    let w = World::new();
    let early = w.keys.path().join("typed-before-shell");
    let steps = run_attacker(&w, "data-before-shell", &[&early.display().to_string()]);
    assert!(steps.contains("STEP exit 0"), "{steps}");
    w.gatehouse.wait_session_closed();
    assert!(
        !early.exists(),
        "data sent before the shell ran on the target unrecorded"
    );
    assert!(recordings(&w.gatehouse).contains("started-25"));
}

#[test]
fn nothing_reaches_the_target_while_locked() {
    let w = World::new();
    w.lock_after_2s_idle("lock-pw-77");
    let dir = w.keys.path().display().to_string();
    let steps = run_attacker(&w, "while-locked", &[&dir, "lock-pw-77"]);
    assert!(steps.contains("STEP locked yes"), "{steps}");
    assert!(
        steps.contains("STEP new-channel open-refused"),
        "a new channel was opened while locked: {steps}"
    );
    assert!(
        steps.contains("STEP spare-channel exec-refused"),
        "an exec ran while locked: {steps}"
    );
    assert!(steps.contains("STEP unlocked yes"), "{steps}");
    assert!(
        steps.contains("STEP size 41x101"),
        "the window size set while locked was lost: {steps}"
    );
    assert_absent(
        w.keys.path(),
        &["new-channel", "spare-channel", "stray-exec"],
    );
    w.gatehouse.wait_session_closed();
    let cast = recordings(&w.gatehouse);
    assert!(
        cast.contains("refused channel open: session locked"),
        "{cast}"
    );
    assert!(!cast.contains("lock-pw-77"), "the password was recorded");
}

#[test]
fn nothing_reaches_the_target_during_the_end_sequence() {
    let w = World::new();
    let g = &w.gatehouse;
    let dir = w.keys.path().display().to_string();
    let mut child = attacker(&w, "while-ending", &[&dir]);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "STEP ready yes", "{}", g.log());
    let id = g.wait_live();
    g.cli_ok(&["sessions", "kill", &id, "--reason", "drill"]);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("attacker exit");
    assert!(status.success(), "{rest:?}\n{}", g.log());
    let after = rest
        .iter()
        .find(|l| l.starts_with("STEP after-end"))
        .unwrap_or_else(|| panic!("{rest:?}"));
    assert!(
        !after.contains("exec-accepted"),
        "a program started during the end sequence: {after}"
    );
    g.wait_session_closed();
    // give anything that did slip through time to run on the target
    std::thread::sleep(Duration::from_millis(500));
    assert_absent(
        w.keys.path(),
        &["end-new-channel", "end-spare", "end-typed"],
    );
}

#[test]
fn a_controlmaster_cannot_run_commands_while_locked() {
    let w = World::new();
    w.lock_after_2s_idle("cm-pw-31");
    let socket = w.keys.path().join("cm.sock");
    let (master, control) = w.controlmaster(&socket);
    let tmux = Tmux::start(w.keys.path(), &format!("env TERM=xterm {master}; sleep 60"));
    tmux.wait_for("[gatehouse] password for alice: ");
    let marked = target_dir();
    let marker = marked.path().join("through-master");
    // A mux client with no key of its own: if the master refuses the session, OpenSSH falls
    // back to a connection of its own, which must not be able to log in either.
    let through_master = || {
        Command::new(tool("ssh", "openssh-client"))
            .args(["-F", "/dev/null", "-p", &w.gatehouse.port().to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                "/dev/null",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(&control)
            .arg("alice+web1@127.0.0.1")
            .arg(format!("touch {}", marker.display()))
            .stdin(Stdio::null())
            .output()
            .expect("ssh through the master")
    };
    assert!(
        socket.exists(),
        "the ControlMaster socket was never created: {}",
        tmux.screen()
    );
    let out = through_master();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !marker.exists(),
        "a command ran on the target while locked: {}",
        stderr(&out)
    );
    assert!(
        !out.status.success(),
        "the command through the master succeeded"
    );
    // unlocked, the same master works again: the refusal was the lock's doing
    tmux.type_line("cm-pw-31");
    tmux.wait_for("unlocked; resuming");
    let out = through_master();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists());
}

/// One channel of a ControlMaster's connection ending (its mux client killed) hangs up
/// that channel's command on the target, and only that one: the other channel's command
/// and the master's shell keep running.
#[test]
fn a_controlmaster_channel_s_end_hangs_up_only_its_own_command() {
    let w = World::new();
    let socket = w.keys.path().join("cm.sock");
    let (master, control) = w.controlmaster(&socket);
    let tmux = Tmux::start(w.keys.path(), &format!("env TERM=xterm {master}; sleep 60"));
    tmux.type_line("echo master-$((6*7))");
    tmux.wait_for("master-42");
    let mux = |seconds: u32| {
        spawn_ready(
            Command::new(tool("ssh", "openssh-client"))
                .args(w.gatehouse.client_options("-p", &w.alice_key))
                .args(&control)
                .arg("alice+web1@127.0.0.1")
                .arg(format!("echo ready; sleep {seconds}"))
                .stderr(Stdio::null()),
            || tmux.screen(),
        )
    };
    let running = |what: &str| {
        w.sshd
            .session_processes()
            .iter()
            .any(|(_, cmd)| cmd == what)
    };
    let mut first = mux(61);
    let mut second = mux(62);
    // `ready` is printed before the shell starts `sleep`: wait for both commands
    wait_until(
        Duration::from_secs(3),
        || (running("sleep 61") && running("sleep 62")).then_some(()),
        || {
            format!(
                "the channels' commands did not start: {:?}",
                w.sshd.session_processes()
            )
        },
    );
    first.kill().unwrap();
    let _ = first.wait();
    wait_until(
        Duration::from_secs(3),
        || (!running("sleep 61")).then_some(()),
        || {
            format!(
                "the ended channel's command still runs: {:?}",
                w.sshd.session_processes()
            )
        },
    );
    assert!(
        running("sleep 62"),
        "the other channel's command was ended too"
    );
    tmux.type_line("echo still-$((6*7))");
    tmux.wait_for("still-42");
    second.kill().unwrap();
    let _ = second.wait();
}

#[test]
fn other_subsystems_are_refused_unless_policy_allows_them_and_then_recorded_raw() {
    let w = World::new();
    let g = &w.gatehouse;
    let steps = run_attacker(&w, "subsystem", &["gh-echo"]);
    assert!(steps.contains("STEP subsystem refused"), "{steps}");
    g.wait_audit("subsystem_refused");
    g.set_policy(&["--allow-subsystems", "gh-echo"]);
    assert!(
        g.cli_ok(&["env", "show", "prod"])
            .contains("subsystems    gh-echo")
    );
    let steps = run_attacker(&w, "subsystem", &["gh-echo"]);
    assert!(steps.contains("STEP subsystem echoed"), "{steps}");
    g.wait_session_closed();
    let cast = recordings(g);
    assert!(cast.contains("channel: subsystem: gh-echo"), "{cast}");
    // operator bytes and the target's echo: both in the recording
    assert_eq!(cast.matches("raw-subsystem-bytes-123").count(), 2, "{cast}");
}

/// Reads from `s` until EOF or error; the time it took.
fn time_to_close(mut s: TcpStream) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn silent_and_stalled_sockets_are_dropped_at_the_login_grace() {
    let w = World::with_config("login_grace = \"1s\"\n");
    let g = &w.gatehouse;
    let addr = ("127.0.0.1", g.port());
    // connects and never says anything
    let silent = TcpStream::connect(addr).expect("connect");
    // sends its banner, then stalls before the key exchange
    let mut banner = TcpStream::connect(addr).expect("connect");
    banner.write_all(b"SSH-2.0-stall\r\n").expect("banner");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| time_to_close(silent));
        let b = s.spawn(|| time_to_close(banner));
        (a.join().expect("silent"), b.join().expect("banner"))
    });
    for (what, took) in [("silent", a), ("banner only", b)] {
        assert!(
            took < Duration::from_secs(5),
            "{what} socket still open after {took:?}"
        );
    }
    // a client that logs in within the grace is unaffected by it
    let out = w.ssh_exec("alice+web1", "echo logged-$((8*8))");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("logged-64"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pty_requested_at_0x0_is_recorded_at_the_default_size() {
    let w = World::new();
    // `ssh -tt` with stdin not a terminal asks for a 0×0 pty
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args(["-tt", "echo sized-$((9*9))"])
        .stdin(Stdio::null())
        .output()
        .expect("ssh -tt");
    assert!(stdout(&out).contains("sized-81"), "{}", stderr(&out));
    w.gatehouse.wait_session_closed();
    let cast = recordings(&w.gatehouse);
    let header: serde_json::Value =
        serde_json::from_str(cast.lines().next().expect("header")).expect("header is JSON");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
}

#[test]
fn dropbear_sees_every_exit_status() {
    let dbclient = tool("dbclient", "dropbear-bin");
    let w = World::new();
    let home = w.keys.path().join("dropbear-home");
    std::fs::create_dir_all(&home).expect("home");
    // dbclient reads keys in its own format
    let key = home.join("alice.dropbear");
    let converted = Command::new(tool("dropbearconvert", "dropbear-bin"))
        .arg("openssh")
        .arg("dropbear")
        .arg(&w.alice_key)
        .arg(&key)
        .output()
        .expect("dropbearconvert");
    assert!(converted.status.success(), "{}", stderr(&converted));
    for run in 0..50 {
        let out = Command::new(&dbclient)
            .env("HOME", &home)
            .args(["-y", "-y", "-i"])
            .arg(&key)
            .args(["-p", &w.gatehouse.port().to_string()])
            .arg("alice+web1@127.0.0.1")
            .arg("exit 6")
            .stdin(Stdio::null())
            .output()
            .expect("dbclient");
        assert_eq!(
            out.status.code(),
            Some(6),
            "run {run}: dbclient lost the exit status: {}",
            stderr(&out)
        );
    }
    // every session closed in the registry, each because the target closed it
    let reasons: Vec<String> = w
        .gatehouse
        .wait_all_closed()
        .iter()
        .map(|s| s["end_reason"].to_string())
        .collect();
    assert_eq!(reasons.len(), 50);
    assert!(
        reasons.iter().all(|r| r == "\"target_closed\""),
        "{reasons:?}"
    );
}
