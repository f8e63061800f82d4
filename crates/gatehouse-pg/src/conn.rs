//! One operator connection: startup negotiation (TLS, GSSENC refusal, cancel requests),
//! the operator's login (SCRAM-SHA-256, or a cleartext password inside TLS when enabled),
//! then the shared admission (`gatehouse_session::admit`: access decision, session row,
//! audits); the admitted session runs in [`crate::session_run`] and ends through the shared
//! `end_session`. Startup parameters passed through to the target are in the
//! `session_start` audit event.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_core::{DenyReason, EndReason, LoginRefusal, Protocol, validate_name};
use gatehouse_pgproto::scram::{self, ServerExchange, Verifier};
use gatehouse_pgproto::{MAX_LOGIN_MESSAGE, MAX_SESSION_MESSAGE, backend};
use gatehouse_session::{Access, Admission, Busy, FailedLogin, Login, LoginSlot, end_session};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::broker::PgBroker;
use crate::client::{ClientReader, ClientWriter, Refusal, fatal, refuse, send};
use crate::io::{BoxStream, FrameReader, ReadError};
use crate::session_run::{Admitted, run_session};
use crate::startup::{self, Negotiated, negotiate};
use crate::statement_log::{StatementLog, params_json};

pub(crate) async fn serve(
    broker: Arc<PgBroker>,
    socket: TcpStream,
    peer: SocketAddr,
    slot: LoginSlot,
) {
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
            } => session(&broker, stream, tls, params, peer, deadline, slot).await,
        }
    }
    .instrument(span)
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

/// How the operator logged in, as audited.
const CLEARTEXT: &str = "password";
const SCRAM: &str = "scram-sha-256";

/// Runs the operator's login: whether the password was right, and the method asked.
async fn authenticate(
    broker: &PgBroker,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    operator: &str,
    tls: bool,
) -> Result<(bool, &'static str), Refusal> {
    let store_down = |_| refuse("08006", "Gatehouse cannot reach its store; try again later");
    let account = broker.store.operator(operator).await.map_err(store_down)?;
    let io = |_| refuse("08006", "connection lost during authentication");
    if broker.config.allow_cleartext && tls {
        send(writer, &backend::auth_cleartext()).await.map_err(io)?;
        let body = next_password_message(reader).await?;
        let password =
            String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned();
        let hash = account.and_then(|a| a.password_hash);
        let ok = (broker.config.front.login)
            .verify_password(password, hash)
            .await;
        return Ok((ok, CLEARTEXT));
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
            Ok((true, SCRAM))
        }
        None => Ok((false, SCRAM)),
    }
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
    mut slot: LoginSlot,
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
    let method = match authenticated {
        Ok((true, method)) => {
            login.succeeded(peer.ip(), &operator);
            method
        }
        Ok((false, method)) => {
            let failure = FailedLogin {
                peer,
                user: &operator,
                operator: Some(operator.as_str()),
                method,
                protocol: "postgres",
                guessed_secret: true,
            };
            Box::pin(login.failed(&broker.store, failure)).await;
            let msg = format!("password authentication failed for user \"{operator}\"");
            fatal(&mut writer, &refuse("28P01", msg)).await;
            return;
        }
        Err(r) => {
            fatal(&mut writer, &r).await;
            return;
        }
    };
    if send(&mut writer, &backend::auth_ok()).await.is_err() {
        return;
    }
    reader.logged_in(MAX_SESSION_MESSAGE);
    let (target_name, database) = parse_dbname(&dbname);
    let passthrough = startup::passthrough(&params);
    // what is left of the startup packet is not needed past here (an async fn keeps its
    // locals to the end of their scope, here the end of the session: memory per live
    // session); so is the login's description, in the block below
    drop(params);
    // (`_room`: held until the session ends)
    let (_room, starting, admission) = {
        let mut start_detail = serde_json::Map::new();
        start_detail.insert("startup_params".into(), params_json(&passthrough));
        let login = Login {
            protocol: Protocol::Postgres,
            node: &broker.config.front.node,
            node_id: &broker.config.front.node_id,
            peer,
            operator: &operator,
            target: Some(target_name),
            method,
            start_detail,
        };
        // in line with the node's other starting sessions until the target login is done,
        // in a room under the node's session limit until the session ends (past the limit,
        // refused at once)
        let started = match broker.config.front.sessions.admit(&mut slot) {
            Ok(room) => broker
                .config
                .front
                .starting
                .enter()
                .await
                .map(|start| (room, start))
                .map_err(Busy::from),
            Err(full) => Err(Busy::from(full)),
        };
        let (room, starting) = match started {
            Ok(started) => started,
            Err(busy) => {
                gatehouse_session::refused_busy(&broker.store, &login, &busy);
                // 53300 too_many_connections: what PostgreSQL itself says when it is full
                fatal(&mut writer, &refuse("53300", busy.operator_message())).await;
                return;
            }
        };
        // the futures around the live session are boxed (memory per live session, as in
        // `run_session`)
        let admission = Box::pin(gatehouse_session::admit(&broker.store, &login)).await;
        (room, starting, admission)
    };
    let admission = match admission {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "store failed during login; refusing");
            let r = refuse("08006", "Gatehouse cannot reach its store; try again later");
            fatal(&mut writer, &r).await;
            return;
        }
    };
    let (session, allowed) = match admission {
        Admission {
            session: Some(session),
            access: Access::Allowed(allowed),
        } => (session, allowed),
        Admission { session, access } => {
            let (code, message) = match access {
                Access::Denied {
                    reason: Some(DenyReason::OperatorLocked),
                    message,
                } => ("28000", message),
                Access::Denied { message, .. } => ("3D000", message),
                Access::Allowed(_) => ("3D000", String::new()),
            };
            fatal(&mut writer, &refuse(code, message)).await;
            if let Some(session) = session {
                let no_log: Option<&StatementLog> = None;
                Box::pin(end_session(
                    &broker.store,
                    &session,
                    &EndReason::AccessDenied,
                    (0, 0),
                    no_log,
                ))
                .await;
            }
            return;
        }
    };
    let span = tracing::Span::current();
    span.record("session_id", session.id.as_str());
    span.record("operator", operator.as_str());
    span.record("target", target_name);
    span.record("environment", allowed.target.environment.as_str());
    let ended = run_session(
        broker,
        Admitted {
            reader,
            writer,
            session: &session,
            allowed: &allowed,
            database: database
                .or(match &allowed.target.kind {
                    gatehouse_core::TargetKind::Postgres { database, .. } => database.as_deref(),
                    gatehouse_core::TargetKind::Ssh { .. } => None,
                })
                .unwrap_or("postgres"),
            params: &passthrough,
            starting,
        },
    )
    .await;
    let log = ended.log.as_ref();
    Box::pin(end_session(
        &broker.store,
        &session,
        &ended.reason,
        ended.bytes,
        log,
    ))
    .await;
}
