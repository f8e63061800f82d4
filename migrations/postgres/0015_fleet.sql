-- Fleet: several broker nodes on one store. A node is known by an id it generates once
-- and keeps beside its host key, not by its display name (two nodes may share a name);
-- the nodes table is re-keyed by that id (a row from before keeps its name as id), and
-- every session carries the id of the node whose guard holds it (rows from before get
-- their node's name, the id their node had). `lost_at`: when another node found it silent
-- past the node timeout and closed its sessions (cleared when it heartbeats again).
ALTER TABLE sessions ADD COLUMN node_id TEXT;
UPDATE sessions SET node_id = node;
CREATE INDEX sessions_live_node_id ON sessions (node_id) WHERE ended_at IS NULL;

ALTER TABLE nodes DROP CONSTRAINT nodes_pkey;
ALTER TABLE nodes ADD COLUMN id TEXT;
UPDATE nodes SET id = name;
ALTER TABLE nodes ALTER COLUMN id SET NOT NULL;
ALTER TABLE nodes ADD PRIMARY KEY (id);
ALTER TABLE nodes ADD COLUMN listen TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN lost_at BIGINT;
