//! An admitted session: the statement log first (fail closed), Gatehouse's own login to
//! the target, the guard (the shared wiring, `gatehouse_session::start_guard`), then the
//! relay until one side ends; the end reason and the log are returned for the shared end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_core::EndReason;
use gatehouse_core::{Protocol, TargetKind};
use gatehouse_pgproto::backend;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_session::{
    Allowed, EndReasonCell, Enforcement, GuardEvent, GuardSetup, SessionIdentity, StartSlot,
    StoreReauth, recording_failed, recording_opened, start_guard,
};
use gatehouse_store::TargetRecord;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::PgBroker;
use crate::client::{ClientReader, ClientWriter, Refusal, fatal, refuse, send};
use crate::enforce::PgOperator;
use crate::pool::{self, PoolKey};
use crate::relay::{ClientOut, ClientOutput, ClientSide, Stop, client_to_target, target_to_client};
use crate::statement_log::{LogHeader, StatementLog};
use crate::upstream::{self, Login, UpstreamError};

/// How long Gatehouse's own login to the target may take.
const TARGET_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct Admitted<'a> {
    pub(crate) reader: ClientReader,
    pub(crate) writer: ClientWriter,
    pub(crate) session: &'a SessionIdentity,
    pub(crate) allowed: &'a Allowed,
    pub(crate) database: &'a str,
    /// Startup parameters passed through to the target.
    pub(crate) params: &'a [(String, String)],
    /// This session's place among the node's starting sessions, held until the target
    /// login is done.
    pub(crate) starting: StartSlot,
}

/// How a session ended, for the shared end (`gatehouse_session::end_session`).
pub(crate) struct Ended {
    pub(crate) reason: EndReason,
    /// Bytes from and to the operator.
    pub(crate) bytes: (u64, u64),
    /// The statement log, to be sealed (absent when it could not be created).
    pub(crate) log: Option<StatementLog>,
}

/// Longest an ended session waits to send the target its cancel (a target that does not
/// answer is not waited for: the session's row is closed after it).
const END_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the statement log and the target connection, then relays under the guard.
pub(crate) async fn run_session(broker: &Arc<PgBroker>, a: Admitted<'_>) -> Ended {
    let Admitted {
        reader,
        mut writer,
        session,
        allowed,
        database,
        params,
        starting,
    } = a;
    let (operator, session_id, target) = (&session.operator, &session.id, &allowed.target);
    let peer = session.peer;
    let store = &broker.store;
    let opened = tokio::time::Instant::now();
    let started = std::time::SystemTime::now();
    let end = Arc::new(EndReasonCell::default());
    let ended = |reason, log| Ended {
        reason,
        bytes: (0, 0),
        log,
    };
    // In the node's registry from now on; until the guard runs (the target login, at most
    // TARGET_LOGIN_TIMEOUT) shutdown waits for the session within its grace.
    let registration = broker.live.track(Protocol::Postgres, |_| {});

    // the statement log first: no log, no session
    let redact = allowed.redact_params;
    // a write failure ends the session through its guard, once the guard runs
    let (failed_tx, failed_rx) = oneshot::channel::<()>();
    let header = LogHeader {
        session: session_id,
        operator,
        target: &target.name,
        environment: &target.environment,
        database,
        redact_params: redact,
        startup_params: params,
    };
    let log = match Box::pin(StatementLog::create(
        &broker.config.front.recordings_root,
        started,
        opened,
        &header,
        broker.config.recorders.as_ref(),
        move |_| {
            let _ = failed_tx.send(());
        },
    ))
    .await
    {
        Ok((log, path)) => {
            recording_opened(store, session, &path, log.recorder());
            log
        }
        Err(e) => {
            let message = recording_failed(store, session, &end, &e);
            fatal(&mut writer, &refuse("58030", message)).await;
            return ended(EndReason::RecordingFailed, None);
        }
    };

    // Gatehouse's own login to the target
    // boxed, as the audit below: this task lives as long as the session and would otherwise
    // keep room for the largest future it ever awaits (memory per live session)
    let connected = Box::pin(connect_target(broker, target, database, params)).await;
    drop(starting);
    let (upstream, pool_key, reused) = match connected {
        Ok(u) => u,
        Err((reason, r)) => {
            Box::pin(broker.audit(
                "target_unreachable",
                Some(operator),
                Some(session_id),
                peer,
                json!({"target": target.name, "error": r.message}),
            ))
            .await;
            fatal(&mut writer, &r).await;
            return ended(reason, Some(log));
        }
    };
    let upstream::Upstream {
        reader: mut up_reader,
        writer: mut up_writer,
        greeting,
        cancel,
    } = upstream;
    let backend_pid = cancel.pid;
    let (pid, key) = broker.cancels.register(cancel);
    // kept for the connection's next session, when target connections are kept (else
    // dropped at once: memory per live session)
    let kept_greeting = pool_key.is_some().then(|| greeting.clone());
    // in a block, as everything this task holds only for a moment: an async fn keeps its
    // locals (the greeting and the copy sent, ~1.5 KiB) to the end of their scope, here
    // the end of the session
    let greeted = {
        let mut hello = greeting;
        hello.extend_from_slice(&backend::backend_key_data(pid, &key));
        hello.extend_from_slice(&backend::ready_for_query(b'I'));
        send(&mut writer, &hello).await
    };
    if greeted.is_err() {
        let _ = broker.cancels.remove(pid, &key);
        pool::close(&mut up_writer).await;
        return ended(EndReason::ClientClosed, Some(log));
    }

    // the guard
    let (out_tx, out_rx) = mpsc::channel::<Box<ClientOut>>(64);
    let (ended_tx, mut ended_rx) = watch::channel(false);
    let Enforcement {
        clock,
        gate,
        events,
        guard,
    } = start_guard(
        GuardSetup {
            store,
            session,
            policy: &allowed.policy,
            opened,
            end: end.clone(),
            markers: log.clone(),
            registration: &registration,
        },
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
    );
    let _ = events.send(GuardEvent::ChannelStarted {
        channel: (),
        pty: false,
    });
    let recording_failure = {
        let events = events.clone();
        tokio::spawn(async move {
            if failed_rx.await.is_ok() {
                let _ = events.send(GuardEvent::Kill(EndReason::RecordingFailed));
            }
        })
    };
    log.target(backend_pid, reused);
    tracing::info!(database, backend_pid, reused, "session started");

    // the relay
    let bytes_in = Arc::new(AtomicU64::new(0));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let tracker = Arc::new(Mutex::new(Tracker::new()));
    // the relay futures borrow the target's writer: done with them before the Terminate
    let stop = {
        let to_target = client_to_target(
            ClientSide {
                reader,
                clock,
                tracker: tracker.clone(),
                lock: gate.clone(),
                opened,
                bytes_in: bytes_in.clone(),
            },
            &mut up_writer,
        );
        let to_client = target_to_client(
            &mut up_reader,
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
                    let _ = out_tx.try_send(Box::new(ClientOut::Fatal {
                        code: r.sqlstate,
                        message: format!("[gatehouse] message refused ({r}); the session is ended"),
                    }));
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
    let (cancel, cancelled) = broker
        .cancels
        .remove(pid, &key)
        .map_or((None, false), |(t, forwarded)| (Some(t), forwarded));
    // statements still waiting for their result when the session ends
    let now = opened.elapsed();
    let (abandoned, at_rest) = tracker
        .lock()
        .map(|mut t| (t.abandon(now), t.at_rest()))
        .unwrap_or_default();
    // A session's end ends what it started on the target: a statement still running there
    // is cancelled, whether Gatehouse ended the session or the operator's connection went
    // away (PostgreSQL would run it to its end: a backend busy with a statement does not
    // read, so it sees neither the Terminate nor the closed socket). Not when the target
    // itself closed: there is nothing left to cancel.
    let ours = !matches!(stop, Stop::TargetClosed | Stop::TargetError(_));
    // the end's awaits boxed, as the login's: each is larger than the relay's own state
    // (send_cancel 1.5 KiB, release 1.3 KiB), and an unboxed await keeps its room in this
    // future for the whole session
    if let (true, false, Some(target)) = (ours, abandoned.is_empty(), &cancel) {
        Box::pin(crate::cancel::send_cancel(target, END_CANCEL_WAIT)).await;
    }
    // The target connection is kept for another session (see `pool`) only when the
    // operator left it at rest, nothing else ended the session, and no cancel of this
    // session can still arrive; else Gatehouse tells the target it is done (a clean
    // Terminate rather than a reset).
    let keep = matches!(stop, Stop::ClientClosed)
        && at_rest
        && abandoned.is_empty()
        && !cancelled
        && end.get().is_none();
    match (keep, pool_key, kept_greeting, cancel) {
        (true, Some(pool_key), Some(greeting), Some(cancel)) => {
            let up = upstream::Upstream {
                reader: up_reader,
                writer: up_writer,
                greeting,
                cancel: Arc::unwrap_or_clone(cancel),
            };
            Box::pin(broker.pool.release(pool_key, up)).await;
        }
        _ => pool::close(&mut up_writer).await,
    }
    drop(out_tx);
    drop(registration);
    // nothing of the guard outlives the session (no directive after its end)
    guard.abort();
    recording_failure.abort();
    drop(events);
    let decided = end.get();
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
    for s in abandoned {
        log.statement(s);
    }
    Ended {
        reason,
        bytes: (
            bytes_in.load(Ordering::Relaxed),
            bytes_out.load(Ordering::Relaxed),
        ),
        log: Some(log),
    }
}

/// Gatehouse's login to the target: a kept one (see `pool`) when there is one for the same
/// login (`reused`), else a new one; with the pool key the connection may be kept under
/// (none when the node keeps no logins or the target's are never kept).
async fn connect_target(
    broker: &PgBroker,
    target: &TargetRecord,
    database: &str,
    params: &[(String, String)],
) -> Result<(upstream::Upstream, Option<PoolKey>, bool), (EndReason, Refusal)> {
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
    let TargetKind::Postgres {
        tls,
        ca,
        kept_logins,
        ..
    } = &target.kind
    else {
        return Err(unreachable(format!(
            "target '{}' is not a PostgreSQL target",
            target.name
        )));
    };
    let pool_key = (broker.pool.enabled() && *kept_logins)
        .then(|| PoolKey::new(target, database, params, &password));
    if let Some(key) = &pool_key
        && let Some(kept) = broker.pool.take(key)
    {
        return Ok((kept, pool_key, true));
    }
    let tls = crate::tls::client_config(*tls, ca.as_deref())
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
        salted: &broker.salted,
    };
    // a target that accepts the connection and never answers must not hold the session
    // (no guard runs yet)
    let connected = tokio::time::timeout(TARGET_LOGIN_TIMEOUT, upstream::connect(login))
        .await
        .map_err(|_| {
            tracing::error!("the target did not finish Gatehouse's login in time");
            unreachable(format!("target '{}' did not answer in time", target.name))
        })?;
    connected
        .map(|up| (up, pool_key, false))
        .map_err(|e| login_failed(&target.name, e))
}

/// What the session ends with and the operator is told when Gatehouse's login to `target`
/// failed with `e`.
fn login_failed(target: &str, e: UpstreamError) -> (EndReason, Refusal) {
    let unreachable = |m: String| (EndReason::TargetUnreachable, refuse("08006", m));
    tracing::error!(error = %e, "cannot log in to the target");
    match e {
        // the server's own startup errors (e.g. no such database) are the operator's to see
        UpstreamError::Startup(f) => (
            EndReason::TargetUnreachable,
            Refusal {
                code: if f.code == "3D000" { "3D000" } else { "08006" },
                message: format!("target '{target}': {}", f.message),
            },
        ),
        // credential problems are the admin's: say so without details
        UpstreamError::Refused(_) => unreachable(format!(
            "target '{target}' refused Gatehouse's credential; an admin has been told"
        )),
        // the target is fine: this node had no descriptor for its socket
        UpstreamError::Unreachable(_, io)
            if gatehouse_session::open_files::is_out_of_files(&io) =>
        {
            (
                EndReason::Error("out of open files".into()),
                refuse("53300", gatehouse_session::open_files::OUT_OF_FILES),
            )
        }
        other => unreachable(format!("cannot reach target '{target}': {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_is_not_blamed_on_the_target() {
        let io = |code| {
            UpstreamError::Unreachable("db:5432".into(), std::io::Error::from_raw_os_error(code))
        };
        let (end, refusal) = login_failed("orders", io(24));
        assert_eq!(end, EndReason::Error("out of open files".into()));
        assert_eq!(
            refusal.code, "53300",
            "too_many_connections, as a full PostgreSQL"
        );
        assert!(
            refusal.message.contains("no open files left") && !refusal.message.contains("orders"),
            "{}",
            refusal.message
        );
        // a refused connection is the target's
        let (end, refusal) = login_failed("orders", io(111));
        assert_eq!(end, EndReason::TargetUnreachable);
        assert_eq!(refusal.code, "08006");
        assert!(
            refusal.message.contains("cannot reach target 'orders'"),
            "{}",
            refusal.message
        );
    }
}
