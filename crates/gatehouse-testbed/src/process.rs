//! Finding programs, picking ports and waiting for servers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TestbedError {
    #[error(
        "{program} not found: install the Debian package '{package}' (apt-get install -y {package})"
    )]
    Missing {
        program: String,
        package: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed to start: {detail}")]
    Startup { what: String, detail: String },
}

impl TestbedError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
        let what = what.into();
        move |source| TestbedError::Io { what, source }
    }
}

/// Looks for `program` in `PATH` and in the usual system directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<PathBuf> = versions.flatten().map(|e| e.path().join("bin")).collect();
        v.sort();
        v.reverse();
        dirs.extend(v);
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Like [`find_program`], but a missing program is an error naming its package.
pub fn require_program(program: &str, package: &'static str) -> Result<PathBuf, TestbedError> {
    find_program(program).ok_or_else(|| TestbedError::Missing {
        program: program.to_owned(),
        package,
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, TestbedError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(TestbedError::io("bind a free port"))?;
    let port = l
        .local_addr()
        .map_err(TestbedError::io("read a free port"))?
        .port();
    Ok(port)
}

/// Waits until something accepts TCP connections on `port`, failing early if `child` exits.
pub(crate) fn wait_for_port(
    what: &str,
    port: u16,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
) -> Result<(), TestbedError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestbedError::Startup {
                what: what.to_owned(),
                detail: format!("exited with {status}; log:\n{}", read_log(log)),
            });
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestbedError::Startup {
                what: what.to_owned(),
                detail: format!(
                    "not listening on port {port} after {timeout:?}; log:\n{}",
                    read_log(log)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()))
}

/// Asks a process to stop (SIGTERM, or `signal`) and waits a little, then kills it.
pub(crate) fn stop(child: &mut Child, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The uid of the current process, read from `/proc` (no libc needed).
pub(crate) fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Who runs a server that refuses root (PostgreSQL, PgBouncer): as root, the `postgres`
/// system user `(uid, gid)`; otherwise the current user (None).
pub(crate) fn unprivileged_user(what: &str) -> Result<Option<(u32, u32)>, TestbedError> {
    if current_uid() != Some(0) {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| TestbedError::Startup {
        what: what.into(),
        detail: format!("running as root and there is no 'postgres' user to run {what} as: install the Debian package 'postgresql'"),
    })
}

/// `(uid, gid, home)` of a user from `/etc/passwd`.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// The current user's login name.
pub fn current_user_name() -> Option<String> {
    let uid = current_uid()?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2) == Some(&uid.as_str())).then(|| f[0].to_owned())
    })
}
