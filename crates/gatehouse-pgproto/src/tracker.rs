//! Follows statements through the protocol for the audit log: which statement was sent
//! (simple Query, or Parse/Bind/Execute with its parameters), when, and how it finished (the
//! CommandComplete tag, or the error's SQLSTATE and message).
//!
//! Responses are matched to requests in order, as PostgreSQL answers them. ReadyForQuery is
//! the resynchronisation point: each one closes exactly one Query, FunctionCall or Sync, so
//! an unexpected message can at worst misattribute results until the next one.
//!
//! A portal read in pieces (a JDBC fetch size) is one statement with its executions and
//! rows counted ([`crate::executions`]).

use std::collections::{HashMap, VecDeque};

/// The tracker's maps (statements, portals, executions), all per session: hashed several
/// times for each run of a prepared statement, with foldhash (seeded at random per map, as
/// the standard library's SipHash, at a fraction of its cost on short keys) — a profile of
/// `pgbench -M prepared` put SipHash at 2–3 % of the broker's instructions.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

use crate::executions::Executions;
use crate::message::{Backend, ErrorFields, Frontend};

/// Longest statement text kept in the log; longer text is cut and says so.
pub const MAX_TEXT: usize = 1 << 20;
/// Longest parameter value kept in the log.
pub const MAX_PARAM: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
    FunctionCall,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::FunctionCall => "function_call",
        }
    }
}

/// One finished statement, as the statement log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// When it was sent, since the session opened.
    pub at: Duration,
    pub protocol: Protocol,
    /// The prepared statement's name (extended protocol; "" is the unnamed one). Shared
    /// with the tracker's maps, as the text: a statement per round trip, its name and text
    /// counted rather than copied at each Bind and Execute.
    pub name: Option<Arc<str>>,
    pub text: Arc<str>,
    /// Bind parameters as shown (None: SQL NULL); None for the simple protocol. Shared with
    /// the bound portal's entry (each Execute of it would otherwise copy them).
    pub params: Option<Arc<[Option<String>]>>,
    pub duration: Duration,
    /// CommandComplete tags (several for a multi-statement Query).
    pub tags: Vec<String>,
    /// Executes of the portal this entry covers (1 unless it was read in pieces).
    pub executions: u32,
    /// DataRows the target returned for it.
    pub rows: u64,
    /// The portal was suspended (row limit reached) and never completed.
    pub suspended: bool,
    /// SQLSTATE and message of the error that ended it.
    pub error: Option<(String, String)>,
}

/// (Statements boxed: the queue allocates room for four entries on its first push, and
/// keeps it for the session; 64 bytes rather than 800 — memory per live session.)
#[derive(Debug)]
enum Pending {
    /// A Parse: logged only if it fails.
    Parse(Box<Statement>),
    /// An Execute, by its entry in [`Executions`].
    Execute(u64),
    /// A Query or FunctionCall: finished by ReadyForQuery.
    Query(Box<Statement>),
    Sync,
}

/// A bound portal: its statement's name and text, and its parameters as shown.
type Portal = (Arc<str>, Arc<str>, Arc<[Option<String>]>);

#[derive(Debug, Default)]
pub struct Tracker {
    /// Prepared statements: name → (the name, shared; the text).
    statements: Map<String, (Arc<str>, Arc<str>)>,
    /// Parameter types of prepared statements (from Parse, or the server's
    /// ParameterDescription), to show binary parameters readably.
    types: Map<String, Vec<u32>>,
    /// Statements described and waiting for their ParameterDescription, each with the
    /// pipeline segment it was sent in (a segment ends at a Sync, Query or FunctionCall,
    /// each answered by one ReadyForQuery). Clients pipeline segments, so a ReadyForQuery
    /// retires only the describes of the segment it ends: one the server skipped after an
    /// error never got its ParameterDescription.
    describing: VecDeque<(u64, String)>,
    /// Segments sent by the client, and finished by the server's ReadyForQuery.
    segments_sent: u64,
    segments_done: u64,
    portals: Map<String, Portal>,
    pending: VecDeque<Pending>,
    /// Statements behind portals, which a frontend message (Close, Bind) can finish: those
    /// are handed out with the next backend message's.
    executions: Executions,
    /// The client sent extended-protocol messages (Parse, Bind, Execute…) not yet closed by
    /// a Sync: the server may hold an implicit transaction and portals for them.
    unsynced: bool,
    /// The last ReadyForQuery said a transaction is open (or failed).
    in_transaction: bool,
}

/// `text` cut to `max` bytes ([`clip`]), shared.
fn clip_shared(text: &str, max: usize) -> Arc<str> {
    if text.len() > max {
        clip(text.to_owned(), max).into()
    } else {
        text.into()
    }
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let cut = s.len() - max;
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push_str(&format!("…[{cut} bytes truncated]"));
    }
    s
}

fn statement(
    at: Duration,
    protocol: Protocol,
    name: Option<Arc<str>>,
    text: Arc<str>,
) -> Statement {
    Statement {
        at,
        protocol,
        name,
        text,
        params: None,
        duration: Duration::ZERO,
        tags: Vec::new(),
        executions: 1,
        rows: 0,
        suspended: false,
        error: None,
    }
}

fn finish(mut s: Statement, now: Duration, out: &mut Vec<Statement>) {
    s.duration = now.saturating_sub(s.at);
    out.push(s);
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A message from the operator, at `now`.
    pub fn frontend(&mut self, msg: &Frontend<'_>, now: Duration) {
        match msg {
            Frontend::Query(_) | Frontend::FunctionCall { .. } | Frontend::Sync => {
                self.unsynced = false
            }
            // COPY's messages belong to the Query in progress (not done until its
            // ReadyForQuery); after it the server ignores them
            Frontend::Terminate | Frontend::Other(b'd' | b'c' | b'f') => {}
            _ => self.unsynced = true,
        }
        match msg {
            Frontend::Query(text) => {
                self.pending.push_back(Pending::Query(Box::new(statement(
                    now,
                    Protocol::Simple,
                    None,
                    clip_shared(text, MAX_TEXT),
                ))));
                self.segments_sent += 1;
            }
            Frontend::Parse { name, text, types } => {
                let shared: (Arc<str>, Arc<str>) =
                    (name.as_ref().into(), clip_shared(text, MAX_TEXT));
                self.statements
                    .insert(name.as_ref().to_owned(), shared.clone());
                self.types.insert(name.as_ref().to_owned(), types.clone());
                self.pending.push_back(Pending::Parse(Box::new(statement(
                    now,
                    Protocol::Extended,
                    Some(shared.0),
                    shared.1,
                ))));
            }
            Frontend::Bind {
                portal,
                statement: name,
                params,
            } => {
                let name: &str = name;
                let (shared_name, text) = self.statements.get(name).cloned().unwrap_or_else(|| {
                    (name.into(), format!("<prepared statement {name:?}>").into())
                });
                self.executions.portal_gone(portal, now);
                let types = self.types.get(name);
                let shown = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let oid = types.and_then(|t| t.get(i)).copied().filter(|o| *o != 0);
                        p.display_typed(oid).map(|v| clip(v, MAX_PARAM))
                    })
                    .collect();
                self.portals
                    .insert(portal.as_ref().to_owned(), (shared_name, text, shown));
            }
            Frontend::Execute { portal } => {
                let portals = &self.portals;
                let id = self.executions.execute(portal, || {
                    let (name, text, params) =
                        portals.get(portal.as_ref()).cloned().unwrap_or_else(|| {
                            (
                                "".into(),
                                format!("<portal {portal:?}>").into(),
                                Arc::from([]),
                            )
                        });
                    let mut s = statement(now, Protocol::Extended, Some(name), text);
                    s.params = Some(params);
                    s
                });
                self.pending.push_back(Pending::Execute(id));
            }
            Frontend::FunctionCall { oid, args } => {
                let mut s = statement(
                    now,
                    Protocol::FunctionCall,
                    None,
                    format!("<function call, oid {oid}>").into(),
                );
                // the arguments are what the call does (query_to_xml runs its first one)
                s.params = Some(
                    args.iter()
                        .map(|a| a.display_argument().map(|v| clip(v, MAX_PARAM)))
                        .collect(),
                );
                self.pending.push_back(Pending::Query(Box::new(s)));
                self.segments_sent += 1;
            }
            Frontend::Describe {
                statement: Some(name),
            } => self
                .describing
                .push_back((self.segments_sent, name.as_ref().to_owned())),
            Frontend::Sync => {
                self.pending.push_back(Pending::Sync);
                self.segments_sent += 1;
            }
            Frontend::Close {
                statement: false,
                name,
            } => self.executions.portal_gone(name, now),
            Frontend::Describe { statement: None }
            | Frontend::Close { .. }
            | Frontend::Flush
            | Frontend::Terminate
            | Frontend::Other(_) => {}
        }
    }

    /// A message from the server, at `now`; returns the statements it finished.
    pub fn backend(&mut self, msg: &Backend<'_>, now: Duration) -> Vec<Statement> {
        let mut out = Vec::new();
        self.backend_into(msg, now, &mut out);
        out
    }

    /// [`Tracker::backend`], the statements it finished added to `out` (one `out` for a
    /// batch of messages rather than a vector per message).
    pub fn backend_into(&mut self, msg: &Backend<'_>, now: Duration, out: &mut Vec<Statement>) {
        // statements a frontend message finished (a suspended portal closed) came first
        self.executions.done_into(out);
        match msg {
            Backend::Other(b'1') => {
                if matches!(self.pending.front(), Some(Pending::Parse(_))) {
                    self.pending.pop_front();
                }
            }
            Backend::Other(b'D') => match self.pending.front_mut() {
                Some(Pending::Query(s)) => s.rows = s.rows.saturating_add(1),
                Some(Pending::Execute(id)) => self.executions.row(*id),
                _ => {}
            },
            Backend::PortalSuspended => {
                if let Some(Pending::Execute(id)) = self.pending.front() {
                    let id = *id;
                    self.pending.pop_front();
                    self.executions.suspended(id, now);
                }
            }
            Backend::CommandComplete { .. } | Backend::EmptyQuery => {
                let tag = match msg {
                    Backend::CommandComplete { tag } => Some(tag.as_ref().to_owned()),
                    _ => None,
                };
                match self.pending.front_mut() {
                    Some(Pending::Query(s)) => s.tags.extend(tag),
                    Some(Pending::Execute(id)) => {
                        let id = *id;
                        self.pending.pop_front();
                        self.executions.completed(id, tag, now);
                    }
                    _ => {}
                }
            }
            Backend::Error(ErrorFields { code, message, .. }) => {
                let error = (code.clone(), message.clone());
                match self.pending.front_mut() {
                    Some(Pending::Query(s)) => s.error = Some(error),
                    Some(Pending::Parse(_) | Pending::Execute(_)) => {
                        match self.pending.pop_front() {
                            Some(Pending::Parse(mut s)) => {
                                s.error = Some(error);
                                finish(*s, now, out);
                            }
                            Some(Pending::Execute(id)) => self.executions.failed(id, error, now),
                            _ => {}
                        }
                        // the server skips the rest of the pipeline up to the next Sync
                        loop {
                            match self.pending.front() {
                                Some(Pending::Parse(_)) => {}
                                Some(Pending::Execute(id)) => self.executions.skipped(*id, now),
                                _ => break,
                            }
                            self.pending.pop_front();
                        }
                    }
                    _ => {}
                }
            }
            Backend::ParameterDescription(types) => {
                if let Some((_, name)) = self.describing.pop_front() {
                    self.types.insert(name, types.clone());
                }
            }
            Backend::ReadyForQuery { status } => {
                self.segments_done += 1;
                let done = self.segments_done;
                self.describing.retain(|(segment, _)| *segment >= done);
                while let Some(p) = self.pending.pop_front() {
                    match p {
                        Pending::Query(s) => {
                            finish(*s, now, out);
                            break;
                        }
                        Pending::Sync => break,
                        Pending::Parse(_) | Pending::Execute(_) => {}
                    }
                }
                self.in_transaction = *status != b'I';
                // idle: no transaction, so no portal
                if *status == b'I' {
                    self.executions.transaction_ended(now);
                }
            }
            _ => {}
        }
        self.executions.done_into(out);
    }

    /// Whether the server is at rest as far as the client's messages go: every segment the
    /// client sent was answered by its ReadyForQuery, the last one idle (no transaction
    /// open), and no extended-protocol message is waiting for a Sync. Only then can the
    /// server's session be reset (`DISCARD ALL`) and handed to another session.
    pub fn at_rest(&self) -> bool {
        !self.unsynced
            && !self.in_transaction
            && self.segments_sent == self.segments_done
            && self.pending.is_empty()
    }

    /// The session ended: statements still waiting for their result.
    pub fn abandon(&mut self, now: Duration) -> Vec<Statement> {
        let mut out = Vec::new();
        for p in self.pending.drain(..) {
            if let Pending::Query(mut s) = p {
                if s.error.is_none() {
                    s.error = Some((String::new(), "session ended before the result".into()));
                }
                finish(*s, now, &mut out);
            }
        }
        // portal runs: those waiting for a result with that error, suspended ones as they are
        out.extend(self.executions.abandon(now));
        out
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
