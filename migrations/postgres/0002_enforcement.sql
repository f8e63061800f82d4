-- Enforcement: per-environment policy (durations in milliseconds, NULL = no limit), admin
-- kill requests picked up by the broker node that owns the session, TOTP enrollment.
ALTER TABLE environments ADD COLUMN idle_timeout_ms BIGINT;
ALTER TABLE environments ADD COLUMN max_session_ms BIGINT;
ALTER TABLE environments ADD COLUMN warn_before_ms TEXT NOT NULL DEFAULT '';
ALTER TABLE environments ADD COLUMN idle_action TEXT NOT NULL DEFAULT 'disconnect';
ALTER TABLE environments ADD COLUMN lock_grace_ms BIGINT NOT NULL DEFAULT 120000;
ALTER TABLE environments ADD COLUMN reauth_after_ms BIGINT;
ALTER TABLE environments ADD COLUMN policy_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN kill_requested_at BIGINT;
ALTER TABLE sessions ADD COLUMN kill_reason TEXT;
ALTER TABLE operators ADD COLUMN totp_secret BYTEA;
