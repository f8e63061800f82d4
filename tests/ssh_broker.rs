//! The SSH broker end to end: the real OpenSSH client (`ssh`, `scp`, `sftp`, `rsync`)
//! through the real `gatehouse` binary to a real `sshd`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{Tmux, World, keygen, stderr, stdout, target_dir, tool, wait_until};

#[test]
fn exec_prints_output_and_returns_the_remote_exit_code() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "echo hello; echo oops >&2; exit 7");
    assert_eq!(
        stdout(&out),
        "hello\n",
        "stderr: {}\n{}",
        stderr(&out),
        w.gatehouse.log()
    );
    assert!(stderr(&out).contains("oops"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(7));

    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["operator"], "alice");
    assert_eq!(s["target"], "web1");
    assert_eq!(s["environment"], "prod");
    assert_eq!(s["protocol"], "ssh");
    assert_eq!(s["end_reason"], "target_closed");
    assert!(s["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(s["bytes_out"].as_i64().unwrap() >= 11, "{s}");

    // the colon alias selects the same target; stdin reaches the remote command
    let mut child = w
        .gatehouse
        .ssh("alice:web1", &w.alice_key)
        .arg("tr a-z A-Z")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the gate\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "THROUGH THE GATE\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["bytes_in"], 17);
}

#[test]
fn remote_signal_death_is_reported() {
    let w = World::new();
    let out = w.ssh_exec("alice+web1", "kill -TERM $$");
    // OpenSSH's client exits 255 when the remote command died of a signal
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
}

#[test]
fn password_login_and_wrong_password() {
    let w = World::new();
    let out = w.gatehouse.cli_with_stdin(
        &["user", "add", "bob", "--password-stdin"],
        Some("s3cret-pass\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    w.gatehouse.cli_ok(&["grant", "bob", "prod"]);
    let askpass = w.keys.path().join("askpass");
    let login = |password: &str| {
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = Command::new(tool("ssh", "openssh-client"));
        // password only: no BatchMode (ssh keeps the first value of an option), no keys
        let mut options = w.gatehouse.client_options("-p", &w.alice_key);
        let batch = options.iter().position(|o| o == "BatchMode=yes").unwrap();
        options.drain(batch - 1..=batch);
        c.args(options);
        c.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .arg("bob+web1@127.0.0.1")
        .arg("echo password-ok")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
    };
    let out = login("s3cret-pass");
    assert_eq!(
        stdout(&out),
        "password-ok\n",
        "{}\n{}",
        stderr(&out),
        w.gatehouse.log()
    );
    let out = login("wrong-pass");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let audit = w.gatehouse.audit();
    assert!(
        audit.iter().any(|e| e["kind"] == "auth_failure"
            && e["operator"] == "bob"
            && e["detail"]["method"] == "password"
            && e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:"))),
        "{audit:?}"
    );
    // the password never reaches the log or the audit trail
    assert!(!w.gatehouse.log().contains("s3cret-pass"));
    assert!(!w.gatehouse.log().contains("wrong-pass"));
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains("wrong-pass")
    );
}

#[test]
fn interactive_pty_session_sees_term_size_and_resizes() {
    let w = World::new();
    let ssh: Vec<String> = std::iter::once(tool("ssh", "openssh-client").display().to_string())
        .chain(w.gatehouse.client_options("-p", &w.alice_key))
        .chain(["-tt".to_string(), "alice+web1@127.0.0.1".to_string()])
        .collect();
    let command = format!("env TERM=xterm-256color {}; sleep 30", ssh.join(" "));
    let tmux = Tmux::start(w.keys.path(), &command);
    tmux.type_line("export PS1='gh$ '; echo ready-$((6*7))");
    tmux.wait_for("ready-42");
    tmux.type_line("echo term=$TERM size=$(stty size)");
    let pane = tmux.run(&["display-message", "-p", "#{pane_height} #{pane_width}"]);
    let screen = tmux.wait_for("term=xterm-256color size=");
    assert!(
        screen.contains(&format!("term=xterm-256color size={}", pane.trim())),
        "pane {pane}; screen:\n{screen}"
    );
    tmux.run(&["resize-window", "-x", "120", "-y", "40"]);
    let pane2 = wait_until(
        Duration::from_secs(5),
        || {
            let now = tmux.run(&["display-message", "-p", "#{pane_height} #{pane_width}"]);
            (now.trim() != pane.trim()).then_some(now)
        },
        || "the pane never resized".into(),
    );
    assert_ne!(pane.trim(), pane2.trim());
    tmux.type_line("echo resized=$(stty size)");
    tmux.wait_for(&format!("resized={}", pane2.trim()));
    tmux.type_line("exit 3");
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "target_closed");
}

fn random_file(path: &std::path::Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn scp_sftp_and_rsync_transfer_files_intact() {
    let w = World::new();
    let work = target_dir();
    let original = random_file(&work.path().join("payload.bin"), 20 * 1024 * 1024);
    // the target is this machine's sshd, so "remote" paths are local temp paths
    let remote = target_dir();
    let remote_path = remote.path().join("up.bin");
    let scp = |from: &str, to: &str| {
        let out = Command::new(tool("scp", "openssh-client"))
            .args(w.gatehouse.client_options("-P", &w.alice_key))
            .args(["-q", from, to])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scp {from} {to}: {}\n{}",
            stderr(&out),
            w.gatehouse.log()
        );
    };
    scp(
        &work.path().join("payload.bin").display().to_string(),
        &format!("alice+web1@127.0.0.1:{}", remote_path.display()),
    );
    assert!(
        std::fs::read(&remote_path).unwrap() == original,
        "upload differs"
    );
    let back = work.path().join("back.bin");
    scp(
        &format!("alice+web1@127.0.0.1:{}", remote_path.display()),
        &back.display().to_string(),
    );
    assert!(
        std::fs::read(&back).unwrap() == original,
        "download differs"
    );

    // sftp in batch mode: list and fetch
    let batch = work.path().join("batch");
    let fetched = work.path().join("fetched.bin");
    std::fs::write(
        &batch,
        format!(
            "ls -l {}\nget {} {}\n",
            remote.path().display(),
            remote_path.display(),
            fetched.display()
        ),
    )
    .unwrap();
    let out = Command::new(tool("sftp", "openssh-client"))
        .args(w.gatehouse.client_options("-P", &w.alice_key))
        .arg("-b")
        .arg(&batch)
        .arg("alice+web1@127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert!(stdout(&out).contains("up.bin"), "{}", stdout(&out));
    assert!(
        std::fs::read(&fetched).unwrap() == original,
        "sftp fetch differs"
    );

    // rsync over ssh (both directions of data at once: the rsync protocol)
    let rsync = tool("rsync", "rsync");
    let ssh_cmd = std::iter::once(tool("ssh", "openssh-client").display().to_string())
        .chain(w.gatehouse.client_options("-p", &w.alice_key))
        .collect::<Vec<_>>()
        .join(" ");
    let synced = remote.path().join("synced.bin");
    let out = Command::new(rsync)
        .args(["-a", "-e", &ssh_cmd])
        .arg(work.path().join("payload.bin"))
        .arg(format!("alice+web1@127.0.0.1:{}", synced.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    assert!(
        std::fs::read(&synced).unwrap() == original,
        "rsync copy differs"
    );

    let sessions = w.gatehouse.sessions();
    assert_eq!(sessions.len(), 4, "{sessions:?}");
    let up = sessions
        .iter()
        .map(|s| s["bytes_in"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(up >= 20 * 1024 * 1024, "upload bytes counted: {up}");
}

#[test]
fn forwarding_is_refused_with_a_reason() {
    let w = World::new();
    let listen = gatehouse_testbed::free_port().unwrap();
    let child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .arg("-L")
        .arg(format!("127.0.0.1:{listen}:127.0.0.1:{}", w.sshd.port()))
        .arg("sleep 3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // connect through the forwarded port: Gatehouse must refuse the channel
    let mut s = wait_until(
        Duration::from_secs(5),
        || std::net::TcpStream::connect(("127.0.0.1", listen)).ok(),
        || "ssh -L never listened".into(),
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "forwarded connection reached the target: {got:?}"
    );
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("administratively prohibited"), "{err}");
    assert!(
        err.contains("local port forwarding is not allowed by Gatehouse policy"),
        "{err}"
    );

    // remote forwarding: the client is told the request failed
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "127.0.0.1:0:127.0.0.1:22",
        ])
        .arg("echo should-not-run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("should-not-run"));

    // agent forwarding request is refused too, the session still works
    let agent_sock = w.keys.path().join("agent.sock");
    let mut agent = Command::new(tool("ssh-agent", "openssh-client"))
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        || agent_sock.exists().then_some(()),
        || "ssh-agent did not start".into(),
    );
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args(["-A", "-o", "ForwardAgent=yes"])
        .arg("echo ${SSH_AUTH_SOCK:-no-agent}")
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(stdout(&out), "no-agent\n", "{}", stderr(&out));

    let audit = w.gatehouse.audit();
    let kinds: Vec<&str> = audit
        .iter()
        .filter(|e| e["kind"] == "forwarding_refused")
        .filter_map(|e| e["detail"]["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"local port forwarding"), "{kinds:?}");
    assert!(kinds.contains(&"remote port forwarding"), "{kinds:?}");
    assert!(kinds.contains(&"agent forwarding"), "{kinds:?}");
}

#[test]
fn refusals_are_clear_and_registered() {
    let w = World::new();
    let g = &w.gatehouse;
    // a second environment the operator has no grant for, with a target in it
    g.cli_ok(&["env", "add", "staging"]);
    w.add_target("db1", "staging", w.sshd.user());
    let sshd_addr = format!("{}@127.0.0.1:{}", w.sshd.user(), w.sshd.port());
    let identity = w.target_identity.display().to_string();
    // a target whose pinned key is not the one the sshd presents
    let (_, other_key) = keygen(w.keys.path(), "not_the_host_key");
    g.cli_ok(&[
        "target",
        "add",
        "web2",
        "--env",
        "prod",
        "--ssh",
        &sshd_addr,
        "--identity",
        &identity,
        "--host-key",
        &other_key,
    ]);

    // unknown target and missing grant: the same words, exit status 1
    let unknown = w.ssh_exec("alice+nope", "echo should-not-run");
    let no_grant = w.ssh_exec("alice+db1", "echo should-not-run");
    for (out, name) in [(&unknown, "nope"), (&no_grant, "db1")] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        assert!(!stdout(out).contains("should-not-run"));
        assert!(
            stderr(out).contains(&format!(
                "gatehouse: access denied: target '{name}' does not exist or you have no grant for it"
            )),
            "{}",
            stderr(out)
        );
    }
    // no target at all
    let out = w.ssh_exec("alice", "true");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no target selected: connect as alice+TARGET"),
        "{}",
        stderr(&out)
    );

    // changed host key
    let out = w.ssh_exec("alice+web2", "echo should-not-run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("presented a host key that does not match its pinned key"),
        "{}",
        stderr(&out)
    );

    // wrong key and unknown operator: plain SSH authentication failure
    let (mallory_key, _) = keygen(w.keys.path(), "mallory");
    let wrong = g
        .ssh("alice+web1", &mallory_key)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(255));
    assert!(
        stderr(&wrong).contains("Permission denied"),
        "{}",
        stderr(&wrong)
    );
    let ghost = g
        .ssh("ghost+web1", &w.alice_key)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(ghost.status.code(), Some(255));

    // every brokered attempt is in the registry with the rule that ended it
    let sessions = g.wait_all_closed();
    let reason = |target: &str| -> Vec<String> {
        sessions
            .iter()
            .filter(|s| s["target"] == target)
            .map(|s| s["end_reason"].as_str().unwrap_or("live").to_owned())
            .collect()
    };
    assert_eq!(reason("nope"), ["access_denied"]);
    assert_eq!(reason("db1"), ["access_denied"]);
    assert_eq!(reason(""), ["access_denied"]);
    assert_eq!(reason("web2"), ["host_key_mismatch"]);
    let audit = g.audit();
    let mismatch = audit
        .iter()
        .find(|e| e["kind"] == "host_key_mismatch")
        .expect("audited");
    assert_eq!(mismatch["detail"]["target"], "web2");
    assert!(
        mismatch["detail"]["presented"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    let denied: Vec<_> = audit
        .iter()
        .filter(|e| e["kind"] == "access_denied")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(
        denied
            .iter()
            .any(|e| e["detail"]["reason"] == "unknown target")
    );
    assert!(denied.iter().any(|e| e["detail"]["reason"] == "no grant"));
    // the credential never shows up anywhere the operator or the log can see
    let secret = std::fs::read_to_string(&w.target_identity).unwrap();
    let secret_line = secret.lines().nth(1).unwrap();
    for out in [&unknown, &no_grant, &wrong] {
        assert!(!stderr(out).contains(secret_line));
    }
    assert!(!g.log().contains(secret_line));
}

#[test]
fn trust_on_first_use_pins_the_first_key() {
    let w = World::new();
    let g = &w.gatehouse;
    let sshd_addr = format!("{}@127.0.0.1:{}", w.sshd.user(), w.sshd.port());
    let identity = w.target_identity.display().to_string();
    let out = g.cli(&[
        "target",
        "add",
        "web3",
        "--env",
        "prod",
        "--ssh",
        &sshd_addr,
        "--identity",
        &identity,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: target 'web3' needs a pinned host key: give --host-key or --host-key-file, or --trust-on-first-use\n"
    );
    g.cli_ok(&[
        "target",
        "add",
        "web3",
        "--env",
        "prod",
        "--ssh",
        &sshd_addr,
        "--identity",
        &identity,
        "--trust-on-first-use",
    ]);
    let out = w.ssh_exec("alice+web3", "echo first");
    assert_eq!(stdout(&out), "first\n", "{}", stderr(&out));
    let targets: Vec<serde_json::Value> =
        serde_json::from_str(&g.cli_ok(&["target", "list", "--json"])).unwrap();
    let web3 = targets.iter().find(|t| t["name"] == "web3").unwrap();
    assert_eq!(web3["host_key"].as_str().unwrap(), w.sshd.host_public_key());
    let audit = g.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "host_key_pinned" && e["detail"]["target"] == "web3")
    );
    let out = w.ssh_exec("alice+web3", "echo second");
    assert_eq!(stdout(&out), "second\n");
}

#[test]
fn only_locale_environment_variables_reach_the_target() {
    let w = World::new();
    // sshd accepts GATEHOUSE_TEST_* too: only Gatehouse's allow-list stands in the way
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args([
            "-o",
            "SendEnv=LC_TIME",
            "-o",
            "SendEnv=GATEHOUSE_TEST_INJECT",
        ])
        .arg("echo time=${LC_TIME:-unset} inject=${GATEHOUSE_TEST_INJECT:-unset}")
        .env("LC_TIME", "C")
        .env("GATEHOUSE_TEST_INJECT", "evil")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "time=C inject=unset\n", "{}", stderr(&out));
}

#[test]
fn host_key_file_accepts_a_known_hosts_line() {
    let w = World::new();
    let file = w.keys.path().join("known_hosts_line");
    std::fs::write(
        &file,
        format!(
            "# pinned\n[127.0.0.1]:{} {}\n",
            w.sshd.port(),
            w.sshd.host_public_key()
        ),
    )
    .unwrap();
    w.gatehouse.cli_ok(&[
        "target",
        "add",
        "web4",
        "--env",
        "prod",
        "--ssh",
        &format!("{}@127.0.0.1:{}", w.sshd.user(), w.sshd.port()),
        "--identity",
        &w.target_identity.display().to_string(),
        "--host-key-file",
        &file.display().to_string(),
    ]);
    let out = w.ssh_exec("alice+web4", "echo pinned-from-file");
    assert_eq!(stdout(&out), "pinned-from-file\n", "{}", stderr(&out));
}

/// A client that re-keys every 64 KiB (`RekeyLimit`): Gatehouse's key exchange (russh's,
/// patched in `vendor/russh` to run in a boxed function of its own) runs again and again in
/// the middle of the data, both ways, and not a byte is lost or reordered.
#[test]
fn rekeying_mid_transfer_loses_nothing() {
    let w = World::new();
    let work = target_dir();
    let path = work.path().join("payload.bin");
    let original = random_file(&path, 2 * 1024 * 1024);
    let newkeys = |stderr: &str| stderr.matches("SSH2_MSG_NEWKEYS received").count();

    // upload: the operator's bytes reach the target intact
    let mut child = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args(["-v", "-o", "RekeyLimit=64K"])
        .arg(format!("cat > {}.up", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = original.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        w.gatehouse.log()
    );
    let rekeys = newkeys(&stderr(&out));
    assert!(
        rekeys >= 10,
        "only {rekeys} key exchanges: {}",
        stderr(&out)
    );
    let uploaded = std::fs::read(work.path().join("payload.bin.up")).unwrap();
    assert!(uploaded == original, "upload differs after rekeying");
    w.gatehouse.wait_session_closed();

    // download: the target's bytes reach the operator intact
    let out = w
        .gatehouse
        .ssh("alice+web1", &w.alice_key)
        .args(["-v", "-o", "RekeyLimit=64K"])
        .arg(format!("cat {}", path.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        w.gatehouse.log()
    );
    assert!(out.stdout == original, "download differs after rekeying");
    // the client asks at its limit, the server answers when its writes let it: fewer
    // exchanges than on the way up, but at least one in the middle of the data
    let rekeys = newkeys(&stderr(&out));
    assert!(rekeys >= 2, "only {rekeys} key exchanges: {}", stderr(&out));
    w.gatehouse.wait_session_closed();
}
