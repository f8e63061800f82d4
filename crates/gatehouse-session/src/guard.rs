//! The session guard: the async driver of one session's `Enforcer`. It sleeps until the
//! enforcer's next wakeup (one tokio timer per session: no loop over sessions), folds in
//! operator activity, policy changes and admin kills, and carries out the directives on the
//! operator's channels through [`OperatorIo`]: warnings, the in-band lock prompt, the end.
//!
//! Activity is recorded lock-free by the connection handler ([`ActivityClock`]) and read
//! lazily when a deadline comes up, so a keystroke costs an atomic store, not a message.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::{Directive, EndReason, Enforcer, EnvPolicy, SessionState};
use gatehouse_store::GuardState;
use tokio::sync::{Notify, mpsc};

use crate::gate::SessionGate;
use tokio::time::Instant;

/// When the operator last did something, as nanoseconds since the session opened, plus one
/// (0: never). Written by the connection handler, read by the guard. Once the session is
/// registered with the node, a move is also reported to the node's heartbeat
/// ([`GuardMoves`]), once until the heartbeat reads it.
#[derive(Debug)]
pub struct ActivityClock {
    opened: Instant,
    last: AtomicU64,
    /// A move was reported and the heartbeat has not read the state since.
    reported: AtomicBool,
    /// Where moves are reported, and this session's key there.
    moves: OnceLock<(Arc<GuardMoves>, u64)>,
}

impl ActivityClock {
    pub fn new(opened: Instant) -> Self {
        ActivityClock {
            opened,
            last: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            moves: OnceLock::new(),
        }
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn touch(&self) {
        let at = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        // SeqCst here and in `moved`/`read_reported`: either the heartbeat's read sees this
        // keystroke, or this sees the flag it cleared and reports again
        self.last.fetch_max(at + 1, Ordering::SeqCst);
        self.moved();
    }

    /// Reports (once until the heartbeat reads it) that the session's state may have moved.
    fn moved(&self) {
        if let Some((moves, key)) = self.moves.get()
            && !self.reported.load(Ordering::SeqCst)
            && !self.reported.swap(true, Ordering::SeqCst)
        {
            moves.push(*key);
        }
    }

    fn last(&self) -> Option<Duration> {
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    fn now(&self) -> Duration {
        self.opened.elapsed()
    }
}

/// Guards whose state may have moved since the node's heartbeat last read them (keys of
/// their registrations), so that a beat reads and writes only those: reading every guard
/// every beat touched every live session's memory, and with thousands of idle sessions the
/// cache and TLB misses alone cost the node ~2 % of a core (3,000 sessions).
#[derive(Debug, Default)]
pub struct GuardMoves {
    keys: Mutex<Vec<u64>>,
    /// Told when a session locks or unlocks, so that the heartbeat writes the new state at
    /// once instead of at its next tick.
    pub transitions: Notify,
}

impl GuardMoves {
    fn push(&self, key: u64) {
        if let Ok(mut k) = self.keys.lock() {
            k.push(key);
        }
    }

    /// The keys reported since the last call (each once).
    pub fn take(&self) -> Vec<u64> {
        let mut keys = self
            .keys
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// What a guard knows, readable without asking it (the node's heartbeat writes it to the
/// store for reviewers): a copy of its enforcer, taken after every step the guard makes,
/// read together with the activity clock (activity reaches the enforcer lazily).
#[derive(Debug)]
pub struct GuardStatus {
    clock: Arc<ActivityClock>,
    enforcer: Mutex<Enforcer>,
}

impl GuardStatus {
    pub(crate) fn new(clock: Arc<ActivityClock>, enforcer: Enforcer) -> GuardStatus {
        GuardStatus {
            clock,
            enforcer: Mutex::new(enforcer),
        }
    }

    /// From now on, moves of this session (activity, any step of its guard) are reported to
    /// `moves` under `key` (set once; the first report is made at once).
    pub fn report_moves_to(&self, moves: Arc<GuardMoves>, key: u64) {
        if self.clock.moves.set((moves, key)).is_ok() {
            self.clock.moved();
        }
    }

    fn publish(&self, enforcer: &Enforcer) {
        let Ok(mut copy) = self.enforcer.lock() else {
            return;
        };
        let moved = copy.is_locked() != enforcer.is_locked();
        copy.clone_from(enforcer);
        drop(copy);
        self.clock.moved();
        if moved && let Some((moves, _)) = self.clock.moves.get() {
            moves.transitions.notify_one();
        }
    }

    /// As [`read`](Self::read), and the next move is reported again (the heartbeat's read).
    pub fn read_reported(&self, wall_now: i64) -> Option<GuardState> {
        self.clock.reported.store(false, Ordering::SeqCst);
        self.read(wall_now)
    }

    /// The state now, `wall_now` being the wall clock now (Unix ms).
    pub fn read(&self, wall_now: i64) -> Option<GuardState> {
        let mut e = self.enforcer.lock().ok()?.clone();
        if e.is_ended() {
            return None;
        }
        let now = self.clock.now();
        if let Some(at) = self.clock.last()
            && at > e.last_activity()
        {
            e.activity(at);
        }
        let wall = |t: Duration| {
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if t >= now {
                wall_now.saturating_add(ms(t - now))
            } else {
                wall_now.saturating_sub(ms(now - t))
            }
        };
        Some(GuardState {
            last_activity_at: wall(e.last_activity()),
            locked_since: e.locked_since().map(wall),
            next_limit: e.next_limit().map(|(kind, at)| (kind, wall(at))),
        })
    }
}

/// The sending side of a guard's queue of [`GuardEvent`]s. Events are boxed one by one:
/// tokio allocates a queue's first 32 slots when it is made (1.3 KiB of 40-byte events per
/// session, nearly all unused while the session idles); boxed, 256 bytes (memory per live
/// session).
#[derive(Debug)]
pub struct GuardEvents<C>(mpsc::UnboundedSender<Box<GuardEvent<C>>>);

impl<C> Clone for GuardEvents<C> {
    fn clone(&self) -> Self {
        GuardEvents(self.0.clone())
    }
}

/// The guard has ended: nobody will read the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardGone;

impl<C> GuardEvents<C> {
    /// A new queue: its sending side, and the receiving side for [`Guard::run`].
    pub fn new() -> (GuardEvents<C>, GuardInbox<C>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (GuardEvents(tx), GuardInbox(rx))
    }

    /// Queues `event` for the guard; never waits.
    pub fn send(&self, event: GuardEvent<C>) -> Result<(), GuardGone> {
        self.0.send(Box::new(event)).map_err(|_| GuardGone)
    }
}

/// The receiving side of a guard's queue (see [`GuardEvents`]).
#[derive(Debug)]
pub struct GuardInbox<C>(mpsc::UnboundedReceiver<Box<GuardEvent<C>>>);

/// What the guard is told by the rest of the broker.
#[derive(Debug)]
pub enum GuardEvent<C> {
    /// A shell, exec or subsystem started on a channel (`pty`: it has a terminal).
    ChannelStarted {
        channel: C,
        pty: bool,
    },
    ChannelClosed {
        channel: C,
    },
    /// Keystrokes typed while the session is locked: answers to the prompt.
    LockInput(Bytes),
    /// Boxed: the largest event by far, and rare; the guard's queue allocates room for 32
    /// events of the largest size when it is made (memory per live session).
    Policy(Box<EnvPolicy>),
    Kill(EndReason),
}

/// The operator's side of the session, as the guard acts on it.
pub trait OperatorIo<C>: Send + Sync + 'static {
    /// Writes `text` on a channel: to the terminal (`stderr` false) or to stderr.
    fn write(&self, channel: C, stderr: bool, text: String) -> impl Future<Output = ()> + Send;
    /// Tells the operator something (a warning) on a channel, as its protocol shows notices:
    /// by default a `[gatehouse] …` line on the terminal, or on stderr without a pty.
    fn notice(&self, channel: C, pty: bool, text: &str) -> impl Future<Output = ()> + Send {
        self.write(channel, !pty, format!("\r\n[gatehouse] {text}\r\n"))
    }
    /// Ends the session for `reason`: tells the operator `message` on each channel (with
    /// whether it has a pty), closes them and disconnects.
    fn end(
        &self,
        channels: Vec<(C, bool)>,
        reason: &EndReason,
        message: String,
    ) -> impl Future<Output = ()> + Send;
}

/// Checks an answer typed at the lock prompt.
pub trait Reauthenticator: Send + Sync + 'static {
    /// Whether the operator can reauthenticate in-band at all (has a password).
    fn available(&self) -> bool;
    fn check_password(&self, answer: String) -> impl Future<Output = bool> + Send;
    /// Whether a TOTP code is asked after the password.
    fn wants_code(&self) -> bool;
    fn check_code(&self, answer: String) -> impl Future<Output = bool> + Send;
}

/// What the guard reports about directives it carried out (audit, registry).
/// Called as each directive is carried out; it must not wait (no store round trip on the
/// enforcement path: queue the audit write, see `audit_directive`).
pub trait GuardObserver: Send + Sync + 'static {
    fn directive(&self, directive: &Directive);
}

const MAX_ANSWER: usize = 1024;

pub struct Guard<C, O, R, B> {
    pub enforcer: Enforcer,
    pub clock: Arc<ActivityClock>,
    pub io: O,
    pub reauth: R,
    pub observer: B,
    pub lock: Arc<SessionGate>,
    pub operator: String,
    status: Arc<GuardStatus>,
    channels: BTreeMap<C, bool>,
    synced_activity: Option<Duration>,
    answer: Vec<u8>,
    /// After the password was typed (and a code is due): whether it was right.
    password_ok: Option<bool>,
}

impl<C, O, R, B> Guard<C, O, R, B>
where
    C: Copy + Ord + Send + Sync + 'static,
    O: OperatorIo<C>,
    R: Reauthenticator,
    B: GuardObserver,
{
    pub fn new(
        policy: EnvPolicy,
        clock: Arc<ActivityClock>,
        io: O,
        reauth: R,
        observer: B,
        lock: Arc<SessionGate>,
        operator: String,
    ) -> Self {
        let enforcer = Enforcer::new(policy);
        Guard {
            status: Arc::new(GuardStatus::new(clock.clone(), enforcer.clone())),
            enforcer,
            clock,
            io,
            reauth,
            observer,
            lock,
            operator,
            channels: BTreeMap::new(),
            synced_activity: None,
            answer: Vec::new(),
            password_ok: None,
        }
    }

    /// What the guard knows, readable from outside while it runs.
    pub fn status(&self) -> Arc<GuardStatus> {
        self.status.clone()
    }

    /// Runs until the session ends (by a directive, or because `events` closed).
    ///
    /// An `async move` block, not an `async fn`: an async fn's future keeps its arguments
    /// twice (as arguments and as locals), and this future is the guard's task for the
    /// whole session (memory per live session).
    #[allow(clippy::manual_async_fn)] // on purpose, as said above
    pub fn run(mut self, mut events: GuardInbox<C>) -> impl std::future::Future<Output = ()> {
        async move {
            let opened = self.clock.opened;
            loop {
                self.status.publish(&self.enforcer);
                if self.enforcer.is_ended() {
                    return;
                }
                let wake = self.enforcer.next_wakeup().map(|o| opened + o);
                tokio::select! {
                    biased;
                    event = events.0.recv() => match event {
                        Some(e) => self.on_event(*e).await,
                        None => return,
                    },
                    () = sleep_until_opt(wake) => {
                        if let Some(due) = wake {
                            crate::metrics::enforcement_late(Instant::now().saturating_duration_since(due));
                        }
                        self.on_wakeup().await
                    }
                }
            }
        }
    }

    fn sync_activity(&mut self) {
        if let Some(at) = self.clock.last()
            && Some(at) > self.synced_activity
        {
            self.synced_activity = Some(at);
            self.enforcer.activity(at);
        }
    }

    async fn on_wakeup(&mut self) {
        self.sync_activity();
        let now = self.clock.now();
        // activity since we went to sleep may have moved the deadline out
        if self.enforcer.next_wakeup().is_some_and(|w| w > now) {
            return;
        }
        for d in self.enforcer.poll(now) {
            self.carry_out(d).await;
        }
    }

    async fn on_event(&mut self, event: GuardEvent<C>) {
        match event {
            GuardEvent::ChannelStarted { channel, pty } => {
                self.channels.insert(channel, pty);
                self.clock.touch();
                self.update_lock_capability();
            }
            GuardEvent::ChannelClosed { channel } => {
                self.channels.remove(&channel);
                self.update_lock_capability();
            }
            GuardEvent::Policy(policy) => {
                self.sync_activity();
                let now = self.clock.now();
                self.enforcer.set_policy(*policy, now);
            }
            GuardEvent::Kill(reason) => {
                let d = self.enforcer.kill(reason);
                self.carry_out(d).await;
            }
            GuardEvent::LockInput(bytes) => self.on_lock_input(&bytes).await,
        }
    }

    async fn on_lock_input(&mut self, bytes: &[u8]) {
        if !self.enforcer.is_locked() {
            return;
        }
        for &b in bytes {
            match b {
                b'\r' | b'\n' => {
                    let answer = String::from_utf8_lossy(&self.answer).into_owned();
                    self.answer.iter_mut().for_each(|b| *b = 0);
                    self.answer.clear();
                    let ok = match self.password_ok.take() {
                        None if self.reauth.wants_code() => {
                            // ask for the code whether or not the password was right, so
                            // the prompt does not tell which of the two was wrong
                            self.password_ok = Some(self.reauth.check_password(answer).await);
                            self.prompt().await;
                            continue;
                        }
                        None => self.reauth.check_password(answer).await,
                        Some(password_ok) => self.reauth.check_code(answer).await && password_ok,
                    };
                    let now = self.clock.now();
                    if let Some(d) = self.enforcer.unlock_attempt(ok, now) {
                        self.carry_out(d).await;
                    }
                    if !self.enforcer.is_locked() {
                        return; // the rest of this input is not a password
                    }
                }
                0x7f | 0x08 => {
                    self.answer.pop();
                }
                0x15 | 0x03 => self.answer.clear(), // Ctrl-U, Ctrl-C: start over
                _ if self.answer.len() < MAX_ANSWER => self.answer.push(b),
                _ => {}
            }
        }
    }

    /// A session can be locked in-band while it has a terminal and the operator a password.
    fn update_lock_capability(&mut self) {
        let lockable = self.prompt_channel().is_some() && self.reauth.available();
        self.enforcer.set_lock_capable(lockable);
    }

    /// The terminal channel the lock prompt is shown on.
    fn prompt_channel(&self) -> Option<C> {
        self.channels.iter().find_map(|(c, pty)| pty.then_some(*c))
    }

    async fn say(&self, text: &str) {
        for (&channel, &pty) in &self.channels {
            self.io.notice(channel, pty, text).await;
        }
    }

    async fn prompt(&self) {
        let text = if self.password_ok.is_some() {
            "\r\n[gatehouse] TOTP code: ".to_owned()
        } else {
            format!("[gatehouse] password for {}: ", self.operator)
        };
        if let Some(c) = self.prompt_channel() {
            self.io.write(c, false, text).await;
        }
    }

    async fn carry_out(&mut self, d: Directive) {
        // The gate moves first: no operator action may slip through while the directive's
        // messages are written (a client that stops reading can make that take a while).
        match &d {
            Directive::Lock { .. } => self.lock.set(SessionState::Locked),
            Directive::End { message, .. } => self.lock.end_with(message),
            _ => {}
        }
        self.observer.directive(&d);
        match &d {
            Directive::Warn { message, .. } => self.say(message).await,
            Directive::Lock { message, .. } => {
                self.answer.clear();
                self.password_ok = None;
                if let Some(c) = self.prompt_channel() {
                    self.io
                        .write(
                            c,
                            false,
                            format!("\r\n[gatehouse] {message}; enter your password to resume\r\n"),
                        )
                        .await;
                }
                self.prompt().await;
            }
            Directive::UnlockFailed { attempts_left } => {
                if let Some(c) = self.prompt_channel() {
                    let s = if *attempts_left == 1 { "" } else { "s" };
                    let what = if self.reauth.wants_code() {
                        "wrong password or code"
                    } else {
                        "wrong password"
                    };
                    self.io
                        .write(
                            c,
                            false,
                            format!("\r\n[gatehouse] {what}; {attempts_left} attempt{s} left\r\n"),
                        )
                        .await;
                }
                self.prompt().await;
            }
            Directive::Unlocked => {
                if let Some(c) = self.prompt_channel() {
                    self.io
                        .write(
                            c,
                            false,
                            "\r\n[gatehouse] unlocked; resuming (Ctrl-L redraws the screen)\r\n"
                                .into(),
                        )
                        .await;
                }
                self.lock.set(SessionState::Open);
            }
            Directive::End { reason, message } => {
                let channels = self.channels.iter().map(|(c, p)| (*c, *p)).collect();
                self.io.end(channels, reason, message.clone()).await;
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
