//! The Compose fleet's node start-up without Docker: `deploy/fleet-entrypoint.sh` run twice at
//! once, as the two `gatehouse-N` services of `docker-compose.yml` run it, with
//! `deploy/gatehouse-fleet.toml` pointed at a real PostgreSQL and temp directories on
//! loopback. Both nodes must come up with no manual step: one shared host key (operators'
//! `known_hosts` stays valid whichever node answers), own node ids, both heartbeating, the
//! demo environment and target registered once (the fleet's behaviour is `tests/fleet.rs`).
//! The image build itself needs a Docker engine, which this test does not.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::{gatehouse_bin, stderr, wait_until};
use serde_json::Value;

/// `deploy/gatehouse-fleet.toml`, with the Compose paths, store and listen addresses moved.
fn node_config(dir: &Path, fleet: &Path, state: &Path, url: &str, ssh: u16, pg: u16) -> String {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gatehouse-fleet.toml");
    let text = std::fs::read_to_string(deploy).unwrap();
    let moved = text
        .replace("postgres://gatehouse:gatehouse@postgres/gatehouse", url)
        .replace("0.0.0.0:2222", &format!("127.0.0.1:{ssh}"))
        .replace("0.0.0.0:6432", &format!("127.0.0.1:{pg}"))
        .replace("/var/lib/gatehouse", &state.display().to_string())
        .replace("/fleet", &fleet.display().to_string());
    for compose_only in ["postgres@postgres", "0.0.0.0", "/var/lib", "\"/fleet"] {
        assert!(
            !moved.contains(compose_only),
            "{compose_only} left in:\n{moved}"
        );
    }
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, &moved).unwrap();
    path.display().to_string()
}

struct Node {
    child: Child,
    config: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(gatehouse_bin())
            .args(["--config", &self.config])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn two_compose_nodes_start_on_one_store_with_no_manual_step() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse").unwrap();
    let root = tempfile::tempdir().unwrap();
    let (fleet, keys) = (root.path().join("fleet"), root.path().join("keys"));
    let entrypoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fleet-entrypoint.sh");
    let bin_dir = gatehouse_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let dir = root.path().join(format!("node{n}"));
        let state = dir.join("state");
        std::fs::create_dir_all(&dir).unwrap();
        let ssh = gatehouse_testbed::free_port().unwrap();
        let pg_port = gatehouse_testbed::free_port().unwrap();
        let config = node_config(&dir, &fleet, &state, &pg.url("gatehouse"), ssh, pg_port);
        // both at once, as Compose starts them
        let child = Command::new("sh")
            .arg(&entrypoint)
            .env("PATH", &path)
            .env("GATEHOUSE_CONFIG", &config)
            .env("GATEHOUSE_FLEET_DIR", &fleet)
            .env("GATEHOUSE_KEYS_DIR", &keys)
            .env("GATEHOUSE_STATE_DIR", &state)
            .env("GATEHOUSE_DEMO_TARGET", "root@127.0.0.1:22")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.push((Node { child, config }, state));
    }
    // each serves (its ssh listening line) without anyone doing anything
    for (node, _) in &mut nodes {
        let mut out = BufReader::new(node.child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ssh listening on") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "a node exited before serving"
            );
        }
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // one host key for the fleet, copied beside each node's own id
    let host_key = |state: &Path| std::fs::read(state.join("gatehouse_host_ed25519.pub")).unwrap();
    assert_eq!(host_key(&a.1), host_key(&b.1));
    assert_eq!(
        host_key(&a.1),
        std::fs::read(fleet.join("gatehouse_host_ed25519.pub")).unwrap()
    );
    let id = |state: &Path| std::fs::read_to_string(state.join("gatehouse_node_id")).unwrap();
    assert_ne!(id(&a.1), id(&b.1));
    // both heartbeat into the store, seen from either node's CLI
    let listed = wait_until(
        Duration::from_secs(10),
        || {
            let nodes: Vec<Value> =
                serde_json::from_str(&b.0.cli(&["nodes", "list", "--json"])).unwrap();
            (nodes.len() == 2).then_some(nodes)
        },
        || "the two nodes never both heartbeated".into(),
    );
    for n in &listed {
        assert!(
            [id(&a.1), id(&b.1)].iter().any(|i| i.trim() == n["id"]),
            "{n}"
        );
    }
    // the demo environment and target, registered once by whichever node came first
    let targets: Vec<Value> =
        serde_json::from_str(&a.0.cli(&["target", "list", "--json"])).unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["name"], "target");
    assert_eq!(targets[0]["environment"], "demo");
}
