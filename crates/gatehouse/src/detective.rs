//! The detective control's wiring: gathers the facts (the store's registry, heartbeats,
//! policy history and audit log, and every session's recording read back and verified),
//! runs the core's pure rules over them (`gatehouse_core::detective`), and reports each
//! finding once (an audit event of kind `violation` and an error-level log line). `gatehouse
//! check` runs one pass; `serve` runs one every `[detective] interval` on one node at a time
//! and, with `action = "end"`, ends live violating sessions through the kill path.
//!
//! It never asks a guard or the enforcer anything: what it knows comes from records.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use gatehouse_core::detective::{
    Evidence, Facts, Finding, Mark, PolicyHistory, Recorded, RecordingFact, Rule, SessionFacts,
    Timeline, Tolerances, evaluate,
};
use gatehouse_recorder::RecordingKind;
use gatehouse_recorder::status::{RecordingStatus, recording_status};
use gatehouse_review::cast::{Cast, EventKind};
use gatehouse_review::sqllog::{SqlLog, SqlMark};
use gatehouse_store::{AuditEvent, CheckedSession, Closer, RecordingState, Store, now_millis};
use serde_json::{Map, Value, json};

#[path = "detective_tail.rs"]
mod tail;

use crate::admin::open_store;
use crate::config::{Config, DetectiveAction, DetectiveConfig};
use crate::table;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// Also look at sessions that ended within this long (live ones always).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    since: String,
}

/// `gatehouse check`: one pass; exit 1 on any finding.
pub async fn check(config: &Config, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let since = humantime::parse_duration(&args.since)
        .map_err(|e| anyhow::anyhow!("--since '{}' is not a duration: {e}", args.since))?;
    let store = open_store(config).await?;
    let now = now_millis();
    let facts = gather(&store, now - millis(since), None, now).await?;
    let findings = evaluate(&facts, &tolerances(&config.detective), now);
    report(&store, &findings, now - millis(since), "detective-cli").await?;
    if args.json {
        let v: Vec<Value> = findings.iter().map(finding_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if findings.is_empty() {
        println!("no findings");
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                vec![
                    f.rule.as_str().to_owned(),
                    f.session_id.clone(),
                    f.operator.clone(),
                    f.node.clone(),
                    if f.live { "live" } else { "ended" }.to_owned(),
                    f.message.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &["rule", "session", "operator", "node", "state", "finding"],
                &rows
            )
        );
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn tolerances(c: &DetectiveConfig) -> Tolerances {
    Tolerances {
        node_timeout: c.node_timeout,
        ..Tolerances::default()
    }
}

/// Runs the detective every `interval` while this node holds the detective lock (on
/// PostgreSQL one node at a time; the others keep trying), until the task is aborted.
pub async fn watch(store: Store, config: DetectiveConfig) {
    let tol = tolerances(&config);
    // first pass: a day back; later passes overlap the previous one by a minute
    let mut since = now_millis() - 24 * 3600 * 1000;
    let mut lock: Option<gatehouse_store::DetectiveLock> = None;
    let mut cache = tail::Cache::default();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = match &mut lock {
            Some(l) => l.still_held().await,
            None => false,
        };
        if !held {
            lock = match store.try_detective_lock().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "detective: cannot take its lock; retrying");
                    None
                }
            };
            if lock.is_none() {
                continue;
            }
        }
        let now = now_millis();
        match pass(&store, &tol, config.action, since, now, &mut cache).await {
            Ok(()) => since = now - 60_000,
            Err(e) => tracing::error!(error = %e, "detective pass failed; retrying"),
        }
    }
}

async fn pass(
    store: &Store,
    tol: &Tolerances,
    action: DetectiveAction,
    since: i64,
    now: i64,
    cache: &mut tail::Cache,
) -> anyhow::Result<()> {
    let facts = gather(store, since, Some(cache), now).await?;
    let findings = evaluate(&facts, tol, now);
    let new = report(store, &findings, since, "detective").await?;
    if action == DetectiveAction::End {
        end_live(store, &facts, &new).await;
    }
    Ok(())
}

/// Ends live sessions behind new findings: directly (as `interrupted`) when no guard holds
/// them, else through the kill path (once: a kill that is not carried out is its own
/// finding).
async fn end_live(store: &Store, facts: &Facts, new: &[&Finding]) {
    let mut sessions: Vec<&str> = new
        .iter()
        .filter(|f| f.live)
        .map(|f| f.session_id.as_str())
        .collect();
    sessions.dedup();
    for id in sessions {
        let Some(s) = facts.sessions.iter().find(|s| s.id == id) else {
            continue;
        };
        let rules: Vec<Rule> = new
            .iter()
            .filter(|f| f.session_id == id)
            .map(|f| f.rule)
            .collect();
        let ended = if let Some(rule) = rules
            .iter()
            .find(|r| matches!(r, Rule::NoGuard | Rule::NodeGone))
        {
            // no guard to ask: row, recording and `session_closed` audit in one transaction
            let closer = Closer::Detective {
                rule: rule.as_str(),
            };
            store
                .close_unguarded(id, &s.operator, &closer)
                .await
                .map(drop)
        } else if s.kill.is_none() {
            // a guard holds it: ask it through the kill path (audited with the request)
            let reason = format!("detective: {}", rules[0].as_str());
            match store.request_kill(id, &reason).await {
                Ok(()) => {
                    let _ = store
                        .audit(&AuditEvent {
                            kind: "session_kill_requested",
                            operator: Some(&s.operator),
                            session_id: Some(id),
                            source: Some("detective"),
                            detail: json!({"session": id, "reason": reason}),
                        })
                        .await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            continue;
        };
        if let Err(e) = ended {
            tracing::error!(session_id = %id, error = %e, "detective: cannot end the session");
        }
    }
}

/// Audits and logs each finding not reported before (by rule and session); returns them.
async fn report<'a>(
    store: &Store,
    findings: &'a [Finding],
    since: i64,
    source: &str,
) -> anyhow::Result<Vec<&'a Finding>> {
    let reported: HashSet<(String, String)> = store
        .reported_violations(since - 24 * 3600 * 1000)
        .await?
        .into_iter()
        .collect();
    let mut new = Vec::new();
    for f in findings {
        if reported.contains(&(f.rule.as_str().to_owned(), f.session_id.clone())) {
            continue;
        }
        let detail = finding_json(f);
        gatehouse_session::metrics::detective_finding(f.rule.as_str());
        tracing::error!(
            target: "gatehouse::detective",
            rule = f.rule.as_str(),
            session_id = %f.session_id,
            operator = %f.operator,
            node = %f.node,
            evidence = %detail["evidence"],
            "policy violation: {}",
            f.message
        );
        let _ = store
            .audit(&AuditEvent {
                kind: "violation",
                operator: Some(&f.operator),
                session_id: Some(&f.session_id),
                source: Some(source),
                detail,
            })
            .await;
        new.push(f);
    }
    Ok(new)
}

fn finding_json(f: &Finding) -> Value {
    let evidence: Map<String, Value> = f
        .evidence
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Evidence::Int(i) => json!(i),
                Evidence::Text(t) => json!(t),
            };
            ((*k).to_owned(), v)
        })
        .collect();
    json!({
        "rule": f.rule.as_str(),
        "session_id": f.session_id,
        "operator": f.operator,
        "node": f.node,
        "live": f.live,
        "message": f.message,
        "evidence": evidence,
    })
}

/// Everything the rules look at: live sessions and those ended since `since`. With a
/// `cache` (the continuous pass), live recordings are read incrementally and not verified
/// (their store row and checkpoint MACs are), and each ended session is judged once, once
/// its end has settled.
pub async fn gather(
    store: &Store,
    since: i64,
    cache: Option<&mut tail::Cache>,
    now: i64,
) -> anyhow::Result<Facts> {
    let mut sessions = store.detective_sessions(since).await?;
    let mut tails: Vec<Option<tail::Tail>> = Vec::new();
    let mut cache = cache;
    if let Some(c) = cache.as_deref_mut() {
        let ids: HashSet<&str> = sessions.iter().map(|s| s.record.id.as_str()).collect();
        c.judged.retain(|id| ids.contains(id.as_str()));
        let live: HashSet<&str> = sessions
            .iter()
            .filter(|s| s.record.ended_at.is_none())
            .map(|s| s.record.id.as_str())
            .collect();
        c.tails.retain(|id, _| live.contains(id.as_str()));
        sessions.retain(|s| match s.record.ended_at {
            None => true,
            Some(end) => end <= now - tail::SETTLE_MS && !c.judged.contains(&s.record.id),
        });
        for s in &sessions {
            if s.record.ended_at.is_some() {
                c.judged.insert(s.record.id.clone());
            }
            tails.push(match (&s.record.ended_at, &s.record.recording_path) {
                (None, Some(path)) => Some(
                    c.tails
                        .remove(&s.record.id)
                        .unwrap_or_else(|| tail::Tail::new(Path::new(path))),
                ),
                _ => None,
            });
        }
    } else {
        tails.resize_with(sessions.len(), || None);
    }
    // (in a few queries, not one per session: a node holds thousands)
    let recorded: Vec<&str> = sessions
        .iter()
        .filter(|s| s.record.recording_state.is_some())
        .map(|s| s.record.id.as_str())
        .collect();
    let mut by_id = store.recordings_of(&recorded).await?;
    // a row with a recording state whose recording was not found (gone between the two
    // reads) is not judged this pass rather than judged unrecorded
    let recordings: Vec<Option<Option<_>>> = sessions
        .iter()
        .map(|s| match s.record.recording_state {
            None => Some(None),
            Some(_) => by_id.remove(&s.record.id).map(Some),
        })
        .collect();
    // reading and verifying files is blocking work
    let judged = tokio::task::spawn_blocking(move || {
        sessions
            .into_iter()
            .zip(recordings)
            .zip(tails)
            .filter_map(|((s, rec), tail)| Some(session_facts(s, rec?, tail)))
            .collect::<Vec<_>>()
    })
    .await?;
    let mut sessions = Vec::with_capacity(judged.len());
    for (facts, tail) in judged {
        if let (Some(c), Some(t)) = (cache.as_deref_mut(), tail) {
            c.tails.insert(facts.id.clone(), t);
        }
        sessions.push(facts);
    }
    Ok(Facts {
        sessions,
        nodes: store.list_nodes().await?,
        operators: store
            .list_operators()
            .await?
            .into_iter()
            .map(|o| (o.name, o.locked))
            .collect(),
        lock_changes: store.operator_lock_changes().await?,
        policies: PolicyHistory::new(store.policy_history().await?),
    })
}

fn session_facts(
    s: CheckedSession,
    rec: Option<gatehouse_store::RecordingRecord>,
    tail: Option<tail::Tail>,
) -> (SessionFacts, Option<tail::Tail>) {
    let mut tail = tail;
    let recording = match &rec {
        None => RecordingFact::None,
        Some(r) => match (r.state, tail.as_mut()) {
            (RecordingState::Failed, _) => RecordingFact::Failed,
            (RecordingState::Pruned, _) => RecordingFact::Pruned,
            // live, continuous pass: the row's MACs now, the file's chain at the seal
            (RecordingState::Recording, Some(t)) if t.path() == Path::new(&r.path) => {
                if !r.authentic || r.checkpoint_forged {
                    RecordingFact::Tampered {
                        why: recording_status(r).to_string(),
                        timeline: None,
                    }
                } else {
                    match t.read_more(timeline_of) {
                        Ok(()) => RecordingFact::Verified(t.timeline.clone()),
                        Err(e) => RecordingFact::Unreadable(e),
                    }
                }
            }
            _ => {
                let timeline = read_timeline(Path::new(&r.path));
                match (recording_status(r), timeline) {
                    (RecordingStatus::Tampered { event, why }, t) => RecordingFact::Tampered {
                        why: format!("TAMPERED at event {event}: {why}"),
                        timeline: t.ok(),
                    },
                    (RecordingStatus::Unreadable(e), _) | (_, Err(e)) => {
                        RecordingFact::Unreadable(e)
                    }
                    (_, Ok(t)) => RecordingFact::Verified(t),
                }
            }
        },
    };
    let r = s.record;
    let facts = SessionFacts {
        id: r.id,
        node_id: r.node_id.unwrap_or_else(|| r.node.clone()),
        node: r.node,
        operator: r.operator,
        environment: r.environment,
        started_at: r.started_at,
        ended_at: r.ended_at,
        end_reason: r.end_reason,
        bytes: r.bytes_in.saturating_add(r.bytes_out),
        kill: s.kill,
        owner_seen_at: s.owner_seen_at,
        recording,
    };
    (facts, tail)
}

/// A recording's events as the rules see them.
fn read_timeline(path: &Path) -> Result<Timeline, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    timeline_of(path, &bytes)
}

/// The events of a recording's bytes (`path` says which kind it is).
fn timeline_of(path: &Path, bytes: &[u8]) -> Result<Timeline, String> {
    let at = |d: Duration| millis(d);
    let events = match RecordingKind::of_path(path) {
        // only the times and markers: no statement's text is copied
        RecordingKind::Sql => SqlLog::marks(bytes)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|e| match e {
                SqlMark::Statement(t) => Recorded {
                    at: at(*t),
                    mark: Mark::Activity("statement"),
                },
                SqlMark::Marker { at: t, label } => Recorded {
                    at: at(*t),
                    mark: classify(label),
                },
            })
            .collect(),
        RecordingKind::Terminal => {
            let cast = Cast::parse(bytes).map_err(|e| e.to_string())?;
            cast.events
                .iter()
                .map(|e| Recorded {
                    at: at(e.at),
                    mark: match e.kind {
                        EventKind::Input => Mark::Activity("input"),
                        EventKind::Marker => classify(cast.data(e)),
                        EventKind::Output | EventKind::Resize { .. } => Mark::Other,
                    },
                })
                .collect()
        }
    };
    Ok(Timeline { events })
}

/// What a recorded marker means (labels written by the fronts and `marker_label`).
fn classify(label: &str) -> Mark {
    if label.starts_with("channel:") {
        Mark::Activity("channel")
    } else if label.starts_with("sftp ") {
        Mark::Activity("transfer")
    } else if label.starts_with("refused ") || label.starts_with("target refused:") {
        // a refused request is still something the operator did
        Mark::Activity("request")
    } else if label.starts_with("locked:") {
        Mark::Lock
    } else if label.starts_with("unlocked:") {
        Mark::Unlock
    } else if label.starts_with("end:") || label.starts_with("session end:") {
        Mark::End
    } else {
        Mark::Other
    }
}
