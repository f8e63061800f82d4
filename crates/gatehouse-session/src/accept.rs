//! The accept loop every front runs: connections not yet logged in are bounded per front
//! (further ones wait in the listen backlog), transient accept errors retried, one task per
//! connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_core::{EndReason, Protocol};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    F: Fn(TcpStream, SocketAddr, LoginSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    live.ensure_watcher();
    let tasks = accept_loop(listener, front.logins.clone(), shutdown, serve).await?;
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

/// The listen backlog of the fronts' sockets (the kernel caps it at `net.core.somaxconn`,
/// 4,096 by default). Connections past the login slots wait there; at Rust's and mio's 128
/// a storm's further SYNs were dropped and their clients retried after 1, 3, 7… s.
pub const LISTEN_BACKLOG: u32 = 4_096;

/// A front's listening socket on `addr` (address reuse on, [`LISTEN_BACKLOG`]).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A connection's place among those not yet logged in (see [`LoginSlots`]): held from the
/// accept until the front admits the session ([`LoginSlot::release`]) or the connection
/// ends.
#[derive(Debug)]
pub struct LoginSlot(Option<(OwnedSemaphorePermit, Arc<AtomicUsize>)>);

impl LoginSlot {
    /// The connection is a session now (it holds a [`crate::SessionRoom`]: see
    /// [`crate::SessionLimit::admit`]): its slot goes to the next connection waiting.
    pub fn release(&mut self) {
        if let Some((_, held)) = self.0.take() {
            held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Connections not yet logged in on one front: unauthenticated sockets cost descriptors (two
/// for SSH) and memory, so a flood of them must not take what live sessions and their
/// recordings need. Past the limit, connections wait in the listen backlog (a login storm is
/// delayed, not refused) until a login completes or a login grace expires. One per front:
/// an accept loop takes its slot before it waits for a connection, so a front with no
/// connections to accept would hold a shared slot another front needs.
#[derive(Debug)]
pub struct LoginSlots {
    slots: Arc<Semaphore>,
    max: usize,
    /// Slots held by connections (the accept loop also holds one while it waits for the
    /// next connection).
    held: Arc<AtomicUsize>,
}

impl LoginSlots {
    pub fn new(max: usize) -> Arc<LoginSlots> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(LoginSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
            held: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Accepts connections until `shutdown` resolves while a login slot is free, each served in
/// its own task by `serve` with its slot. Returns the connection tasks still running (the
/// caller ends them gracefully), or the listener's fatal error.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    logins: Arc<LoginSlots>,
    shutdown: impl Future<Output = ()>,
    serve: F,
) -> Result<JoinSet<()>, std::io::Error>
where
    F: Fn(TcpStream, SocketAddr, LoginSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = logins.slots.clone();
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
        logins.held.fetch_add(1, Ordering::Relaxed);
        let slot = LoginSlot(Some((permit, logins.held.clone())));
        let mut connection = Box::pin(serve(socket, peer, slot));
        tasks.spawn(async move {
            connection.as_mut().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Past its login slots a front accepts nothing more (the connection waits in the
    /// backlog) until a connection is admitted as a session (`SessionLimit::admit` releases
    /// its slot) or ends; one the session limit refuses keeps its slot until it ends.
    #[tokio::test]
    async fn past_the_login_slots_connections_wait_until_a_slot_is_released() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let logins = LoginSlots::new(2);
        let rooms = crate::SessionLimit::new(1);
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let front = tokio::spawn({
            let logins = logins.clone();
            async move {
                let _ = accept_loop(
                    &listener,
                    logins,
                    async {
                        let _ = stop.await;
                    },
                    |mut socket, _, mut slot| {
                        let (accepted, rooms) = (accepted_tx.clone(), rooms.clone());
                        async move {
                            let (admit, admitted) = tokio::sync::oneshot::channel::<()>();
                            let _ = accepted.send(admit);
                            let _room = match admitted.await {
                                Ok(()) => rooms.admit(&mut slot).ok(),
                                Err(_) => None,
                            };
                            // until the client goes
                            let _ = socket.read(&mut [0u8; 1]).await;
                        }
                    },
                )
                .await;
            }
        });
        // (a connection that should be accepted and is not fails the test, not hangs it)
        async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a connection accepted in time")
                .expect("the front runs")
        }
        async fn none_within_300ms<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(300), rx.recv())
                .await
                .is_err()
        }
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(Some(tokio::net::TcpStream::connect(addr).await.unwrap()));
        }
        let first = next(&mut accepted).await;
        let second = next(&mut accepted).await;
        assert!(
            none_within_300ms(&mut accepted).await,
            "a third connection was accepted past 2 slots"
        );
        assert_eq!(logins.in_use(), 2);
        // one admitted (its slot released, the connection goes on): the third is accepted
        first.send(()).unwrap();
        let _third = next(&mut accepted).await;
        assert_eq!(logins.in_use(), 2, "the admitted one holds no slot");
        // one the session limit refuses keeps its slot: no fourth
        second.send(()).unwrap();
        assert!(
            none_within_300ms(&mut accepted).await,
            "a connection refused a room gave up its slot"
        );
        // until it ends: the fourth
        clients[1] = None;
        let _fourth = next(&mut accepted).await;
        let _ = stop_tx.send(());
        front.await.unwrap();
        assert_eq!(logins.max(), 2);
    }
}
