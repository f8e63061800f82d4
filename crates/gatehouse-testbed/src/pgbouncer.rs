//! A throwaway PgBouncer in session mode in front of a [`Postgres`], the pooler baseline of
//! the PostgreSQL benchmark. Like PostgreSQL it refuses to run as root, so as root it runs
//! as the `postgres` system user.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::Postgres;
use crate::process::{
    TestbedError, free_port, read_log, require_program, stop, unprivileged_user, wait_for_port,
};

pub struct Pgbouncer {
    dir: TempDir,
    port: u16,
    child: Child,
}

impl Pgbouncer {
    /// Serves `database` of `postgres` under the same name. Clients log in as `user` with
    /// `password` (SCRAM-SHA-256), and PgBouncer logs in upstream as the same role with the
    /// same password: the role must exist on the server with that password.
    pub fn start(
        postgres: &Postgres,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<Pgbouncer, TestbedError> {
        let program = require_program("pgbouncer", "pgbouncer")?;
        let run_as = unprivileged_user("PgBouncer")?;
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pgbouncer-")
            .tempdir()
            .map_err(TestbedError::io("create pgbouncer temp dir"))?;
        let port = free_port()?;
        let d = dir.path().display();
        let ini = format!(
            "[databases]\n\
             {database} = host=127.0.0.1 port={pg} dbname={database}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {d}/userlist.txt\n\
             pool_mode = session\n\
             max_client_conn = 200\n\
             default_pool_size = 50\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n",
            pg = postgres.port(),
        );
        let files = [
            ("pgbouncer.ini", ini),
            ("userlist.txt", format!("\"{user}\" \"{password}\"\n")),
            ("pgbouncer.log", String::new()),
        ];
        for (name, text) in &files {
            let path = dir.path().join(name);
            fs::write(&path, text).map_err(TestbedError::io("write pgbouncer config"))?;
        }
        if let Some((uid, gid)) = run_as {
            for path in std::iter::once(dir.path().to_path_buf())
                .chain(files.iter().map(|(name, _)| dir.path().join(name)))
            {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(TestbedError::io("chown pgbouncer files"))?;
            }
        }
        let log = dir.path().join("pgbouncer.log");
        let mut cmd = Command::new(&program);
        cmd.arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .map_err(TestbedError::io(format!("start {}", program.display())))?;
        if let Err(e) = wait_for_port("pgbouncer", port, &mut child, &log, Duration::from_secs(15))
        {
            stop(&mut child, "INT");
            return Err(e);
        }
        Ok(Pgbouncer { dir, port, child })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PgBouncer's process id (benchmarks measure its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("pgbouncer.log"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        stop(&mut self.child, "INT");
    }
}
