-- Fleet: several broker nodes on one store. A node is known by an id it generates once
-- and keeps beside its host key, not by its display name (two nodes may share a name);
-- the nodes table is re-keyed by that id (a row from before keeps its name as id), and
-- every session carries the id of the node whose guard holds it (rows from before get
-- their node's name, the id their node had). `lost_at`: when another node found it silent
-- past the node timeout and closed its sessions (cleared when it heartbeats again).
ALTER TABLE sessions ADD COLUMN node_id TEXT;
UPDATE sessions SET node_id = node;
CREATE INDEX sessions_live_node_id ON sessions (node_id) WHERE ended_at IS NULL;

ALTER TABLE nodes RENAME TO nodes_by_name;
CREATE TABLE nodes (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    heartbeat_at   BIGINT NOT NULL,
    stopped_at     BIGINT,
    live_sessions  BIGINT NOT NULL DEFAULT 0,
    version        TEXT NOT NULL DEFAULT '',
    listen         TEXT NOT NULL DEFAULT '',
    lost_at        BIGINT
);
INSERT INTO nodes (id, name, started_at, heartbeat_at, stopped_at, live_sessions, version)
    SELECT name, name, started_at, heartbeat_at, stopped_at, live_sessions, version
    FROM nodes_by_name;
DROP TABLE nodes_by_name;
