//! The accept loop every front runs: bounded concurrency (further connections wait in the
//! listen backlog), transient accept errors retried, one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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
                    tracing::warn!(error = %e, "accept failed; continuing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let _ = socket.set_nodelay(true);
        let connection = serve(socket, peer);
        tasks.spawn(async move {
            connection.await;
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
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(24) // EMFILE: too many open files, retry later
}

/// After shutdown: waits for the connection tasks `accept_loop` returned to finish (their
/// sessions ended and recorded), at most `grace`. False if some were still running.
pub async fn drain_connections(mut tasks: JoinSet<()>, grace: std::time::Duration) -> bool {
    tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok()
}
