-- What the detective control reads on every pass (every 5 s): without these each pass read
-- the whole session registry (live sessions, and those ended since the last pass) and the
-- whole audit log (operator lock changes; violations already reported) — a node with a
-- year of history spent seconds a pass. The first makes the ended sessions a range, the
-- second each kind of audit event.
CREATE INDEX sessions_ended_at ON sessions (ended_at);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at);
