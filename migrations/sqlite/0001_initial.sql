-- Gatehouse store, SQLite flavour. Timestamps are Unix milliseconds (UTC), booleans 0/1,
-- so that the same queries run on SQLite and PostgreSQL through sqlx's Any driver.
CREATE TABLE environments (
    name        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE operators (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT,
    locked         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);

CREATE TABLE operator_keys (
    operator     TEXT NOT NULL REFERENCES operators(name) ON DELETE CASCADE,
    fingerprint  TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (operator, fingerprint)
);

CREATE TABLE targets (
    name                TEXT PRIMARY KEY,
    environment         TEXT NOT NULL REFERENCES environments(name),
    protocol            TEXT NOT NULL,
    host                TEXT NOT NULL,
    port                BIGINT NOT NULL,
    username            TEXT NOT NULL,
    credential          BLOB NOT NULL,
    host_key            TEXT,
    trust_on_first_use  BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL
);

CREATE TABLE grants (
    operator     TEXT NOT NULL REFERENCES operators(name) ON DELETE CASCADE,
    environment  TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    granted_at   BIGINT NOT NULL,
    PRIMARY KEY (operator, environment)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    node         TEXT NOT NULL,
    operator     TEXT NOT NULL,
    target       TEXT NOT NULL,
    environment  TEXT,
    protocol     TEXT NOT NULL,
    client_addr  TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT,
    bytes_in     BIGINT NOT NULL DEFAULT 0,
    bytes_out    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_open ON sessions (node, ended_at);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    operator    TEXT,
    session_id  TEXT,
    source      TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
