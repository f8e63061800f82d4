//! The admin CLI as a script sees it: one clear error line and a non-zero exit for every
//! mistake, and the same store for every command.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

use gatehouse_e2e::{gatehouse_bin, keygen, stderr, stdout};

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(gatehouse_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn assert_one_line_error(out: &std::process::Output, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(expected), "expected '{expected}' in: {err}");
}

#[test]
fn invalid_config_is_rejected_with_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "[ssh]\nlisten = \"127.0.0.1:2222\"\nport = 22\n").unwrap();
    let cfg_s = cfg.display().to_string();
    for cmd in [&["serve"][..], &["env", "list"], &["sessions", "list"]] {
        let mut args = vec!["--config", cfg_s.as_str()];
        args.extend_from_slice(cmd);
        let out = run(dir.path(), &args);
        assert_one_line_error(&out, &format!("{cfg_s}:3:1: unknown field `port`"));
    }
    std::fs::write(&cfg, "[store]\nurl = \"mysql://db/x\"\n").unwrap();
    let out = run(dir.path(), &["--config", &cfg_s, "env", "list"]);
    assert_one_line_error(&out, ":2:7: store url 'mysql://db/x' is not supported");
    let out = run(
        dir.path(),
        &["--config", "/nonexistent.toml", "env", "list"],
    );
    assert_one_line_error(&out, "cannot read config /nonexistent.toml");
}

#[test]
fn defaults_without_config_and_paths_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // no config: everything lands in the current directory
    let out = run(dir.path(), &["env", "add", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("gatehouse.db").exists());
    assert!(dir.path().join("gatehouse_secret.key").exists());
    assert_eq!(stdout(&run(dir.path(), &["env", "list"])), "dev\n");
    // with a config in a subdirectory, relative paths follow the file, not the cwd
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/g.toml"),
        "[store]\nurl = \"sqlite://state/g.db\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("etc/state")).unwrap();
    let out = run(
        dir.path(),
        &["--config", "etc/g.toml", "env", "add", "prod"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("etc/state/g.db").exists());
    assert_eq!(
        stdout(&run(dir.path(), &["--config", "etc/g.toml", "env", "list"])),
        "prod\n"
    );
}

#[test]
fn admin_mistakes_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (identity, host_pub) = keygen(d, "id");
    let (_, alice_pub) = keygen(d, "alice");
    let id = identity.display().to_string();
    let alice_pub_file = d.join("alice.pub").display().to_string();
    assert!(alice_pub.starts_with("ssh-ed25519 "));
    assert_one_line_error(
        &run(d, &["env", "add", "bad name"]),
        "environment name 'bad name' may only contain",
    );
    assert!(run(d, &["env", "add", "prod"]).status.success());
    assert_one_line_error(
        &run(d, &["env", "add", "prod"]),
        "environment 'prod' already exists",
    );
    let add = |extra: &[&str]| {
        let mut a = vec![
            "target",
            "add",
            "web1",
            "--ssh",
            "u@127.0.0.1:22",
            "--identity",
            id.as_str(),
        ];
        a.extend_from_slice(extra);
        run(d, &a)
    };
    assert_one_line_error(
        &add(&["--env", "nope", "--host-key", &host_pub]),
        "environment 'nope' does not exist",
    );
    assert_one_line_error(
        &add(&["--env", "prod", "--host-key", "ssh-ed25519 garbage"]),
        "--host-key is not a valid OpenSSH key",
    );
    assert_one_line_error(&add(&["--env", "prod"]), "needs a pinned host key");
    // target `w` in prod with a given --ssh and --identity
    let add_w = |ssh: &str, identity: &str| {
        run(
            d,
            &[
                "target",
                "add",
                "w",
                "--env",
                "prod",
                "--ssh",
                ssh,
                "--identity",
                identity,
                "--host-key",
                &host_pub,
            ],
        )
    };
    assert_one_line_error(
        &add_w("nohost", &id),
        "--ssh: 'nohost' is not USER@HOST[:PORT]",
    );
    assert_one_line_error(&add_w("u@h", "/nope"), "cannot read identity /nope");
    assert_one_line_error(&add_w("u@h", &alice_pub_file), "is not a valid OpenSSH key");
    let ok = add(&["--env", "prod", "--host-key", &host_pub]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok)
            .contains("target web1 added (environment prod, ssh u@127.0.0.1:22, host key SHA256:")
    );
    assert_one_line_error(
        &add(&["--env", "prod", "--host-key", &host_pub]),
        "target 'web1' already exists",
    );

    assert_one_line_error(&run(d, &["user", "add", "alice"]), "needs a credential");
    assert!(
        run(
            d,
            &["user", "add", "alice", "--public-key", &alice_pub_file]
        )
        .status
        .success()
    );
    assert_one_line_error(
        &run(
            d,
            &["user", "add", "alice", "--public-key", &alice_pub_file],
        ),
        "user 'alice' already exists",
    );
    assert_one_line_error(
        &run(d, &["grant", "bob", "prod"]),
        "user 'bob' does not exist",
    );
    assert_one_line_error(
        &run(d, &["grant", "alice", "nope"]),
        "environment 'nope' does not exist",
    );
    assert!(run(d, &["grant", "alice", "prod"]).status.success());

    // nothing was half-written by the failures
    let targets: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&run(d, &["target", "list", "--json"]))).unwrap();
    assert_eq!(targets.len(), 1);
    // the identity is stored sealed: its text is nowhere in the database file
    let db = std::fs::read(d.join("gatehouse.db")).unwrap();
    let key_text = std::fs::read_to_string(&identity).unwrap();
    let body = key_text.lines().nth(1).unwrap().as_bytes();
    assert!(
        !db.windows(body.len()).any(|w| w == body),
        "identity stored in clear"
    );
    // the session list works on an empty registry
    let out = run(d, &["sessions", "list"]);
    assert!(stdout(&out).starts_with("ID  OPERATOR"), "{}", stdout(&out));
}
