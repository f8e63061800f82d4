//! Several nodes on one store: sessions owned by node id (names may repeat), the takeover
//! of a silent node's sessions (once, whoever runs it, never of a node that came back), and
//! change notifications between nodes — on SQLite and on a throwaway PostgreSQL server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use gatehouse_core::{EndReason, EnvPolicy, Protocol};
use gatehouse_store::{Backend, MasterKey, NewSession, NodeInfo, RecordingState, Store};

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        name: "twin".into(),
        version: "0.1.0".into(),
        started_at: 1000,
        listen: format!("ssh {id}:22"),
    }
}

async fn session(store: &Store, node_id: &str) -> String {
    store
        .start_session(&NewSession {
            node: "twin",
            node_id,
            operator: "alice",
            target: "web1",
            environment: Some("prod"),
            protocol: Protocol::Ssh,
            client_addr: "127.0.0.1:1",
        })
        .await
        .unwrap()
}

async fn exercise(store: &Store) {
    store.add_environment("prod").await.unwrap();
    let (a, b) = (node("node-a"), node("node-b"));
    let on_a = session(store, &a.id).await;
    let on_b = session(store, &b.id).await;
    store.recording_started(&on_b, "/r/b.cast").await.unwrap();
    store.recording_checkpoint(&on_b, 3, "d3").await.unwrap();
    store
        .node_heartbeat(&a, 1, std::slice::from_ref(&on_a), &[])
        .await
        .unwrap();
    store
        .node_heartbeat(&b, 1, std::slice::from_ref(&on_b), &[])
        .await
        .unwrap();
    let records = store.node_records().await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.name == "twin" && r.live_sessions == 1)
    );

    // same name, different ids: a restart of B closes B's sessions only
    assert!(
        store
            .close_interrupted_sessions("node-c")
            .await
            .unwrap()
            .is_empty()
    );
    // nobody is silent yet
    let now = gatehouse_store::now_millis();
    let (closed, lost) = store
        .take_over_lost_nodes(&a.id, now - 60_000)
        .await
        .unwrap();
    assert!(closed.is_empty() && lost.is_empty());

    // B falls silent (a cutoff after its last heartbeat): A closes B's session, once
    let cutoff = gatehouse_store::now_millis() + 1;
    let (closed, lost) = store.take_over_lost_nodes(&a.id, cutoff).await.unwrap();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(
        (closed[0].session_id.as_str(), closed[0].node_id.as_str()),
        (on_b.as_str(), "node-b")
    );
    assert_eq!(lost, vec![("node-b".to_owned(), "twin".to_owned())]);
    let row = store.session(&on_b).await.unwrap();
    assert_eq!(row.end_reason(), Some(EndReason::Interrupted));
    let rec = store.recording(&on_b).await.unwrap();
    assert_eq!(rec.state, RecordingState::Interrupted);
    assert!(rec.authentic, "{rec:?}");
    // audited with the takeover (same transaction), naming who took over
    let closed_audits = fleet_audits(store, "session_closed").await;
    assert_eq!(closed_audits.len(), 1, "{closed_audits:?}");
    assert_eq!(closed_audits[0].session_id.as_deref(), Some(on_b.as_str()));
    assert_eq!(closed_audits[0].detail["by"], "node-a");
    assert_eq!(closed_audits[0].detail["node_lost"], "node-b");
    let lost_audits = fleet_audits(store, "node_lost").await;
    assert_eq!(lost_audits.len(), 1, "{lost_audits:?}");
    assert_eq!(lost_audits[0].detail["node_id"], "node-b");
    // A never takes over itself; a second pass (another node) finds nothing left
    assert!(store.session(&on_a).await.unwrap().ended_at.is_none());
    let (closed, lost) = store.take_over_lost_nodes("node-c", cutoff).await.unwrap();
    assert_eq!(closed.len(), 1, "only A's session is left to a third node");
    assert!(lost.iter().all(|(id, _)| id == "node-a"));

    // B comes back: its heartbeat reports the held session closed; sealing it changes
    // nothing, and B is not lost any more
    let ended_at = row.ended_at;
    assert_eq!(
        store
            .node_heartbeat(&b, 1, std::slice::from_ref(&on_b), &[])
            .await
            .unwrap(),
        vec![on_b.clone()]
    );
    store.recording_sealed(&on_b, 10, 5, "d5").await.unwrap();
    assert!(
        !store
            .end_session(&on_b, &EndReason::ClientClosed, 1, 1)
            .await
            .unwrap(),
        "a session taken over was closed a second time"
    );
    let rec = store.recording(&on_b).await.unwrap();
    assert_eq!(rec.state, RecordingState::Interrupted);
    let row = store.session(&on_b).await.unwrap();
    assert_eq!(
        (row.end_reason(), row.ended_at),
        (Some(EndReason::Interrupted), ended_at)
    );
    let b_row = store
        .node_records()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "node-b")
        .unwrap();
    assert_eq!(b_row.lost_at, None);
    // a node that heartbeats after the cutoff keeps its sessions
    let on_b2 = session(store, &b.id).await;
    store
        .node_heartbeat(&b, 1, std::slice::from_ref(&on_b2), &[])
        .await
        .unwrap();
    let (closed, _) = store.take_over_lost_nodes(&a.id, cutoff).await.unwrap();
    assert!(closed.iter().all(|s| s.session_id != on_b2), "{closed:?}");
    // nothing of B's was taken over or declared lost twice
    let closed_b: Vec<_> = fleet_audits(store, "session_closed")
        .await
        .into_iter()
        .filter(|e| e.detail["node_lost"] == "node-b")
        .collect();
    assert_eq!(closed_b.len(), 1, "{closed_b:?}");
    let lost_b = fleet_audits(store, "node_lost").await;
    assert_eq!(
        lost_b
            .iter()
            .filter(|e| e.detail["node_id"] == "node-b")
            .count(),
        1,
        "{lost_b:?}"
    );
}

async fn fleet_audits(store: &Store, kind: &str) -> Vec<gatehouse_store::AuditRecord> {
    audits_by(store, kind, "fleet").await
}

/// The audit events of `kind` written by `source`.
async fn audits_by(store: &Store, kind: &str, source: &str) -> Vec<gatehouse_store::AuditRecord> {
    store
        .list_audit(&gatehouse_store::AuditFilter {
            kind: Some(kind),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.source.as_deref() == Some(source))
        .collect()
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    exercise(&store).await;
    // SQLite: one node, nothing to notify; the feed never fires
    let feed = store.change_feed();
    assert!(!feed.is_live());
    store.close().await;
}

#[tokio::test]
async fn postgres_store_and_change_notifications() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse_fleet_test").unwrap();
    let url = pg.url("gatehouse_fleet_test");
    let store = Store::open(&url, MasterKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    assert_eq!(store.backend(), Backend::Postgres);
    exercise(&store).await;
    // another node's store handle hears this one's changes
    let other = Store::open(&url, MasterKey::generate()).await.unwrap();
    let feed = other.change_feed();
    assert!(feed.is_live());
    // the feed fires once when it starts listening (anything missed before)
    tokio::time::timeout(Duration::from_secs(5), feed.changed())
        .await
        .expect("first wake after listening");
    let policy = EnvPolicy {
        max_session: Some(Duration::from_secs(60)),
        ..EnvPolicy::default()
    };
    store.set_environment_policy("prod", &policy).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), feed.changed())
        .await
        .expect("policy change notified");
    let live = session(&store, "node-a").await;
    store.request_kill(&live, "why").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), feed.changed())
        .await
        .expect("kill notified");
    store.add_operator("alice", None).await.unwrap();
    store.set_operator_locked("alice", true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), feed.changed())
        .await
        .expect("lock notified");
    store.set_operator_locked("alice", false).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), feed.changed())
        .await
        .expect("unlock notified");
    drop(feed);
    other.close().await;
    store.close().await;
}

/// The detective's end of a session no guard holds (`action = "end"`, rules no_guard and
/// node_gone): that session only — row, recording, `session_closed` audit by the detective,
/// together — and once; the node's other live session and its recording are untouched.
#[tokio::test]
async fn the_detective_closes_one_unguarded_session_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    store.add_environment("prod").await.unwrap();
    let orphan = session(&store, "node-a").await;
    let held = session(&store, "node-a").await;
    for (id, path) in [(&orphan, "/r/o.cast"), (&held, "/r/h.cast")] {
        store.recording_started(id, path).await.unwrap();
        store.recording_checkpoint(id, 2, "d2").await.unwrap();
    }
    let closer = gatehouse_store::Closer::Detective { rule: "no_guard" };
    assert!(
        store
            .close_unguarded(&orphan, "alice", &closer)
            .await
            .unwrap()
    );
    let row = store.session(&orphan).await.unwrap();
    assert_eq!(row.end_reason(), Some(EndReason::Interrupted));
    let rec = store.recording(&orphan).await.unwrap();
    assert_eq!(rec.state, RecordingState::Interrupted);
    assert!(rec.authentic, "{rec:?}");
    let audits = audits_by(&store, "session_closed", "detective").await;
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(
        (audits[0].session_id.as_deref(), audits[0].source.as_deref()),
        (Some(orphan.as_str()), Some("detective"))
    );
    assert_eq!(audits[0].detail["rule"], "no_guard");
    // the node's other session is not touched
    assert!(store.session(&held).await.unwrap().ended_at.is_none());
    assert_eq!(
        store.recording(&held).await.unwrap().state,
        RecordingState::Recording
    );
    // a second pass finds the row closed: nothing more is written
    assert!(
        !store
            .close_unguarded(&orphan, "alice", &closer)
            .await
            .unwrap()
    );
    assert_eq!(
        audits_by(&store, "session_closed", "detective").await.len(),
        1
    );
}
