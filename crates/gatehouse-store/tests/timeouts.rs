//! A store that hangs or is gone never hangs its caller: audit writes are retried within a
//! deadline, and an event that cannot be written is counted (and logged), not dropped
//! silently. Run on SQLite (a writer holding the database lock) and on a real PostgreSQL
//! (a transaction holding the table lock, then the server stopped).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use gatehouse_core::{EndReason, Protocol};
use gatehouse_store::{
    AuditEvent, AuditFilter, MasterKey, NewSession, Store, StoreError, Timeouts,
};
use serde_json::json;
use sqlx::Connection;

const TIMEOUTS: Timeouts = Timeouts {
    statement: Duration::from_millis(200),
    audit: Duration::from_millis(1500),
    acquire: Duration::from_millis(200),
};

fn event(kind: &str) -> AuditEvent<'_> {
    AuditEvent {
        kind,
        operator: Some("alice"),
        session_id: None,
        source: Some("test"),
        detail: json!({"n": 1}),
    }
}

async fn count(store: &Store, kind: &str) -> usize {
    store
        .list_audit(&AuditFilter {
            kind: Some(kind),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// Writes an audit event while the database cannot take it: returns within the deadline
/// (plus slack for a loaded machine), with an error, and counts the loss.
async fn audit_while_unavailable(store: &Store) {
    let before = store.audit_failures();
    let t0 = Instant::now();
    let result = store.audit(&event("lost_event")).await;
    let took = t0.elapsed();
    assert!(
        result.is_err(),
        "the write succeeded against an unavailable store"
    );
    assert!(
        took < TIMEOUTS.audit + Duration::from_millis(700),
        "took {took:?}"
    );
    assert_eq!(store.audit_failures(), before + 1);
}

#[tokio::test]
async fn sqlite_audit_under_a_held_write_lock_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open_with(&url, MasterKey::generate(), TIMEOUTS)
        .await
        .unwrap();
    store.audit(&event("first")).await.unwrap();

    // another process (here: another connection) holds the write lock
    let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    audit_while_unavailable(&store).await;

    // a lock released while the store retries: the event gets in, nothing is counted lost
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        holder
    });
    store.audit(&event("late_event")).await.unwrap();
    release.await.unwrap();
    assert_eq!(store.audit_failures(), 1);
    assert_eq!(count(&store, "late_event").await, 1);
    assert_eq!(count(&store, "lost_event").await, 0);
}

#[tokio::test]
async fn postgres_audit_is_bounded_when_locked_and_when_the_server_is_gone() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("gatehouse_timeouts").unwrap();
    let url = pg.url("gatehouse_timeouts");
    let store = Store::open_with(&url, MasterKey::generate(), TIMEOUTS)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    store.audit(&event("first")).await.unwrap();

    // a transaction holds the table: statement_timeout ends each insert, the deadline all
    let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    audit_while_unavailable(&store).await;
    // a plain query is bounded by statement_timeout too
    let t0 = Instant::now();
    let listed = store.list_audit(&AuditFilter::default()).await;
    assert!(matches!(listed, Err(StoreError::Query(_))), "{listed:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    assert_eq!(count(&store, "first").await, 1);

    // the server stops
    drop(pg);
    audit_while_unavailable(&store).await;
    assert_eq!(store.audit_failures(), 2);
}

/// `audit_later` (enforcement actions, refusals): one writer, batched, in order; a burst
/// is written in full; a batch the locked store refuses past the deadline is counted lost
/// event by event (and logged), one the store takes after a short lock is written.
#[tokio::test]
async fn sqlite_audit_later_is_batched_in_order_and_counted_when_the_store_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open_with(&url, MasterKey::generate(), TIMEOUTS)
        .await
        .unwrap();
    const BURST: usize = 3000;
    for n in 0..BURST {
        store.audit_later(&AuditEvent {
            detail: json!({ "n": n }),
            ..event("burst")
        });
    }
    assert!(store.flush_audits(Duration::from_secs(30)).await);
    let written = store
        .list_audit(&AuditFilter {
            kind: Some("burst"),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<u64> = written
        .iter()
        .map(|r| r.detail["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..BURST as u64).collect::<Vec<_>>(),
        "all, in order"
    );
    assert!(written.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(store.audit_failures(), 0);

    let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    for _ in 0..3 {
        store.audit_later(&event("refused_later"));
    }
    assert!(store.flush_audits(Duration::from_secs(10)).await);
    assert_eq!(store.audit_failures(), 3, "each event of the batch counted");

    for _ in 0..2 {
        store.audit_later(&event("delayed_later"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    assert!(store.flush_audits(Duration::from_secs(10)).await);
    assert_eq!(
        store.audit_failures(),
        3,
        "a lock released in time loses nothing"
    );
    assert_eq!(count(&store, "delayed_later").await, 2);
    assert_eq!(count(&store, "refused_later").await, 0);
}

/// One node's writers take turns rather than meet SQLite's lock: with `busy_timeout` cut to
/// 1 ms, a write that found another of the pool's connections writing would fail with
/// "database is locked" (it did, before the turns: most of 48 such logins did); in turns,
/// 48 logins at once, each a session row with its audit events, a checkpoint and an end,
/// all get in. (What SQLite's busy handler did instead with the default 5 s: slept 1, 2,
/// 5, 10… ms per collision, milliseconds added to every login under load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_writers_of_one_node_take_turns_instead_of_meeting_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open_with(
        &url,
        MasterKey::generate(),
        Timeouts {
            statement: Duration::from_millis(1),
            audit: Duration::from_secs(5),
            acquire: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    let logins = (0..48).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let addr = format!("127.0.0.1:{}", 10_000 + i);
            let id = store
                .start_session_audited(
                    &NewSession {
                        node: "n1",
                        node_id: "node-1",
                        operator: "alice",
                        target: "web1",
                        environment: Some("prod"),
                        protocol: Protocol::Ssh,
                        client_addr: &addr,
                    },
                    &[
                        ("auth_success", json!({"method": "password"})),
                        ("session_start", json!({"target": "web1"})),
                    ],
                )
                .await?;
            store
                .recording_started(&id, &format!("2026/12/05/{id}.cast"))
                .await?;
            store.recording_checkpoint(&id, 3, "d1").await?;
            store
                .end_session(&id, &EndReason::ClientClosed, 10, 20)
                .await?;
            Ok::<String, StoreError>(id)
        })
    });
    let mut failed = Vec::new();
    for login in logins.collect::<Vec<_>>() {
        if let Err(e) = login.await.unwrap() {
            failed.push(e.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 48 failed: {:?}",
        failed.len(),
        failed.first()
    );
    let sessions = store.list_sessions(100).await.unwrap();
    assert_eq!(sessions.len(), 48);
    assert!(sessions.iter().all(|s| s.ended_at.is_some()));
    assert_eq!(count(&store, "session_start").await, 48);
}
