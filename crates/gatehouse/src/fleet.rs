//! The node in a fleet of brokers on one store: its identity (an id generated once and kept
//! beside the host key, so that two nodes given the same name stay two nodes) and the
//! takeover of lost nodes (a node silent past `[fleet] node_timeout` has its live sessions
//! closed as `interrupted` by a live node, its unfinished recordings marked interrupted and
//! verified to their last checkpoint, and all of it audited).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use gatehouse_store::Store;

/// File beside the host key holding the node's id.
pub const NODE_ID_FILE: &str = "gatehouse_node_id";

/// Where the node id of a node with host key `host_key` is kept.
pub fn node_id_path(host_key: &Path) -> PathBuf {
    host_key.with_file_name(NODE_ID_FILE)
}

/// Reads the node's id, generating it (a UUIDv7) on the first start.
pub fn load_or_create_node_id(host_key: &Path) -> anyhow::Result<String> {
    let path = node_id_path(host_key);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            anyhow::ensure!(
                !id.is_empty()
                    && id.len() <= 64
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "node id file {} is invalid (expected one id line)",
                path.display()
            );
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("cannot write node id file {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read node id file {}", path.display())),
    }
}

/// Closes the sessions of lost nodes every `every`, until the task is aborted. Every live
/// node runs it: each row is closed by exactly one of them (see
/// `Store::take_over_lost_nodes`), and audited by that one.
pub async fn watch_lost_nodes(store: Store, me: String, timeout: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let mut failing = false;
    loop {
        tick.tick().await;
        let cutoff = gatehouse_store::now_millis().saturating_sub(timeout_ms);
        match take_over(&store, &me, cutoff, timeout_ms).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot check for lost nodes");
            }
            Err(_) => {}
        }
    }
}

async fn take_over(store: &Store, me: &str, cutoff: i64, timeout_ms: i64) -> anyhow::Result<()> {
    // the store writes the audit events with each takeover, in its transaction
    let (closed, lost) = store.take_over_lost_nodes(me, cutoff).await?;
    gatehouse_session::metrics::lost_node_sessions_closed(closed.len());
    for (id, name) in &lost {
        tracing::error!(node_id = %id, node = %name, timeout_ms, "node lost: no heartbeat within the node timeout; its sessions are closed as interrupted");
    }
    for s in &closed {
        tracing::warn!(session_id = %s.session_id, node_id = %s.node_id, node = %s.node, "session of a lost node closed as interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("gatehouse_host_ed25519");
        let a = load_or_create_node_id(&key).unwrap_or_else(|e| panic!("{e}"));
        let b = load_or_create_node_id(&key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert!(dir.path().join(NODE_ID_FILE).exists());
        std::fs::write(dir.path().join(NODE_ID_FILE), "not an id\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(load_or_create_node_id(&key).is_err());
    }
}
