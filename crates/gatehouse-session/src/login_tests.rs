//! The login gate against a real (SQLite) store and real argon2.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_core::LimiterConfig;
use gatehouse_store::{AuditFilter, MasterKey};

use super::*;

fn limits(source_max: u32, account_max: u32) -> LoginLimits {
    let l = |max_failures| LimiterConfig {
        max_failures,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(300),
        max_sources: 1000,
    };
    LoginLimits {
        source: l(source_max),
        account: l(account_max),
    }
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_never_runs_more_than_its_permits_at_once() {
    let gate = LoginGate::with_hashing_permits(LoginLimits::default(), 2);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                gate.hash_bounded(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Some(()));
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "hashes ran unbounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_keeps_its_permit_until_the_hash_ends() {
    let gate = LoginGate::with_hashing_permits(LoginLimits::default(), 1);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let g = gate.clone();
    let caller = tokio::spawn(async move {
        g.hash_bounded(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .await
    });
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    // the login grace expires: the caller's future is dropped mid-hash
    caller.abort();
    let _ = caller.await;
    assert_eq!(gate.hashing.available_permits(), 0, "permit freed early");
    // so the next caller waits until the abandoned hash really ended
    let next = tokio::spawn({
        let g = gate.clone();
        async move { g.hash_bounded(|| 7).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished());
    release_tx.send(()).unwrap();
    assert_eq!(next.await.unwrap(), Some(7));
}

#[tokio::test]
async fn verifies_real_argon2_hashes() {
    let gate = LoginGate::new(LoginLimits::default());
    let stored = passwords::store_password("right").unwrap().hash;
    assert!(
        gate.verify_password("right".into(), Some(stored.clone()))
            .await
    );
    assert!(!gate.verify_password("wrong".into(), Some(stored)).await);
    assert!(!gate.verify_password("right".into(), None).await);
}

#[tokio::test]
async fn failures_lock_the_account_everywhere_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    let gate = LoginGate::new(limits(10, 2));
    let attempt = |ip: &'static str| FailedLogin {
        peer: peer(ip),
        user: "alice+web1",
        operator: Some("alice"),
        method: "password",
        protocol: "ssh",
        guessed_secret: true,
    };
    let first = gate.failed(&store, attempt("192.0.2.1")).await;
    assert!(!first.account_locked_out);
    let second = gate.failed(&store, attempt("2001:db8::1")).await;
    assert!(second.account_locked_out && !second.source_locked_out);
    // a third address may not even try alice's password, but may try bob's or a key
    assert!(matches!(
        gate.check(peer("198.51.100.9"), Some("alice")),
        Err(LoginRefusal::Account { .. })
    ));
    assert_eq!(gate.check(peer("198.51.100.9"), Some("bob")), Ok(()));
    assert_eq!(gate.check(peer("198.51.100.9"), None), Ok(()));

    let audit = store
        .list_audit(&AuditFilter {
            kind: Some("auth_failure"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    let locked: Vec<_> = audit
        .iter()
        .map(|a| a.detail["account_locked_out"].as_bool().unwrap())
        .collect();
    assert!(
        locked.contains(&true) && locked.contains(&false),
        "{audit:?}"
    );
    assert!(audit.iter().all(|a| a.operator.as_deref() == Some("alice")));
}

#[tokio::test]
async fn a_wrong_key_counts_against_the_source_only() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    let gate = LoginGate::new(limits(2, 1));
    let key = FailedLogin {
        peer: peer("192.0.2.1"),
        user: "alice+web1",
        operator: Some("alice"),
        method: "publickey",
        protocol: "ssh",
        guessed_secret: false,
    };
    assert_eq!(gate.failed(&store, key).await, FailureOutcome::default());
    assert_eq!(gate.check(peer("192.0.2.2"), Some("alice")), Ok(()));
    let out = gate.failed(&store, key).await;
    assert!(out.source_locked_out && !out.account_locked_out);
    assert!(matches!(
        gate.check(peer("192.0.2.1"), None),
        Err(LoginRefusal::Source { .. })
    ));
}
