-- SSH subsystems other than sftp that an environment allows (comma-separated names);
-- empty: none. Their bytes are recorded raw.
ALTER TABLE environments ADD COLUMN ssh_subsystems TEXT NOT NULL DEFAULT '';
