-- Recordings: where a session's recording is, its state (recording, sealed, interrupted,
-- failed) and, once sealed, its size, event count, final chain digest and the node key's
-- MAC over them.
ALTER TABLE sessions ADD COLUMN recording_path TEXT;
ALTER TABLE sessions ADD COLUMN recording_state TEXT;
ALTER TABLE sessions ADD COLUMN recording_size BIGINT;
ALTER TABLE sessions ADD COLUMN recording_events BIGINT;
ALTER TABLE sessions ADD COLUMN recording_digest TEXT;
ALTER TABLE sessions ADD COLUMN recording_mac TEXT;
