//! The shared lifecycle on a real SQLite store: admission, the end, the recording failure
//! rule, first-reason-wins and the live registry's routing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse_core::{DenyReason, EndReason, Protocol, TargetKind, TlsMode};
use gatehouse_store::{Actor, AuditFilter, MasterKey, NewTarget, Store};

use super::*;
use crate::{Control, LiveSessions};

async fn store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    store.add_environment("prod").await.unwrap();
    store.add_operator("alice", None).await.unwrap();
    store.add_operator("bob", None).await.unwrap();
    store.grant("alice", "prod").await.unwrap();
    let ssh = TargetKind::Ssh {
        host_key: None,
        tofu: true,
    };
    let pg = TargetKind::Postgres {
        database: None,
        tls: TlsMode::VerifyFull,
        ca: None,
        kept_logins: true,
    };
    for (name, kind) in [("web1", ssh), ("db1", pg)] {
        store
            .add_target(&NewTarget {
                name,
                environment: "prod",
                host: "127.0.0.1",
                port: 22,
                username: "svc",
                credential: b"secret",
                kind,
            })
            .await
            .unwrap();
    }
    store
}

fn login<'a>(operator: &'a str, target: Option<&'a str>, protocol: Protocol) -> Login<'a> {
    Login {
        protocol,
        node: "node-a",
        node_id: "node-a-id",
        peer: "192.0.2.7:40000".parse().unwrap(),
        operator,
        target,
        method: "password",
        start_detail: serde_json::Map::new(),
    }
}

async fn audits(store: &Store, session: &str) -> Vec<(String, serde_json::Value)> {
    let mut v: Vec<_> = store
        .list_audit(&AuditFilter {
            session_id: Some(session),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.kind, a.detail))
        .collect();
    v.sort_by_key(|(k, _)| k.clone());
    v
}

#[tokio::test]
async fn an_allowed_login_is_a_session_row_with_its_audits_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut l = login("alice", Some("db1"), Protocol::Postgres);
    l.method = "cleartext";
    l.start_detail
        .insert("startup_params".into(), json!({"application_name": "psql"}));
    let a = admit(&store, &l).await.unwrap();
    let Access::Allowed(allowed) = &a.access else {
        panic!("{a:?}")
    };
    assert_eq!(allowed.target.name, "db1");
    assert_eq!(allowed.policy.environment, "prod");
    let s = a.session.unwrap();
    let row = store.session(&s.id).await.unwrap();
    assert_eq!(
        (row.node.as_str(), row.protocol.as_str(), row.ended_at),
        ("node-a", "postgres", None)
    );
    let audits = audits(&store, &s.id).await;
    let kinds: Vec<_> = audits.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["auth_success", "session_start"]);
    // the method the front used, not a fixed one
    assert_eq!(audits[0].1["method"], "cleartext");
    assert_eq!(audits[1].1["startup_params"]["application_name"], "psql");
    assert_eq!(audits[1].1["environment"], "prod");
}

#[tokio::test]
async fn denials_are_registered_and_read_alike_for_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let cases = [
        // no grant, unknown target and the wrong protocol read the same to the operator
        (
            "bob",
            Some("web1"),
            Protocol::Ssh,
            Some(DenyReason::NoGrant),
        ),
        (
            "alice",
            Some("nope"),
            Protocol::Ssh,
            Some(DenyReason::UnknownTarget),
        ),
        (
            "alice",
            Some("db1"),
            Protocol::Ssh,
            Some(DenyReason::WrongProtocol),
        ),
        ("alice", None, Protocol::Ssh, None),
    ];
    let mut messages = Vec::new();
    for (operator, target, protocol, want) in cases {
        let a = admit(&store, &login(operator, target, protocol))
            .await
            .unwrap();
        let Access::Denied { reason, message } = a.access else {
            panic!("{operator} {target:?} was allowed")
        };
        assert_eq!(reason, want);
        let s = a.session.expect("a denial is a session row");
        let audits = audits(&store, &s.id).await;
        assert_eq!(audits[0].0, "access_denied");
        assert_eq!(
            audits[0].1["reason"],
            want.map_or("no target", DenyReason::as_str)
        );
        messages.push(match target {
            Some(t) => message.replace(t, "T"),
            None => message,
        });
    }
    assert_eq!(messages[0], messages[1]);
    assert_eq!(messages[1], messages[2]);
    assert!(messages[3].contains("alice+TARGET"), "{}", messages[3]);
    // a locked operator is told so
    store
        .lock_operator_by(
            "alice",
            &Actor {
                name: "t",
                via: "test",
            },
        )
        .await
        .unwrap();
    let a = admit(&store, &login("alice", Some("web1"), Protocol::Ssh))
        .await
        .unwrap();
    assert!(matches!(
        a.access,
        Access::Denied {
            reason: Some(DenyReason::OperatorLocked),
            ..
        }
    ));
}

#[tokio::test]
async fn an_invalid_target_name_never_reaches_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let a = admit(
        &store,
        &login("alice", Some("x\u{1b}[2J"), Protocol::Postgres),
    )
    .await
    .unwrap();
    assert!(a.session.is_none());
    let Access::Denied { message, .. } = a.access else {
        panic!()
    };
    assert!(!message.contains('\u{1b}'), "{message:?}");
    assert!(store.list_sessions(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_store_that_is_gone_refuses_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    store.close().await;
    let r = admit(&store, &login("alice", Some("web1"), Protocol::Ssh)).await;
    assert!(r.is_err());
}

/// A recording that only collects markers and seals as told.
struct FakeRecording {
    markers: std::sync::Mutex<Vec<String>>,
    seals: bool,
}

impl MarkerSink for FakeRecording {
    fn marker(&self, label: &str) {
        self.markers.lock().unwrap().push(label.to_owned());
    }
}

impl SessionRecording for FakeRecording {
    async fn seal(&self) -> Option<Result<Sealed, RecordError>> {
        self.seals.then(|| {
            Ok(Sealed {
                path: "x".into(),
                size: 10,
                events: 2,
                digest: "ab".into(),
            })
        })
    }
}

#[tokio::test]
async fn the_end_closes_the_row_seals_or_fails_the_recording_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    for seals in [true, false] {
        let a = admit(&store, &login("alice", Some("web1"), Protocol::Ssh))
            .await
            .unwrap();
        let s = a.session.unwrap();
        store.recording_started(&s.id, "r.cast").await.unwrap();
        let rec = FakeRecording {
            markers: Default::default(),
            seals,
        };
        let reason = EndReason::IdleTimeout;
        end_session(&store, &s, &reason, (5, 7), Some(&rec)).await;
        assert_eq!(*rec.markers.lock().unwrap(), ["session end: idle_timeout"]);
        let row = store.session(&s.id).await.unwrap();
        assert_eq!(row.end_reason(), Some(EndReason::IdleTimeout));
        assert_eq!((row.bytes_in, row.bytes_out), (5, 7));
        let state = row.recording_state.unwrap();
        assert_eq!(state, if seals { "sealed" } else { "failed" });
        let audits = audits(&store, &s.id).await;
        let end = audits.iter().find(|(k, _)| k == "session_end").unwrap();
        assert_eq!(end.1["reason"], "idle_timeout");
    }
}

#[tokio::test]
async fn a_session_another_node_took_over_is_not_ended_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let a = admit(&store, &login("alice", Some("web1"), Protocol::Ssh))
        .await
        .unwrap();
    let s = a.session.unwrap();
    store.recording_started(&s.id, "r.cast").await.unwrap();
    // what a takeover leaves: the row closed as interrupted, the recording marked so
    assert!(
        store
            .end_session(&s.id, &EndReason::Interrupted, 0, 0)
            .await
            .unwrap()
    );
    assert_eq!(store.interrupt_recordings("node-a-id").await.unwrap(), 1);
    // this node comes back and its guard ends the connection
    let rec = FakeRecording {
        markers: Default::default(),
        seals: true,
    };
    end_session(
        &store,
        &s,
        &EndReason::AdminKill("late".into()),
        (5, 7),
        Some(&rec),
    )
    .await;
    let row = store.session(&s.id).await.unwrap();
    assert_eq!(row.end_reason(), Some(EndReason::Interrupted));
    assert_eq!((row.bytes_in, row.bytes_out), (0, 0));
    assert_eq!(row.recording_state.as_deref(), Some("interrupted"));
    let audits = audits(&store, &s.id).await;
    assert!(
        !audits.iter().any(|(k, _)| k == "session_end"),
        "a second end was audited: {audits:?}"
    );
}

#[tokio::test]
async fn a_recording_failure_ends_the_session_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let a = admit(&store, &login("alice", Some("db1"), Protocol::Postgres))
        .await
        .unwrap();
    let s = a.session.unwrap();
    let end = EndReasonCell::default();
    let error = RecordError::Create {
        path: "r.sql.jsonl".into(),
        source: std::io::Error::other("disk full"),
    };
    let message = recording_failed(&store, &s, &end, &error);
    assert!(message.contains("cannot be logged"), "{message}");
    assert!(message.contains("disk full"), "{message}");
    assert_eq!(end.get(), Some(EndReason::RecordingFailed));
    // the audit is queued (never awaited on the session's path)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if audits(&store, &s.id)
            .await
            .iter()
            .any(|(k, _)| k == "recording_failed")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never audited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn the_first_end_reason_wins() {
    let end = EndReasonCell::default();
    assert_eq!(end.get(), None);
    end.set(EndReason::IdleTimeout);
    end.set(EndReason::ClientClosed);
    end.set(EndReason::Shutdown);
    assert_eq!(end.get(), Some(EndReason::IdleTimeout));
}

#[tokio::test]
async fn the_registry_routes_kills_and_shutdown_and_forgets_what_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let live = LiveSessions::new(store, "node-a".into());
    let count = |n: &Arc<AtomicUsize>| {
        let n = n.clone();
        move |c: Control| {
            assert!(matches!(c, Control::Kill(EndReason::Shutdown)));
            n.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (ssh_front, ssh_guard, pg) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let pre_auth = live.track(Protocol::Ssh, count(&ssh_front));
    let guarded = live.track(Protocol::Ssh, count(&ssh_front));
    let status = Arc::new(crate::GuardStatus::new(
        Arc::new(crate::ActivityClock::new(tokio::time::Instant::now())),
        gatehouse_core::Enforcer::new(gatehouse_core::EnvPolicy::default()),
    ));
    guarded.guard("s1", "prod", 1, status, count(&ssh_guard));
    let sql = live.track(Protocol::Postgres, count(&pg));
    assert_eq!(live.session_ids(), ["s1"]);
    assert_eq!((live.count(Protocol::Ssh), live.len()), (2, 1));
    // shutdown of one front: the guarded session through its guard, the other directly
    assert_eq!(live.end_all(Protocol::Ssh, &EndReason::Shutdown), 2);
    let got = |n: &Arc<AtomicUsize>| n.load(Ordering::SeqCst);
    assert_eq!((got(&ssh_front), got(&ssh_guard), got(&pg)), (1, 1, 0));
    drop((pre_auth, guarded));
    assert_eq!(live.count(Protocol::Ssh), 0);
    assert!(live.session_ids().is_empty());
    assert_eq!(live.end_all(Protocol::Postgres, &EndReason::Shutdown), 1);
    drop(sql);
    assert_eq!(live.count(Protocol::Postgres), 0);
}
