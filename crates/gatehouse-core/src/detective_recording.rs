//! What a session's recording says happened, reduced to what the detective's rules need:
//! operator activity, locks, unlocks and the end, with their offsets.

/// What one recorded line means to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Something the operator did: typed input, a new channel, a statement, a transfer.
    Activity(&'static str),
    /// The session locked (idle lock or reauthentication due).
    Lock,
    /// The operator reauthenticated.
    Unlock,
    /// The end of the session (the enforcement end or the session's own end line).
    End,
    /// Output, resizes, warnings: time passes, nothing else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Milliseconds since the session started.
    pub at: i64,
    pub mark: Mark,
}

/// A recording's events in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    pub events: Vec<Recorded>,
}

/// What the registry and the verifier say about a session's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingFact {
    /// The session has no recording.
    None,
    /// Recording failed and the session was ended for it (fail closed: not a violation).
    Failed,
    /// Removed by retention.
    Pruned,
    /// Verified (complete, live, or interrupted up to its checkpoint).
    Verified(Timeline),
    /// Does not verify; what it shows is still read (it may be the evidence).
    Tampered {
        why: String,
        timeline: Option<Timeline>,
    },
    Unreadable(String),
}

impl RecordingFact {
    pub fn timeline(&self) -> Option<&Timeline> {
        match self {
            RecordingFact::Verified(t)
            | RecordingFact::Tampered {
                timeline: Some(t), ..
            } => Some(t),
            _ => None,
        }
    }
}

/// A live session's state as its recording shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveState {
    /// Offset of the last operator activity (0: the login).
    pub last_activity: i64,
    /// Offset of the lock still in force, if any.
    pub locked_at: Option<i64>,
}

/// Operator activity recorded after the session's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateActivity {
    pub at: i64,
    pub end: i64,
    pub what: &'static str,
}

/// A span without operator activity: idle (`locked` false) or locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
    pub locked: bool,
}

impl Timeline {
    pub fn state(&self) -> LiveState {
        let mut s = LiveState::default();
        for e in &self.events {
            match e.mark {
                Mark::Activity(_) if s.locked_at.is_none() => s.last_activity = e.at,
                Mark::Lock => {
                    s.locked_at.get_or_insert(e.at);
                }
                Mark::Unlock => {
                    s.locked_at = None;
                    s.last_activity = e.at;
                }
                _ => {}
            }
        }
        s
    }

    /// The shortest timeline with this one's [`Timeline::state`], onto which later events
    /// fold as they would onto this one (the state is all a live session's rules read): at
    /// most the last activity and the lock still in force. A live recording's tail keeps
    /// this instead of every event, so a busy session's tail stays two events long rather
    /// than growing with every statement or keystroke, and is not copied whole each pass.
    pub fn summarized(&self) -> Timeline {
        let state = self.state();
        let mut events = vec![Recorded {
            at: state.last_activity,
            mark: Mark::Activity("earlier activity"),
        }];
        if let Some(at) = state.locked_at {
            events.push(Recorded {
                at,
                mark: Mark::Lock,
            });
        }
        Timeline { events }
    }

    /// Offset of the last event of any kind.
    pub fn last_event(&self) -> i64 {
        self.events.iter().map(|e| e.at).max().unwrap_or(0)
    }

    /// The first activity later than `tolerance` after the recorded end (or, with no end
    /// line, after `registry_end`, tolerance included by the caller).
    pub fn activity_after_end(&self, registry_end: i64, tolerance: i64) -> Option<LateActivity> {
        let end = self
            .events
            .iter()
            .find(|e| e.mark == Mark::End)
            .map_or(registry_end, |e| e.at.min(registry_end));
        self.events.iter().find_map(|e| match e.mark {
            Mark::Activity(what) if e.at > end + tolerance => Some(LateActivity {
                at: e.at,
                end,
                what,
            }),
            _ => None,
        })
    }

    /// Spans without activity from the login to the end (the first end line, or
    /// `end_offset`): idle up to a lock, locked up to the unlock or the end.
    pub fn gaps(&self, end_offset: i64) -> Vec<Gap> {
        let mut out = Vec::new();
        let mut last = 0;
        let mut locked: Option<i64> = None;
        let mut end = end_offset;
        for e in &self.events {
            match e.mark {
                Mark::Activity(_) if locked.is_none() => {
                    out.push(Gap {
                        from: last,
                        to: e.at,
                        locked: false,
                    });
                    last = e.at;
                }
                Mark::Lock if locked.is_none() => {
                    out.push(Gap {
                        from: last,
                        to: e.at,
                        locked: false,
                    });
                    locked = Some(e.at);
                }
                Mark::Unlock => {
                    if let Some(l) = locked.take() {
                        out.push(Gap {
                            from: l,
                            to: e.at,
                            locked: true,
                        });
                    }
                    last = e.at;
                }
                Mark::End => {
                    end = e.at.min(end_offset);
                    break;
                }
                _ => {}
            }
        }
        out.push(match locked {
            Some(l) => Gap {
                from: l,
                to: end.max(l),
                locked: true,
            },
            None => Gap {
                from: last,
                to: end.max(last),
                locked: false,
            },
        });
        out.retain(|g| g.to > g.from);
        out
    }
}
