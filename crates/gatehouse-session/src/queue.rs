//! The node's start queue: how many sessions may be in the expensive part of starting at
//! once (registering in the store, logging in to the target), the others waiting in line.
//!
//! A login storm (Ansible with `forks=100`, a CI fleet, a reconnect wave) otherwise starts
//! every session's store writes and target handshake at the same moment: the store's pool
//! times out, the targets' `sshd`s fork hundreds of processes that starve each other (and
//! this broker) of CPU, and target logins fail their timeouts. In line, each start gets the
//! machine's full speed and the storm is served at the rate the targets sustain. A queue is
//! bounded in time, not length: a session that has waited [`StartQueue::max_wait`] is refused
//! with a message saying so (nothing was run), never left hanging.
//!
//! A slot is held only while Gatehouse itself works (the store registration, the target's
//! login), never while it waits for the client, so a client that authenticates and then
//! sits cannot take a slot away from others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default [`StartQueue`] width: sessions starting at once.
pub const DEFAULT_MAX_STARTING: u32 = 16;
/// Default longest wait in the start queue.
pub const DEFAULT_START_WAIT: Duration = Duration::from_secs(180);

/// The node's start queue, shared by all its fronts (see the module comment).
#[derive(Debug)]
pub struct StartQueue {
    slots: Arc<Semaphore>,
    width: usize,
    max_wait: Duration,
    waiting: AtomicUsize,
}

/// A place among the sessions starting now; the next in line moves up when it is dropped.
#[derive(Debug)]
pub struct StartSlot {
    _permit: OwnedSemaphorePermit,
}

/// The queue did not move within [`StartQueue::max_wait`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTimeout {
    pub waited: Duration,
    /// Sessions that were waiting when this one gave up (itself included).
    pub waiting: usize,
}

impl QueueTimeout {
    /// What the operator is told: nothing ran, the broker was busy, when to try again.
    pub fn operator_message(&self) -> String {
        format!(
            "Gatehouse is too busy to open the session now ({} sessions were waiting to start \
             and this one waited {}s); nothing was run. Try again in a moment.",
            self.waiting,
            self.waited.as_secs()
        )
    }
}

impl StartQueue {
    /// `width` sessions start at once (at least one); a session waits at most `max_wait`.
    pub fn new(width: u32, max_wait: Duration) -> Arc<Self> {
        let width = usize::try_from(width.max(1)).unwrap_or(usize::MAX);
        Arc::new(StartQueue {
            slots: Arc::new(Semaphore::new(width)),
            width,
            max_wait,
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Sessions waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a slot, first come first served, at most [`StartQueue::max_wait`].
    pub async fn enter(&self) -> Result<StartSlot, QueueTimeout> {
        // the uncontended case costs no bookkeeping
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(StartSlot { _permit: permit });
        }
        let started = tokio::time::Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        crate::metrics::start_queue_waiting(true);
        let acquired =
            tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await;
        let left = self.waiting.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::start_queue_waiting(false);
        let waited = started.elapsed();
        match acquired {
            Ok(Ok(permit)) => {
                crate::metrics::start_queue_waited(waited, true);
                Ok(StartSlot { _permit: permit })
            }
            // the semaphore is never closed; treated as a timeout all the same
            Ok(Err(_)) | Err(_) => {
                crate::metrics::start_queue_waited(waited, false);
                tracing::warn!(
                    waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    waiting = left,
                    "start queue did not move in time: session refused"
                );
                Err(QueueTimeout {
                    waited,
                    waiting: left,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_beyond_the_width_wait_in_line_and_move_up_in_order() {
        let q = StartQueue::new(2, Duration::from_secs(60));
        let a = q.enter().await.expect("first slot");
        let _b = q.enter().await.expect("second slot");
        let q1 = q.clone();
        let third =
            tokio::spawn(async move { q1.enter().await.map(|_| tokio::time::Instant::now()) });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let q2 = q.clone();
        let fourth = tokio::spawn(async move {
            let s = q2.enter().await;
            (s.is_ok(), tokio::time::Instant::now())
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(q.waiting(), 2, "both wait while the two slots are held");
        let freed_at = tokio::time::Instant::now();
        drop(a);
        let got = third
            .await
            .expect("task")
            .expect("third gets the freed slot");
        assert_eq!(got, freed_at, "the first in line moves up at once");
        // the third's slot was dropped at the end of its task: the fourth moves up too
        let (ok, _) = fourth.await.expect("task");
        assert!(ok);
        assert_eq!(q.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_waited_max_wait_is_refused_with_a_message_saying_so() {
        let q = StartQueue::new(1, Duration::from_secs(180));
        let _held = q.enter().await.expect("slot");
        let began = tokio::time::Instant::now();
        let err = q.enter().await.expect_err("the queue does not move");
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(180),
            "exactly max_wait"
        );
        assert_eq!(err.waiting, 1);
        let m = err.operator_message();
        assert!(
            m.contains("too busy") && m.contains("nothing was run") && m.contains("180s"),
            "{m}"
        );
        assert_eq!(
            q.waiting(),
            0,
            "a session that gave up is no longer counted"
        );
    }

    #[test]
    fn a_width_of_zero_still_lets_one_session_start() {
        let q = StartQueue::new(0, Duration::from_secs(1));
        assert_eq!(q.width(), 1);
    }
}
