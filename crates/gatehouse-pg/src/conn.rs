//! One operator connection: startup negotiation (TLS, GSSENC refusal, cancel requests),
//! the operator's login (SCRAM-SHA-256, or a cleartext password inside TLS when enabled),
//! the access decision and the session row; the admitted session then runs in
//! [`crate::session_run`]. Startup parameters passed through to the target are in the
//! `session_start` audit event.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_core::{
    AccessDecision, AccessFacts, EndReason, LoginRefusal, Protocol, decide_access, validate_name,
};
use gatehouse_pgproto::scram::{self, ServerExchange, Verifier};
use gatehouse_pgproto::{MAX_LOGIN_MESSAGE, MAX_SESSION_MESSAGE, backend};
use gatehouse_session::FailedLogin;
use gatehouse_store::{AuditEvent, NewSession, TargetRecord};
use serde_json::json;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::broker::PgBroker;
use crate::io::{BoxStream, FrameReader, ReadError};
use crate::session_run::{Admitted, run_session};
use crate::startup::{self, Negotiated, negotiate};
use crate::statement_log::params_json;

pub(crate) type ClientReader = FrameReader<ReadHalf<BoxStream>>;
pub(crate) type ClientWriter = WriteHalf<BoxStream>;

/// An error for the operator: FATAL with a SQLSTATE and a message that leaks nothing.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
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
    // one deadline for the startup packet, TLS handshake and the whole login: a silent
    // or slow client must not hold a connection slot
    let deadline = tokio::time::Instant::now() + broker.config.front.login_grace;
    async {
        let negotiated = match tokio::time::timeout_at(deadline, negotiate(&broker, socket)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "startup failed");
                return;
            }
            Err(_) => {
                tracing::info!("login grace expired before the startup packet: connection dropped");
                return;
            }
        };
        match negotiated {
            Negotiated::Cancel { pid, key } => broker.cancels.forward(pid, &key).await,
            Negotiated::Session {
                stream,
                tls,
                params,
            } => session(&broker, stream, tls, params, peer, deadline).await,
        }
    }
    .instrument(span)
    .await;
}

pub(crate) async fn send(w: &mut ClientWriter, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Sends the refusal and closes, bounded: a client that does not read cannot hold the
/// connection open.
pub(crate) async fn fatal(w: &mut ClientWriter, r: &Refusal) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = send(w, &backend::error_response("FATAL", r.code, &r.message)).await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// The password message body of the next message, which must be a 'p'.
async fn next_password_message(reader: &mut ClientReader) -> Result<bytes::BytesMut, Refusal> {
    match reader.next_message().await {
        Ok(Some((b'p', body))) => Ok(body),
        Ok(Some(_)) => Err(refuse("08P01", "expected a password message")),
        Err(ReadError::LoginGrace) => {
            tracing::info!("login grace expired during authentication: connection dropped");
            Err(refuse("57014", "canceling authentication due to timeout"))
        }
        Err(ReadError::Frame(e)) => {
            tracing::info!(error = %e, "oversized or malformed message during authentication");
            Err(refuse(
                "08P01",
                format!("invalid message during authentication: {e}"),
            ))
        }
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

pub(crate) async fn audit(
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
    login_deadline: tokio::time::Instant,
) {
    let (read, mut writer) = tokio::io::split(stream);
    // before authentication: messages up to 64 KiB, and only until the login deadline
    let mut reader = FrameReader::new(read, MAX_LOGIN_MESSAGE).with_deadline(login_deadline);
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
    // The grace also bounds what authentication waits for besides the client (the store,
    // a password-hashing permit).
    let authenticated = tokio::time::timeout_at(
        login_deadline,
        authenticate(broker, &mut reader, &mut writer, &operator, tls),
    )
    .await
    .unwrap_or_else(|_| Err(refuse("57014", "canceling authentication due to timeout")));
    match authenticated {
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
    reader.logged_in(MAX_SESSION_MESSAGE);
    let (target_name, database) = parse_dbname(&dbname);
    let passthrough = startup::passthrough(&params);
    let admitted = admit(broker, &operator, target_name, peer, &passthrough).await;
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
            params: &passthrough,
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
    gatehouse_session::metrics::session_ended("postgres", &reason);
    tracing::info!(reason = %reason, bytes_in, bytes_out, "session ended");
}

/// After a successful login: the access decision and the session row. Denials are
/// registered and audited like SSH's.
async fn admit(
    broker: &PgBroker,
    operator: &str,
    target_name: &str,
    peer: SocketAddr,
    startup_params: &[(String, String)],
) -> Result<(String, TargetRecord), Refusal> {
    let store = &broker.store;
    if validate_name("target", target_name).is_err() {
        // refused like an unknown target, before the store or a session row sees the name
        // (it would reach the review screens); the operator gets their own input back,
        // escaped and cut short
        let shown: String = target_name.escape_debug().take(64).collect();
        tracing::warn!(name = %shown, "access denied: invalid target name");
        audit(
            broker,
            "access_denied",
            Some(operator),
            None,
            peer,
            json!({"target": shown, "reason": "invalid_target_name", "protocol": "postgres"}),
        )
        .await;
        let reason = gatehouse_core::DenyReason::UnknownTarget;
        return Err(refuse("3D000", reason.operator_message(&shown)));
    }
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
            node_id: &broker.config.front.node_id,
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
            audit(
                broker,
                "session_start",
                Some(operator),
                Some(&session_id),
                peer,
                json!({"target": target_name, "environment": r.environment, "protocol": "postgres",
                    "startup_params": params_json(startup_params)}),
            )
            .await;
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
