//! A private OpenSSH `sshd` on a loopback port, accepting public-key logins as the current
//! user for the keys it is given.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{
    TestbedError, current_uid, current_user_name, free_port, read_log, require_program, stop,
    wait_for_port,
};

pub struct Sshd {
    dir: TempDir,
    port: u16,
    child: Child,
    host_public_key: String,
    user: String,
    /// Whether dropping this sshd panics when its sessions' processes outlive it (see
    /// [`Sshd::fail_on_leftover_processes`]).
    strict: bool,
}

impl Sshd {
    /// Starts sshd trusting `authorized_keys` (OpenSSH public key lines).
    pub fn start(authorized_keys: &[String]) -> Result<Sshd, TestbedError> {
        let sshd = require_program("sshd", "openssh-server")?;
        let keygen = require_program("ssh-keygen", "openssh-client")?;
        let user = current_user_name().ok_or_else(|| TestbedError::Startup {
            what: "sshd".into(),
            detail: "cannot determine the current user name from /etc/passwd".into(),
        })?;
        if current_uid() == Some(0) {
            // sshd's privilege separation needs this directory when run as root.
            fs::create_dir_all("/run/sshd").map_err(TestbedError::io("create /run/sshd"))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-sshd-")
            .tempdir()
            .map_err(TestbedError::io("create sshd temp dir"))?;
        let host_key = dir.path().join("ssh_host_ed25519_key");
        let out = Command::new(&keygen)
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "gatehouse-testbed-target",
                "-f",
            ])
            .arg(&host_key)
            .output()
            .map_err(TestbedError::io("run ssh-keygen"))?;
        if !out.status.success() {
            return Err(TestbedError::Startup {
                what: "ssh-keygen".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let host_public_key = fs::read_to_string(host_key.with_extension("pub"))
            .map_err(TestbedError::io("read sshd host public key"))?;
        let host_public_key = host_public_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, authorized_keys.join("\n") + "\n")
            .map_err(TestbedError::io("write authorized_keys"))?;
        // sshd reads a user's authorized keys as that user: an unprivileged login (see
        // `UNPRIVILEGED_USER`) must be able to pass through the directory (the host key
        // stays 0600)
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
                .map_err(TestbedError::io("open the sshd temp dir to other users"))?;
        }
        // the target's sessions get a HOME of their own (see `sshd_config`)
        fs::create_dir_all(dir.path().join("home"))
            .map_err(TestbedError::io("create sshd home"))?;
        let port = free_port()?;
        let config = dir.path().join("sshd_config");
        let log = dir.path().join("sshd.log");
        fs::write(
            &config,
            sshd_config(dir.path(), port, &host_key, &authorized),
        )
        .map_err(TestbedError::io("write sshd_config"))?;
        let log_file = fs::File::create(&log).map_err(TestbedError::io("create sshd log"))?;
        let mut child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(TestbedError::io(format!("start {}", sshd.display())))?;
        if let Err(e) = wait_for_port("sshd", port, &mut child, &log, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Sshd {
            dir,
            port,
            child,
            host_public_key,
            user,
            strict: false,
        })
    }

    /// Dropping this sshd then fails (panics, unless a panic is already unwinding) when a
    /// process started for one of its sessions is still running a moment after sshd
    /// stopped: a test must not leave a command running on its target (an ended session's
    /// command is ended on the target too). Leftovers are killed either way.
    pub fn fail_on_leftover_processes(&mut self) {
        self.strict = true;
    }

    /// Undoes [`Sshd::fail_on_leftover_processes`], for a test in which nothing can end the
    /// target's commands: one that kills the broker while a command without a terminal
    /// runs (sshd leaves it running when the connection drops, as after a network cut).
    pub fn expect_leftover_processes(&mut self) {
        self.strict = false;
    }

    /// Processes started for this target's sessions, still running: pid and command line.
    /// They are known by the `HOME` that `sshd_config` gives every session (their
    /// environment as it was at exec, read from `/proc`; needs root for other users').
    pub fn session_processes(&self) -> Vec<(u32, String)> {
        let mark = format!("HOME={}/home", self.dir.path().display());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
            })
            .map(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline)
                    .trim_end_matches('\0')
                    .replace('\0', " ");
                (pid, cmdline)
            })
            .collect()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The target's host key, `ssh-ed25519 AAAA…`.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The user that may log in (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far (for failure messages).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("sshd.log"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child, "TERM");
        // a session ending just now (its connection closed a moment ago) may take a
        // moment to exit: what is still there after that outlived its session
        let deadline = Instant::now() + LEFTOVER_GRACE;
        let mut left = self.session_processes();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = self.session_processes();
        }
        if left.is_empty() {
            return;
        }
        for (pid, _) in &left {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if self.strict && !std::thread::panicking() {
            panic!(
                "processes of the target's sessions were still running {LEFTOVER_GRACE:?} after the test's end (killed now): {left:?}"
            );
        }
    }
}

/// How long a session's processes may take to exit after the test is done with its sshd.
const LEFTOVER_GRACE: Duration = Duration::from_secs(3);

/// A user other than root that tests may log in to the target as: sshd runs a root login
/// without privilege separation, and some requests (`signal`) are refused there.
/// `scripts/test` creates it (a system user without a home or password).
pub const UNPRIVILEGED_USER: &str = "gatehouse-target";

/// Whether [`UNPRIVILEGED_USER`] exists; an error that says how to create it if not.
pub fn require_unprivileged_user() -> Result<(), TestbedError> {
    let out = Command::new("id")
        .args(["-u", UNPRIVILEGED_USER])
        .output()
        .map_err(TestbedError::io("run id"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestbedError::Startup {
        what: format!("user {UNPRIVILEGED_USER}"),
        detail: format!(
            "missing: scripts/test creates it, or run: useradd --system --no-create-home --shell /bin/sh --password '*' {UNPRIVILEGED_USER}"
        ),
    })
}

/// The target's configuration. `SetEnv HOME`: bash run by sshd sources `~/.bashrc` even for
/// `ssh host cmd`, so the machine user's startup files (a `pyenv init` there cost 120 ms of
/// CPU per session and serialised concurrent sessions on its lock) would be measured and
/// could change what the tests see; the sessions' HOME is an empty directory of the target's.
fn sshd_config(dir: &Path, port: u16, host_key: &Path, authorized: &Path) -> String {
    format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowAgentForwarding yes
X11Forwarding no
AcceptEnv LANG LC_* TZ GATEHOUSE_TEST_*
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
Subsystem gh-echo /bin/cat
LogLevel VERBOSE
MaxStartups 2000:30:4000
MaxSessions 100
SetEnv HOME={dir}/home
",
        host_key = host_key.display(),
        dir = dir.display(),
        authorized = authorized.display(),
    )
}
