//! What the store keeps for the detective control — policy history, node heartbeats and
//! the sessions they claim, lock history, violations already reported — and its one-node
//! lock, on SQLite and on a throwaway PostgreSQL server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use gatehouse_core::{EndReason, EnvPolicy, Protocol};
use gatehouse_store::{AuditEvent, MasterKey, NewSession, NodeInfo, Store};

async fn exercise(store: &Store) {
    store.add_environment("prod").await.unwrap();
    let shorter = EnvPolicy {
        max_session: Some(Duration::from_secs(3600)),
        ..EnvPolicy::default()
    };
    store
        .set_environment_policy("prod", &shorter)
        .await
        .unwrap();
    let history = store.policy_history().await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].version, history[1].version), (0, 1));
    assert_eq!(history[0].policy, EnvPolicy::default());
    assert_eq!(history[1].policy, shorter);
    assert!(history[0].valid_from <= history[1].valid_from);
    // a failed change leaves no history behind
    assert!(
        store
            .set_environment_policy("nope", &shorter)
            .await
            .is_err()
    );
    assert_eq!(store.policy_history().await.unwrap().len(), 2);

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
    let held = store.start_session(&new("n1")).await.unwrap();
    let orphan = store.start_session(&new("n1")).await.unwrap();
    let ended = store.start_session(&new("n1")).await.unwrap();
    store
        .end_session(&ended, &EndReason::ClientClosed, 1, 2)
        .await
        .unwrap();
    let n1 = NodeInfo {
        id: "n1".into(),
        name: "n1".into(),
        version: "0.1.0".into(),
        started_at: 1000,
        listen: "ssh 127.0.0.1:22".into(),
    };
    // the heartbeat reports the held sessions whose rows are closed
    assert_eq!(
        store
            .node_heartbeat(&n1, 2, &[held.clone(), ended.clone()], &[])
            .await
            .unwrap(),
        vec![ended.clone()]
    );
    assert!(
        store
            .node_heartbeat(&n1, 1, std::slice::from_ref(&held), &[])
            .await
            .unwrap()
            .is_empty()
    );
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (
            nodes[0].name.as_str(),
            nodes[0].started_at,
            nodes[0].stopped
        ),
        ("n1", 1000, false)
    );
    store.request_kill(&orphan, "why").await.unwrap();
    let sessions = store.detective_sessions(0).await.unwrap();
    let by_id = |id: &str| sessions.iter().find(|s| s.record.id == id).unwrap();
    assert!(by_id(&held).owner_seen_at.is_some());
    assert_eq!(by_id(&orphan).owner_seen_at, None);
    assert!(by_id(&orphan).kill.as_ref().is_some_and(|k| !k.user_lock));
    // a heartbeat never claims a session that already ended
    assert_eq!(by_id(&ended).owner_seen_at, None);
    // ended sessions only from `since` on; live ones always
    let recent = store.detective_sessions(i64::MAX).await.unwrap();
    assert_eq!(recent.len(), 2);
    store.node_stopped("n1").await.unwrap();
    assert!(store.list_nodes().await.unwrap()[0].stopped);

    store.set_operator_locked("alice", true).await.unwrap();
    let lock = |kind| AuditEvent {
        kind,
        operator: None,
        session_id: None,
        source: Some("admin-cli"),
        detail: serde_json::json!({"user": "alice"}),
    };
    store.audit(&lock("user_locked")).await.unwrap();
    store.audit(&lock("user_unlocked")).await.unwrap();
    let changes = store.operator_lock_changes().await.unwrap();
    assert_eq!(
        changes.iter().map(|c| c.locked).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(
        store
            .detective_sessions(0)
            .await
            .unwrap()
            .iter()
            .all(|s| s.record.id != held || s.kill.as_ref().is_some_and(|k| k.user_lock))
    );

    store
        .audit(&AuditEvent {
            kind: "violation",
            operator: Some("alice"),
            session_id: Some(&orphan),
            source: Some("detective"),
            detail: serde_json::json!({"rule": "no_guard"}),
        })
        .await
        .unwrap();
    assert_eq!(
        store.reported_violations(0).await.unwrap(),
        [("no_guard".to_owned(), orphan.clone())]
    );
}

#[tokio::test]
async fn sqlite_detective_facts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    exercise(&store).await;
    let mut lock = store.try_detective_lock().await.unwrap().unwrap();
    assert!(lock.still_held().await);
}

#[tokio::test]
async fn postgres_detective_facts_and_one_node_at_a_time() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse_detective_test").unwrap();
    let url = pg.url("gatehouse_detective_test");
    let a = Store::open(&url, MasterKey::generate()).await.unwrap();
    let b = Store::open(&url, MasterKey::generate()).await.unwrap();
    exercise(&a).await;
    let mut held = a
        .try_detective_lock()
        .await
        .unwrap()
        .expect("first node takes the lock");
    assert!(held.still_held().await);
    assert!(
        b.try_detective_lock().await.unwrap().is_none(),
        "second node must wait"
    );
    drop(held);
    // the lock goes with its connection
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if b.try_detective_lock().await.unwrap().is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lock never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
