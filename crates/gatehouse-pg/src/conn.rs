//! One operator connection: startup negotiation (TLS, GSSENC refusal, cancel requests),
//! the operator's login (SCRAM-SHA-256, or a cleartext password inside TLS when enabled),
//! the access decision, the session row and statement log (fail closed), Gatehouse's own
//! login to the target, then the guarded relay until one side ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_core::{
    AccessDecision, AccessFacts, EndReason, LoginRefusal, Protocol, decide_access, validate_name,
};
use gatehouse_pgproto::message::Startup;
use gatehouse_pgproto::scram::{self, ServerExchange, Verifier};
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{TlsMode, backend, startup_len};
use gatehouse_session::{
    ActivityClock, FailedLogin, Guard, GuardEvent, LockState, StoreReauth, store_checkpoints,
};
use gatehouse_store::{AuditEvent, NewSession, TargetRecord};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::broker::PgBroker;
use crate::enforce::{PgObserver, PgOperator};
use crate::io::{BoxStream, FrameReader};
use crate::relay::{ClientOut, ClientOutput, ClientSide, Stop, client_to_target, target_to_client};
use crate::statement_log::{LogHeader, StatementLog};
use crate::upstream::{self, Login, UpstreamError};

/// Startup parameters never passed to the target: Gatehouse sets these itself, or refuses
/// them (replication connections are not brokered).
const RESERVED_PARAMS: &[&str] = &["user", "database", "replication"];

type ClientReader = FrameReader<ReadHalf<BoxStream>>;
type ClientWriter = WriteHalf<BoxStream>;

/// An error for the operator: FATAL with a SQLSTATE and a message that leaks nothing.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

enum Negotiated {
    Cancel {
        pid: i32,
        key: Vec<u8>,
    },
    Session {
        stream: BoxStream,
        tls: bool,
        params: Vec<(String, String)>,
    },
}

pub(crate) async fn serve(broker: Arc<PgBroker>, socket: TcpStream, peer: SocketAddr) {
    let span = tracing::info_span!(
        "session",
        peer = %peer,
        protocol = "postgres",
        session_id = tracing::field::Empty,
        operator = tracing::field::Empty,
        target = tracing::field::Empty,
        environment = tracing::field::Empty,
    );
    async {
        let negotiated = match negotiate(&broker, socket).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "startup failed");
                return;
            }
        };
        match negotiated {
            Negotiated::Cancel { pid, key } => broker.cancels.forward(pid, &key).await,
            Negotiated::Session {
                stream,
                tls,
                params,
            } => session(&broker, stream, tls, params, peer).await,
        }
    }
    .instrument(span)
    .await;
}

async fn read_startup<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    // validates the length before allocating
    startup_len(&len).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let total = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; total - 4];
    s.read_exact(&mut body).await?;
    Ok(body)
}

async fn negotiate(broker: &PgBroker, tcp: TcpStream) -> std::io::Result<Negotiated> {
    let mut plain = Some(tcp);
    let mut secured: Option<BoxStream> = None;
    loop {
        let body = match (&mut secured, &mut plain) {
            (Some(s), _) => read_startup(s).await?,
            (None, Some(t)) => read_startup(t).await?,
            (None, None) => return Err(std::io::Error::other("no stream")),
        };
        let startup = Startup::parse(&body);
        match (startup, plain.take()) {
            (Ok(Startup::SslRequest), Some(mut tcp)) => {
                tcp.write_all(b"S").await?;
                secured = Some(Box::new(broker.acceptor.accept(tcp).await?));
            }
            (Ok(Startup::GssEncRequest), Some(mut tcp)) => {
                // no GSSAPI encryption: the client goes on with TLS or plain
                tcp.write_all(b"N").await?;
                plain = Some(tcp);
            }
            (Ok(Startup::Cancel { pid, key }), _) => return Ok(Negotiated::Cancel { pid, key }),
            (Ok(Startup::Params { minor, params }), tcp) => {
                let tls = secured.is_some();
                let mut stream: BoxStream = match (secured, tcp) {
                    (Some(s), _) => s,
                    (None, Some(t)) => Box::new(t),
                    (None, None) => return Err(std::io::Error::other("no stream")),
                };
                let unknown: Vec<&str> = params
                    .iter()
                    .filter(|(k, _)| k.starts_with("_pq_."))
                    .map(|(k, _)| k.as_str())
                    .collect();
                if minor > 0 || !unknown.is_empty() {
                    stream
                        .write_all(&backend::negotiate_protocol_version(0, &unknown))
                        .await?;
                }
                let params = params
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("_pq_."))
                    .collect();
                return Ok(Negotiated::Session {
                    stream,
                    tls,
                    params,
                });
            }
            (Ok(_), _) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "encryption requested twice",
                ));
            }
            (Err(e), tcp) => {
                let fatal = backend::error_response("FATAL", "08P01", &e.to_string());
                match (&mut secured, tcp) {
                    (Some(s), _) => s.write_all(&fatal).await?,
                    (None, Some(mut t)) => t.write_all(&fatal).await?,
                    _ => {}
                }
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}

async fn send(w: &mut ClientWriter, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

async fn fatal(w: &mut ClientWriter, r: &Refusal) {
    let _ = send(w, &backend::error_response("FATAL", r.code, &r.message)).await;
    let _ = w.shutdown().await;
}

/// The password message body of the next message, which must be a 'p'.
async fn next_password_message(reader: &mut ClientReader) -> Result<bytes::BytesMut, Refusal> {
    match reader.next_message().await {
        Ok(Some((b'p', body))) => Ok(body),
        Ok(Some(_)) => Err(refuse("08P01", "expected a password message")),
        Ok(None) | Err(_) => Err(refuse("08006", "connection closed during authentication")),
    }
}

/// Runs the operator's login; `Ok(true)` when the password was right.
async fn authenticate(
    broker: &PgBroker,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    operator: &str,
    tls: bool,
) -> Result<bool, Refusal> {
    let store_down = |_| refuse("08006", "Gatehouse cannot reach its store; try again later");
    let account = broker.store.operator(operator).await.map_err(store_down)?;
    let io = |_| refuse("08006", "connection lost during authentication");
    if broker.config.allow_cleartext && tls {
        send(writer, &backend::auth_cleartext()).await.map_err(io)?;
        let body = next_password_message(reader).await?;
        let password =
            String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned();
        let hash = account.and_then(|a| a.password_hash);
        return Ok(broker
            .config
            .front
            .login
            .verify_password(password, hash)
            .await);
    }
    let verifier = account
        .and_then(|a| a.scram_verifier)
        .and_then(|v| Verifier::parse(&v).ok())
        .unwrap_or_else(|| Verifier::mock(operator, &broker.mock_secret));
    send(writer, &backend::auth_sasl(&[scram::MECHANISM]))
        .await
        .map_err(io)?;
    let body = next_password_message(reader).await?;
    let bad = |e: scram::ScramError| refuse("08P01", e.to_string());
    let (mechanism, data) = scram::parse_initial_response(&body).map_err(bad)?;
    if mechanism != scram::MECHANISM {
        return Err(refuse(
            "28000",
            format!("authentication mechanism {mechanism} is not supported; use SCRAM-SHA-256"),
        ));
    }
    let (exchange, server_first) = ServerExchange::start(verifier, data).map_err(bad)?;
    send(
        writer,
        &backend::auth_sasl_continue(server_first.as_bytes()),
    )
    .await
    .map_err(io)?;
    let body = next_password_message(reader).await?;
    match exchange.finish(&body).map_err(bad)? {
        Some(server_final) => {
            send(writer, &backend::auth_sasl_final(server_final.as_bytes()))
                .await
                .map_err(io)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

async fn audit(
    broker: &PgBroker,
    kind: &str,
    operator: Option<&str>,
    session: Option<&str>,
    peer: SocketAddr,
    detail: serde_json::Value,
) {
    let _ = broker
        .store
        .audit(&AuditEvent {
            kind,
            operator,
            session_id: session,
            source: Some(&peer.to_string()),
            detail,
        })
        .await;
}

/// Splits `dbname` into target and database: `orders` or `orders/reporting`.
fn parse_dbname(dbname: &str) -> (&str, Option<&str>) {
    match dbname.split_once('/') {
        Some((t, db)) if !db.is_empty() => (t, Some(db)),
        Some((t, _)) => (t, None),
        None => (dbname, None),
    }
}

async fn session(
    broker: &Arc<PgBroker>,
    stream: BoxStream,
    tls: bool,
    params: Vec<(String, String)>,
    peer: SocketAddr,
) {
    let (read, mut writer) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(operator) = param("user").filter(|u| validate_name("operator", u).is_ok()) else {
        fatal(
            &mut writer,
            &refuse(
                "28000",
                "no valid user name given: connect as user=OPERATOR dbname=TARGET",
            ),
        )
        .await;
        return;
    };
    let dbname = param("database").unwrap_or_else(|| operator.clone());
    if param("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        fatal(
            &mut writer,
            &refuse(
                "28000",
                "replication connections are not brokered by Gatehouse",
            ),
        )
        .await;
        return;
    }
    let login = &broker.config.front.login;
    if let Err(refusal) = login.check(peer, Some(operator.as_str())) {
        let whose = match refusal {
            LoginRefusal::Source { .. } => "from your address".to_owned(),
            LoginRefusal::Account { .. } => format!("for user \"{operator}\""),
        };
        let wait = refusal.retry_after().as_secs().max(1);
        let msg = format!("too many failed logins {whose}; try again in {wait} s");
        fatal(&mut writer, &refuse("28000", msg)).await;
        return;
    }
    match authenticate(broker, &mut reader, &mut writer, &operator, tls).await {
        Ok(true) => login.succeeded(peer.ip(), &operator),
        Ok(false) => {
            let failure = FailedLogin {
                peer,
                user: &operator,
                operator: Some(operator.as_str()),
                method: "scram-sha-256",
                protocol: "postgres",
                guessed_secret: true,
            };
            login.failed(&broker.store, failure).await;
            let msg = format!("password authentication failed for user \"{operator}\"");
            fatal(&mut writer, &refuse("28P01", msg)).await;
            return;
        }
        Err(r) => {
            fatal(&mut writer, &r).await;
            return;
        }
    }
    if send(&mut writer, &backend::auth_ok()).await.is_err() {
        return;
    }
    let (target_name, database) = parse_dbname(&dbname);
    let admitted = admit(broker, &operator, target_name, peer).await;
    let (session_id, target) = match admitted {
        Ok(a) => a,
        Err(r) => {
            fatal(&mut writer, &r).await;
            return;
        }
    };
    let span = tracing::Span::current();
    span.record("session_id", session_id.as_str());
    span.record("operator", operator.as_str());
    span.record("target", target_name);
    span.record("environment", target.environment.as_str());
    let end = run_session(
        broker,
        Admitted {
            reader,
            writer,
            operator: &operator,
            session_id: &session_id,
            target: &target,
            database: database
                .or(target.database.as_deref())
                .unwrap_or("postgres"),
            params: &params,
            peer,
        },
    )
    .await;
    let (reason, bytes_in, bytes_out) = end;
    if let Err(e) = broker
        .store
        .end_session(&session_id, &reason, bytes_in, bytes_out)
        .await
    {
        tracing::error!(error = %e, "cannot close session in the registry");
    }
    audit(broker, "session_end", Some(&operator), Some(&session_id), peer,
        json!({"target": target_name, "reason": reason.to_stored(), "bytes_in": bytes_in, "bytes_out": bytes_out})).await;
    tracing::info!(reason = %reason, bytes_in, bytes_out, "session ended");
}

/// After a successful login: the access decision and the session row. Denials are
/// registered and audited like SSH's.
async fn admit(
    broker: &PgBroker,
    operator: &str,
    target_name: &str,
    peer: SocketAddr,
) -> Result<(String, TargetRecord), Refusal> {
    let store = &broker.store;
    let store_down = |_| refuse("08006", "Gatehouse cannot reach its store; try again later");
    let record = store.target(target_name).await.map_err(store_down)?;
    let account = store.operator(operator).await.map_err(store_down)?;
    let grants = store
        .granted_environments(operator)
        .await
        .map_err(store_down)?;
    let facts = AccessFacts {
        operator_locked: account.as_ref().is_some_and(|o| o.locked),
        target: record
            .as_ref()
            .map(|r| (r.environment.as_str(), r.protocol)),
        granted_environments: &grants,
        protocol: Protocol::Postgres,
    };
    let decision = decide_access(&facts);
    let allowed = match (&decision, record) {
        (AccessDecision::Allow, Some(r)) => Some(r),
        _ => None,
    };
    let session_id = store
        .start_session(&NewSession {
            node: &broker.config.front.node,
            operator,
            target: target_name,
            environment: allowed.as_ref().map(|r| r.environment.as_str()),
            protocol: Protocol::Postgres,
            client_addr: &peer.to_string(),
        })
        .await
        .map_err(store_down)?;
    audit(
        broker,
        "auth_success",
        Some(operator),
        Some(&session_id),
        peer,
        json!({"method": "scram-sha-256", "target": target_name, "protocol": "postgres"}),
    )
    .await;
    match allowed {
        Some(r) => {
            audit(broker, "session_start", Some(operator), Some(&session_id), peer,
                json!({"target": target_name, "environment": r.environment, "protocol": "postgres"})).await;
            Ok((session_id, r))
        }
        None => {
            let reason = match decision {
                AccessDecision::Deny(d) => d,
                AccessDecision::Allow => gatehouse_core::DenyReason::UnknownTarget,
            };
            tracing::warn!(reason = reason.as_str(), "access denied");
            audit(
                broker,
                "access_denied",
                Some(operator),
                Some(&session_id),
                peer,
                json!({"target": target_name, "reason": reason.as_str(), "protocol": "postgres"}),
            )
            .await;
            let _ = store
                .end_session(&session_id, &EndReason::AccessDenied, 0, 0)
                .await;
            let code = match reason {
                gatehouse_core::DenyReason::OperatorLocked => "28000",
                _ => "3D000",
            };
            Err(refuse(code, reason.operator_message(target_name)))
        }
    }
}

struct Admitted<'a> {
    reader: ClientReader,
    writer: ClientWriter,
    operator: &'a str,
    session_id: &'a str,
    target: &'a TargetRecord,
    database: &'a str,
    params: &'a [(String, String)],
    peer: SocketAddr,
}

/// Opens the statement log and the target connection, then relays under the guard.
/// Returns the end reason and byte counts.
async fn run_session(broker: &Arc<PgBroker>, a: Admitted<'_>) -> (EndReason, u64, u64) {
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
            let checkpoints = log.checkpoints();
            tokio::spawn(store_checkpoints(
                store.clone(),
                session_id.to_owned(),
                checkpoints,
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
    let lock = LockState::new();
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
        tokio::select! {
            s = &mut to_target => s,
            s = &mut to_client => s,
            // (the watch guard must not live across the await below)
            () = async { let _ = ended_rx.wait_for(|e| *e).await; } => {
                // the guard queued its FATAL before saying so: let the operator's side write
                // it (after the message in progress), but not wait on a client that does
                // not read
                let grace = std::time::Duration::from_secs(2);
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
    let passthrough: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    let login = Login {
        target: &target.name,
        host: &target.host,
        port: target.port,
        user: &target.username,
        password: &password,
        database,
        tls,
        params: &passthrough,
    };
    upstream::connect(login).await.map_err(|e| {
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
