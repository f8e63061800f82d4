//! The back: Gatehouse's own login to the target database with the stored credential
//! (SCRAM-SHA-256 with server-signature check, md5 or cleartext, as the server asks), over
//! the target's TLS mode. Returns the connection ready for queries, with the parameter
//! statuses and notices the operator must see.

use std::sync::Arc;

use bytes::BytesMut;
use gatehouse_pgproto::MAX_SESSION_MESSAGE;
use gatehouse_pgproto::message::{Auth, Backend, ErrorFields, SSL_REQUEST};
use gatehouse_pgproto::scram::MECHANISM as SCRAM_SHA_256;
use gatehouse_pgproto::scram_client::{ClientExchange, SaltedPasswords};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::io::{BoxStream, FrameReader, ReadError};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot reach {0}")]
    Unreachable(String, #[source] std::io::Error),
    #[error("TLS to the target failed: {0}")]
    Tls(String),
    #[error("the target does not support TLS (its --tls mode asks for it)")]
    TlsRefused,
    /// The server refused the login (wrong stored credential, no such role…).
    #[error("the target refused Gatehouse's login: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
    /// Any other error the server reported while starting (e.g. no such database).
    #[error("{} ({})", .0.message, .0.code)]
    Startup(ErrorFields),
    #[error("the target asked for an authentication method Gatehouse does not support ({0})")]
    Unsupported(String),
    #[error("protocol error from the target: {0}")]
    Protocol(String),
}

impl From<ReadError> for UpstreamError {
    fn from(e: ReadError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// Where and how to reach a target, also for cancel requests.
#[derive(Clone)]
pub(crate) struct CancelTarget {
    pub(crate) target: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) pid: i32,
    pub(crate) key: Vec<u8>,
}

pub(crate) struct Login<'a> {
    pub(crate) target: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) user: &'a str,
    pub(crate) password: &'a [u8],
    pub(crate) database: &'a str,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    /// Startup parameters passed through from the operator (application_name, options…).
    pub(crate) params: &'a [(String, String)],
    /// The node's salted passwords for SCRAM (derived once per target password and salt).
    pub(crate) salted: &'a SaltedPasswords,
}

pub(crate) struct Upstream {
    pub(crate) reader: FrameReader<tokio::io::ReadHalf<BoxStream>>,
    pub(crate) writer: tokio::io::WriteHalf<BoxStream>,
    /// ParameterStatus and NoticeResponse messages of the login, to pass on as they are.
    pub(crate) greeting: Vec<u8>,
    pub(crate) cancel: CancelTarget,
}

/// SSLRequest and the TLS handshake when `tls` is set; plain TCP otherwise.
pub(crate) async fn open_transport(
    mut tcp: TcpStream,
    host: &str,
    tls: Option<Arc<ClientConfig>>,
) -> Result<BoxStream, UpstreamError> {
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let mut req = 8_i32.to_be_bytes().to_vec();
    req.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    let io = |e: std::io::Error| UpstreamError::Unreachable(host.to_owned(), e);
    tcp.write_all(&req).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return Err(UpstreamError::TlsRefused);
    }
    let name = tls::server_name(host).map_err(|e| UpstreamError::Tls(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    Ok(Box::new(stream))
}

/// A frontend message made by `postgres_protocol`'s builders.
pub(crate) fn message(
    build: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
) -> Result<BytesMut, UpstreamError> {
    let mut buf = BytesMut::new();
    build(&mut buf).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    Ok(buf)
}

pub(crate) async fn connect(login: Login<'_>) -> Result<Upstream, UpstreamError> {
    let addr = format!("{}:{}", login.host, login.port);
    let tcp = TcpStream::connect((login.host, login.port))
        .await
        .map_err(|e| UpstreamError::Unreachable(addr.clone(), e))?;
    let stream = open_transport(tcp, login.host, login.tls.clone()).await?;
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read, MAX_SESSION_MESSAGE);
    let io = |e: std::io::Error| UpstreamError::Unreachable(addr.clone(), e);

    let mut params: Vec<(&str, &str)> = vec![("user", login.user), ("database", login.database)];
    params.extend(login.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let startup = message(|b| frontend::startup_message(params.iter().copied(), b))?;
    write.write_all(&startup).await.map_err(io)?;

    let mut scram: Option<ClientExchange> = None;
    let mut greeting = Vec::new();
    let mut key = None;
    loop {
        let Some((tag, body)) = reader.next_message().await? else {
            return Err(UpstreamError::Protocol(
                "connection closed during login".into(),
            ));
        };
        let msg = Backend::parse(tag, &body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let reply = match msg {
            Backend::Authentication(Auth::Ok) => None,
            Backend::Authentication(Auth::Cleartext) => {
                Some(message(|b| frontend::password_message(login.password, b))?)
            }
            Backend::Authentication(Auth::Md5 { salt }) => {
                let hashed = md5_hash(login.user.as_bytes(), login.password, salt);
                Some(message(|b| {
                    frontend::password_message(hashed.as_bytes(), b)
                })?)
            }
            Backend::Authentication(Auth::Sasl { mechanisms }) => {
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(UpstreamError::Unsupported(mechanisms.join(", ")));
                }
                let (s, first) = ClientExchange::start(login.password);
                let first = message(|b| {
                    frontend::sasl_initial_response(SCRAM_SHA_256, first.as_bytes(), b)
                })?;
                scram = Some(s);
                Some(first)
            }
            Backend::Authentication(Auth::SaslContinue(data)) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL continue without SASL".into()))?;
                let reply = s
                    .server_first(data, login.salted)
                    .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                Some(message(|b| frontend::sasl_response(reply.as_bytes(), b))?)
            }
            Backend::Authentication(Auth::SaslFinal(data)) => {
                // checks the server's signature: a server that does not know the password
                // cannot impersonate the target
                scram
                    .as_ref()
                    .ok_or_else(|| UpstreamError::Protocol("SASL final without SASL".into()))?
                    .server_final(data)
                    .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                None
            }
            Backend::Authentication(Auth::Other(n)) => {
                return Err(UpstreamError::Unsupported(format!("method {n}")));
            }
            Backend::Error(fields) => {
                return Err(if fields.code.starts_with("28") {
                    UpstreamError::Refused(fields)
                } else {
                    UpstreamError::Startup(fields)
                });
            }
            Backend::BackendKeyData { pid, key: k } => {
                key = Some((pid, k.to_vec()));
                None
            }
            Backend::ParameterStatus | Backend::Notice => {
                greeting.push(tag);
                greeting.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                greeting.extend_from_slice(&body);
                None
            }
            Backend::ReadyForQuery { .. } => break,
            _ => None,
        };
        if let Some(r) = reply {
            write.write_all(&r).await.map_err(io)?;
        }
    }
    let (pid, key) = key.unwrap_or((0, vec![0; 4]));
    Ok(Upstream {
        reader,
        writer: write,
        greeting,
        cancel: CancelTarget {
            target: login.target.to_owned(),
            host: login.host.to_owned(),
            port: login.port,
            tls: login.tls,
            pid,
            key,
        },
    })
}
