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

/// The node's limit on live sessions (both fronts): a session holds a [`SessionRoom`] from
/// its admission to its end. The default is what the process's open-files limit leaves
/// room for (see [`crate::open_files`]): past it, a session would meet `EMFILE` somewhere in
/// its start (the target's socket, the recording), so it is refused at once, with a message
/// saying why, before anything reaches the target.
#[derive(Debug)]
pub struct SessionLimit {
    rooms: Arc<Semaphore>,
    max: usize,
}

/// One live session's place under the [`SessionLimit`]; freed when dropped.
#[derive(Debug)]
pub struct SessionRoom {
    _permit: OwnedSemaphorePermit,
}

/// The node holds [`SessionLimit::max`] live sessions already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimitReached {
    pub max: usize,
}

impl SessionLimit {
    /// At most `max` live sessions (capped at what a semaphore can count).
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.min(Semaphore::MAX_PERMITS);
        Arc::new(SessionLimit {
            rooms: Arc::new(Semaphore::new(max)),
            max,
        })
    }

    /// No limit but a semaphore's (library users and tests; `serve` sets one).
    pub fn unlimited() -> Arc<Self> {
        Self::new(Semaphore::MAX_PERMITS)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Live sessions holding a room now.
    pub fn live(&self) -> usize {
        self.max - self.rooms.available_permits()
    }

    /// The connection holding `slot` becomes a session: a room for it, its login slot
    /// released to the next connection waiting; or at once the reason there is no room
    /// (the slot kept until the connection ends).
    pub fn admit(&self, slot: &mut crate::LoginSlot) -> Result<SessionRoom, SessionLimitReached> {
        let room = self.take()?;
        slot.release();
        Ok(room)
    }

    /// A room for one more live session, or at once the reason there is none (never waits:
    /// a full node frees rooms only as sessions end, which can take hours).
    pub fn take(&self) -> Result<SessionRoom, SessionLimitReached> {
        match self.rooms.clone().try_acquire_owned() {
            Ok(permit) => Ok(SessionRoom { _permit: permit }),
            Err(_) => {
                tracing::warn!(max = self.max, "session limit reached: session refused");
                Err(SessionLimitReached { max: self.max })
            }
        }
    }
}

/// Why a login was turned away before its session was registered, the node being busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// The start queue did not move in time.
    Queue(QueueTimeout),
    /// The node is at its live-session limit.
    Full(SessionLimitReached),
}

impl From<QueueTimeout> for Busy {
    fn from(q: QueueTimeout) -> Self {
        Busy::Queue(q)
    }
}

impl From<SessionLimitReached> for Busy {
    fn from(f: SessionLimitReached) -> Self {
        Busy::Full(f)
    }
}

impl Busy {
    /// What the operator is told: nothing ran, why, when to try again.
    pub fn operator_message(&self) -> String {
        match self {
            Busy::Queue(q) => q.operator_message(),
            Busy::Full(f) => format!(
                "Gatehouse is at its limit of {} live sessions on this node; nothing was run. \
                 Try again when a session has ended, or through another node.",
                f.max
            ),
        }
    }

    /// The session's end reason, as the store keeps it.
    pub fn end_reason(&self) -> String {
        match self {
            Busy::Queue(q) => format!("start queue: no slot within {}s", q.waited.as_secs()),
            Busy::Full(f) => format!("session limit: {} live sessions", f.max),
        }
    }

    /// The `access_denied` audit event's fields besides target and protocol.
    pub fn audit_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("reason".into(), "busy".into());
        match self {
            Busy::Queue(q) => {
                let waited = u64::try_from(q.waited.as_millis()).unwrap_or(u64::MAX);
                m.insert("waited_ms".into(), waited.into());
                m.insert("waiting".into(), q.waiting.into());
            }
            Busy::Full(f) => {
                m.insert("max_sessions".into(), f.max.into());
            }
        }
        m
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
    fn past_the_session_limit_a_session_is_refused_at_once_and_an_end_frees_a_room() {
        let limit = SessionLimit::new(2);
        let a = limit.take().expect("first");
        let _b = limit.take().expect("second");
        assert_eq!(limit.live(), 2);
        let full = limit.take().expect_err("a third live session");
        assert_eq!(full, SessionLimitReached { max: 2 });
        let m = Busy::from(full.clone()).operator_message();
        assert!(
            m.contains("limit of 2 live sessions") && m.contains("nothing was run"),
            "{m}"
        );
        assert_eq!(Busy::from(full).audit_fields()["max_sessions"], 2);
        drop(a);
        assert_eq!(limit.live(), 1);
        let _c = limit.take().expect("the ended session's room");
        assert_eq!(SessionLimit::unlimited().max(), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn a_width_of_zero_still_lets_one_session_start() {
        let q = StartQueue::new(0, Duration::from_secs(1));
        assert_eq!(q.width(), 1);
    }
}
