//! The core must stay free of I/O crates: checked on the real dependency tree.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

#[test]
fn core_depends_on_no_runtime_database_ssh_or_tui_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "gatehouse-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("gatehouse-core"), "unexpected tree: {tree}");
    for banned in ["tokio", "sqlx", "russh", "ratatui", "crossterm", "mio"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} "))),
            "gatehouse-core must not depend on {banned}:\n{tree}"
        );
    }
}
