-- Detective control. The policy in force at any past moment: one row per version of an
-- environment's policy, written with every change (the version an environment has now is
-- seeded here: since its creation when never changed, else from now, since when it was set
-- is not known). Node heartbeats: a node writes its row every few seconds while it serves
-- (keyed by name for now; a node id joins the key when several nodes share a store), and
-- stamps owner_seen_at on every live session its guards hold, so a live row nobody holds
-- shows.
CREATE TABLE policy_history (
    environment      TEXT NOT NULL,
    version          BIGINT NOT NULL,
    valid_from       BIGINT NOT NULL,
    idle_timeout_ms  BIGINT,
    max_session_ms   BIGINT,
    warn_before_ms   TEXT NOT NULL DEFAULT '',
    idle_action      TEXT NOT NULL,
    lock_grace_ms    BIGINT NOT NULL,
    reauth_after_ms  BIGINT,
    PRIMARY KEY (environment, version)
);
INSERT INTO policy_history (environment, version, valid_from, idle_timeout_ms, max_session_ms,
        warn_before_ms, idle_action, lock_grace_ms, reauth_after_ms)
    SELECT name, policy_version,
           CASE WHEN policy_version = 0 THEN created_at ELSE CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) END,
           idle_timeout_ms, max_session_ms, warn_before_ms, idle_action, lock_grace_ms,
           reauth_after_ms
    FROM environments;

CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,
    started_at     BIGINT NOT NULL,
    heartbeat_at   BIGINT NOT NULL,
    stopped_at     BIGINT,
    live_sessions  BIGINT NOT NULL DEFAULT 0,
    version        TEXT NOT NULL DEFAULT ''
);

ALTER TABLE sessions ADD COLUMN owner_seen_at BIGINT;
