//! The accept loop every front runs: connections not yet logged in are bounded per front
//! (further ones wait in the listen backlog), transient accept errors retried, one task per
//! connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::{EndReason, Protocol, SourceBucket};
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
pub struct LoginSlot(Option<(OwnedSemaphorePermit, Arc<Held>, SourceBucket)>);

impl LoginSlot {
    /// The connection is a session now (it holds a [`crate::SessionRoom`]: see
    /// [`crate::SessionLimit::admit`]): its slot goes to the next connection waiting.
    pub fn release(&mut self) {
        if let Some((_, held, source)) = self.0.take() {
            held.count.fetch_sub(1, Ordering::Relaxed);
            if let Ok(mut s) = held.sources.lock()
                && let Some(n) = s.get_mut(&source)
            {
                *n -= 1;
                if *n == 0 {
                    s.remove(&source);
                }
            }
        }
    }
}

/// The slots connections hold, in all and by source.
#[derive(Debug, Default)]
struct Held {
    count: AtomicUsize,
    sources: Mutex<HashMap<SourceBucket, usize>>,
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
    /// At most this many slots for one source (an address, an IPv6 /64), if set: one
    /// source's flood of silent sockets then cannot keep everyone else waiting.
    per_source: Option<usize>,
    /// Slots held by connections (the accept loop also holds one while it waits for the
    /// next connection).
    held: Arc<Held>,
}

impl LoginSlots {
    pub fn new(max: usize) -> Arc<LoginSlots> {
        Self::with_per_source(max, None)
    }

    /// `max` slots, at most `per_source` of them for connections from one source.
    pub fn with_per_source(max: usize, per_source: Option<usize>) -> Arc<LoginSlots> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(LoginSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_source: per_source.map(|n| n.max(1)),
            held: Arc::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.held.count.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `peer` (holding `permit`), or `Err` with its source if
    /// that source holds its share of slots already.
    fn slot(
        &self,
        permit: OwnedSemaphorePermit,
        peer: std::net::IpAddr,
    ) -> Result<LoginSlot, SourceBucket> {
        let source = SourceBucket::of(peer);
        let Ok(mut sources) = self.held.sources.lock() else {
            return Err(source);
        };
        let n = sources.entry(source).or_insert(0);
        if self.per_source.is_some_and(|max| *n >= max) {
            return Err(source);
        }
        *n += 1;
        self.held.count.fetch_add(1, Ordering::Relaxed);
        Ok(LoginSlot(Some((permit, self.held.clone(), source))))
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
    let mut crowded = CrowdedLog::default();
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
        let slot = match logins.slot(permit, peer.ip()) {
            Ok(slot) => slot,
            Err(source) => {
                // (closed at once, as OpenSSH's PerSourceMaxStartups does; the slot goes to
                // the next connection)
                crowded.refused(source, logins.per_source.unwrap_or(0));
                drop(socket);
                continue;
            }
        };
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

/// Events the accept loop logs once per [`Throttled::EVERY`] with how many there were since
/// (out of descriptors, the listener fails 20 times a second for as long as it lasts).
#[derive(Default)]
struct Throttled {
    since: Option<tokio::time::Instant>,
    count: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(10);

    /// Counts one; `Some(count since the last log)` when it is time to log.
    fn tally(&mut self) -> Option<u64> {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.since = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Connections closed because their source held its share of login slots.
#[derive(Default)]
struct CrowdedLog(Throttled);

impl CrowdedLog {
    fn refused(&mut self, source: SourceBucket, per_source: usize) {
        crate::metrics::source_share_closed();
        if let Some(closed) = self.0.tally() {
            tracing::warn!(
                %source,
                max_unauthenticated_per_source = per_source,
                closed,
                "connection closed: its source holds its share of login slots"
            );
        }
    }
}

/// Transient accept failures.
#[derive(Default)]
struct FailureLog(Throttled);

impl FailureLog {
    fn failed(&mut self, e: &std::io::Error) {
        if let Some(failures) = self.0.tally() {
            let hint = if crate::open_files::is_out_of_files(e) {
                "out of open files: new connections wait in the listen backlog until sessions end"
            } else {
                "continuing"
            };
            tracing::warn!(error = %e, failures, "accept failed; {hint}");
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

    /// A front on a loopback port serving with `serve` until the sender is used.
    fn front<F, Fut>(
        logins: Arc<LoginSlots>,
        serve: F,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )
    where
        F: Fn(TcpStream, SocketAddr, LoginSlot) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = accept_loop(
                &listener,
                logins,
                async {
                    let _ = stop.await;
                },
                serve,
            )
            .await;
        });
        (addr, stop_tx, task)
    }

    /// Past its login slots a front accepts nothing more (the connection waits in the
    /// backlog) until a connection is admitted as a session (`SessionLimit::admit` releases
    /// its slot) or ends; one the session limit refuses keeps its slot until it ends.
    #[tokio::test]
    async fn past_the_login_slots_connections_wait_until_a_slot_is_released() {
        let logins = LoginSlots::new(2);
        let rooms = crate::SessionLimit::new(1);
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let (addr, stop_tx, front) = front(logins.clone(), move |mut socket, _, mut slot| {
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

    /// A connection from `from` to `addr`.
    async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Whether `client` is closed by the other side within 2 s (it sends nothing).
    async fn closed(client: &mut TcpStream) -> bool {
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                client.read(&mut [0u8; 1])
            )
            .await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// With a share per source, one source's silent sockets past it are closed at once;
    /// another source's connection is served meanwhile, and once one of the first source's
    /// ends (or is admitted) it may connect again. The node's counts follow.
    #[tokio::test]
    async fn one_source_cannot_take_more_than_its_share_of_login_slots() {
        let logins = LoginSlots::with_per_source(8, Some(2));
        let (addr, stop_tx, front) = front(logins.clone(), |mut socket, _, slot| async move {
            // holds its slot until the client goes
            let _ = socket.read(&mut [0u8; 1]).await;
            drop(slot);
        });
        let mut a1 = connect_from("127.0.0.1", addr).await;
        let _a2 = connect_from("127.0.0.1", addr).await;
        let mut a3 = connect_from("127.0.0.1", addr).await;
        assert!(closed(&mut a3).await, "a third from one source was kept");
        let mut b1 = connect_from("127.0.0.2", addr).await;
        assert!(
            !closed(&mut b1).await,
            "another source's connection was closed"
        );
        assert!(
            !closed(&mut a1).await,
            "the first source's first connection was closed"
        );
        assert_eq!(logins.in_use(), 3);
        // one of the first source's goes: it may connect again
        drop(a1);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while logins.in_use() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slot was not released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut a4 = connect_from("127.0.0.1", addr).await;
        assert!(
            !closed(&mut a4).await,
            "the source's freed share was not given back"
        );
        assert_eq!(logins.in_use(), 3);
        let _ = stop_tx.send(());
        front.await.unwrap();
    }
}
