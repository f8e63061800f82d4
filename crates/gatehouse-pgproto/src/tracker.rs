//! Follows statements through the protocol for the audit log: which statement was sent
//! (simple Query, or Parse/Bind/Execute with its parameters), when, and how it finished (the
//! CommandComplete tag, or the error's SQLSTATE and message).
//!
//! Responses are matched to requests in order, as PostgreSQL answers them. ReadyForQuery is
//! the resynchronisation point: each one closes exactly one Query, FunctionCall or Sync, so
//! an unexpected message can at worst misattribute results until the next one.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

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
    /// The prepared statement's name (extended protocol; "" is the unnamed one).
    pub name: Option<String>,
    pub text: String,
    /// Bind parameters as shown (None: SQL NULL); None for the simple protocol.
    pub params: Option<Vec<Option<String>>>,
    pub duration: Duration,
    /// CommandComplete tags (several for a multi-statement Query).
    pub tags: Vec<String>,
    /// SQLSTATE and message of the error that ended it.
    pub error: Option<(String, String)>,
}

#[derive(Debug)]
enum Pending {
    /// A Parse: logged only if it fails.
    Parse(Statement),
    Execute(Statement),
    /// A Query or FunctionCall: finished by ReadyForQuery.
    Query(Statement),
    Sync,
}

#[derive(Debug, Default)]
pub struct Tracker {
    statements: HashMap<String, String>,
    /// Parameter types of prepared statements (from Parse, or the server's
    /// ParameterDescription), to show binary parameters readably.
    types: HashMap<String, Vec<u32>>,
    /// Statements described and waiting for their ParameterDescription, each with the
    /// pipeline segment it was sent in (a segment ends at a Sync, Query or FunctionCall,
    /// each answered by one ReadyForQuery). Clients pipeline segments, so a ReadyForQuery
    /// retires only the describes of the segment it ends: one the server skipped after an
    /// error never got its ParameterDescription.
    describing: VecDeque<(u64, String)>,
    /// Segments sent by the client, and finished by the server's ReadyForQuery.
    segments_sent: u64,
    segments_done: u64,
    portals: HashMap<String, (String, String, Vec<Option<String>>)>,
    pending: VecDeque<Pending>,
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

fn statement(at: Duration, protocol: Protocol, name: Option<String>, text: String) -> Statement {
    Statement {
        at,
        protocol,
        name,
        text: clip(text, MAX_TEXT),
        params: None,
        duration: Duration::ZERO,
        tags: Vec::new(),
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
            Frontend::Query(text) => {
                self.pending.push_back(Pending::Query(statement(
                    now,
                    Protocol::Simple,
                    None,
                    text.clone(),
                )));
                self.segments_sent += 1;
            }
            Frontend::Parse { name, text, types } => {
                self.statements.insert(name.clone(), text.clone());
                self.types.insert(name.clone(), types.clone());
                self.pending.push_back(Pending::Parse(statement(
                    now,
                    Protocol::Extended,
                    Some(name.clone()),
                    text.clone(),
                )));
            }
            Frontend::Bind {
                portal,
                statement: name,
                params,
            } => {
                let text = self
                    .statements
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("<prepared statement {name:?}>"));
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
                    .insert(portal.clone(), (name.clone(), text, shown));
            }
            Frontend::Execute { portal } => {
                let (name, text, params) =
                    self.portals.get(portal).cloned().unwrap_or_else(|| {
                        (String::new(), format!("<portal {portal:?}>"), Vec::new())
                    });
                let mut s = statement(now, Protocol::Extended, Some(name), text);
                s.params = Some(params);
                self.pending.push_back(Pending::Execute(s));
            }
            Frontend::FunctionCall { oid, args } => {
                let mut s = statement(
                    now,
                    Protocol::FunctionCall,
                    None,
                    format!("<function call, oid {oid}>"),
                );
                // the arguments are what the call does (query_to_xml runs its first one)
                s.params = Some(
                    args.iter()
                        .map(|a| a.display_argument().map(|v| clip(v, MAX_PARAM)))
                        .collect(),
                );
                self.pending.push_back(Pending::Query(s));
                self.segments_sent += 1;
            }
            Frontend::Describe {
                statement: Some(name),
            } => self
                .describing
                .push_back((self.segments_sent, name.clone())),
            Frontend::Sync => {
                self.pending.push_back(Pending::Sync);
                self.segments_sent += 1;
            }
            Frontend::Describe { statement: None }
            | Frontend::Flush
            | Frontend::Terminate
            | Frontend::Other(_) => {}
        }
    }

    /// A message from the server, at `now`; returns the statements it finished.
    pub fn backend(&mut self, msg: &Backend<'_>, now: Duration) -> Vec<Statement> {
        let mut out = Vec::new();
        match msg {
            Backend::Other(b'1') => {
                if matches!(self.pending.front(), Some(Pending::Parse(_))) {
                    self.pending.pop_front();
                }
            }
            Backend::CommandComplete { .. } | Backend::EmptyQuery | Backend::PortalSuspended => {
                let tag = match msg {
                    Backend::CommandComplete { tag } => Some(tag.clone()),
                    _ => None,
                };
                match self.pending.front_mut() {
                    Some(Pending::Query(s)) => s.tags.extend(tag),
                    Some(Pending::Execute(_)) => {
                        if let Some(Pending::Execute(mut s)) = self.pending.pop_front() {
                            s.tags.extend(tag);
                            finish(s, now, &mut out);
                        }
                    }
                    _ => {}
                }
            }
            Backend::Error(ErrorFields { code, message, .. }) => {
                let error = Some((code.clone(), message.clone()));
                match self.pending.front_mut() {
                    Some(Pending::Query(s)) => s.error = error,
                    Some(Pending::Parse(_) | Pending::Execute(_)) => {
                        if let Some(Pending::Parse(mut s) | Pending::Execute(mut s)) =
                            self.pending.pop_front()
                        {
                            s.error = error;
                            finish(s, now, &mut out);
                        }
                        // the server skips the rest of the pipeline up to the next Sync
                        while matches!(
                            self.pending.front(),
                            Some(Pending::Parse(_) | Pending::Execute(_))
                        ) {
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
            Backend::ReadyForQuery { .. } => {
                self.segments_done += 1;
                let done = self.segments_done;
                self.describing.retain(|(segment, _)| *segment >= done);
                while let Some(p) = self.pending.pop_front() {
                    match p {
                        Pending::Query(s) => {
                            finish(s, now, &mut out);
                            break;
                        }
                        Pending::Sync => break,
                        Pending::Parse(_) | Pending::Execute(_) => {}
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// The session ended: statements still waiting for their result.
    pub fn abandon(&mut self, now: Duration) -> Vec<Statement> {
        let mut out = Vec::new();
        for p in self.pending.drain(..) {
            if let Pending::Query(mut s) | Pending::Execute(mut s) = p {
                if s.error.is_none() {
                    s.error = Some((String::new(), "session ended before the result".into()));
                }
                finish(s, now, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Param;

    const MS: Duration = Duration::from_millis(1);

    fn err(code: &str) -> Backend<'static> {
        Backend::Error(ErrorFields {
            severity: "ERROR".into(),
            code: code.into(),
            message: "boom".into(),
        })
    }

    fn complete(tag: &str) -> Backend<'static> {
        Backend::CommandComplete { tag: tag.into() }
    }

    const READY: Backend<'static> = Backend::ReadyForQuery { status: b'I' };
    const EXECUTE_UNNAMED: Frontend<'static> = Frontend::Execute {
        portal: String::new(),
    };

    #[test]
    fn simple_queries_collect_their_tags() {
        let mut t = Tracker::new();
        t.frontend(&Frontend::Query("select 1; select 2".into()), MS);
        assert!(t.backend(&complete("SELECT 1"), 2 * MS).is_empty());
        assert!(t.backend(&complete("SELECT 1"), 3 * MS).is_empty());
        let done = t.backend(&READY, 4 * MS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tags, vec!["SELECT 1", "SELECT 1"]);
        assert_eq!(done[0].duration, 3 * MS);
        t.frontend(&Frontend::Query("selec".into()), 5 * MS);
        t.backend(&err("42601"), 6 * MS);
        let done = t.backend(&READY, 6 * MS);
        assert_eq!(done[0].error, Some(("42601".into(), "boom".into())));
    }

    #[test]
    fn pipelined_extended_queries_with_parameters() {
        let mut t = Tracker::new();
        for (name, text, v) in [("s1", "select $1", "42"), ("", "insert $1", "x")] {
            t.frontend(
                &Frontend::Parse {
                    name: name.into(),
                    text: text.into(),
                    types: vec![],
                },
                MS,
            );
            t.frontend(
                &Frontend::Bind {
                    portal: String::new(),
                    statement: name.into(),
                    params: vec![
                        Param {
                            value: Some(v.as_bytes()),
                            binary: false,
                        },
                        Param {
                            value: None,
                            binary: false,
                        },
                    ],
                },
                MS,
            );
            t.frontend(&EXECUTE_UNNAMED, MS);
        }
        t.frontend(&Frontend::Sync, MS);
        let mut done = vec![];
        for m in [
            Backend::Other(b'1'),
            Backend::Other(b'2'),
            complete("SELECT 1"),
            Backend::Other(b'1'),
            Backend::Other(b'2'),
            complete("INSERT 0 1"),
            READY,
        ] {
            done.extend(t.backend(&m, 2 * MS));
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].text, "select $1");
        assert_eq!(done[0].name.as_deref(), Some("s1"));
        assert_eq!(done[0].params, Some(vec![Some("42".into()), None]));
        assert_eq!(done[1].tags, vec!["INSERT 0 1"]);
    }

    fn parse(name: &str, text: &str) -> Frontend<'static> {
        Frontend::Parse {
            name: name.into(),
            text: text.into(),
            types: vec![],
        }
    }

    fn bind_binary<'a>(statement: &str, value: &'a [u8]) -> Frontend<'a> {
        Frontend::Bind {
            portal: String::new(),
            statement: statement.into(),
            params: vec![Param {
                value: Some(value),
                binary: true,
            }],
        }
    }

    fn describe(name: &str) -> Frontend<'static> {
        Frontend::Describe {
            statement: Some(name.into()),
        }
    }

    /// tokio-postgres closes a dropped statement (Close, Sync) and prepares the next one
    /// (Parse, Describe, Sync) before the server has answered the Close: the answer's
    /// ReadyForQuery must not forget the describe that is still in flight.
    #[test]
    fn parameter_types_survive_a_pipelined_ready_for_query() {
        let mut t = Tracker::new();
        t.frontend(&Frontend::Other(b'C'), MS);
        t.frontend(&Frontend::Sync, MS);
        t.frontend(&parse("s1", "select $1"), MS);
        t.frontend(&describe("s1"), MS);
        t.frontend(&Frontend::Sync, MS);
        for m in [Backend::Other(b'3'), READY, Backend::Other(b'1')] {
            t.backend(&m, 2 * MS);
        }
        t.backend(&Backend::ParameterDescription(vec![23]), 2 * MS);
        t.backend(&READY, 2 * MS);
        t.frontend(&bind_binary("s1", &[0, 0, 0, 7]), 3 * MS);
        t.frontend(&EXECUTE_UNNAMED, 3 * MS);
        t.frontend(&Frontend::Sync, 3 * MS);
        let mut done = t.backend(&complete("SELECT 1"), 4 * MS);
        done.extend(t.backend(&READY, 4 * MS));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].params, Some(vec![Some("7".into())]));
    }

    /// A describe the server skipped (its Parse failed) is retired by its segment's
    /// ReadyForQuery, so the next ParameterDescription goes to the next statement.
    #[test]
    fn a_skipped_describe_does_not_shift_later_parameter_types() {
        let mut t = Tracker::new();
        t.frontend(&parse("bad", "selec $1"), MS);
        t.frontend(&describe("bad"), MS);
        t.frontend(&Frontend::Sync, MS);
        t.frontend(&parse("good", "select $1"), MS);
        t.frontend(&describe("good"), MS);
        t.frontend(&Frontend::Sync, MS);
        for m in [
            err("42601"),
            READY,
            Backend::Other(b'1'),
            Backend::ParameterDescription(vec![20]),
            READY,
        ] {
            t.backend(&m, 2 * MS);
        }
        t.frontend(&bind_binary("good", &[0, 0, 0, 0, 0, 0, 0, 9]), 3 * MS);
        t.frontend(&EXECUTE_UNNAMED, 3 * MS);
        t.frontend(&Frontend::Sync, 3 * MS);
        let mut done = t.backend(&complete("SELECT 1"), 4 * MS);
        done.extend(t.backend(&READY, 4 * MS));
        assert_eq!(done[0].params, Some(vec![Some("9".into())]));
    }

    #[test]
    fn an_error_skips_the_rest_of_the_pipeline() {
        let mut t = Tracker::new();
        for text in ["bad sql", "select 2"] {
            t.frontend(
                &Frontend::Parse {
                    name: String::new(),
                    text: text.into(),
                    types: vec![],
                },
                MS,
            );
            t.frontend(&EXECUTE_UNNAMED, MS);
        }
        t.frontend(&Frontend::Sync, MS);
        let done = t.backend(&err("42601"), 2 * MS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].text, "bad sql");
        assert!(t.backend(&READY, 3 * MS).is_empty());
        // in step again afterwards
        t.frontend(&Frontend::Query("select 3".into()), 4 * MS);
        t.backend(&complete("SELECT 1"), 5 * MS);
        assert_eq!(t.backend(&READY, 5 * MS)[0].text, "select 3");
    }

    #[test]
    fn function_calls_are_logged_with_their_arguments() {
        let mut t = Tracker::new();
        t.frontend(
            &Frontend::FunctionCall {
                oid: 2924,
                args: vec![
                    Param {
                        value: Some(b"delete from orders returning 1"),
                        binary: true,
                    },
                    Param {
                        value: Some(&[1]),
                        binary: true,
                    },
                    Param {
                        value: Some(b"t"),
                        binary: false,
                    },
                    Param {
                        value: None,
                        binary: false,
                    },
                ],
            },
            MS,
        );
        t.backend(&Backend::FunctionCallResponse, 2 * MS);
        let done = t.backend(&READY, 2 * MS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].protocol, Protocol::FunctionCall);
        assert_eq!(done[0].text, "<function call, oid 2924>");
        assert_eq!(
            done[0].params,
            Some(vec![
                Some("delete from orders returning 1".into()),
                Some("\\x01".into()),
                Some("t".into()),
                None
            ])
        );
    }

    #[test]
    fn abandoned_statements_are_logged_and_long_text_is_clipped() {
        let mut t = Tracker::new();
        t.frontend(&Frontend::Query("x".repeat(MAX_TEXT + 10)), MS);
        let done = t.abandon(3 * MS);
        assert_eq!(done.len(), 1);
        assert!(done[0].text.ends_with("…[10 bytes truncated]"));
        assert!(done[0].error.is_some());
    }
}
