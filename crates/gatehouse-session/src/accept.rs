//! The accept loop every front runs: bounded concurrency (further connections wait in the
//! listen backlog), transient accept errors retried, one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{EndReason, Protocol};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{FrontConfig, LiveSessions};

/// Runs one front of the node: starts the node's store watcher, accepts connections until
/// `shutdown` resolves (each served by `serve`), then ends every live connection of
/// `protocol` through the node's registry (a guarded session's guard tells its operator
/// why) and waits for them to be recorded, at most the front's shutdown grace.
pub async fn serve_front<F, Fut>(
    listener: &TcpListener,
    live: &Arc<LiveSessions>,
    protocol: Protocol,
    front: &FrontConfig,
    shutdown: impl Future<Output = ()>,
    serve: F,
) -> Result<(), std::io::Error>
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    live.ensure_watcher();
    let tasks = accept_loop(listener, front.max_connections, shutdown, serve).await?;
    let ending = live.end_all(protocol, &EndReason::Shutdown);
    tracing::info!(
        protocol = protocol.as_str(),
        live = ending,
        "shutting down: ending live sessions"
    );
    if !drain_connections(tasks, front.shutdown_grace).await {
        tracing::warn!(
            protocol = protocol.as_str(),
            left = live.count(protocol),
            "sessions still open after shutdown grace"
        );
    }
    Ok(())
}

/// Accepts connections until `shutdown` resolves, serving at most `max` at once, each in its
/// own task running `serve`. Returns the connection tasks still running (the caller ends
/// them gracefully), or the listener's fatal error.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    max: usize,
    shutdown: impl Future<Output = ()>,
    serve: F,
) -> Result<JoinSet<()>, std::io::Error>
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut tasks = JoinSet::new();
    let mut failures = FailureLog::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_transient(&e) => {
                    // (out of descriptors, the connection waits in the backlog and the
                    // listener stays readable: the pause keeps this from spinning)
                    failures.failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let _ = socket.set_nodelay(true);
        // boxed: an async block awaiting a future it captured keeps room for it twice, and
        // this task lives as long as the connection (memory per live session)
        let mut connection = Box::pin(serve(socket, peer));
        tasks.spawn(async move {
            connection.as_mut().await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    Ok(tasks)
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || crate::open_files::is_out_of_files(e)
        || e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error())
}

/// Transient accept failures, logged once per [`FailureLog::EVERY`] with how many there
/// were since: out of descriptors, the listener fails 20 times a second for as long as it
/// lasts.
#[derive(Default)]
struct FailureLog {
    since: Option<tokio::time::Instant>,
    count: u64,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn failed(&mut self, e: &std::io::Error) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Self::EVERY)
        {
            let hint = if crate::open_files::is_out_of_files(e) {
                "out of open files: new connections wait in the listen backlog until sessions end"
            } else {
                "continuing"
            };
            tracing::warn!(error = %e, failures = self.count, "accept failed; {hint}");
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// After shutdown: waits for the connection tasks `accept_loop` returned to finish (their
/// sessions ended and recorded), at most `grace`. False if some were still running.
pub async fn drain_connections(mut tasks: JoinSet<()>, grace: std::time::Duration) -> bool {
    tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok()
}
