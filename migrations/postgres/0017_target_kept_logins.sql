-- A PostgreSQL target's logins may be kept between sessions by nodes with `[postgres]
-- target_pool` (1, the default), or never (0: every session logs in anew).
ALTER TABLE targets ADD COLUMN kept_logins BIGINT NOT NULL DEFAULT 1;
