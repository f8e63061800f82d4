//! Several broker nodes on one real PostgreSQL store: two `gatehouse serve` processes (own
//! ports, own host keys and node ids, one store, one master key, one shared recordings root),
//! set up through node A's CLI. Used by `tests/fleet.rs` and the kill-propagation benchmark.

#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

use std::io::Read;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::{Gatehouse, World};

/// Short, so the lost-node test runs in seconds.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Fleet {
    // brokers first: they stop before the store they use
    pub node_b: Gatehouse,
    /// Node A, the target `web1` and operator `alice`.
    pub world: World,
    /// The master key and the recordings root.
    pub shared: TempDir,
    pub pg: gatehouse_testbed::Postgres,
}

impl Fleet {
    /// Two nodes named `names` on one fresh PostgreSQL store; target `web1` in `prod`,
    /// operator `alice` with a key and a grant, set up through node A's CLI.
    pub fn start(names: [&str; 2]) -> Fleet {
        let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
        pg.create_database("gatehouse").unwrap();
        let shared = tempfile::Builder::new()
            .prefix("gatehouse-fleet-")
            .tempdir()
            .unwrap();
        let config = |name: &str| {
            format!(
                "[store]\nurl = \"{}\"\n[secrets]\nkey_file = \"{}\"\n[recordings]\nroot = \"{}\"\n[node]\nname = \"{name}\"\n[fleet]\nnode_timeout = \"{}s\"\n",
                pg.url("gatehouse"),
                shared.path().join("gatehouse_secret.key").display(),
                shared.path().join("recordings").display(),
                NODE_TIMEOUT.as_secs(),
            )
        };
        let a = Gatehouse::start_with(&config(names[0]));
        let node_b = Gatehouse::start_with(&config(names[1]));
        Fleet {
            node_b,
            world: World::around(a),
            shared,
            pg,
        }
    }

    pub fn a(&self) -> &Gatehouse {
        &self.world.gatehouse
    }

    pub fn b(&self) -> &Gatehouse {
        &self.node_b
    }

    /// `ssh alice+web1 'echo ready; sleep 60'` through `node`; returns the client and the
    /// session's id once the command runs on the target (its first line came back).
    pub fn session_on(&self, node: &Gatehouse) -> (Child, String) {
        let before: Vec<String> = ids(&self.a().sessions());
        let child = self.world.sleeping_session(node);
        let id = wait_until(Duration::from_secs(10), "a new live session", || {
            self.a()
                .sessions()
                .into_iter()
                .find(|s| s["end_reason"].is_null() && !before.contains(&id_of(s)))
                .map(|s| id_of(&s))
        });
        (child, id)
    }
}

pub fn id_of(s: &Value) -> String {
    s["id"].as_str().unwrap().to_owned()
}

pub fn ids(sessions: &[Value]) -> Vec<String> {
    sessions.iter().map(id_of).collect()
}

pub fn node_id(g: &Gatehouse) -> String {
    std::fs::read_to_string(g.dir().join("gatehouse_node_id"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn session(g: &Gatehouse, id: &str) -> Value {
    g.sessions()
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no session {id}"))
}

/// [`crate::wait_until`] with the failure named by `what`.
pub fn wait_until<T>(within: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    crate::wait_until(within, f, || format!("timed out waiting for {what}"))
}

/// Waits (at most `within`) for the ssh client to exit; returns its stderr.
pub fn wait_exit(child: &mut Child, within: Duration) -> String {
    wait_until(within, "the ssh client to exit", || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    err
}
