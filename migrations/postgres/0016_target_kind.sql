-- A PostgreSQL target's CA certificate had been kept in `host_key` (an SSH column): it gets
-- its own column, and `host_key` holds only SSH host keys.
ALTER TABLE targets ADD COLUMN tls_ca TEXT;
UPDATE targets SET tls_ca = host_key, host_key = NULL WHERE protocol = 'postgres';
