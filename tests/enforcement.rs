//! Enforcement end to end, with limits of a few seconds: the real `ssh` client through the
//! real broker to a real `sshd`, with `tmux` as the operator's terminal.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_e2e::{Gatehouse, TARGET_USER, World, stderr, stdout, wait_until};

fn audit_kinds(g: &Gatehouse) -> Vec<String> {
    g.audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn idle_pty_session_is_warned_then_ended() {
    let w = World::new();
    w.gatehouse
        .set_policy(&["--idle-timeout", "3s", "--warn-before", "2s"]);
    let tmux = w.interactive("alice+web1");
    let screen = tmux.wait_for("EXIT=");
    assert!(
        screen
            .contains("[gatehouse] idle for 1s — this session closes in 2s; press any key to stay"),
        "{screen}"
    );
    assert!(
        screen.contains("[gatehouse] idle timeout 3s reached"),
        "{screen}"
    );
    assert!(
        !screen.contains("EXIT=0"),
        "ssh must exit non-zero:\n{screen}"
    );
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "idle_timeout");
    let kinds = audit_kinds(&w.gatehouse);
    assert!(kinds.contains(&"enforcement_warning".into()), "{kinds:?}");
    assert!(kinds.contains(&"enforcement_end".into()), "{kinds:?}");
}

#[test]
fn typing_keeps_a_session_alive() {
    let w = World::new();
    w.gatehouse.set_policy(&["--idle-timeout", "2s"]);
    let tmux = w.interactive("alice+web1");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        tmux.type_keys("x");
        std::thread::sleep(Duration::from_millis(400));
    }
    tmux.type_keys("\x15"); // Ctrl-U: discard the typed x's
    tmux.type_line("echo still-$((40+2))");
    tmux.wait_for("still-42");
    assert!(!tmux.screen().contains("idle timeout"), "{}", tmux.screen());
    // then silence ends it
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("idle timeout 2s reached"), "{screen}");
}

#[test]
fn keepalives_do_not_count_as_activity() {
    let w = World::new();
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--warn-before", "1s"]);
    let start = Instant::now();
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args([
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=10",
        ])
        .arg("sleep 20")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "keepalives kept it alive: {took:?}"
    );
    assert!(took >= Duration::from_secs(2), "ended early: {took:?}");
    assert_ne!(out.status.code(), Some(0));
    // no pty: warning and end go to stderr
    let err = stderr(&out);
    assert!(
        err.contains("[gatehouse] idle for 1s — this session closes in 1s"),
        "{err}"
    );
    assert!(err.contains("[gatehouse] idle timeout 2s reached"), "{err}");
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "idle_timeout"
    );
}

#[test]
fn target_output_does_not_count_as_activity() {
    let w = World::new();
    w.gatehouse.set_policy(&["--idle-timeout", "2s"]);
    let start = Instant::now();
    // (bounded: the root login of this target cannot be sent a hangup, see below)
    let out = w.ssh_exec(
        "alice+web1",
        "for i in $(seq 100); do date; sleep 0.2; done",
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(stdout(&out).lines().count() >= 5, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("idle timeout 2s reached"),
        "{}",
        stderr(&out)
    );
    assert_ne!(out.status.code(), Some(0));
}

/// Whether process `pid` still runs (a zombie waiting for its parent does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // the state follows the command name in parentheses
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// A session Gatehouse ends is ended on the target too: a command run without a pty, which
/// sshd would leave running when its channel closes, gets a hangup and is gone, instead of
/// looping on the target unrecorded. (web1's login is not root: sshd serves root without
/// privilege separation and refuses `signal` requests there; see the next test.)
#[test]
fn an_ended_session_leaves_no_command_running_on_the_target() {
    let w = World::new();
    w.gatehouse.set_policy(&["--idle-timeout", "2s"]);
    let out = w.ssh_exec(
        "alice+web1",
        "echo pid=$$; while true; do date; sleep 0.2; done",
    );
    assert!(
        stderr(&out).contains("idle timeout 2s reached"),
        "{}",
        stderr(&out)
    );
    let ended = Instant::now();
    let pid: u32 = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {:?}", stdout(&out)))
        .parse()
        .unwrap();
    while running(pid) {
        assert!(
            ended.elapsed() < Duration::from_secs(3),
            "the command (pid {pid}) still runs on the target after its session ended; sshd: {}",
            w.sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (3 s at most) until none of the target's session processes is left.
fn assert_nothing_left_on_the_target(w: &World, after: &str) {
    wait_until(
        Duration::from_secs(3),
        || w.sshd.session_processes().is_empty().then_some(()),
        || {
            format!(
                "still running on the target after {after}: {:?}\n{}",
                w.sshd.session_processes(),
                w.gatehouse.log()
            )
        },
    );
}

/// An operator whose client vanishes (killed, network gone) leaves nothing running on the
/// target either: the channel's end hangs up the command, as the end of a terminal line does.
#[test]
fn a_vanished_client_leaves_no_command_running_on_the_target() {
    let w = World::new();
    let mut ssh = w.sleeping_session(&w.gatehouse);
    ssh.kill().unwrap();
    let _ = ssh.wait();
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "client_closed", "{s}");
    assert_nothing_left_on_the_target(&w, "its client vanished");
}

/// A broker shutting down (SIGTERM) ends its sessions' commands on the target with them —
/// also a session whose client vanished a moment before (its hangup is sent before the
/// target connection closes, not left to a task the exit would cut short).
#[test]
fn a_shutdown_leaves_no_command_running_on_the_target() {
    let mut w = World::new();
    let mut ssh = w.sleeping_session(&w.gatehouse);
    w.gatehouse.terminate();
    let _ = ssh.wait();
    assert_nothing_left_on_the_target(&w, "the broker shut down");

    let mut w = World::new();
    let mut ssh = w.sleeping_session(&w.gatehouse);
    ssh.kill().unwrap();
    w.gatehouse.terminate();
    let _ = ssh.wait();
    assert_nothing_left_on_the_target(&w, "its client vanished and the broker shut down");
}

/// Where that hangup cannot work, the admin is told when the target is added: a root login
/// (sshd refuses to signal root sessions' commands); an unprivileged one gets no warning.
#[test]
fn adding_a_root_target_warns_that_its_commands_cannot_be_hung_up() {
    let w = World::new();
    let said = w.add_target("web1-root", "prod", "root");
    assert!(
        said.contains("warning: this target is logged in to as root")
            && said.contains("keeps running on the target"),
        "{said}"
    );
    let said = w.add_target("web1-app", "prod", TARGET_USER);
    assert_eq!(said, "");
}

#[test]
fn an_active_session_ends_at_max_session() {
    let w = World::new();
    w.gatehouse.set_policy(&[
        "--idle-timeout",
        "2s",
        "--max-session",
        "3s",
        "--warn-before",
        "1s",
    ]);
    let mut child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    // active all along: a line every 300 ms until the broker cuts us off
    while start.elapsed() < Duration::from_secs(8) {
        if stdin.write_all(b"typing\n").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("this session reaches its maximum length of 3s in 1s"),
        "{err}"
    );
    assert!(err.contains("maximum session length 3s reached"), "{err}");
    assert!(!err.contains("idle"), "{err}");
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "max_session"
    );
}

#[test]
fn lock_then_unlock_resumes_the_same_shell() {
    let w = World::new();
    w.add_password("unlock-me-9");
    w.gatehouse.set_policy(&[
        "--idle-timeout",
        "2s",
        "--idle-action",
        "lock",
        "--lock-grace",
        "30s",
    ]);
    let tmux = w.interactive("alice+web1");
    tmux.type_line("GH_STATE=kept-$((40+2))");
    tmux.wait_for("[gatehouse] password for alice: ");
    // what is typed while locked reaches neither the target nor the logs
    tmux.type_line("unlock-me-9");
    tmux.wait_for("unlocked; resuming");
    tmux.type_line("echo state=$GH_STATE");
    tmux.wait_for("state=kept-42");
    // locks again; wrong three times ends it. Each prompt is waited for after the message
    // that precedes it (counting prompts on the screen raced with the broker's answers)
    tmux.type_line("clear");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.screen().contains("unlocked; resuming") {
        assert!(Instant::now() < deadline, "{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(50));
        tmux.run(&["clear-history"]);
    }
    let prompt_after = |marker: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = tmux.screen();
            if screen
                .rsplit_once(marker)
                .is_some_and(|(_, after)| after.contains("password for alice: "))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for marker in [
        "session locked after 2s idle",
        "wrong password; 2 attempts left",
        "wrong password; 1 attempt left",
    ] {
        prompt_after(marker);
        tmux.type_line("wrong-guess");
    }
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("reauthentication failed"), "{screen}");
    assert!(
        !screen.contains("unlock-me-9") && !screen.contains("wrong-guess"),
        "echoed:\n{screen}"
    );
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "reauth_failed");
    let log = w.gatehouse.log();
    assert!(
        !log.contains("unlock-me-9") && !log.contains("wrong-guess"),
        "password in the log"
    );
    let audit = serde_json::to_string(&w.gatehouse.audit()).unwrap();
    assert!(!audit.contains("unlock-me-9") && !audit.contains("wrong-guess"));
    for kind in [
        "session_locked",
        "session_unlocked",
        "reauth_failed",
        "enforcement_end",
    ] {
        assert!(audit.contains(kind), "{kind} missing: {audit}");
    }
}

#[test]
fn shortening_the_policy_ends_an_idle_live_session_within_2s() {
    let w = World::new();
    w.gatehouse.set_policy(&["--idle-timeout", "60s"]);
    let mut child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("sleep 30")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.gatehouse.wait_live();
    std::thread::sleep(Duration::from_millis(1500));
    let changed = Instant::now();
    w.gatehouse.set_policy(&["--idle-timeout", "1s"]);
    let status = child.wait().unwrap();
    let took = changed.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("closes in 1s"), "{err}");
    assert!(err.contains("idle timeout 1s reached"), "{err}");
}

#[test]
fn admin_kill_and_user_lock_end_sessions_within_2s() {
    let w = World::new();
    let g = &w.gatehouse;
    let run = || {
        g.ssh("alice+web1", &w.alice_key)
            .arg("sleep 30")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = run();
    let id = g.wait_live();
    let t = Instant::now();
    g.cli_ok(&["sessions", "kill", &id, "--reason", "maintenance"]);
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        stderr(&out).contains("terminated by admin: maintenance"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        g.wait_session_closed()["end_reason"],
        "admin_kill: maintenance"
    );
    let again = g.cli(&["sessions", "kill", &id]);
    assert!(
        stderr(&again).contains(&format!("live session '{id}' does not exist")),
        "{}",
        stderr(&again)
    );

    let child = run();
    g.wait_live();
    let t = Instant::now();
    g.cli_ok(&["user", "lock", "alice"]);
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        stderr(&out).contains("account locked by admin"),
        "{}",
        stderr(&out)
    );
    assert_eq!(g.wait_session_closed()["end_reason"], "operator_locked");
    // new logins are refused with the reason, until unlocked
    let out = w.ssh_exec("alice+web1", "echo in");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("your account is locked"),
        "{}",
        stderr(&out)
    );
    g.cli_ok(&["user", "unlock", "alice"]);
    assert_eq!(stdout(&w.ssh_exec("alice+web1", "echo in")), "in\n");
}

#[test]
fn invalid_policies_are_rejected_clearly() {
    let w = World::new();
    let g = &w.gatehouse;
    for (args, expected) in [
        (
            &["--idle-timeout", "0s"][..],
            "idle timeout must be greater than zero",
        ),
        (
            &["--idle-timeout=-5m"],
            "--idle-timeout '-5m' is not a duration",
        ),
        (&["--idle-timeout", "5 fortnights"], "is not a duration"),
        (
            &["--idle-timeout", "1m", "--warn-before", "1m"],
            "warning lead 1m is not shorter than idle timeout 1m",
        ),
        (
            &["--idle-action", "nap"],
            "idle action 'nap' is not one of: disconnect, lock",
        ),
    ] {
        let mut all = vec!["env", "set", "prod"];
        all.extend_from_slice(args);
        let out = g.cli(&all);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    g.set_policy(&[
        "--idle-timeout",
        "15m",
        "--max-session",
        "8h",
        "--warn-before",
        "5m,1m",
        "--idle-action",
        "lock",
        "--lock-grace",
        "2m",
        "--reauth-after",
        "12h",
    ]);
    assert_eq!(
        g.cli_ok(&["env", "show", "prod"]),
        "idle-timeout  15m\nmax-session   8h\nwarn-before   5m,1m\nidle-action   lock\nlock-grace    2m\nreauth-after  12h\n"
    );
    g.set_policy(&["--max-session", "off"]);
    assert!(
        g.cli_ok(&["env", "show", "prod"])
            .contains("max-session   off")
    );
}

#[test]
fn lock_asks_for_the_totp_code_of_an_enrolled_operator() {
    let w = World::new();
    w.add_password("pw-with-totp");
    let out = w.gatehouse.cli_ok(&["user", "totp", "alice"]);
    let uri = out.lines().next().unwrap();
    assert!(uri.starts_with("otpauth://totp/Gatehouse:alice?"), "{out}");
    assert!(
        out.contains('█') || out.contains('▀'),
        "no QR code drawn:\n{out}"
    );
    let totp = totp_rs::Totp::from_url(uri).unwrap();
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--idle-action", "lock"]);
    let tmux = w.interactive("alice+web1");
    tmux.wait_for("[gatehouse] password for alice: ");
    tmux.type_line("pw-with-totp");
    tmux.wait_for("[gatehouse] TOTP code: ");
    let code = totp.generate_current().to_string();
    tmux.type_line(&code);
    tmux.wait_for("unlocked; resuming");
    tmux.type_line("echo after-$((1+1))");
    tmux.wait_for("after-2");
    assert!(!tmux.screen().contains(&code), "code echoed");
    // (not checked against the log: six digits also occur in its timestamps)
    assert!(!w.gatehouse.log().contains("pw-with-totp"));
}

/// An operator whose client stops reading (its output piped nowhere, the SSH window full)
/// cannot hold a session past its limit: the end does not wait on the client.
#[test]
fn a_client_that_stops_reading_is_still_ended_at_max_session() {
    let w = World::new();
    w.gatehouse
        .set_policy(&["--max-session", "2s", "--warn-before", "1s"]);
    let start = Instant::now();
    let mut child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("yes flooding-the-window")
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // never read while the session runs
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    w.gatehouse.wait_live();
    let s = w.gatehouse.wait_session_closed();
    let took = start.elapsed();
    assert_eq!(s["end_reason"], "max_session", "{s}");
    // the limit, the bounded end (at most ~2.3 s of writes and linger), login; slack for a
    // loaded machine. Without the bound the session never closes.
    assert!(took < Duration::from_secs(7), "{took:?}");
    let _ = child.kill();
    let _ = child.wait();
}
