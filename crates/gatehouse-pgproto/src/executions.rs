//! The statements behind portals being executed, for the tracker: one entry per portal run,
//! however many Executes it takes. A portal read in pieces (an Execute with a row limit
//! answered by PortalSuspended, then more Executes of the same portal: a JDBC fetch size)
//! stays one entry counting its executions and rows, logged when the portal completes,
//! fails or goes away (Close, a new Bind of its name, the end of the transaction or of the
//! session), marked `suspended` if it never completed.
//!
//! Entries are numbered rather than keyed by portal name: a client may pipeline a Bind that
//! replaces the unnamed portal while an Execute of the previous one is still unanswered.

use std::time::Duration;

use crate::tracker::{Map, Statement};

#[derive(Debug)]
struct Open {
    s: Statement,
    portal: String,
    /// Executes sent and not yet answered.
    inflight: u32,
    completed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Executions {
    open: Map<u64, Open>,
    /// The entry of each live portal.
    current: Map<String, u64>,
    next_id: u64,
    /// Entries finished, waiting to be handed out.
    done: Vec<Statement>,
}

fn finish(mut s: Statement, now: Duration, out: &mut Vec<Statement>) {
    s.duration = now.saturating_sub(s.at);
    out.push(s);
}

impl Executions {
    /// An Execute of `portal`: the id of the entry it adds to (a new one from `fresh` unless
    /// the portal's entry is still open).
    pub(crate) fn execute(&mut self, portal: &str, fresh: impl FnOnce() -> Statement) -> u64 {
        if let Some(id) = self.current.get(portal)
            && let Some(o) = self.open.get_mut(id)
        {
            o.s.executions = o.s.executions.saturating_add(1);
            o.inflight = o.inflight.saturating_add(1);
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(
            id,
            Open {
                s: fresh(),
                portal: portal.to_owned(),
                inflight: 1,
                completed: false,
            },
        );
        self.current.insert(portal.to_owned(), id);
        id
    }

    /// Logs the entry if nothing more can come for it: no Execute unanswered, and the
    /// portal completed or gone.
    fn release(&mut self, id: u64, now: Duration) {
        let Some(o) = self.open.get(&id) else { return };
        let live = self.current.get(&o.portal) == Some(&id);
        if o.inflight == 0
            && (o.completed || !live)
            && let Some(o) = self.open.remove(&id)
        {
            if live {
                self.current.remove(&o.portal);
            }
            finish(o.s, now, &mut self.done);
        }
    }

    /// The portal is closed or replaced.
    pub(crate) fn portal_gone(&mut self, portal: &str, now: Duration) {
        if let Some(id) = self.current.remove(portal) {
            self.release(id, now);
        }
    }

    pub(crate) fn row(&mut self, id: u64) {
        if let Some(o) = self.open.get_mut(&id) {
            o.s.rows = o.s.rows.saturating_add(1);
        }
    }

    /// An Execute answered by PortalSuspended.
    pub(crate) fn suspended(&mut self, id: u64, now: Duration) {
        if let Some(o) = self.open.get_mut(&id) {
            o.inflight = o.inflight.saturating_sub(1);
            o.s.suspended = !o.completed;
        }
        self.release(id, now);
    }

    /// An Execute answered by CommandComplete (`tag`) or EmptyQueryResponse (None).
    pub(crate) fn completed(&mut self, id: u64, tag: Option<String>, now: Duration) {
        if let Some(o) = self.open.get_mut(&id) {
            o.inflight = o.inflight.saturating_sub(1);
            o.s.tags.extend(tag);
            o.s.suspended = false;
            o.completed = true;
        }
        self.release(id, now);
    }

    /// An Execute answered by an error: its entry is done.
    pub(crate) fn failed(&mut self, id: u64, error: (String, String), now: Duration) {
        if let Some(mut o) = self.open.remove(&id) {
            if self.current.get(&o.portal) == Some(&id) {
                self.current.remove(&o.portal);
            }
            o.s.error = Some(error);
            o.s.suspended = false;
            finish(o.s, now, &mut self.done);
        }
    }

    /// An Execute the server skipped (an earlier error in its pipeline): it did not run.
    pub(crate) fn skipped(&mut self, id: u64, now: Duration) {
        if let Some(o) = self.open.get_mut(&id) {
            o.inflight = o.inflight.saturating_sub(1);
            o.s.executions = o.s.executions.saturating_sub(1);
            if o.s.executions == 0 {
                if let Some(o) = self.open.remove(&id)
                    && self.current.get(&o.portal) == Some(&id)
                {
                    self.current.remove(&o.portal);
                }
                return;
            }
        }
        self.release(id, now);
    }

    /// The transaction ended: every portal is gone (protocol-level portals never outlive
    /// their transaction).
    pub(crate) fn transaction_ended(&mut self, now: Duration) {
        let mut idle: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.inflight == 0)
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            if let Some(o) = self.open.remove(&id) {
                self.current.remove(&o.portal);
                finish(o.s, now, &mut self.done);
            }
        }
    }

    /// The session ended: every entry, those still waiting for a result with that error.
    pub(crate) fn abandon(&mut self, now: Duration) -> Vec<Statement> {
        let mut all: Vec<(u64, Open)> = self.open.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        self.current.clear();
        for (_, mut o) in all {
            if o.inflight > 0 && !o.completed {
                o.s.error = Some((String::new(), "session ended before the result".into()));
                o.s.suspended = false;
            }
            finish(o.s, now, &mut self.done);
        }
        self.take_done()
    }

    pub(crate) fn take_done(&mut self) -> Vec<Statement> {
        std::mem::take(&mut self.done)
    }

    /// Moves the finished entries to `out`: into an empty `out` the queue itself (its
    /// allocation goes with them, nothing is copied), else appended. The queue keeps no room:
    /// an idle session holds none (memory per live session).
    pub(crate) fn done_into(&mut self, out: &mut Vec<Statement>) {
        if self.done.is_empty() {
            return;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.done);
        } else {
            out.append(&mut self.done);
        }
        self.done = Vec::new();
    }
}
