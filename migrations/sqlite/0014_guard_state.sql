-- What a live session's guard knows, written by its node's heartbeat (every 2 s, and at
-- once when the session locks or unlocks) so that reviewers read it from the store: the
-- operator's last activity, whether the session is locked at the prompt and since when,
-- and the next enforcement deadline with the limit it belongs to (idle, max_session or
-- reauth; while locked, reauth is the end of the lock grace). Times are Unix ms. NULL
-- `locked`: no guard has reported (a node older than this migration).
ALTER TABLE sessions ADD COLUMN last_activity_at BIGINT;
ALTER TABLE sessions ADD COLUMN locked BIGINT;
ALTER TABLE sessions ADD COLUMN locked_since BIGINT;
ALTER TABLE sessions ADD COLUMN next_limit TEXT;
ALTER TABLE sessions ADD COLUMN next_limit_at BIGINT;
