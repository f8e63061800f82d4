//! Threads that each run whole connections on a runtime of their own (one current-thread
//! tokio runtime per thread, with its own I/O driver), the way PgBouncer runs every
//! connection on one event loop.
//!
//! Why: a relay of small messages (`pgbench -S`: one query and one result per round trip) on
//! the node's work-stealing runtime pays for the stealing on every round trip — the worker
//! that wakes from `epoll` with a ready connection also wakes a parked worker (a futex), which
//! finds nothing to steal and parks again. Measured with 4 clients on 2 cores: ~12 % of the
//! broker's CPU in park/unpark, and round trips waiting on those hand-offs. A connection
//! placed on one of these threads has its sockets registered with that thread's own driver:
//! readiness, the relay and the write all happen on the thread that was woken, with no
//! hand-off. The SSH front stays on the shared runtime: its two encrypted legs are worth
//! two cores to one bulk session.
//!
//! A connection goes to the thread with the fewest live connections (ties: the next in
//! turn). What it spawns runs on that thread's runtime too, unless it names another (the
//! PostgreSQL front starts its statement logs' recorders on the shared runtime, so that
//! formatting, hashing and writing the lines stay off the relay's thread); store calls
//! still work from there (tokio I/O resources may be polled from any
//! runtime while the one that registered them runs).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// A set of connection threads (see the module's documentation).
pub struct ConnectionThreads {
    threads: Vec<Thread>,
    /// Where the search for the least busy thread starts (turns among equals).
    next: AtomicUsize,
}

struct Thread {
    handle: Handle,
    /// Connections placed on it and not yet ended.
    live: Arc<AtomicUsize>,
}

/// Counts a connection on its thread until dropped.
struct Placed(Arc<AtomicUsize>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Aborts the connection's task when the future awaiting it is dropped (shutdown gave up
/// on it): a connection never outlives the front that accepted it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one) named `<name>-<i>`; they run for the life of
    /// the process.
    pub fn start(name: &str, count: usize) -> std::io::Result<Arc<ConnectionThreads>> {
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let thread_name = format!("{name}-{i}");
            // I/O and timers only: with the process driver enabled (`enable_all`), every
            // park of the thread also takes the orphan-process queue's lock to reap
            // children (~0.5 % of a busy broker's samples); connections start no processes
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .thread_name(thread_name.clone())
                .build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            threads.push(Thread {
                handle,
                live: Arc::default(),
            });
        }
        Ok(Arc::new(ConnectionThreads {
            threads,
            next: AtomicUsize::new(0),
        }))
    }

    /// Live connections on each thread, in order.
    pub fn load(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.live.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve` on the least busy thread, with `socket` moved to that thread's runtime.
    /// The returned future ends when the connection does; dropping it ends the connection.
    pub fn run<F, Fut>(&self, socket: TcpStream, serve: F) -> impl Future<Output = ()> + use<F, Fut>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let thread = self.least_busy();
        thread.live.fetch_add(1, Ordering::Relaxed);
        let placed = Placed(thread.live.clone());
        // out of this runtime's driver (registered again, on the thread's, below)
        let socket = socket.into_std();
        let task = thread.handle.spawn(async move {
            let _placed = placed;
            match socket.and_then(TcpStream::from_std) {
                Ok(socket) => serve(socket).await,
                Err(e) => tracing::warn!(error = %e, "cannot move a connection to its thread"),
            }
        });
        let task = AbortOnDrop(task);
        async move {
            let mut task = task;
            let _ = (&mut task.0).await;
        }
    }

    fn least_busy(&self) -> &Thread {
        let n = self.threads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = &self.threads[start];
        for i in 1..n {
            let t = &self.threads[(start + i) % n];
            if t.live.load(Ordering::Relaxed) < best.live.load(Ordering::Relaxed) {
                best = t;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair: (ours, the peer's end).
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (peer, ours) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap().0, peer.unwrap())
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5 s");
    }

    /// Connections are served on the threads, not the caller's, the least busy first; a
    /// thread's count falls when its connection ends.
    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_run_there() {
        let threads = ConnectionThreads::start("test-conn", 2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peers = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..4 {
            let (ours, peer) = pair(&listener).await;
            peers.push(peer);
            // echoes what it reads, prefixed with the name of the thread serving it
            runs.push(tokio::spawn(threads.run(ours, |mut s| async move {
                let mut buf = [0u8; 16];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let name = std::thread::current().name().unwrap_or("?").to_owned();
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = s.write_all(&reply).await;
                }
            })));
        }
        wait_for(|| threads.load() == [2, 2]).await;
        let mut names = Vec::new();
        for p in &mut peers {
            p.write_all(b"x").await.unwrap();
            // "test-conn-N:x"
            let mut got = [0u8; 13];
            p.read_exact(&mut got).await.unwrap();
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(text.ends_with(":x"), "{text}");
            names.push(text);
        }
        assert!(
            names.iter().all(|n| n.starts_with("test-conn-")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.starts_with("test-conn-0")));
        assert!(names.iter().any(|n| n.starts_with("test-conn-1")));
        // two connections of thread 0 end: the next two go there
        let zero: Vec<usize> = (0..4)
            .filter(|i| names[*i].starts_with("test-conn-0"))
            .collect();
        for i in zero.iter().rev() {
            drop(peers.remove(*i));
        }
        wait_for(|| threads.load() == [0, 2]).await;
        for _ in 0..2 {
            let (ours, peer) = pair(&listener).await;
            peers.push(peer);
            runs.push(tokio::spawn(threads.run(ours, |s| async move {
                let _ = s.readable().await;
                let _keep = s;
                std::future::pending::<()>().await
            })));
        }
        wait_for(|| threads.load() == [2, 2]).await;
    }

    /// Dropping the future `run` returned ends the connection on its thread: the peer sees
    /// the socket close, and the thread's count falls.
    #[tokio::test]
    async fn dropping_the_run_future_ends_the_connection() {
        let threads = ConnectionThreads::start("test-drop", 1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ours, mut peer) = pair(&listener).await;
        let run = tokio::spawn(threads.run(ours, |s| async move {
            let _keep = s;
            std::future::pending::<()>().await
        }));
        wait_for(|| threads.load() == [1]).await;
        run.abort();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf))
            .await
            .expect("the connection was not closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        wait_for(|| threads.load() == [0]).await;
    }
}
