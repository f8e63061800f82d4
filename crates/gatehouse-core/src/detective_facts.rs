//! The facts the detective's rules judge: sessions as the registry records them (with their
//! recordings read back), node heartbeats, operator lock history and every environment's
//! policy versions.

use std::collections::HashMap;

use super::RecordingFact;
use crate::EnvPolicy;

/// One version of an environment's policy and when it came into force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub environment: String,
    pub version: i64,
    /// Unix ms.
    pub valid_from: i64,
    pub policy: EnvPolicy,
}

/// Every environment's policy versions, to find the one in force at any moment.
#[derive(Debug, Clone, Default)]
pub struct PolicyHistory {
    by_env: HashMap<String, Vec<PolicyVersion>>,
}

/// A policy version with the span it was in force, `[from, until)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct InForce<'a> {
    pub(super) version: &'a PolicyVersion,
    pub(super) until: Option<i64>,
}

impl PolicyHistory {
    pub fn new(versions: impl IntoIterator<Item = PolicyVersion>) -> PolicyHistory {
        let mut by_env: HashMap<String, Vec<PolicyVersion>> = HashMap::new();
        for v in versions {
            by_env.entry(v.environment.clone()).or_default().push(v);
        }
        for vs in by_env.values_mut() {
            vs.sort_by_key(|v| (v.valid_from, v.version));
        }
        PolicyHistory { by_env }
    }

    /// The versions in force at some moment of `[from, to)` (`to` None: until now and on).
    /// Nothing when the history does not reach back to `from`: with no record of the
    /// policy, nothing can be proven against it.
    pub(super) fn during(&self, env: &str, from: i64, to: Option<i64>) -> Vec<InForce<'_>> {
        let Some(vs) = self.by_env.get(env) else {
            return Vec::new();
        };
        if vs.first().is_none_or(|v| v.valid_from > from) {
            return Vec::new();
        }
        vs.iter()
            .enumerate()
            .map(|(i, v)| InForce {
                version: v,
                until: vs.get(i + 1).map(|n| n.valid_from),
            })
            .filter(|f| {
                f.until.is_none_or(|u| u > from) && to.is_none_or(|t| f.version.valid_from < t)
            })
            .collect()
    }
}

/// A session as the registry (and the heartbeat) records it, with its recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFacts {
    pub id: String,
    /// Display name of the node that holds it.
    pub node: String,
    /// Id of that node (what its heartbeat is keyed by).
    pub node_id: String,
    pub operator: String,
    /// None when access was denied (no environment, never reached a target).
    pub environment: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    /// Bytes relayed each way, summed (written when the session ends).
    pub bytes: i64,
    pub kill: Option<KillFact>,
    /// When a running node last claimed this session as one of its live guards.
    pub owner_seen_at: Option<i64>,
    pub recording: RecordingFact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillFact {
    /// Unix ms of the request.
    pub at: i64,
    /// The request came from a user lock, not `sessions kill`.
    pub user_lock: bool,
}

/// A broker node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFact {
    /// The node's unique id (several nodes may share a name).
    pub id: String,
    pub name: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The node said it stopped (graceful shutdown).
    pub stopped: bool,
}

/// An admin locked or unlocked an operator (from the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockChange {
    pub operator: String,
    pub at: i64,
    pub locked: bool,
}

/// Everything one pass looks at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub sessions: Vec<SessionFacts>,
    pub nodes: Vec<NodeFact>,
    /// Operators that exist, and whether each is locked now.
    pub operators: HashMap<String, bool>,
    pub lock_changes: Vec<LockChange>,
    pub policies: PolicyHistory,
}
