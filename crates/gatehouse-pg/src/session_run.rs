//! An admitted session: the statement log first (fail closed), Gatehouse's own login to
//! the target, the guard, then the relay until one side ends; the statement log is sealed
//! and the end reason returned.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_core::EndReason;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{TlsMode, backend};
use gatehouse_session::{
    ActivityClock, Guard, GuardEvent, SessionGate, StoreReauth, store_checkpoints,
};
use gatehouse_store::TargetRecord;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::broker::PgBroker;
use crate::conn::{ClientReader, ClientWriter, Refusal, audit, fatal, refuse, send};
use crate::enforce::{PgObserver, PgOperator};
use crate::relay::{ClientOut, ClientOutput, ClientSide, Stop, client_to_target, target_to_client};
use crate::statement_log::{LogHeader, StatementLog};
use crate::upstream::{self, Login, UpstreamError};

/// How long Gatehouse's own login to the target may take.
const TARGET_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct Admitted<'a> {
    pub(crate) reader: ClientReader,
    pub(crate) writer: ClientWriter,
    pub(crate) operator: &'a str,
    pub(crate) session_id: &'a str,
    pub(crate) target: &'a TargetRecord,
    pub(crate) database: &'a str,
    /// Startup parameters passed through to the target.
    pub(crate) params: &'a [(String, String)],
    pub(crate) peer: SocketAddr,
}

/// Opens the statement log and the target connection, then relays under the guard.
/// Returns the end reason and byte counts.
pub(crate) async fn run_session(broker: &Arc<PgBroker>, a: Admitted<'_>) -> (EndReason, u64, u64) {
    let Admitted {
        reader,
        mut writer,
        operator,
        session_id,
        target,
        database,
        params,
        peer,
    } = a;
    let store = &broker.store;
    let opened = tokio::time::Instant::now();
    let started = std::time::SystemTime::now();
    let end_reason: Arc<Mutex<Option<EndReason>>> = Arc::new(Mutex::new(None));
    let (guard_tx, guard_rx) = mpsc::unbounded_channel::<GuardEvent<()>>();

    // the statement log first: no log, no session
    let redact = store
        .redacts_params(&target.environment)
        .await
        .unwrap_or(true);
    let failed_tx = guard_tx.clone();
    let header = LogHeader {
        session: session_id,
        operator,
        target: &target.name,
        environment: &target.environment,
        database,
        redact_params: redact,
        startup_params: params,
    };
    let log = match StatementLog::create(
        &broker.config.front.recordings_root,
        started,
        opened,
        &header,
        move |_| {
            let _ = failed_tx.send(GuardEvent::Kill(EndReason::RecordingFailed));
        },
    ) {
        Ok((log, path)) => {
            if let Err(e) = store
                .recording_started(session_id, &path.display().to_string())
                .await
            {
                tracing::error!(error = %e, "cannot register the statement log in the store");
            }
            tokio::spawn(store_checkpoints(
                store.clone(),
                session_id.to_owned(),
                log.checkpoints(),
            ));
            log
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot log session: refusing it");
            audit(
                broker,
                "recording_failed",
                Some(operator),
                Some(session_id),
                peer,
                json!({"error": e.to_string()}),
            )
            .await;
            fatal(&mut writer, &refuse("58030", format!("this session cannot be logged ({e}); Gatehouse does not open unrecorded sessions"))).await;
            return (EndReason::RecordingFailed, 0, 0);
        }
    };

    let finish_log = |reason: EndReason| {
        let log = log.clone();
        let store = store.clone();
        let id = session_id.to_owned();
        async move {
            log.marker(&format!("session end: {}", reason.to_stored()));
            match log.seal().await {
                Some(Ok(s)) => {
                    if let Err(e) = store
                        .recording_sealed(&id, s.size, s.events, &s.digest)
                        .await
                    {
                        tracing::error!(error = %e, "cannot store the statement log's digest");
                    }
                }
                _ => {
                    tracing::error!("statement log could not be sealed");
                    let _ = store.recording_failed(&id).await;
                }
            }
            reason
        }
    };

    // Gatehouse's own login to the target
    let upstream = match connect_target(broker, target, database, params).await {
        Ok(u) => u,
        Err((reason, r)) => {
            audit(
                broker,
                "target_unreachable",
                Some(operator),
                Some(session_id),
                peer,
                json!({"target": target.name, "error": r.message}),
            )
            .await;
            fatal(&mut writer, &r).await;
            return (finish_log(reason).await, 0, 0);
        }
    };
    let (pid, key) = broker.cancels.register(upstream.cancel.clone());
    let mut hello = upstream.greeting.clone();
    hello.extend_from_slice(&backend::backend_key_data(pid, &key));
    hello.extend_from_slice(&backend::ready_for_query(b'I'));
    if send(&mut writer, &hello).await.is_err() {
        broker.cancels.remove(pid, &key);
        return (finish_log(EndReason::ClientClosed).await, 0, 0);
    }

    // the guard
    let policy = match store.environment_policy(&target.environment).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the environment policy: refusing the session");
            fatal(
                &mut writer,
                &refuse(
                    "08006",
                    "Gatehouse cannot read its policy store; try again later",
                ),
            )
            .await;
            broker.cancels.remove(pid, &key);
            return (
                finish_log(EndReason::Error("policy unavailable".into())).await,
                0,
                0,
            );
        }
    };
    let clock = Arc::new(ActivityClock::new(opened));
    let lock = SessionGate::new();
    let (out_tx, out_rx) = mpsc::channel::<ClientOut>(64);
    let (ended_tx, mut ended_rx) = watch::channel(false);
    let guard = Guard::new(
        policy.policy,
        clock.clone(),
        PgOperator {
            out: out_tx.clone(),
            ended: ended_tx,
        },
        // SQL sessions cannot be locked in-band (no terminal): lock degrades to disconnect
        StoreReauth {
            store: store.clone(),
            operator: operator.to_owned(),
            has_password: false,
            has_totp: false,
            login: broker.config.front.login.clone(),
            peer,
        },
        PgObserver {
            store: store.clone(),
            operator: operator.to_owned(),
            session_id: session_id.to_owned(),
            log: log.clone(),
            end_reason: end_reason.clone(),
        },
        lock.clone(),
        operator.to_owned(),
    );
    let _ = guard_tx.send(GuardEvent::ChannelStarted {
        channel: (),
        pty: false,
    });
    let deliver = guard_tx.clone();
    broker
        .live
        .register(session_id, &target.environment, policy.version, move |c| {
            let _ = deliver.send(c.into());
        });
    broker.live.attach_status(session_id, guard.status());
    let tracked = broker.track(guard_tx.clone());
    let guard_task = tokio::spawn(guard.run(guard_rx).instrument(tracing::Span::current()));
    tracing::info!(database, "session started");

    // the relay
    let bytes_in = Arc::new(AtomicU64::new(0));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let tracker = Arc::new(Mutex::new(Tracker::new()));
    let mut up_writer = upstream.writer;
    // the relay futures borrow the target's writer: done with them before the Terminate
    let stop = {
        let to_target = client_to_target(
            ClientSide {
                reader,
                clock,
                tracker: tracker.clone(),
                lock: lock.clone(),
                opened,
                bytes_in: bytes_in.clone(),
            },
            &mut up_writer,
        );
        let to_client = target_to_client(
            upstream.reader,
            ClientOutput {
                writer,
                guard: out_rx,
                bytes_out: bytes_out.clone(),
            },
            tracker.clone(),
            log.clone(),
            opened,
        );
        tokio::pin!(to_target, to_client);
        // the FATAL Gatehouse sends gets this long to go out (after the message in
        // progress); a client that does not read cannot hold the session open
        let grace = std::time::Duration::from_secs(2);
        // while the operator's side finishes, the operator-to-target direction is never
        // polled again: nothing more reaches the target
        tokio::select! {
            s = &mut to_target => {
                if let Stop::Refused(r) = &s {
                    tracing::warn!(refused = %r, "message refused: session ended");
                    log.refused("operator", r);
                    let _ = out_tx.try_send(ClientOut::Fatal {
                        code: r.sqlstate,
                        message: format!("[gatehouse] message refused ({r}); the session is ended"),
                    });
                    let _ = tokio::time::timeout(grace, &mut to_client).await;
                }
                s
            }
            s = &mut to_client => s,
            // (the watch guard must not live across the await below)
            () = async { let _ = ended_rx.wait_for(|e| *e).await; } => {
                // the guard queued its FATAL before saying so
                let _ = tokio::time::timeout(grace, &mut to_client).await;
                Stop::Ended
            }
        }
    };
    // tell the target we are done (a clean Terminate rather than a reset)
    let _ = up_writer.write_all(&[b'X', 0, 0, 0, 4]).await;
    let _ = up_writer.shutdown().await;
    drop(out_tx);
    broker.untrack(tracked);
    broker.live.unregister(session_id);
    broker.cancels.remove(pid, &key);
    drop(guard_tx);
    let decided = end_reason.lock().ok().and_then(|r| r.clone());
    let reason = decided.unwrap_or(match &stop {
        Stop::ClientClosed => EndReason::ClientClosed,
        Stop::TargetClosed => EndReason::TargetClosed,
        Stop::Ended => EndReason::Shutdown,
        Stop::Refused(r) => EndReason::Error(format!("client: message refused ({r})")),
        Stop::ClientError(e) => EndReason::Error(format!("client: {e}")),
        Stop::TargetError(e) => EndReason::Error(format!("target: {e}")),
    });
    if let Stop::TargetClosed | Stop::TargetError(_) = stop {
        tracing::info!("target closed the connection");
    }
    guard_task.abort();
    let now = opened.elapsed();
    if let Ok(mut t) = tracker.lock() {
        for s in t.abandon(now) {
            log.statement(&s);
        }
    }
    let reason = finish_log(reason).await;
    (
        reason,
        bytes_in.load(Ordering::Relaxed),
        bytes_out.load(Ordering::Relaxed),
    )
}

async fn connect_target(
    broker: &PgBroker,
    target: &TargetRecord,
    database: &str,
    params: &[(String, String)],
) -> Result<upstream::Upstream, (EndReason, Refusal)> {
    let unreachable = |m: String| (EndReason::TargetUnreachable, refuse("08006", m));
    let password = broker
        .store
        .target_credential(&target.name)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot open the target credential");
            unreachable(format!(
                "Gatehouse cannot use its credential for target '{}'; an admin has been told",
                target.name
            ))
        })?;
    let mode = TlsMode::parse(target.tls_mode.as_deref().unwrap_or("verify-full"))
        .map_err(|e| unreachable(format!("target '{}' is misconfigured: {e}", target.name)))?;
    let tls = crate::tls::client_config(mode, target.host_key.as_deref())
        .map_err(|e| unreachable(format!("target '{}': {e}", target.name)))?;
    let login = Login {
        target: &target.name,
        host: &target.host,
        port: target.port,
        user: &target.username,
        password: &password,
        database,
        tls,
        params,
    };
    // a target that accepts the connection and never answers must not hold the session
    // (no guard runs yet)
    let connected = tokio::time::timeout(TARGET_LOGIN_TIMEOUT, upstream::connect(login))
        .await
        .map_err(|_| {
            tracing::error!("the target did not finish Gatehouse's login in time");
            unreachable(format!("target '{}' did not answer in time", target.name))
        })?;
    connected.map_err(|e| {
        tracing::error!(error = %e, "cannot log in to the target");
        match e {
            // the server's own startup errors (e.g. no such database) are the operator's to see
            UpstreamError::Startup(f) => (
                EndReason::TargetUnreachable,
                Refusal {
                    code: if f.code == "3D000" { "3D000" } else { "08006" },
                    message: format!("target '{}': {}", target.name, f.message),
                },
            ),
            // credential problems are the admin's: say so without details
            UpstreamError::Refused(_) => unreachable(format!(
                "target '{}' refused Gatehouse's credential; an admin has been told",
                target.name
            )),
            other => unreachable(format!("cannot reach target '{}': {other}", target.name)),
        }
    })
}
