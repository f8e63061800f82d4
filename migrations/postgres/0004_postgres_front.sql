-- PostgreSQL front: a target's database and upstream TLS mode, an operator's SCRAM-SHA-256
-- verifier (PostgreSQL's own format; the password itself is never stored), and whether an
-- environment's statement logs redact bind parameters.
ALTER TABLE targets ADD COLUMN database_name TEXT;
ALTER TABLE targets ADD COLUMN tls_mode TEXT;
ALTER TABLE operators ADD COLUMN scram_verifier TEXT;
ALTER TABLE environments ADD COLUMN redact_params BIGINT NOT NULL DEFAULT 0;
