//! The guard on tokio's paused clock: limits are exact to the millisecond, and nothing waits
//! in real time.

use std::sync::Mutex;

use gatehouse_core::IdleAction;

use super::*;

const S: Duration = Duration::from_secs(1);
const M: Duration = Duration::from_secs(60);

/// A line written to the operator: when, on which channel, to stderr or not, and what.
type Written = (Duration, u32, bool, String);

#[derive(Clone, Default)]
struct Recorder {
    lines: Arc<Mutex<Vec<Written>>>,
    disconnected: Arc<Mutex<Option<(Duration, String)>>>,
    observed: Arc<Mutex<Vec<Directive>>>,
    opened: Arc<Mutex<Option<Instant>>>,
}

impl Recorder {
    fn at(&self) -> Duration {
        self.opened.lock().unwrap().unwrap().elapsed()
    }
    fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.3.clone())
            .collect()
    }
}

impl OperatorIo<u32> for Recorder {
    async fn write(&self, channel: u32, stderr: bool, text: String) {
        let at = self.at();
        self.lines.lock().unwrap().push((at, channel, stderr, text));
    }
    async fn end(&self, channels: Vec<(u32, bool)>, _reason: &EndReason, message: String) {
        let at = self.at();
        for (c, pty) in channels {
            let line = format!("\r\n[gatehouse] {message}\r\n");
            self.lines.lock().unwrap().push((at, c, !pty, line));
        }
        *self.disconnected.lock().unwrap() = Some((at, message));
    }
}

impl GuardObserver for Recorder {
    fn directive(&self, d: &Directive) {
        self.observed.lock().unwrap().push(d.clone());
    }
}

struct Password(Option<&'static str>, Option<&'static str>);

impl Reauthenticator for Password {
    fn available(&self) -> bool {
        self.0.is_some()
    }
    async fn check_password(&self, answer: String) -> bool {
        Some(answer.as_str()) == self.0
    }
    fn wants_code(&self) -> bool {
        self.1.is_some()
    }
    async fn check_code(&self, answer: String) -> bool {
        Some(answer.as_str()) == self.1
    }
}

struct Harness {
    rec: Recorder,
    status: Arc<GuardStatus>,
    clock: Arc<ActivityClock>,
    lock: Arc<SessionGate>,
    tx: GuardEvents<u32>,
    task: tokio::task::JoinHandle<()>,
}

fn start(policy: EnvPolicy, password: Option<&'static str>) -> Harness {
    start_with_code(policy, password, None)
}

fn start_with_code(
    policy: EnvPolicy,
    password: Option<&'static str>,
    code: Option<&'static str>,
) -> Harness {
    let opened = Instant::now();
    let rec = Recorder::default();
    *rec.opened.lock().unwrap() = Some(opened);
    let clock = Arc::new(ActivityClock::new(opened));
    let lock = SessionGate::new();
    let guard = Guard::new(
        policy,
        clock.clone(),
        rec.clone(),
        Password(password, code),
        rec.clone(),
        lock.clone(),
        "alice".into(),
    );
    let (tx, rx) = GuardEvents::new();
    let status = guard.status();
    let task = tokio::spawn(guard.run(rx));
    Harness {
        rec,
        status,
        clock,
        lock,
        tx,
        task,
    }
}

/// Lets the guard task run at the current (paused) instant.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

/// A terminal session with a 10 s idle limit that locks, already idle long enough to be locked.
async fn locked_after_10s_idle(
    password: Option<&'static str>,
    code: Option<&'static str>,
) -> Harness {
    let mut p = idle_policy(10 * S, &[]);
    p.idle_action = IdleAction::Lock;
    let h = start_with_code(p, password, code);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    advance(10 * S).await;
    h
}

fn idle_policy(idle: Duration, warn: &[Duration]) -> EnvPolicy {
    EnvPolicy {
        idle_timeout: Some(idle),
        warn_before: warn.to_vec(),
        ..Default::default()
    }
    .validated()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn fifteen_minute_idle_limit_is_exact() {
    let h = start(idle_policy(15 * M, &[M]), None);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    advance(14 * M - Duration::from_millis(1)).await;
    assert!(h.rec.lines.lock().unwrap().is_empty());
    advance(Duration::from_millis(1)).await;
    {
        let lines = h.rec.lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, 14 * M);
        assert_eq!(
            lines[0].3,
            "\r\n[gatehouse] idle for 14m — this session closes in 1m; press any key to stay\r\n"
        );
        assert!(!lines[0].2, "pty: written to the terminal, not stderr");
    }
    advance(M - Duration::from_millis(1)).await;
    assert!(h.rec.disconnected.lock().unwrap().is_none());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        *h.rec.disconnected.lock().unwrap(),
        Some((15 * M, "idle timeout 15m reached".into()))
    );
    h.task.await.unwrap();
    assert!(h.lock.is_closed());
}

#[tokio::test(start_paused = true)]
async fn keystrokes_keep_it_alive_and_without_pty_warnings_go_to_stderr() {
    let h = start(idle_policy(10 * S, &[2 * S]), None);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 3,
        pty: false,
    })
    .unwrap();
    settle().await;
    // a keystroke every 7 s: always before the warning (due 8 s after the last one)
    for _ in 0..5 {
        advance(7 * S).await;
        h.clock.touch();
    }
    assert!(h.rec.lines.lock().unwrap().is_empty(), "{}", h.rec.text());
    advance(8 * S).await;
    let lines = h.rec.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].0, lines[0].1, lines[0].2), (43 * S, 3, true));
    advance(2 * S).await;
    assert_eq!(
        h.rec.disconnected.lock().unwrap().as_ref().unwrap().0,
        45 * S
    );
}

#[tokio::test(start_paused = true)]
async fn lock_unlock_with_the_password_and_the_prompt_never_echoes() {
    let h = locked_after_10s_idle(Some("hunter2"), None).await;
    assert!(h.lock.is_locked());
    assert!(
        h.rec
            .text()
            .contains("session locked after 10s idle; enter your password to resume")
    );
    assert!(h.rec.text().ends_with("[gatehouse] password for alice: "));
    // typed with a typo corrected by backspace
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"hunter3\x7f2\r")))
        .unwrap();
    settle().await;
    assert!(!h.lock.is_locked());
    assert!(h.rec.text().contains("unlocked; resuming"));
    assert!(!h.rec.text().contains("hunter"), "the password was echoed");
    // idle counts again from the unlock
    advance(10 * S).await;
    assert!(h.lock.is_locked());
    let observed = h.rec.observed.lock().unwrap().clone();
    assert!(matches!(
        observed[..],
        [
            Directive::Lock { .. },
            Directive::Unlocked,
            Directive::Lock { .. }
        ]
    ));
}

#[tokio::test(start_paused = true)]
async fn three_wrong_passwords_end_the_session() {
    let h = locked_after_10s_idle(Some("right"), None).await;
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"a\rb\r")))
        .unwrap();
    settle().await;
    assert!(h.rec.text().contains("wrong password; 1 attempt left"));
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"c\r")))
        .unwrap();
    settle().await;
    assert_eq!(
        h.rec
            .disconnected
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| d.1.clone()),
        Some("reauthentication failed".into())
    );
}

#[tokio::test(start_paused = true)]
async fn lock_without_a_password_disconnects() {
    let h = locked_after_10s_idle(None, None).await;
    assert_eq!(
        h.rec.disconnected.lock().unwrap().clone(),
        Some((10 * S, "idle timeout 10s reached".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn policy_change_and_admin_kill_reach_the_live_session() {
    let h = start(idle_policy(15 * M, &[]), None);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    advance(5 * M).await;
    h.tx.send(GuardEvent::Policy(Box::new(idle_policy(2 * M, &[]))))
        .unwrap();
    settle().await;
    assert!(h.rec.text().contains("closes in 1s"), "{}", h.rec.text());
    advance(S).await;
    assert_eq!(
        h.rec.disconnected.lock().unwrap().clone(),
        Some((5 * M + S, "idle timeout 2m reached".into()))
    );

    let h = start(EnvPolicy::default(), None);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    advance(3 * M).await;
    h.tx.send(GuardEvent::Kill(EndReason::AdminKill("incident".into())))
        .unwrap();
    settle().await;
    assert_eq!(
        h.rec.disconnected.lock().unwrap().clone(),
        Some((3 * M, "terminated by admin: incident".into()))
    );
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn enrolled_operators_answer_password_then_code() {
    let h = locked_after_10s_idle(Some("pw"), Some("123456")).await;
    // wrong password, right code: refused without saying which
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"nope\r")))
        .unwrap();
    settle().await;
    assert!(
        h.rec.text().ends_with("[gatehouse] TOTP code: "),
        "{}",
        h.rec.text()
    );
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"123456\r")))
        .unwrap();
    settle().await;
    assert!(
        h.rec
            .text()
            .contains("wrong password or code; 2 attempts left")
    );
    assert!(h.lock.is_locked());
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"pw\r123456\r")))
        .unwrap();
    settle().await;
    assert!(!h.lock.is_locked(), "{}", h.rec.text());
}

#[tokio::test(start_paused = true)]
async fn max_session_ends_an_active_session_and_reauth_locks_it() {
    let p = EnvPolicy {
        idle_timeout: Some(10 * M),
        max_session: Some(8 * 60 * M),
        warn_before: vec![5 * M],
        ..Default::default()
    }
    .validated()
    .unwrap();
    let h = start(p, None);
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    // a keystroke every 30 s for 8 hours
    for _ in 0..(8 * 60 * 2) {
        advance(30 * S).await;
        h.clock.touch();
    }
    let disconnected = h.rec.disconnected.lock().unwrap().clone();
    assert_eq!(
        disconnected,
        Some((8 * 60 * M, "maximum session length 8h reached".into()))
    );
    assert!(
        h.rec
            .text()
            .contains("reaches its maximum length of 8h in 5m")
    );

    let p = EnvPolicy {
        reauth_after: Some(12 * 60 * M),
        warn_before: vec![M],
        ..Default::default()
    }
    .validated()
    .unwrap();
    let h = start(p, Some("pw"));
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    advance(12 * 60 * M - M).await;
    assert!(h.rec.text().contains("reauthentication required in 1m"));
    h.clock.touch();
    advance(M).await;
    assert!(
        h.lock.is_locked(),
        "activity does not postpone reauthentication"
    );
    h.tx.send(GuardEvent::LockInput(Bytes::from_static(b"pw\r")))
        .unwrap();
    settle().await;
    assert!(!h.lock.is_locked());
}

#[tokio::test(start_paused = true)]
async fn its_status_reads_activity_the_lock_and_the_next_limit_without_asking_it() {
    use gatehouse_core::WarnKind;
    let mut p = idle_policy(10 * S, &[]);
    p.idle_action = IdleAction::Lock;
    p.reauth_after = Some(M);
    p.lock_grace = 30 * S;
    let h = start(p, Some("pw"));
    let moves = Arc::new(crate::GuardMoves::default());
    h.status.report_moves_to(moves.clone(), 7);
    assert_eq!(moves.take(), [7], "reported once registered");
    h.tx.send(GuardEvent::ChannelStarted {
        channel: 0,
        pty: true,
    })
    .unwrap();
    settle().await;
    // the wall clock reads `wall` whenever the status is read
    let wall = 1_000_000;
    advance(4 * S).await;
    let _ = moves.take();
    let s = h.status.read_reported(wall).unwrap();
    assert!(moves.take().is_empty(), "nothing moved since the last read");
    h.clock.touch(); // the guard has not seen this keystroke yet; the status has
    h.clock.touch();
    assert_eq!(
        moves.take(),
        [7],
        "a move is reported once until it is read"
    );
    h.clock.touch();
    assert!(moves.take().is_empty());
    advance(S).await;
    let s2 = h.status.read_reported(wall).unwrap();
    assert_ne!(s, s2);
    let s = s2;
    assert_eq!(s.last_activity_at, wall - 1_000);
    assert_eq!(s.locked_since, None);
    assert_eq!(s.next_limit, Some((WarnKind::Idle, wall + 9_000)));
    // idle 10 s after the keystroke: locked at 14 s, and the heartbeat is told at once
    advance(9 * S).await;
    assert!(h.lock.is_locked());
    let s = h.status.read(wall).unwrap();
    assert_eq!(s.locked_since, Some(wall));
    // locked: the reauthentication deadline is the end of the lock grace
    assert_eq!(s.next_limit, Some((WarnKind::Reauth, wall + 30_000)));
    assert_eq!(moves.take(), [7], "the guard's steps are reported");
    tokio::time::timeout(Duration::ZERO, moves.transitions.notified())
        .await
        .expect("the lock was told");
}
