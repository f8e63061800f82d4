//! The first packets of a connection, before any login: SSLRequest and the TLS handshake,
//! GSSENCRequest (refused), CancelRequest, and the StartupMessage with its parameters. The
//! caller bounds all of it by the login grace.

use gatehouse_pgproto::message::Startup;
use gatehouse_pgproto::{backend, startup_len};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::PgBroker;
use crate::io::BoxStream;

pub(crate) enum Negotiated {
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

/// The exchange before login, up to a StartupMessage (the session's stream, whether it is
/// TLS, its parameters) or a CancelRequest.
pub(crate) async fn negotiate(broker: &PgBroker, tcp: TcpStream) -> std::io::Result<Negotiated> {
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

/// Startup parameters never passed to the target: Gatehouse sets these itself, or refuses
/// them (replication connections are not brokered).
const RESERVED_PARAMS: &[&str] = &["user", "database", "replication"];

/// The operator's startup parameters that go to the target (`application_name`, `options`,
/// any GUC), each once: PostgreSQL applies the last of repeated ones, so only that one is
/// passed on, and the log and audit show exactly what the target got.
pub(crate) fn passthrough(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in params {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            continue;
        }
        out.retain(|(seen, _)| seen != k);
        out.push((k.clone(), v.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_drops_reserved_and_keeps_the_last_of_repeats() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let given = [
            p("user", "alice"),
            p("options", "-c search_path=a"),
            p("database", "orders"),
            p("application_name", "psql"),
            p("options", "-c search_path=x"),
        ];
        assert_eq!(
            passthrough(&given),
            vec![
                p("application_name", "psql"),
                p("options", "-c search_path=x")
            ]
        );
    }
}
