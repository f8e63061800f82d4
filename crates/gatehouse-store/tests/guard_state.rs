//! What a node's heartbeat writes about its live sessions' guards (idle, lock, next limit),
//! and what the session list reads back, on SQLite.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use gatehouse_core::{EndReason, Protocol, WarnKind};
use gatehouse_store::{GuardState, MasterKey, NewSession, NodeInfo, Store};

#[tokio::test]
async fn sqlite_heartbeat_writes_each_live_sessions_guard_state() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    store.add_operator("alice", None).await.unwrap();
    let new = |node| NewSession {
        node,
        node_id: node,
        operator: "alice",
        target: "web1",
        environment: Some("prod"),
        protocol: Protocol::Ssh,
        client_addr: "127.0.0.1:1",
    };
    let open = store.start_session(&new("n1")).await.unwrap();
    let locked = store.start_session(&new("n1")).await.unwrap();
    let elsewhere = store.start_session(&new("n2")).await.unwrap();
    let ended = store.start_session(&new("n1")).await.unwrap();
    store
        .end_session(&ended, &EndReason::ClientClosed, 0, 0)
        .await
        .unwrap();
    let sessions = store.list_sessions(10).await.unwrap();
    assert!(sessions.iter().all(|s| s.guard.is_none()), "{sessions:?}");

    let open_state = GuardState {
        last_activity_at: 5_000,
        locked_since: None,
        next_limit: Some((WarnKind::Reauth, 65_000)),
    };
    let locked_state = GuardState {
        last_activity_at: 2_000,
        locked_since: Some(4_000),
        next_limit: Some((WarnKind::Reauth, 64_000)),
    };
    let no_limit = GuardState {
        last_activity_at: 1_000,
        locked_since: None,
        next_limit: None,
    };
    let held = [
        open.clone(),
        locked.clone(),
        elsewhere.clone(),
        ended.clone(),
    ];
    let guards = [
        (open.clone(), open_state),
        (locked.clone(), locked_state),
        // another node's session and an ended one are not this node's to write
        (elsewhere.clone(), no_limit),
        (ended.clone(), no_limit),
    ];
    let n1 = NodeInfo {
        id: "n1".into(),
        name: "n1".into(),
        version: "0.1.0".into(),
        started_at: 1000,
        listen: "ssh 127.0.0.1:22".into(),
    };
    store
        .node_heartbeat(&n1, held.len(), &held, &guards)
        .await
        .unwrap();
    let guard_of = |id: &str, sessions: &[gatehouse_store::SessionRecord]| {
        sessions.iter().find(|s| s.id == id).unwrap().guard
    };
    let sessions = store.list_sessions(10).await.unwrap();
    assert_eq!(guard_of(&open, &sessions), Some(open_state));
    assert_eq!(guard_of(&locked, &sessions), Some(locked_state));
    assert_eq!(guard_of(&elsewhere, &sessions), None);
    assert_eq!(guard_of(&ended, &sessions), None);
    assert_eq!(
        store.session(&locked).await.unwrap().guard,
        Some(locked_state)
    );

    // the next beat overwrites: unlocked, no limit left
    store
        .node_heartbeat(&n1, held.len(), &held, &[(locked.clone(), no_limit)])
        .await
        .unwrap();
    let sessions = store.list_sessions(10).await.unwrap();
    assert_eq!(guard_of(&locked, &sessions), Some(no_limit));
    assert_eq!(guard_of(&open, &sessions), Some(open_state));
}
