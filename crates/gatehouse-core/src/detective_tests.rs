use std::time::Duration;

use super::*;
use crate::IdleAction;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn policy(idle_min: Option<u64>, max_min: Option<u64>) -> EnvPolicy {
    EnvPolicy {
        idle_timeout: idle_min.map(|m| Duration::from_secs(m * 60)),
        max_session: max_min.map(|m| Duration::from_secs(m * 60)),
        idle_action: IdleAction::Lock,
        lock_grace: Duration::from_secs(120),
        ..EnvPolicy::default()
    }
}

fn version(version: i64, valid_from: i64, p: EnvPolicy) -> PolicyVersion {
    PolicyVersion {
        environment: "prod".into(),
        version,
        valid_from,
        policy: p,
    }
}

fn input(at: i64) -> Recorded {
    Recorded {
        at,
        mark: Mark::Activity("input"),
    }
}

fn mark(at: i64, mark: Mark) -> Recorded {
    Recorded { at, mark }
}

fn session(
    id: &str,
    started_at: i64,
    ended_at: Option<i64>,
    events: Vec<Recorded>,
) -> SessionFacts {
    SessionFacts {
        id: id.into(),
        node: "n1".into(),
        node_id: "id-n1".into(),
        operator: "alice".into(),
        environment: Some("prod".into()),
        started_at,
        ended_at,
        end_reason: ended_at.map(|_| "client_closed".into()),
        bytes: 100,
        kill: None,
        owner_seen_at: ended_at.is_none().then_some(started_at + 1000),
        recording: RecordingFact::Verified(Timeline { events }),
    }
}

/// Facts with one node heartbeating at `now`, operator alice, and the given policy since
/// long before the sessions.
fn facts(now: i64, p: EnvPolicy, sessions: Vec<SessionFacts>) -> Facts {
    let mut sessions = sessions;
    for s in &mut sessions {
        if s.ended_at.is_none() {
            s.owner_seen_at = Some(now - 1000);
        }
    }
    Facts {
        sessions,
        nodes: vec![NodeFact {
            id: "id-n1".into(),
            name: "n1".into(),
            started_at: T0 - 60 * MIN,
            heartbeat_at: now - 1000,
            stopped: false,
        }],
        operators: [("alice".to_owned(), false)].into(),
        lock_changes: Vec::new(),
        policies: PolicyHistory::new([version(1, T0 - 24 * 60 * MIN, p)]),
    }
}

fn rules(f: &[Finding]) -> Vec<(&str, Rule)> {
    f.iter().map(|f| (f.session_id.as_str(), f.rule)).collect()
}

fn ev<'a>(f: &'a Finding, key: &str) -> &'a Evidence {
    &f.evidence.iter().find(|(k, _)| *k == key).unwrap().1
}

/// Evaluates at `now` with the node heartbeating and every live session claimed just
/// before: the rules under test, not the ownership ones.
fn check(f: &Facts, now: i64) -> Vec<Finding> {
    let mut f = f.clone();
    for n in &mut f.nodes {
        n.heartbeat_at = now - 1000;
    }
    for s in f.sessions.iter_mut().filter(|s| s.ended_at.is_none()) {
        s.owner_seen_at = Some(now - 1000);
    }
    evaluate(&f, &Tolerances::default(), now)
}

fn check_as_is(f: &Facts, now: i64) -> Vec<Finding> {
    evaluate(f, &Tolerances::default(), now)
}

#[test]
fn a_session_that_kept_its_limits_has_no_findings() {
    let events = vec![
        mark(300, Mark::Activity("channel")),
        input(1000),
        mark(1500, Mark::Other),
        input(14 * MIN),
        mark(28 * MIN, Mark::Lock),
        mark(29 * MIN, Mark::Unlock),
        input(29 * MIN + 10),
        mark(44 * MIN, Mark::Lock),
        mark(46 * MIN, Mark::End),
    ];
    let ended = session("s1", T0, Some(T0 + 46 * MIN + 5), events.clone());
    let live = session("s2", T0, None, events[..6].to_vec());
    let f = facts(T0 + 43 * MIN, policy(Some(15), Some(60)), vec![ended, live]);
    assert_eq!(rules(&check(&f, T0 + 43 * MIN)), vec![]);
}

#[test]
fn a_live_session_past_its_maximum_is_found_only_after_the_tolerance() {
    let f = facts(
        T0,
        policy(None, Some(60)),
        vec![session("s1", T0, None, vec![])],
    );
    assert!(check(&f, T0 + 60 * MIN + 2000).is_empty());
    let found = check(&f, T0 + 60 * MIN + 2001);
    assert_eq!(rules(&found), vec![("s1", Rule::MaxSession)]);
    assert!(found[0].live);
    assert_eq!(ev(&found[0], "max_session_ms"), &Evidence::Int(60 * MIN));
    assert_eq!(
        ev(&found[0], "deadline"),
        &Evidence::Int(T0 + 60 * MIN + 2000)
    );
}

#[test]
fn live_idle_counts_from_the_last_recorded_activity_and_not_while_locked() {
    let s = session(
        "s1",
        T0,
        None,
        vec![input(1000), mark(5 * MIN, Mark::Other)],
    );
    let f = facts(T0, policy(Some(15), None), vec![s.clone()]);
    assert!(check(&f, T0 + 1000 + 15 * MIN + 2000).is_empty());
    let found = check(&f, T0 + 1000 + 15 * MIN + 2001);
    assert_eq!(rules(&found), vec![("s1", Rule::IdleTimeout)]);
    assert_eq!(ev(&found[0], "last_activity"), &Evidence::Int(T0 + 1000));

    // locked in time: not idle, but the lock has its own grace
    let mut locked = s;
    if let RecordingFact::Verified(t) = &mut locked.recording {
        t.events.push(mark(1000 + 15 * MIN, Mark::Lock));
    }
    let f = facts(T0, policy(Some(15), None), vec![locked]);
    assert!(check(&f, T0 + 1000 + 17 * MIN).is_empty());
    let found = check(&f, T0 + 1000 + 17 * MIN + 2001);
    assert_eq!(rules(&found), vec![("s1", Rule::LockGrace)]);
}

#[test]
fn a_shortened_policy_gives_live_sessions_the_change_tolerance() {
    let mut f = facts(
        T0,
        policy(None, Some(60)),
        vec![session("s1", T0, None, vec![])],
    );
    let change = T0 + 30 * MIN;
    f.policies = PolicyHistory::new([
        version(1, T0 - MIN, policy(None, Some(60))),
        version(2, change, policy(None, Some(10))),
    ]);
    // the old version never reached its deadline; the new one is due at its arrival + 2 s
    assert!(check(&f, change + 4000).is_empty());
    let found = check(&f, change + 4001);
    assert_eq!(rules(&found), vec![("s1", Rule::MaxSession)]);
    assert_eq!(ev(&found[0], "policy_version"), &Evidence::Int(2));
}

#[test]
fn ended_sessions_are_judged_by_the_version_in_force_at_the_time() {
    // a 20-minute idle gap, legal then (30 min), illegal under today's 10 min
    let s = session(
        "s1",
        T0,
        Some(T0 + 25 * MIN),
        vec![input(MIN), input(21 * MIN), mark(25 * MIN, Mark::End)],
    );
    let mut f = facts(T0 + 60 * MIN, policy(Some(10), None), vec![s]);
    f.policies = PolicyHistory::new([
        version(1, T0 - MIN, policy(Some(30), None)),
        version(2, T0 + 40 * MIN, policy(Some(10), None)),
    ]);
    assert!(check(&f, T0 + 60 * MIN).is_empty());

    f.policies = PolicyHistory::new([version(1, T0 - MIN, policy(Some(10), None))]);
    let found = check(&f, T0 + 60 * MIN);
    assert_eq!(rules(&found), vec![("s1", Rule::RecordedIdleGap)]);
    assert_eq!(ev(&found[0], "from_ms"), &Evidence::Int(MIN));
    assert_eq!(ev(&found[0], "to_ms"), &Evidence::Int(21 * MIN));
    assert!(!found[0].live);

    // no history reaching back to the session: nothing can be proven
    f.policies = PolicyHistory::new([version(1, T0 + 2 * MIN, policy(Some(10), None))]);
    assert!(check(&f, T0 + 60 * MIN).is_empty());
}

#[test]
fn activity_after_the_end_and_an_overlong_recording_are_found() {
    let events = vec![input(1000), mark(5 * MIN, Mark::End), input(9 * MIN)];
    let s = session("s1", T0, Some(T0 + 5 * MIN), events);
    let f = facts(T0 + 60 * MIN, policy(Some(15), Some(8)), vec![s]);
    let found = check(&f, T0 + 60 * MIN);
    assert_eq!(
        rules(&found),
        vec![
            ("s1", Rule::ActivityAfterEnd),
            ("s1", Rule::RecordedMaxSession)
        ]
    );
    assert_eq!(ev(&found[0], "activity_at_ms"), &Evidence::Int(9 * MIN));
    assert_eq!(ev(&found[0], "end_at_ms"), &Evidence::Int(5 * MIN));
    assert_eq!(ev(&found[1], "recorded_ms"), &Evidence::Int(9 * MIN));
}

#[test]
fn kills_and_user_locks_must_end_live_sessions_within_two_seconds() {
    let mut killed = session("s1", T0, None, vec![input(10)]);
    killed.kill = Some(KillFact {
        at: T0 + MIN,
        user_lock: false,
    });
    let mut locked = session("s2", T0, None, vec![input(10)]);
    locked.kill = Some(KillFact {
        at: T0 + MIN,
        user_lock: true,
    });
    let f = facts(T0 + MIN, policy(None, None), vec![killed, locked]);
    assert!(check(&f, T0 + MIN + 2000).is_empty());
    let found = check(&f, T0 + MIN + 2001);
    assert_eq!(
        rules(&found),
        vec![("s1", Rule::KillIgnored), ("s2", Rule::UserLockIgnored)]
    );
    assert_eq!(ev(&found[0], "requested_at"), &Evidence::Int(T0 + MIN));
}

#[test]
fn recordings_missing_or_failing_verification_are_found() {
    let mut none = session("s1", T0, Some(T0 + MIN), vec![]);
    none.recording = RecordingFact::None;
    let mut denied = none.clone();
    denied.id = "s2".into();
    denied.environment = None;
    let mut failed = none.clone();
    failed.id = "s3".into();
    failed.recording = RecordingFact::Failed;
    let mut tampered = session("s4", T0, Some(T0 + MIN), vec![]);
    tampered.recording = RecordingFact::Tampered {
        why: "TAMPERED at event 3: line does not match its digest".into(),
        timeline: None,
    };
    let f = facts(
        T0 + 2 * MIN,
        policy(None, None),
        vec![none, denied, failed, tampered],
    );
    let found = check(&f, T0 + 2 * MIN);
    assert_eq!(
        rules(&found),
        vec![("s1", Rule::NoRecording), ("s4", Rule::RecordingUnverified)]
    );
    assert_eq!(ev(&found[0], "bytes"), &Evidence::Int(100));
    assert!(found[1].message.contains("event 3"), "{}", found[1].message);
}

#[test]
fn live_sessions_need_a_heartbeating_node_and_a_guard_that_claims_them() {
    let now = T0 + 10 * MIN;
    let claimed = session("s1", now - MIN, None, vec![]);
    let unclaimed = session("s2", now - MIN, None, vec![]);
    let new = session("s3", now - 5000, None, vec![]);
    let mut f = facts(now, policy(None, None), vec![claimed, unclaimed, new]);
    f.sessions[1].owner_seen_at = None;
    f.sessions[2].owner_seen_at = None;
    let found = check_as_is(&f, now);
    assert_eq!(rules(&found), vec![("s2", Rule::NoGuard)]);

    // the node stops heartbeating: past its timeout its sessions are the other nodes' to
    // take over, which they get a few seconds for
    f.nodes[0].heartbeat_at = now - 16_000;
    assert!(check_as_is(&f, now).is_empty());
    f.nodes[0].heartbeat_at = now - 18_000;
    assert!(check_as_is(&f, now).is_empty());
    // not taken over: every live session on it is on a gone node
    f.nodes[0].heartbeat_at = now - 18_001;
    let found = check_as_is(&f, now);
    assert_eq!(
        rules(&found),
        vec![
            ("s1", Rule::NodeGone),
            ("s2", Rule::NodeGone),
            ("s3", Rule::NodeGone)
        ]
    );
    assert_eq!(
        ev(&found[0], "last_heartbeat"),
        &Evidence::Int(now - 18_001)
    );
    f.nodes.clear();
    assert!(
        check_as_is(&f, now)[0]
            .message
            .contains("never sent a heartbeat")
    );
}

#[test]
fn logins_of_locked_or_unknown_operators_are_found() {
    let now = T0 + 10 * MIN;
    let before_lock = session("s1", T0, Some(T0 + 1000), vec![]);
    let while_locked = session("s2", T0 + 2 * MIN, Some(T0 + 2 * MIN + 1000), vec![]);
    let after_unlock = session("s3", T0 + 4 * MIN, Some(T0 + 4 * MIN + 1000), vec![]);
    let mut ghost = session("s4", T0, Some(T0 + 1000), vec![]);
    ghost.operator = "ghost".into();
    let mut denied = while_locked.clone();
    denied.id = "s5".into();
    denied.environment = None;
    let mut f = facts(
        now,
        policy(None, None),
        vec![before_lock, while_locked, after_unlock, ghost, denied],
    );
    f.lock_changes = vec![
        LockChange {
            operator: "alice".into(),
            at: T0 + MIN,
            locked: true,
        },
        LockChange {
            operator: "alice".into(),
            at: T0 + 3 * MIN,
            locked: false,
        },
    ];
    let found = check(&f, now);
    assert_eq!(
        rules(&found),
        vec![
            ("s2", Rule::LockedOperatorLogin),
            ("s4", Rule::DeletedOperatorLogin)
        ]
    );
    assert_eq!(ev(&found[0], "locked_at"), &Evidence::Int(T0 + MIN));
}

#[test]
fn gaps_split_at_locks_and_stop_at_the_end_line() {
    let t = Timeline {
        events: vec![
            input(100),
            mark(200, Mark::Lock),
            input(250), // typed at the prompt: not activity
            mark(300, Mark::Unlock),
            mark(400, Mark::End),
            input(500),
        ],
    };
    assert_eq!(
        t.gaps(450),
        vec![
            Gap {
                from: 0,
                to: 100,
                locked: false
            },
            Gap {
                from: 100,
                to: 200,
                locked: false
            },
            Gap {
                from: 200,
                to: 300,
                locked: true
            },
            Gap {
                from: 300,
                to: 400,
                locked: false
            },
        ]
    );
    assert_eq!(
        t.state(),
        LiveState {
            last_activity: 500,
            locked_at: None
        }
    );
    assert_eq!(
        t.activity_after_end(450, 50),
        Some(LateActivity {
            at: 500,
            end: 400,
            what: "input"
        })
    );
    assert_eq!(t.activity_after_end(450, 100), None);
}

/// A live tail keeps `summarized()`: for every sequence of up to five events and every
/// point it could have been read up to, the summary of what was read, followed by what
/// came after, has the state of the whole sequence — and the summary stays short.
#[test]
fn a_summarized_timeline_folds_later_events_as_the_whole_one() {
    let kinds = [
        Mark::Activity("input"),
        Mark::Lock,
        Mark::Unlock,
        Mark::End,
        Mark::Other,
    ];
    let mut checked = 0;
    for len in 0..=5u32 {
        for code in 0..kinds.len().pow(len) {
            let events: Vec<Recorded> = (0..len as usize)
                .map(|i| {
                    let kind = code / kinds.len().pow(i as u32) % kinds.len();
                    mark(100 * (i as i64 + 1), kinds[kind].clone())
                })
                .collect();
            let whole = Timeline {
                events: events.clone(),
            };
            for split in 0..=events.len() {
                let read = Timeline {
                    events: events[..split].to_vec(),
                };
                let mut t = read.summarized();
                assert!(t.events.len() <= 2, "{t:?}");
                t.events.extend_from_slice(&events[split..]);
                assert_eq!(t.state(), whole.state(), "{events:?} read up to {split}");
                checked += 1;
            }
        }
    }
    assert!(checked > 20_000, "{checked}");
}
