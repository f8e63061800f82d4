-- Tamper evidence for recordings. From now on the node key's MAC (recording_mac) covers a
-- recording's state and path as well as its event count and digest, and is rewritten at every
-- state change (recording, sealed, interrupted, failed, pruned). A live recording also gets a
-- MAC'd checkpoint (event count, chain digest, time) at least every 10 s, so an interrupted
-- one is verified up to it. Rows written before this migration carry only the old MAC (count
-- and digest, sealed rows only): they are marked legacy and verified by the old rule.
ALTER TABLE sessions ADD COLUMN recording_legacy BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET recording_legacy = 1 WHERE recording_state IS NOT NULL;
ALTER TABLE sessions ADD COLUMN recording_checkpoint_events BIGINT;
ALTER TABLE sessions ADD COLUMN recording_checkpoint_digest TEXT;
ALTER TABLE sessions ADD COLUMN recording_checkpoint_at BIGINT;
ALTER TABLE sessions ADD COLUMN recording_checkpoint_mac TEXT;
