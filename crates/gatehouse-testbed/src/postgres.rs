//! A throwaway PostgreSQL cluster on a loopback port. PostgreSQL refuses to run as root, so
//! when the tests run as root the cluster runs as the `postgres` system user.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{
    TestbedError, free_port, read_log, require_program, stop, unprivileged_user, wait_for_port,
};

/// Superuser created by `initdb`; local connections use `trust`.
pub const SUPERUSER: &str = "gatehouse";

pub struct Postgres {
    dir: TempDir,
    port: u16,
    child: Child,
}

/// How to set up the throwaway server.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// TCP logins of roles other than the superuser need a password (SCRAM-SHA-256, or md5
    /// with `md5`); the superuser stays `trust`.
    pub password_auth: bool,
    pub md5: bool,
    /// TLS with this certificate and key (PEM).
    pub tls: Option<(String, String)>,
    /// `max_connections`, when more than PostgreSQL's default 100 are needed.
    pub max_connections: Option<u32>,
}

impl Postgres {
    pub fn start() -> Result<Postgres, TestbedError> {
        Self::start_with(&PgOptions::default())
    }

    pub fn start_with(options: &PgOptions) -> Result<Postgres, TestbedError> {
        let initdb = require_program("initdb", "postgresql")?;
        let postgres = require_program("postgres", "postgresql")?;
        let run_as = unprivileged_user("PostgreSQL")?;
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .map_err(TestbedError::io("create postgres temp dir"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(TestbedError::io("chown postgres temp dir"))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let as_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = run_as {
                cmd.uid(uid).gid(gid);
            }
        };
        let mut init = Command::new(&initdb);
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdin(Stdio::null());
        as_user(&mut init);
        let out = init.output().map_err(TestbedError::io("run initdb"))?;
        if !out.status.success() {
            return Err(TestbedError::Startup {
                what: "initdb".into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let write_owned = |path: PathBuf, text: &str, mode: u32| -> Result<(), TestbedError> {
            use std::os::unix::fs::PermissionsExt;
            fs::write(&path, text).map_err(TestbedError::io("write postgres config"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(TestbedError::io("chmod postgres config"))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(TestbedError::io("chown postgres config"))?;
            }
            Ok(())
        };
        if options.password_auth {
            let method = if options.md5 { "md5" } else { "scram-sha-256" };
            let hba = format!(
                "local all all trust\nhost all {SUPERUSER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 {method}\n"
            );
            write_owned(data.join("pg_hba.conf"), &hba, 0o600)?;
        }
        let mut extra: Vec<String> = Vec::new();
        if options.md5 {
            extra.extend(["-c".into(), "password_encryption=md5".into()]);
        }
        if let Some(n) = options.max_connections {
            extra.extend(["-c".into(), format!("max_connections={n}")]);
        }
        if let Some((cert, key)) = &options.tls {
            write_owned(data.join("server.crt"), cert, 0o644)?;
            write_owned(data.join("server.key"), key, 0o600)?;
            extra.extend(["-c".into(), "ssl=on".into()]);
        }
        let port = free_port()?;
        let log_file = fs::File::create(&log).map_err(TestbedError::io("create postgres log"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))
                .map_err(TestbedError::io("chown postgres log"))?;
        }
        let mut server = Command::new(&postgres);
        server
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        as_user(&mut server);
        let mut child = server
            .spawn()
            .map_err(TestbedError::io(format!("start {}", postgres.display())))?;
        let ready = wait_for_port("postgres", port, &mut child, &log, Duration::from_secs(30))
            .and_then(|()| wait_until_accepting(port, &log));
        if let Err(e) = ready {
            stop(&mut child, "INT");
            return Err(e);
        }
        Ok(Postgres { dir, port, child })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://gatehouse@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL as the superuser with `psql` and returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, TestbedError> {
        let psql = require_program("psql", "postgresql-client")?;
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(TestbedError::io("run psql"))?;
        if !out.status.success() {
            return Err(TestbedError::Startup {
                what: format!("psql {sql}"),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a database owned by the superuser.
    pub fn create_database(&self, name: &str) -> Result<(), TestbedError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("postgres.log"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The postmaster listens before it accepts queries; wait for `pg_isready`.
fn wait_until_accepting(port: u16, log: &Path) -> Result<(), TestbedError> {
    let isready = require_program("pg_isready", "postgresql-client")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(&isready)
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestbedError::Startup {
                what: "postgres".into(),
                detail: format!("not ready after 30s; log:\n{}", read_log(log)),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: "fast" shutdown, so that no backend outlives the test.
        stop(&mut self.child, "INT");
    }
}
