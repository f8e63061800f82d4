//! Support for the enforcement-lateness benchmark (`cargo bench -p gatehouse-session`): runs
//! many real guards on real tokio timers and reports how late each session ended. Not part
//! of the broker's API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::{Directive, EndReason, EnvPolicy};
use tokio::time::Instant;

use crate::gate::SessionGate;
use crate::guard::{
    ActivityClock, Guard, GuardEvent, GuardEvents, GuardObserver, OperatorIo, Reauthenticator,
};

#[derive(Clone)]
struct EndClock(Arc<Mutex<Option<Instant>>>);

impl OperatorIo<u32> for EndClock {
    async fn write(&self, _channel: u32, _stderr: bool, _text: String) {}
    async fn end(&self, _channels: Vec<(u32, bool)>, _reason: &EndReason, _message: String) {
        if let Ok(mut e) = self.0.lock() {
            e.get_or_insert_with(Instant::now);
        }
    }
}

impl GuardObserver for EndClock {
    fn directive(&self, _d: &Directive) {}
}

struct NoReauth;

impl Reauthenticator for NoReauth {
    fn available(&self) -> bool {
        false
    }
    async fn check_password(&self, _answer: String) -> bool {
        false
    }
    fn wants_code(&self) -> bool {
        false
    }
    async fn check_code(&self, _answer: String) -> bool {
        false
    }
}

/// Starts `sessions` guards whose idle limits are spread evenly over `first..first+spread`
/// (each with two warnings), waits for all to end, and returns each one's lateness.
pub async fn guard_lateness(sessions: usize, first: Duration, spread: Duration) -> Vec<Duration> {
    let mut runs = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let limit = first + spread.mul_f64(i as f64 / sessions as f64);
        let policy = EnvPolicy {
            idle_timeout: Some(limit),
            warn_before: vec![limit / 2, limit / 4],
            ..Default::default()
        };
        let opened = Instant::now();
        let ended = EndClock(Arc::new(Mutex::new(None)));
        let guard = Guard::new(
            policy,
            Arc::new(ActivityClock::new(opened)),
            ended.clone(),
            NoReauth,
            ended.clone(),
            SessionGate::new(),
            "bench".into(),
        );
        let (tx, rx) = GuardEvents::<u32>::new();
        let _ = tx.send(GuardEvent::ChannelStarted {
            channel: 0,
            pty: true,
        });
        // where the node runs its guards (the enforcement thread in `serve`)
        let task = crate::enforcement_thread::spawn(guard.run(rx));
        runs.push((opened + limit, ended, task, tx));
    }
    let mut lateness = Vec::with_capacity(sessions);
    for (deadline, ended, task, tx) in runs {
        let _ = task.await;
        drop(tx);
        let at = ended
            .0
            .lock()
            .ok()
            .and_then(|e| *e)
            .unwrap_or_else(Instant::now);
        lateness.push(at.saturating_duration_since(deadline));
    }
    lateness
}

/// The baseline: one bare `sleep_until` per session, same deadlines.
pub async fn timer_lateness(sessions: usize, first: Duration, spread: Duration) -> Vec<Duration> {
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            let deadline = Instant::now() + first + spread.mul_f64(i as f64 / sessions as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                Instant::now().saturating_duration_since(deadline)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(sessions);
    for t in tasks {
        out.push(t.await.unwrap_or_default());
    }
    out
}
