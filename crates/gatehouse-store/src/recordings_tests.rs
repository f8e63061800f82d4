//! Tamper evidence of recording rows, on SQLite and on a real PostgreSQL: an edit of the
//! state, path, count or digest without the key is detected, checkpoints only move
//! forward, and a crash's `interrupted` row is verified to its last checkpoint.

#![allow(clippy::unwrap_used)]

use gatehouse_core::Protocol;

use super::*;
use crate::{MasterKey, NewSession};

async fn session(store: &Store) -> String {
    store
        .start_session(&NewSession {
            node: "n1",
            node_id: "n1",
            operator: "alice",
            target: "web1",
            environment: None,
            protocol: Protocol::Ssh,
            client_addr: "127.0.0.1:1",
        })
        .await
        .unwrap()
}

/// An attacker's UPDATE, straight to the database.
async fn tamper(store: &Store, sql: &'static str, id: &str) {
    sqlx::query(sql)
        .bind(id)
        .execute(&store.pool)
        .await
        .unwrap();
}

async fn exercise(store: &Store) {
    // an honest life: recording, checkpoints, sealed, pruned — authentic throughout
    let id = session(store).await;
    store.recording_started(&id, "/r/a.cast").await.unwrap();
    let r = store.recording(&id).await.unwrap();
    assert!(
        r.authentic && r.checkpoint.is_none() && !r.checkpoint_forged,
        "{r:?}"
    );
    store.recording_checkpoint(&id, 5, "d5").await.unwrap();
    store.recording_checkpoint(&id, 9, "d9").await.unwrap();
    // an older checkpoint arriving late does not move it back
    store.recording_checkpoint(&id, 7, "d7").await.unwrap();
    let r = store.recording(&id).await.unwrap();
    let cp = r.checkpoint.clone().unwrap();
    assert_eq!((cp.events, cp.digest.as_str()), (9, "d9"));
    assert!(cp.at > 0 && r.authentic);
    store.recording_sealed(&id, 100, 12, "d12").await.unwrap();
    let r = store.recording(&id).await.unwrap();
    assert_eq!(r.state, RecordingState::Sealed);
    assert_eq!((r.events, r.digest.as_deref()), (Some(12), Some("d12")));
    assert!(r.authentic);
    // no checkpoint after the seal
    store.recording_checkpoint(&id, 20, "d20").await.unwrap();
    assert_eq!(store.recording(&id).await.unwrap().events, Some(12));

    // flipping the sealed row's state or path, or its count, is detected
    for sql in [
        "UPDATE sessions SET recording_state = 'pruned' WHERE id = $1",
        "UPDATE sessions SET recording_state = 'failed' WHERE id = $1",
        "UPDATE sessions SET recording_path = '/r/other.cast' WHERE id = $1",
        "UPDATE sessions SET recording_events = 3 WHERE id = $1",
    ] {
        let id = session(store).await;
        store.recording_started(&id, "/r/b.cast").await.unwrap();
        store.recording_sealed(&id, 100, 12, "d12").await.unwrap();
        tamper(store, sql, &id).await;
        let r = store.recording(&id).await.unwrap();
        assert!(!r.authentic, "{sql} went unnoticed: {r:?}");
        // and a later state change does not bless the edited row
        store.recording_pruned(&id).await.unwrap();
        assert!(!store.recording(&id).await.unwrap().authentic, "{sql}");
    }
    // a pruned row keeps its path and stays listed
    store.recording_pruned(&id).await.unwrap();
    let r = store.recording(&id).await.unwrap();
    assert!(r.authentic && r.state == RecordingState::Pruned && r.path == "/r/a.cast");
    assert!(
        store
            .list_recordings(None)
            .await
            .unwrap()
            .iter()
            .any(|l| l.session_id == id)
    );

    // a forged checkpoint is flagged
    let id = session(store).await;
    store.recording_started(&id, "/r/c.cast").await.unwrap();
    store.recording_checkpoint(&id, 4, "d4").await.unwrap();
    tamper(
        store,
        "UPDATE sessions SET recording_checkpoint_events = 2 WHERE id = $1",
        &id,
    )
    .await;
    let r = store.recording(&id).await.unwrap();
    assert!(r.checkpoint_forged && r.checkpoint.is_none(), "{r:?}");

    // a crash: the next start marks the recording interrupted, verified to its checkpoint
    let id = session(store).await;
    store.recording_started(&id, "/r/d.cast").await.unwrap();
    store.recording_checkpoint(&id, 6, "d6").await.unwrap();
    store.close_interrupted_sessions("n1").await.unwrap();
    assert!(store.interrupt_recordings("n1").await.unwrap() >= 1);
    let r = store.recording(&id).await.unwrap();
    assert_eq!(r.state, RecordingState::Interrupted);
    assert!(r.authentic, "{r:?}");
    let cp = r.checkpoint.unwrap();
    assert_eq!((cp.events, cp.digest.as_str()), (6, "d6"));
    // rolling the interrupted row's checkpoint back is detected
    tamper(
        store,
        "UPDATE sessions SET recording_events = 1 WHERE id = $1",
        &id,
    )
    .await;
    assert!(!store.recording(&id).await.unwrap().authentic);
}

/// Rows from before the state/path MAC keep the old rule; marking a current row legacy
/// does not get an edit past verification.
async fn legacy_rows(store: &Store) {
    let id = session(store).await;
    store.recording_started(&id, "/r/old.cast").await.unwrap();
    store.recording_sealed(&id, 10, 3, "d3").await.unwrap();
    // as the previous version left a sealed row
    let old_mac = store
        .master_key
        .mac(&mac_context(&id), &legacy_mac_data(3, "d3"));
    sqlx::query("UPDATE sessions SET recording_legacy = 1, recording_mac = $1 WHERE id = $2")
        .bind(old_mac)
        .bind(&id)
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(store.recording(&id).await.unwrap().authentic);
    tamper(
        store,
        "UPDATE sessions SET recording_events = 4 WHERE id = $1",
        &id,
    )
    .await;
    assert!(!store.recording(&id).await.unwrap().authentic);
    // a current sealed row flipped to pruned and marked legacy: still caught
    let id = session(store).await;
    store.recording_started(&id, "/r/new.cast").await.unwrap();
    store.recording_sealed(&id, 10, 3, "d3").await.unwrap();
    tamper(
        store,
        "UPDATE sessions SET recording_legacy = 1, recording_state = 'pruned' WHERE id = $1",
        &id,
    )
    .await;
    assert!(!store.recording(&id).await.unwrap().authentic);
}

/// The row of `id`'s recording once `done` holds (the node's recording writer runs when
/// the test waits), at most 10 s.
async fn once(store: &Store, id: &str, done: impl Fn(&RecordingRecord) -> bool) -> RecordingRecord {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(r) = store.recording(id).await
            && done(&r)
        {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not write {id}'s row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// What sessions queue for the node's recording writer (`Store::recording_started_later`,
/// `Store::checkpoint_later`) is written: a registration before its checkpoints, even when
/// more registrations wait than a batch takes; the latest of a burst of checkpoints; a
/// session's end takes its registration from the queue; a late registration never revives a
/// sealed recording.
async fn queued(store: &Store) {
    let id = session(store).await;
    store.recording_started_later(&id, "/r/q.cast");
    store.checkpoint_later(&id, 3, "d3".into());
    store.checkpoint_later(&id, 8, "d8".into());
    // older than the one waiting: dropped
    store.checkpoint_later(&id, 5, "d5".into());
    let r = once(store, &id, |r| r.checkpoint.is_some()).await;
    assert_eq!(
        (r.path.as_str(), r.state),
        ("/r/q.cast", RecordingState::Recording)
    );
    let cp = r.checkpoint.clone().unwrap();
    assert_eq!((cp.events, cp.digest.as_str()), (8, "d8"));
    assert!(r.authentic && !r.checkpoint_forged, "{r:?}");

    // more registrations than one batch, then a checkpoint of the last one: the checkpoint
    // waits for its registration (written before it, it would match no live recording)
    let mut ids = Vec::new();
    for _ in 0..600 {
        ids.push(session(store).await);
    }
    for (i, id) in ids.iter().enumerate() {
        store.recording_started_later(id, &format!("/r/{i}.cast"));
    }
    let last = ids.last().unwrap();
    store.checkpoint_later(last, 2, "d2".into());
    let r = once(store, last, |r| r.checkpoint.is_some()).await;
    assert_eq!(r.checkpoint.unwrap().events, 2);
    for (i, id) in ids.iter().enumerate() {
        let r = store.recording(id).await.unwrap();
        assert_eq!(r.path, format!("/r/{i}.cast"));
        assert!(r.authentic);
    }
    // the same, read in one call across more than one query's worth of ids (the detective's
    // way), with a session that has no recording and an id that is no session: not there;
    // a row edited without the key: there, and not authentic
    let unrecorded = session(store).await;
    tamper(
        store,
        "UPDATE sessions SET recording_path = '/r/elsewhere.cast' WHERE id = $1",
        &ids[550],
    )
    .await;
    let mut asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    asked.extend([unrecorded.as_str(), "no-such-session"]);
    let batch = store.recordings_of(&asked).await.unwrap();
    assert_eq!(batch.len(), ids.len());
    for (i, id) in ids.iter().enumerate() {
        let r = &batch[id];
        if i == 550 {
            assert!(
                !r.authentic,
                "an edited row read in a batch is caught: {r:?}"
            );
        } else {
            assert_eq!(r.path, format!("/r/{i}.cast"));
            assert!(r.authentic, "{r:?}");
        }
    }

    // the end of a session whose registration still waits: written by the end itself
    let id = session(store).await;
    store.recording_started_later(&id, "/r/e.cast");
    store.recording_written(&id).await.unwrap();
    let r = store.recording(&id).await.unwrap();
    assert_eq!(
        (r.path.as_str(), r.state),
        ("/r/e.cast", RecordingState::Recording)
    );
    store.recording_sealed(&id, 10, 1, "d1").await.unwrap();
    // a registration that comes after the seal (a slow store) leaves it sealed
    store.recording_started(&id, "/r/late.cast").await.unwrap();
    store.recording_started_later(&id, "/r/later.cast");
    store.recording_written(&id).await.unwrap();
    let r = store.recording(&id).await.unwrap();
    assert_eq!(
        (r.path.as_str(), r.state),
        ("/r/e.cast", RecordingState::Sealed)
    );
    assert!(r.authentic, "{r:?}");
}

#[tokio::test]
async fn sqlite_recordings_are_tamper_evident() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    exercise(&store).await;
    legacy_rows(&store).await;
    queued(&store).await;
}

#[tokio::test]
async fn postgres_recordings_are_tamper_evident() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse_recordings").unwrap();
    let store = Store::open(&pg.url("gatehouse_recordings"), MasterKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    exercise(&store).await;
    legacy_rows(&store).await;
    queued(&store).await;
}
