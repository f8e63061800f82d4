//! `[metrics] listen`: `/metrics` (Prometheus text, from `gatehouse_session::metrics`) and
//! `/healthz` (200 while the store answers and the recordings root takes a file, else 503).
//! Off by default. Two fixed GET routes over a loopback or management address do not
//! justify an HTTP framework's compile weight: this reads one request head (bounded in size
//! and time) and writes one response, closing the connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_session::LiveSessions;
use gatehouse_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read, and the time a client gets to send it.
const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MetricsServer {
    pub store: Store,
    pub live: Arc<LiveSessions>,
    pub node_name: String,
    pub recordings_root: PathBuf,
    /// The node's session limit and each front's login slots (capacity gauges).
    pub sessions: Arc<gatehouse_session::SessionLimit>,
    pub login_slots: Vec<(gatehouse_core::Protocol, Arc<gatehouse_session::LoginSlots>)>,
}

impl MetricsServer {
    fn capacity(&self) -> gatehouse_session::metrics::Capacity {
        gatehouse_session::metrics::Capacity {
            max_sessions: self.sessions.max(),
            sessions_admitted: self.sessions.live(),
            login_slots: self
                .login_slots
                .iter()
                .map(|(p, s)| (*p, s.max(), s.in_use()))
                .collect(),
        }
    }
}

/// Serves until the task is aborted; one task per connection.
pub async fn run(listener: TcpListener, server: Arc<MetricsServer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &server).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn serve_one(mut stream: TcpStream, server: &MetricsServer) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            // heartbeat ages of every running node, as this node sees them in the store (a
            // store that does not answer leaves the last values and counts as a store error)
            if let Ok(Ok(nodes)) =
                tokio::time::timeout(READ_TIMEOUT, server.store.list_nodes()).await
            {
                let now = gatehouse_store::now_millis();
                let ages: Vec<(String, f64)> = nodes
                    .iter()
                    .filter(|n| !n.stopped)
                    .map(|n| (n.id.clone(), (now - n.heartbeat_at).max(0) as f64 / 1000.0))
                    .collect();
                gatehouse_session::metrics::node_heartbeat_ages(&ages);
            }
            match gatehouse_session::metrics::encode(
                &server.node_name,
                &server.live.census(),
                &server.capacity(),
            ) {
                Ok(text) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "cannot encode metrics\n".into(),
                ),
            }
        }
        ("GET", "/healthz") => match health(&server.store, &server.recordings_root).await {
            Ok(()) => ("200 OK", "text/plain", "ok\n".into()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Healthy: the store answers a query and the recordings root takes a new file.
async fn health(store: &Store, root: &Path) -> Result<(), String> {
    store
        .ping()
        .await
        .map_err(|e| format!("store unusable: {e}"))?;
    let probe = root.join(format!(".healthz-{}", std::process::id()));
    tokio::fs::write(&probe, b"ok")
        .await
        .map_err(|e| format!("recordings root {} unusable: {e}", root.display()))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}
