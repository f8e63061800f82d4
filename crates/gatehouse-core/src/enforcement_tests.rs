//! The enforcer's rules, each edge tested exactly (time is a plain offset here; the async
//! driver in gatehouse-ssh is tested with tokio's paused clock).

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const M: Duration = Duration::from_secs(60);

/// Plays the driver: from `clock`, wake at each `next_wakeup` (at once when it is already
/// past) up to `until`, collecting what happens.
fn run_until(
    e: &mut Enforcer,
    clock: &mut Duration,
    until: Duration,
) -> Vec<(Duration, Directive)> {
    let mut out = Vec::new();
    while let Some(wake) = e.next_wakeup() {
        let t = wake.max(*clock);
        if t > until {
            break;
        }
        *clock = t;
        for d in e.poll(t) {
            out.push((t, d));
        }
    }
    *clock = until.max(*clock);
    out
}

fn kinds(events: &[(Duration, Directive)]) -> Vec<(Duration, String)> {
    events
        .iter()
        .map(|(t, d)| {
            let what = match d {
                Directive::Warn { kind, .. } => format!("warn {}", kind.as_str()),
                Directive::Lock { reason, .. } => format!("lock {}", reason.as_str()),
                Directive::Unlocked => "unlocked".into(),
                Directive::UnlockFailed { attempts_left } => {
                    format!("unlock failed {attempts_left}")
                }
                Directive::End { reason, .. } => format!("end {}", reason.as_code()),
            };
            (*t, what)
        })
        .collect()
}

fn policy(idle: Option<Duration>, max: Option<Duration>, warn: &[Duration]) -> EnvPolicy {
    EnvPolicy {
        idle_timeout: idle,
        max_session: max,
        warn_before: warn.to_vec(),
        ..Default::default()
    }
    .validated()
    .unwrap()
}

#[test]
fn no_limits_means_no_wakeups() {
    let mut e = Enforcer::new(EnvPolicy::default());
    assert_eq!(e.next_wakeup(), None);
    assert!(e.poll(1000 * M).is_empty());
}

#[test]
fn idle_session_is_warned_in_order_then_ended_exactly_at_the_limit() {
    let mut e = Enforcer::new(policy(Some(15 * M), None, &[5 * M, M, 10 * S]));
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, 60 * M);
    assert_eq!(
        kinds(&events),
        [
            (10 * M, "warn idle".into()),
            (14 * M, "warn idle".into()),
            (15 * M - 10 * S, "warn idle".into()),
            (15 * M, "end idle_timeout".into()),
        ]
    );
    match &events[1].1 {
        Directive::Warn {
            message, remaining, ..
        } => {
            assert_eq!(*remaining, M);
            assert_eq!(
                message,
                "idle for 14m — this session closes in 1m; press any key to stay"
            );
        }
        other => panic!("{other:?}"),
    }
    match &events[3].1 {
        Directive::End { message, .. } => assert_eq!(message, "idle timeout 15m reached"),
        other => panic!("{other:?}"),
    }
    assert!(e.is_ended());
    assert_eq!(e.next_wakeup(), None);
}

#[test]
fn activity_one_tick_before_the_limit_keeps_the_session() {
    let mut e = Enforcer::new(policy(Some(2 * S), None, &[]));
    let mut clock = Duration::ZERO;
    assert_eq!(e.next_wakeup(), Some(2 * S));
    assert!(e.activity(2 * S - MS));
    assert_eq!(e.next_wakeup(), Some(4 * S - MS));
    assert!(e.poll(2 * S).is_empty(), "nothing due at the old limit");
    let events = run_until(&mut e, &mut clock, 10 * S);
    assert_eq!(kinds(&events), [(4 * S - MS, "end idle_timeout".into())]);
}

#[test]
fn activity_exactly_at_a_warning_rearms_all_warnings() {
    let mut e = Enforcer::new(policy(Some(10 * S), None, &[5 * S, 2 * S]));
    let mut clock = Duration::ZERO;
    // the warning fires at 5s; activity in the same instant, after it
    let first = run_until(&mut e, &mut clock, 5 * S);
    assert_eq!(kinds(&first), [(5 * S, "warn idle".into())]);
    assert!(e.activity(5 * S));
    let rest = run_until(&mut e, &mut clock, 30 * S);
    assert_eq!(
        kinds(&rest),
        [
            (10 * S, "warn idle".into()),
            (13 * S, "warn idle".into()),
            (15 * S, "end idle_timeout".into()),
        ]
    );
}

#[test]
fn the_absolute_limit_ends_an_active_session() {
    let mut e = Enforcer::new(policy(Some(M), Some(10 * M), &[M / 2]));
    let mut clock = Duration::ZERO;
    let mut events = Vec::new();
    // active every 20 s: never idle
    let mut t = Duration::ZERO;
    while !e.is_ended() {
        t += 20 * S;
        events.extend(run_until(&mut e, &mut clock, t));
        e.activity(t);
    }
    let k = kinds(&events);
    assert_eq!(k.last().unwrap(), &(10 * M, "end max_session".into()));
    assert!(
        k.contains(&(10 * M - 30 * S, "warn max_session".into())),
        "{k:?}"
    );
    assert!(!k.iter().any(|(_, w)| w == "warn idle"), "{k:?}");
    match &events.last().unwrap().1 {
        Directive::End { message, .. } => {
            assert_eq!(message, "maximum session length 10m reached")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn idle_and_absolute_limits_racing() {
    // both fall at 60 s exactly: the absolute limit is the reason
    let mut e = Enforcer::new(policy(Some(60 * S), Some(60 * S), &[]));
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, 2 * M);
    assert_eq!(kinds(&events), [(60 * S, "end max_session".into())]);
    // idle one millisecond earlier wins
    let mut e = Enforcer::new(policy(Some(60 * S - MS), Some(60 * S), &[]));
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, 2 * M);
    assert_eq!(kinds(&events), [(60 * S - MS, "end idle_timeout".into())]);
}

#[test]
fn lock_then_unlock_then_idle_again() {
    let mut p = policy(Some(10 * S), None, &[3 * S]);
    p.idle_action = IdleAction::Lock;
    p.lock_grace = 30 * S;
    let mut e = Enforcer::new(p);
    let mut clock = Duration::ZERO;
    e.set_lock_capable(true);
    let events = run_until(&mut e, &mut clock, 10 * S);
    assert_eq!(
        kinds(&events),
        [(7 * S, "warn idle".into()), (10 * S, "lock idle".into())]
    );
    match &events[0].1 {
        Directive::Warn { message, .. } => assert!(message.contains("this session locks in 3s")),
        other => panic!("{other:?}"),
    }
    // keystrokes while locked are not activity
    assert!(!e.activity(12 * S));
    assert_eq!(e.next_wakeup(), Some(40 * S), "only the lock grace runs");
    assert_eq!(
        e.unlock_attempt(false, 15 * S),
        Some(Directive::UnlockFailed { attempts_left: 2 })
    );
    assert_eq!(e.unlock_attempt(true, 20 * S), Some(Directive::Unlocked));
    assert!(!e.is_locked());
    // idle counts from the unlock
    let events = run_until(&mut e, &mut clock, 59 * S);
    assert_eq!(
        kinds(&events),
        [(27 * S, "warn idle".into()), (30 * S, "lock idle".into())]
    );
}

#[test]
fn three_wrong_answers_or_the_grace_end_a_locked_session() {
    let mut p = policy(Some(10 * S), None, &[]);
    p.idle_action = IdleAction::Lock;
    p.lock_grace = 20 * S;
    let mut e = Enforcer::new(p.clone());
    let mut clock = Duration::ZERO;
    e.set_lock_capable(true);
    run_until(&mut e, &mut clock, 10 * S);
    assert!(e.is_locked());
    e.unlock_attempt(false, 11 * S);
    e.unlock_attempt(false, 12 * S);
    assert_eq!(
        e.unlock_attempt(false, 13 * S),
        Some(Directive::End {
            reason: EndReason::ReauthFailed,
            message: "reauthentication failed".into()
        })
    );
    assert!(e.is_ended());

    let mut e = Enforcer::new(p);

    let mut clock = Duration::ZERO;
    e.set_lock_capable(true);
    let events = run_until(&mut e, &mut clock, M);
    assert_eq!(
        kinds(&events),
        [
            (10 * S, "lock idle".into()),
            (30 * S, "end reauth_timeout".into())
        ]
    );
}

#[test]
fn lock_without_a_terminal_is_a_disconnect() {
    let mut p = policy(Some(10 * S), None, &[2 * S]);
    p.idle_action = IdleAction::Lock;
    let mut e = Enforcer::new(p);
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, M);
    assert_eq!(
        kinds(&events),
        [
            (8 * S, "warn idle".into()),
            (10 * S, "end idle_timeout".into())
        ]
    );
    match &events[0].1 {
        Directive::Warn { message, .. } => assert!(message.contains("closes in 2s"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reauth_after_locks_an_active_session_and_unlock_resets_it() {
    let mut p = policy(None, None, &[M]);
    p.reauth_after = Some(12 * 60 * M);
    let mut e = Enforcer::new(p.clone());
    let mut clock = Duration::ZERO;
    e.set_lock_capable(true);
    let mut events = Vec::new();
    let mut t = Duration::ZERO;
    while !e.is_locked() {
        t += 7 * M;
        events.extend(run_until(&mut e, &mut clock, t));
        e.activity(t);
    }
    assert_eq!(
        kinds(&events),
        [
            (12 * 60 * M - M, "warn reauth".into()),
            (12 * 60 * M, "lock reauth".into())
        ]
    );
    let unlocked_at = 12 * 60 * M + 30 * S;
    assert_eq!(
        e.unlock_attempt(true, unlocked_at),
        Some(Directive::Unlocked)
    );
    assert_eq!(e.next_wakeup(), Some(unlocked_at + 12 * 60 * M - M));

    // without a terminal, reauthentication due ends the session
    let mut e = Enforcer::new(p);
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, 13 * 60 * M);
    assert_eq!(
        kinds(&events).last().unwrap(),
        &(12 * 60 * M, "end reauth_required".into())
    );
}

#[test]
fn shortened_policy_past_its_limit_gets_a_final_notice() {
    let mut e = Enforcer::new(policy(Some(15 * M), None, &[M]));
    let mut clock = Duration::ZERO;
    run_until(&mut e, &mut clock, 5 * M);
    // idle for 5 minutes; the admin shortens the idle limit to 2 minutes
    e.set_policy(policy(Some(2 * M), None, &[M]), 5 * M);
    let events = run_until(&mut e, &mut clock, 10 * M);
    assert_eq!(
        kinds(&events),
        [
            (5 * M, "warn idle".into()),
            (5 * M + FINAL_NOTICE, "end idle_timeout".into())
        ]
    );
    match &events[0].1 {
        Directive::Warn {
            remaining, message, ..
        } => {
            assert_eq!(*remaining, FINAL_NOTICE);
            assert!(message.contains("closes in 1s"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shortened_policy_not_yet_past_warns_for_leads_already_passed() {
    let mut e = Enforcer::new(policy(Some(15 * M), None, &[5 * M]));
    let mut clock = Duration::ZERO;
    run_until(&mut e, &mut clock, 7 * M);
    e.set_policy(policy(Some(10 * M), None, &[5 * M]), 7 * M);
    let events = run_until(&mut e, &mut clock, 20 * M);
    assert_eq!(
        kinds(&events),
        [
            (7 * M, "warn idle".into()),
            (10 * M, "end idle_timeout".into())
        ]
    );
}

#[test]
fn lengthened_policy_moves_the_end_out() {
    let mut e = Enforcer::new(policy(Some(2 * M), Some(10 * M), &[]));
    let mut clock = Duration::ZERO;
    run_until(&mut e, &mut clock, M);
    e.set_policy(policy(Some(5 * M), None, &[]), M);
    assert_eq!(e.next_wakeup(), Some(5 * M));
    e.set_policy(EnvPolicy::default(), M);
    assert_eq!(e.next_wakeup(), None);
}

#[test]
fn admin_kill_ends_at_once_with_the_reason() {
    let mut e = Enforcer::new(policy(Some(M), None, &[]));
    assert_eq!(
        e.kill(EndReason::AdminKill("incident 42".into())),
        Directive::End {
            reason: EndReason::AdminKill("incident 42".into()),
            message: "terminated by admin: incident 42".into()
        }
    );
    assert_eq!(e.next_wakeup(), None);
    assert!(e.poll(2 * M).is_empty());
    let mut e = Enforcer::new(EnvPolicy::default());
    assert!(matches!(
        e.kill(EndReason::OperatorLocked),
        Directive::End { message, .. } if message == "account locked by admin"
    ));
}

#[test]
fn shutdown_is_not_told_as_an_admin_kill() {
    let mut e = Enforcer::new(EnvPolicy::default());
    let Directive::End { reason, message } = e.kill(EndReason::Shutdown) else {
        panic!()
    };
    assert_eq!(reason, EndReason::Shutdown);
    assert_eq!(message, "gatehouse is shutting down");
}

#[test]
fn the_next_limit_is_the_nearest_deadline_of_any_kind() {
    let mut p = policy(Some(10 * M), Some(60 * M), &[]);
    p.reauth_after = Some(5 * M);
    p.idle_action = IdleAction::Lock;
    p.lock_grace = 30 * S;
    let mut e = Enforcer::new(p);
    e.set_lock_capable(true);
    assert_eq!(e.next_limit(), Some((WarnKind::Reauth, 5 * M)));
    assert_eq!(e.locked_since(), None);
    let mut clock = Duration::ZERO;
    let events = run_until(&mut e, &mut clock, 5 * M);
    assert_eq!(kinds(&events), [(5 * M, "lock reauth".into())]);
    // locked: the lock grace is the reauthentication deadline
    assert_eq!(e.locked_since(), Some(5 * M));
    assert_eq!(e.next_limit(), Some((WarnKind::Reauth, 5 * M + 30 * S)));
    assert_eq!(e.unlock_attempt(true, 5 * M + S), Some(Directive::Unlocked));
    assert_eq!(e.last_activity(), 5 * M + S);
    assert_eq!(e.next_limit(), Some((WarnKind::Reauth, 10 * M + S)));
    assert!(e.activity(9 * M));
    assert_eq!(e.next_limit(), Some((WarnKind::Reauth, 10 * M + S)));
    e.set_policy(policy(Some(10 * M), Some(60 * M), &[]), 9 * M);
    assert_eq!(e.next_limit(), Some((WarnKind::Idle, 19 * M)));
    assert_eq!(WarnKind::parse("max_session"), Some(WarnKind::MaxSession));
    assert_eq!(WarnKind::parse("lunch"), None);
}
