//! The store's behaviour, one focused scenario per concern, each run on a fresh SQLite
//! store (a test each) and again on a throwaway PostgreSQL server (`postgres_store`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gatehouse_core::{EndReason, EnvPolicy, IdleAction, Protocol, TargetKind, TlsMode};
use gatehouse_store::passwords::StoredPassword;
use gatehouse_store::{
    AuditEvent, AuditFilter, KillRequest, MasterKey, NewSession, NewTarget, Store, StoreError,
};

type Scenario = for<'a> fn(&'a Store) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Every scenario, by name: `postgres_store` runs them all on PostgreSQL.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("directory", |s| Box::pin(directory(s))),
    ("targets", |s| Box::pin(targets(s))),
    ("sessions", |s| Box::pin(sessions(s))),
    ("policies", |s| Box::pin(policies(s))),
    ("totp", |s| Box::pin(totp(s))),
    ("kills_and_locks", |s| Box::pin(kills_and_locks(s))),
    ("audit_log", |s| Box::pin(audit_log(s))),
];

async fn sqlite(dir: &tempfile::TempDir) -> (Store, String) {
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    (Store::open(&url, MasterKey::generate()).await.unwrap(), url)
}

/// Runs one scenario on a fresh SQLite store.
async fn on_sqlite(scenario: impl AsyncFnOnce(&Store)) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    scenario(&store).await;
    store.close().await;
}

/// What most scenarios start from: environments prod and dev, alice (with a password and a
/// grant to prod) and bob, the ssh target web1 in prod.
async fn seed(store: &Store) {
    store.add_environment("prod").await.unwrap();
    store.add_environment("dev").await.unwrap();
    let hash = stored_password();
    store.add_operator("alice", Some(&hash)).await.unwrap();
    store.add_operator("bob", None).await.unwrap();
    store.grant("alice", "prod").await.unwrap();
    store.add_target(&web1()).await.unwrap();
}

/// What the store is given for a password (hashing is not the store's job).
fn stored_password() -> StoredPassword {
    StoredPassword {
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        scram: "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy".into(),
    }
}

fn web1() -> NewTarget<'static> {
    NewTarget {
        name: "web1",
        environment: "prod",
        host: "127.0.0.1",
        port: 22,
        username: "deploy",
        credential: b"PRIVATE KEY MATERIAL",
        kind: TargetKind::Ssh {
            host_key: None,
            tofu: true,
        },
    }
}

fn new_session(node: &str) -> NewSession<'_> {
    NewSession {
        node,
        node_id: node,
        operator: "alice",
        target: "web1",
        environment: Some("prod"),
        protocol: Protocol::Ssh,
        client_addr: "127.0.0.1:5555",
    }
}

/// Environments, operators with keys and passwords, grants.
async fn directory(store: &Store) {
    // environments
    store.add_environment("prod").await.unwrap();
    store.add_environment("dev").await.unwrap();
    assert!(matches!(
        store.add_environment("prod").await,
        Err(StoreError::AlreadyExists {
            kind: "environment",
            ..
        })
    ));
    assert_eq!(store.list_environments().await.unwrap(), ["dev", "prod"]);

    // operators, keys, passwords
    let hash = stored_password();
    store.add_operator("alice", Some(&hash)).await.unwrap();
    store.add_operator("bob", None).await.unwrap();
    assert!(matches!(
        store.add_operator("alice", None).await,
        Err(StoreError::AlreadyExists { kind: "user", .. })
    ));
    let alice = store.operator("alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash.as_deref(), Some(hash.hash.as_str()));
    assert_eq!(alice.scram_verifier.as_deref(), Some(hash.scram.as_str()));
    assert!(!alice.locked);
    assert!(store.operator("nobody").await.unwrap().is_none());
    store
        .add_operator_key("bob", "SHA256:abc", "ssh-ed25519 AAAA bob")
        .await
        .unwrap();
    assert!(store.operator_has_key("bob", "SHA256:abc").await.unwrap());
    assert!(!store.operator_has_key("alice", "SHA256:abc").await.unwrap());
    assert!(matches!(
        store.add_operator_key("ghost", "SHA256:x", "k").await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));

    // grants
    store.grant("alice", "prod").await.unwrap();
    assert!(matches!(
        store.grant("alice", "prod").await,
        Err(StoreError::AlreadyExists { kind: "grant", .. })
    ));
    assert!(matches!(
        store.grant("alice", "nope").await,
        Err(StoreError::NotFound {
            kind: "environment",
            ..
        })
    ));
    assert!(matches!(
        store.grant("ghost", "prod").await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert_eq!(store.granted_environments("alice").await.unwrap(), ["prod"]);
    assert!(store.granted_environments("bob").await.unwrap().is_empty());
}

/// Targets: duplicates and unknown environments refused, PostgreSQL details, sealed
/// credentials, TOFU pinning only once.
async fn targets(store: &Store) {
    store.add_environment("prod").await.unwrap();
    // targets, sealed credentials, TOFU pinning
    let t = web1();
    store.add_target(&t).await.unwrap();
    assert!(matches!(
        store.add_target(&t).await,
        Err(StoreError::AlreadyExists { kind: "target", .. })
    ));
    assert!(matches!(
        store
            .add_target(&NewTarget {
                name: "web2",
                environment: "staging",
                ..t.clone()
            })
            .await,
        Err(StoreError::NotFound {
            kind: "environment",
            ..
        })
    ));
    store
        .add_target(&NewTarget {
            name: "orders",
            kind: TargetKind::Postgres {
                database: Some("orders".into()),
                tls: TlsMode::VerifyFull,
                ca: Some("-----BEGIN CERTIFICATE-----".into()),
                kept_logins: false,
            },
            ..t.clone()
        })
        .await
        .unwrap();
    let pg = store.target("orders").await.unwrap().unwrap();
    assert_eq!(pg.protocol(), Protocol::Postgres);
    assert_eq!(
        pg.kind,
        TargetKind::Postgres {
            database: Some("orders".into()),
            tls: TlsMode::VerifyFull,
            ca: Some("-----BEGIN CERTIFICATE-----".into()),
            kept_logins: false,
        }
    );
    // a PostgreSQL target has no host key to pin
    assert!(
        !store
            .pin_host_key("orders", "ssh-ed25519 AAAA")
            .await
            .unwrap()
    );
    assert!(
        !store
            .environment_policy("prod")
            .await
            .unwrap()
            .redact_params
    );
    store.set_redact_params("prod", true).await.unwrap();
    assert!(
        store
            .environment_policy("prod")
            .await
            .unwrap()
            .redact_params
    );
    assert!(store.set_redact_params("nowhere", true).await.is_err());
    let rec = store.target("web1").await.unwrap().unwrap();
    assert_eq!(rec.port, 22);
    assert_eq!(
        rec.kind,
        TargetKind::Ssh {
            host_key: None,
            tofu: true
        }
    );
    assert_eq!(
        store.target_credential("web1").await.unwrap(),
        b"PRIVATE KEY MATERIAL"
    );
    assert!(
        store
            .pin_host_key("web1", "ssh-ed25519 AAAAfirst")
            .await
            .unwrap()
    );
    assert!(
        !store
            .pin_host_key("web1", "ssh-ed25519 AAAAsecond")
            .await
            .unwrap()
    );
    assert_eq!(
        store.target("web1").await.unwrap().unwrap().kind,
        TargetKind::Ssh {
            host_key: Some("ssh-ed25519 AAAAfirst".into()),
            tofu: true
        }
    );
    assert_eq!(store.list_targets().await.unwrap().len(), 2);
}

/// The session registry: a second end keeps the first reason; a node's leftovers are closed
/// as interrupted, another node's are not.
async fn sessions(store: &Store) {
    seed(store).await;
    // session registry
    let new = new_session("n1");
    let s1 = store.start_session(&new).await.unwrap();
    let s2 = store.start_session(&new).await.unwrap();
    let s3 = store.start_session(&new_session("n2")).await.unwrap();
    assert!(
        store
            .end_session(&s1, &EndReason::ClientClosed, 10, 2000)
            .await
            .unwrap()
    );
    // a second end keeps the first reason, and says it did not close the row
    assert!(
        !store
            .end_session(&s1, &EndReason::Error("late".into()), 0, 0)
            .await
            .unwrap()
    );
    let r1 = store.session(&s1).await.unwrap();
    assert_eq!(r1.end_reason(), Some(EndReason::ClientClosed));
    assert_eq!((r1.bytes_in, r1.bytes_out), (10, 2000));
    assert!(r1.ended_at.is_some());
    assert_eq!(
        store.close_interrupted_sessions("n1").await.unwrap(),
        vec![s2.clone()]
    );
    assert_eq!(
        store.session(&s2).await.unwrap().end_reason(),
        Some(EndReason::Interrupted)
    );
    assert!(store.session(&s3).await.unwrap().ended_at.is_none());
    let listed = store.list_sessions(10).await.unwrap();
    assert_eq!(listed.len(), 3);
    // a session and its login's audit events, written together
    let s4 = store
        .start_session_audited(
            &new,
            &[
                ("auth_success", serde_json::json!({"method": "publickey"})),
                ("session_start", serde_json::json!({"target": "web1"})),
            ],
        )
        .await
        .unwrap();
    let events = store
        .list_audit(&AuditFilter {
            session_id: Some(&s4),
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["auth_success", "session_start"]);
    assert!(
        events.iter().all(|e| e.operator.as_deref() == Some("alice")
            && e.source.as_deref() == Some("127.0.0.1:5555"))
    );
    store
        .end_session(&s4, &EndReason::ClientClosed, 0, 0)
        .await
        .unwrap();
    assert!(matches!(
        store.session("missing").await,
        Err(StoreError::NotFound {
            kind: "session",
            ..
        })
    ));
}

/// Policies: the default, then versions.
async fn policies(store: &Store) {
    seed(store).await;
    // policies: default, set, versioned
    let p0 = store.environment_policy("prod").await.unwrap();
    assert_eq!(p0.policy, EnvPolicy::default());
    let policy = EnvPolicy {
        idle_timeout: Some(Duration::from_secs(900)),
        max_session: Some(Duration::from_secs(8 * 3600)),
        warn_before: vec![Duration::from_secs(300), Duration::from_millis(1500)],
        idle_action: IdleAction::Lock,
        lock_grace: Duration::from_secs(60),
        reauth_after: Some(Duration::from_secs(12 * 3600)),
    };
    store.set_environment_policy("prod", &policy).await.unwrap();
    let p1 = store.environment_policy("prod").await.unwrap();
    assert_eq!(p1.policy, policy);
    assert_eq!(p1.version, p0.version + 1);
    assert_eq!(store.list_policies().await.unwrap().len(), 2);
    // what admission reads in one query: the target joined with its environment's row,
    // equal to the two separate reads, for each environment and each kind of target
    store.set_redact_params("prod", true).await.unwrap();
    let joined = async |name| store.target_with_policy(name).await.unwrap().unwrap();
    let (target, env) = joined("web1").await;
    assert_eq!(target, store.target("web1").await.unwrap().unwrap());
    assert_eq!(env, store.environment_policy("prod").await.unwrap());
    assert_eq!(env.policy, policy);
    assert_eq!(env.version, p1.version);
    assert!(env.redact_params);
    store
        .add_target(&NewTarget {
            name: "orders",
            environment: "dev",
            kind: TargetKind::Postgres {
                database: Some("orders".into()),
                tls: TlsMode::Require,
                ca: Some("-----BEGIN CERTIFICATE-----".into()),
                kept_logins: true,
            },
            ..web1()
        })
        .await
        .unwrap();
    let (target, env) = joined("orders").await;
    assert_eq!(target, store.target("orders").await.unwrap().unwrap());
    assert_eq!(target.environment, "dev");
    assert_eq!(env, store.environment_policy("dev").await.unwrap());
    assert_eq!(env.environment, "dev");
    assert_eq!(env.policy, EnvPolicy::default());
    assert!(!env.redact_params);
    assert!(store.target_with_policy("nowhere").await.unwrap().is_none());
    assert!(matches!(
        store.set_environment_policy("nope", &policy).await,
        Err(StoreError::NotFound {
            kind: "environment",
            ..
        })
    ));
}

/// TOTP: enrolled, sealed, checked against the current code, single use.
async fn totp(store: &Store) {
    seed(store).await;
    // TOTP: enrolled, sealed, checked against the current code
    let enrolled = async |name| store.operator(name).await.unwrap().unwrap().has_totp;
    assert!(!store.has_totp("alice").await.unwrap());
    assert!(
        !enrolled("alice").await,
        "the operator's row says TOTP before enrolment"
    );
    assert!(!store.verify_totp("alice", "000000").await.unwrap());
    let uri = store.enroll_totp("alice").await.unwrap();
    assert!(uri.starts_with("otpauth://totp/Gatehouse:alice?"), "{uri}");
    assert!(store.has_totp("alice").await.unwrap());
    // what admission reads: the row's flag, as the secret's own check says
    assert!(
        enrolled("alice").await,
        "the operator's row misses the enrolment"
    );
    assert!(!enrolled("bob").await, "another operator's row says TOTP");
    let code = totp_rs::Totp::from_url(&uri)
        .unwrap()
        .generate_current()
        .to_string();
    assert!(store.verify_totp("alice", &code).await.unwrap());
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert!(!store.verify_totp("alice", &wrong).await.unwrap());
    totp_codes_are_single_use(store, &uri).await;
    assert!(matches!(
        store.enroll_totp("ghost").await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
}

/// Kill requests and operator locks reach the node that owns the session.
async fn kills_and_locks(store: &Store) {
    seed(store).await;
    let new = new_session("n1");
    let s1 = store.start_session(&new).await.unwrap();
    store
        .end_session(&s1, &EndReason::ClientClosed, 0, 0)
        .await
        .unwrap();
    let s3 = store.start_session(&new_session("n2")).await.unwrap();
    // kill requests and operator locks reach the owning node
    let live = store.start_session(&new).await.unwrap();
    store.request_kill(&live, "incident 7").await.unwrap();
    assert!(matches!(
        store.request_kill(&s1, "x").await,
        Err(StoreError::NotFound {
            kind: "live session",
            ..
        })
    ));
    assert_eq!(
        store.pending_kills("n1").await.unwrap(),
        vec![(live.clone(), KillRequest::Admin("incident 7".to_owned()))]
    );
    assert!(store.pending_kills("n2").await.unwrap().is_empty());
    let locked = store.set_operator_locked("alice", true).await.unwrap();
    assert!(locked.contains(&live) && locked.contains(&s3), "{locked:?}");
    assert!(store.operator("alice").await.unwrap().unwrap().locked);
    assert_eq!(
        store.pending_kills("n2").await.unwrap(),
        vec![(s3.clone(), KillRequest::OperatorLocked)]
    );
    store.set_operator_locked("alice", false).await.unwrap();
    assert!(!store.operator("alice").await.unwrap().unwrap().locked);
}

/// The audit log and its filters (by session, by environment).
async fn audit_log(store: &Store) {
    seed(store).await;
    let s1 = store.start_session(&new_session("n1")).await.unwrap();
    // audit log
    store
        .audit(&AuditEvent {
            kind: "auth_failure",
            operator: Some("alice"),
            session_id: None,
            source: Some("127.0.0.1:1"),
            detail: serde_json::json!({"method": "password"}),
        })
        .await
        .unwrap();
    store
        .audit(&AuditEvent {
            kind: "session_start",
            operator: Some("alice"),
            session_id: Some(&s1),
            source: None,
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].kind, "auth_failure");
    assert_eq!(all[0].detail["method"], "password");
    let only = store
        .list_audit(&AuditFilter {
            session_id: Some(&s1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].kind, "session_start");
    let prod = store
        .list_audit(&AuditFilter {
            environment: Some("prod"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(prod.len(), 1, "{prod:?}");
    let dev = store
        .list_audit(&AuditFilter {
            environment: Some("dev"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(dev.is_empty(), "{dev:?}");
}

/// A TOTP code is accepted once per time step, and never for a step older than one used.
async fn totp_codes_are_single_use(store: &Store, uri: &str) {
    let totp = totp_rs::Totp::from_url(uri).unwrap();
    // far in the future of the codes used above, at exact times
    let t = 4_000_000_000u64 / 30 * 30;
    let code_at = |secs: u64| totp.generate(secs).to_string();
    assert!(store.verify_totp_at("alice", &code_at(t), t).await.unwrap());
    // the same code again, within its window: refused
    assert!(
        !store
            .verify_totp_at("alice", &code_at(t), t + 5)
            .await
            .unwrap()
    );
    // the previous step's code is still within the skew, but older than the one used
    assert!(
        !store
            .verify_totp_at("alice", &code_at(t - 30), t + 5)
            .await
            .unwrap()
    );
    // the next step's code is fresh
    assert!(
        store
            .verify_totp_at("alice", &code_at(t + 30), t + 31)
            .await
            .unwrap()
    );
    // two concurrent uses of one fresh code: exactly one passes
    let c = code_at(t + 60);
    let (a, b) = tokio::join!(
        store.verify_totp_at("alice", &c, t + 61),
        store.verify_totp_at("alice", &c, t + 61)
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|ok| **ok).count(), 1);
    // re-enrolling starts over (a new secret has no used steps)
    let uri = store.enroll_totp("alice").await.unwrap();
    let fresh = totp_rs::Totp::from_url(&uri).unwrap();
    let code = fresh.generate(t).to_string();
    assert!(store.verify_totp_at("alice", &code, t).await.unwrap());
}

#[tokio::test]
async fn directory_on_sqlite() {
    on_sqlite(directory).await;
}

#[tokio::test]
async fn targets_on_sqlite() {
    on_sqlite(targets).await;
}

#[tokio::test]
async fn sessions_on_sqlite() {
    on_sqlite(sessions).await;
}

#[tokio::test]
async fn policies_on_sqlite() {
    on_sqlite(policies).await;
}

#[tokio::test]
async fn totp_on_sqlite() {
    on_sqlite(totp).await;
}

#[tokio::test]
async fn kills_and_locks_on_sqlite() {
    on_sqlite(kills_and_locks).await;
}

#[tokio::test]
async fn audit_log_on_sqlite() {
    on_sqlite(audit_log).await;
}

#[tokio::test]
async fn sqlite_reopens_without_migrating_again_and_credentials_need_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = sqlite(&dir).await;
    seed(&store).await;
    store.close().await;
    // reopening runs no migration twice and keeps the data
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    assert_eq!(store.list_environments().await.unwrap(), ["dev", "prod"]);
    // ... but another master key cannot open the sealed credential
    assert!(matches!(
        store.target_credential("web1").await,
        Err(StoreError::Secret(_))
    ));
}

#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let url = format!("sqlite://{}", db.display());
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    store.add_environment("dev").await.unwrap();
    let files = ["g.db", "g.db-wal", "g.db-shm"].map(|f| dir.path().join(f));
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    store.close().await;
    // a database an older version left readable by all is narrowed on open
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&url, MasterKey::generate()).await.unwrap();
    store.list_environments().await.unwrap();
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    store.close().await;
}

/// Every scenario again on PostgreSQL: one throwaway server, a fresh database each.
#[tokio::test]
async fn postgres_store() {
    let pg = gatehouse_testbed::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    for (i, (name, scenario)) in SCENARIOS.iter().enumerate() {
        let db = format!("gatehouse_store_test_{i}");
        pg.create_database(&db).unwrap();
        let store = Store::open(&pg.url(&db), MasterKey::generate())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", pg.log()));
        eprintln!("scenario {name} on PostgreSQL");
        scenario(&store).await;
        store.close().await;
    }
}

#[tokio::test]
async fn unreachable_store_is_a_clear_error() {
    let port = gatehouse_testbed::free_port().unwrap();
    let err = Store::open(
        &format!("postgres://u:hunter2@127.0.0.1:{port}/db"),
        MasterKey::generate(),
    )
    .await
    .err()
    .expect("no server listens there");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot open store at postgres://u:***@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
