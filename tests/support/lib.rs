//! End-to-end harness: runs the real `gatehouse` binary on a free loopback port with a fresh
//! store, a real OpenSSH `sshd` as the target, and the real OpenSSH client tools.
//!
//! Every helper fails loudly: a missing program names its Debian package, a broker that
//! does not start shows its log.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use gatehouse_testbed::{Sshd, require_program};

pub mod fleet;
pub mod pg;

/// Polls `probe` every 50 ms until it gives `Some`, and returns that; after `limit`, fails
/// the test with `failure()` (which may describe the last state). The one way e2e tests
/// wait: on a condition, never for a fixed time.
pub fn wait_until<T>(
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    failure: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(50));
    }
}
use tempfile::TempDir;

/// The `gatehouse` binary built next to this test executable (`cargo build` builds it;
/// `GATEHOUSE_BIN` overrides).
pub fn gatehouse_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEHOUSE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("gatehouse");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p gatehouse` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Every file under `dir`, at any depth (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

pub fn tool(program: &str, package: &'static str) -> PathBuf {
    require_program(program, package).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` with `stdin` (if any) written to it and closed, and collects its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    if let Some(input) = stdin {
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("collect output")
}

/// A generated ed25519 key pair: `(private key path, public key line)`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(tool("ssh-keygen", "openssh-client"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
    (path, public.trim().to_owned())
}

/// The PostgreSQL front's table in generated configs: a free port.
pub const PG_LISTEN: &str = "[postgres]\nlisten = \"127.0.0.1:0\"";

/// A running broker with its own config, store and host key.
pub struct Gatehouse {
    bin: PathBuf,
    dir: TempDir,
    child: Child,
    port: u16,
    pg_port: Option<u16>,
    /// The open-files limit (soft, hard) the broker is started with (`prlimit`), if set.
    open_files: Option<(u64, u64)>,
}

impl Gatehouse {
    pub fn start() -> Gatehouse {
        Self::start_with("")
    }

    /// Starts with extra TOML appended to the generated config (after the `[ssh]` table's
    /// listen key; a `[postgres]` table in it replaces the default one).
    pub fn start_with(extra_config: &str) -> Gatehouse {
        Self::start_binary(gatehouse_bin(), extra_config)
    }

    /// Like [`Gatehouse::start_with`], running the binary at `bin` (benchmarks compare
    /// builds).
    pub fn start_binary(bin: PathBuf, extra_config: &str) -> Gatehouse {
        Self::start_limited(bin, extra_config, None)
    }

    /// Like [`Gatehouse::start_with`], the broker started with the open-files limit
    /// `soft`/`hard` (util-linux's `prlimit`, which execs the broker: same pid).
    pub fn start_with_open_files(extra_config: &str, soft: u64, hard: u64) -> Gatehouse {
        Self::start_limited(gatehouse_bin(), extra_config, Some((soft, hard)))
    }

    fn start_limited(
        bin: PathBuf,
        extra_config: &str,
        open_files: Option<(u64, u64)>,
    ) -> Gatehouse {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-e2e-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(
            dir.path().join("gatehouse.toml"),
            if extra_config.contains("[postgres]") {
                format!("[ssh]\nlisten = \"127.0.0.1:0\"\n{extra_config}")
            } else {
                format!("{PG_LISTEN}\n[ssh]\nlisten = \"127.0.0.1:0\"\n{extra_config}")
            },
        )
        .expect("write config");
        let child = Self::spawn(&bin, dir.path(), open_files);
        let mut g = Gatehouse {
            bin,
            dir,
            child,
            port: 0,
            pg_port: None,
            open_files,
        };
        (g.port, g.pg_port) = g.read_ports();
        g
    }

    fn spawn(bin: &Path, dir: &Path, open_files: Option<(u64, u64)>) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gatehouse.log"))
            .expect("log file");
        let mut command = match open_files {
            None => Command::new(bin),
            Some((soft, hard)) => {
                let mut c = Command::new(tool("prlimit", "util-linux"));
                c.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(bin);
                c
            }
        };
        command
            .arg("--config")
            .arg(dir.join("gatehouse.toml"))
            .arg("serve")
            .current_dir(dir)
            .env("GATEHOUSE_LOG", "info,gatehouse_ssh=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start gatehouse")
    }

    /// Reads the listening lines gatehouse prints: postgres (when enabled), then ssh.
    fn read_ports(&mut self) -> (u16, Option<u16>) {
        let stdout = self.child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let port_of = |line: &str, prefix: &str| {
            line.trim()
                .strip_prefix(prefix)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
        };
        let mut pg = None;
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).expect("read gatehouse stdout");
            if let Some(p) = port_of(&line, "gatehouse: postgres listening on ") {
                pg = Some(p);
                continue;
            }
            match port_of(&line, "gatehouse: ssh listening on ") {
                Some(p) => return (p, pg),
                None if read == 0 || !line.starts_with("gatehouse: ") => panic!(
                    "gatehouse did not start (stdout {line:?}); log:\n{}",
                    self.log()
                ),
                None => {}
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PostgreSQL front's port.
    pub fn pg_port(&self) -> u16 {
        self.pg_port.expect("the PostgreSQL front is enabled")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("gatehouse.toml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gatehouse.log")).unwrap_or_default()
    }

    /// `known_hosts` pinning this broker's host key.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        if !path.exists() {
            let key = std::fs::read_to_string(self.dir.path().join("gatehouse_host_ed25519.pub"))
                .expect("broker host public key");
            std::fs::write(&path, format!("[127.0.0.1]:{} {}", self.port, key.trim()))
                .expect("write known_hosts");
        }
        path
    }

    /// Runs an admin command against this broker's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path());
        run_with_stdin(&mut cmd, stdin)
    }

    /// Runs an admin command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gatehouse {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The session registry, newest first.
    /// `gatehouse env set prod ARGS…`: the policy of the harness's `prod` environment.
    pub fn set_policy(&self, args: &[&str]) {
        let mut all = vec!["env", "set", "prod"];
        all.extend_from_slice(args);
        self.cli_ok(&all);
    }

    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(&["sessions", "list", "--json"]);
        serde_json::from_str(&out).expect("sessions list --json is JSON")
    }

    /// Waits until the newest session is live and returns its id.
    pub fn wait_live(&self) -> String {
        wait_until(
            Duration::from_secs(10),
            || {
                let sessions = self.sessions();
                let s = sessions.first()?;
                s["end_reason"]
                    .is_null()
                    .then(|| s["id"].as_str().expect("session id").to_owned())
            },
            || format!("no live session:\n{}", self.log()),
        )
    }

    /// Waits until the newest session is closed and returns it.
    pub fn wait_session_closed(&self) -> serde_json::Value {
        wait_until(
            Duration::from_secs(10),
            || {
                let sessions = self.sessions();
                let s = sessions.first()?;
                (!s["end_reason"].is_null()).then(|| s.clone())
            },
            || {
                format!(
                    "session never closed: {:?}\n{}",
                    self.sessions(),
                    self.log()
                )
            },
        )
    }

    /// Waits until no session in the registry is live, and returns them all.
    pub fn wait_all_closed(&self) -> Vec<serde_json::Value> {
        self.wait_all_closed_within(Duration::from_secs(10))
    }

    /// [`Gatehouse::wait_all_closed`], waiting at most `limit`.
    pub fn wait_all_closed_within(&self, limit: Duration) -> Vec<serde_json::Value> {
        wait_until(
            limit,
            || {
                let sessions = self.sessions();
                sessions
                    .iter()
                    .all(|s| !s["end_reason"].is_null())
                    .then_some(sessions)
            },
            || format!("sessions still live: {:?}\n{}", self.sessions(), self.log()),
        )
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(&["audit", "list", "--json"]);
        serde_json::from_str(&out).expect("audit list --json is JSON")
    }

    /// Waits (at most 5 s) for an audit event of `kind`: some are written off the
    /// connection's path, so they may land just after the session closed.
    pub fn wait_audit(&self, kind: &str) -> serde_json::Value {
        wait_until(
            Duration::from_secs(5),
            || self.audit().into_iter().find(|e| e["kind"] == kind),
            || format!("no '{kind}' audit event:\n{}", self.log()),
        )
    }

    /// The `ssh` command line (for a shell, e.g. inside tmux) to this broker as `login`.
    pub fn ssh_command_line(&self, login: &str, key: &Path) -> String {
        std::iter::once(tool("ssh", "openssh-client").display().to_string())
            .chain(self.client_options("-p", key))
            .chain(["-tt".to_owned(), format!("{login}@127.0.0.1")])
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// An OpenSSH client command to this broker as `login`, authenticating with `key`.
    pub fn ssh(&self, login: &str, key: &Path) -> Command {
        let mut c = Command::new(tool("ssh", "openssh-client"));
        c.args(self.client_options("-p", key))
            .arg(format!("{login}@127.0.0.1"));
        c
    }

    /// Starts `ssh … command` in the background: no input, stderr dropped, stdout as given
    /// (the benches' many concurrent sessions).
    pub fn spawn_ssh(
        &self,
        login: &str,
        key: &Path,
        command: &str,
        stdout: std::process::Stdio,
    ) -> std::process::Child {
        self.ssh(login, key)
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ssh: {e}"))
    }

    /// Options shared by ssh, scp and sftp (`port_flag` is `-p` for ssh, `-P` for the others).
    pub fn client_options(&self, port_flag: &str, key: &Path) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            port_flag.into(),
            self.port.to_string(),
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ]
    }

    /// Sends SIGTERM and waits (at most 10 s) for the broker to exit; returns how long it
    /// took.
    pub fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "gatehouse did not exit within 10 s of SIGTERM; log:\n{}",
            self.log()
        );
    }

    /// The broker's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker with SIGKILL (no chance to clean up).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same directory (same store, same host key).
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let config = std::fs::read_to_string(self.config()).expect("config");
        let mut pinned = config.replacen(
            "[ssh]\nlisten = \"127.0.0.1:0\"",
            &format!("[ssh]\nlisten = \"127.0.0.1:{}\"", self.port),
            1,
        );
        if let Some(pg) = self.pg_port {
            pinned = pinned.replacen(
                PG_LISTEN,
                &format!("[postgres]\nlisten = \"127.0.0.1:{pg}\""),
                1,
            );
        }
        std::fs::write(self.config(), pinned).expect("write config");
        self.child = Self::spawn(&self.bin, self.dir.path(), self.open_files);
        (self.port, self.pg_port) = self.read_ports();
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (stdin null, stdout piped) and returns it once its first output is the
/// line `ready` (a remote command that starts with `echo ready` runs on the target by then);
/// `log` says why not.
pub fn spawn_ready(command: &mut Command, log: impl FnOnce() -> String) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut ready = [0u8; 6];
    let read = child
        .stdout
        .as_mut()
        .map(|out| std::io::Read::read_exact(out, &mut ready));
    assert!(
        matches!(read, Some(Ok(()))) && &ready == b"ready\n",
        "the command did not start: {}",
        log()
    );
    child
}

/// Who the world's target `web1` is logged in to as: an unprivileged user (see
/// [`World::around`]).
pub const TARGET_USER: &str = gatehouse_testbed::UNPRIVILEGED_USER;

/// A temp dir the target's login may read and write in (mode 0777): the target is this
/// machine's sshd, so tests hand files to it and check its files through such a directory.
pub fn target_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-target-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("open the temp dir to the target's login");
    dir
}

/// A broker, a real sshd target `web1` in environment `prod`, and operator `alice` with a
/// key and a grant on `prod`.
pub struct World {
    pub gatehouse: Gatehouse,
    pub sshd: Sshd,
    pub keys: TempDir,
    pub alice_key: PathBuf,
    pub target_identity: PathBuf,
}

impl World {
    pub fn new() -> World {
        Self::with_config("")
    }

    /// A world whose broker gets `extra_config` appended to its config (see
    /// [`Gatehouse::start_with`]).
    pub fn with_config(extra_config: &str) -> World {
        Self::with_binary(gatehouse_bin(), extra_config)
    }

    /// A world whose broker runs the binary at `bin` (see [`Gatehouse::start_binary`]).
    pub fn with_binary(bin: PathBuf, extra_config: &str) -> World {
        Self::around(Gatehouse::start_binary(bin, extra_config))
    }

    /// The world's target, operator and grant, set up through a running `gatehouse`'s CLI.
    pub fn around(gatehouse: Gatehouse) -> World {
        let keys = tempfile::Builder::new()
            .prefix("gatehouse-keys-")
            .tempdir()
            .expect("temp dir");
        let (target_identity, target_public) = keygen(keys.path(), "target_identity");
        let (alice_key, _) = keygen(keys.path(), "alice");
        let mut sshd = Sshd::start(&[target_public]).unwrap_or_else(|e| panic!("{e}"));
        // no test may leave a command running on its target (the broker, dropped first,
        // has closed its connections by then)
        sshd.fail_on_leftover_processes();
        gatehouse.cli_ok(&["env", "add", "prod"]);
        gatehouse.cli_ok(&[
            "user",
            "add",
            "alice",
            "--public-key",
            &alice_key.with_extension("pub").display().to_string(),
        ]);
        gatehouse.cli_ok(&["grant", "alice", "prod"]);
        let w = World {
            gatehouse,
            sshd,
            keys,
            alice_key,
            target_identity,
        };
        // web1 is reached as an unprivileged user, as a target should be: sshd serves a root
        // login without privilege separation and refuses to signal its commands, so an
        // ended session's command without a terminal would outlive it there
        gatehouse_testbed::require_unprivileged_user().unwrap_or_else(|e| panic!("{e}"));
        w.add_target("web1", "prod", TARGET_USER);
        w
    }

    /// Adds target `name` in `env`: the world's sshd, logged in to as `user` with the
    /// world's target identity, its host key pinned. Returns what the CLI said on stderr.
    pub fn add_target(&self, name: &str, env: &str, user: &str) -> String {
        let out = self.gatehouse.cli(&[
            "target",
            "add",
            name,
            "--env",
            env,
            "--ssh",
            &format!("{user}@127.0.0.1:{}", self.sshd.port()),
            "--identity",
            &self.target_identity.display().to_string(),
            "--host-key",
            self.sshd.host_public_key(),
        ]);
        assert!(out.status.success(), "target add {name}: {}", stderr(&out));
        stderr(&out)
    }

    /// `ssh alice+web1 'echo ready; sleep 60'` (no pty) through `node`, returned once the
    /// command runs on the target (its first line came back) and is seen there by
    /// [`Sshd::session_processes`]; its stderr is piped.
    pub fn sleeping_session(&self, node: &Gatehouse) -> Child {
        let child = spawn_ready(
            node.ssh("alice+web1", &self.alice_key)
                .arg("echo ready; sleep 60")
                .stderr(Stdio::piped()),
            || node.log(),
        );
        // what the leftover check looks for is there while the session runs
        assert!(
            !self.sshd.session_processes().is_empty(),
            "the session's command is not seen on the target"
        );
        child
    }

    /// An interactive session as `login` in tmux (100×30, TERM=xterm) with the prompt `gh$ `;
    /// the shell prints `EXIT=<status>` when ssh ends.
    pub fn interactive(&self, login: &str) -> Tmux {
        let ssh = self.gatehouse.ssh_command_line(login, &self.alice_key);
        let tmux = Tmux::start(
            self.keys.path(),
            &format!("env TERM=xterm {ssh}; echo EXIT=$?; sleep 60"),
        );
        tmux.type_line("export PS1='gh$ '; echo ready-$((6*7))");
        tmux.wait_for("ready-42");
        tmux
    }

    /// The `ssh` command line of an OpenSSH ControlMaster (pty shell as alice+web1) whose
    /// socket is `socket`, and the options a client needs to go through it.
    pub fn controlmaster(&self, socket: &Path) -> (String, [String; 2]) {
        let control = ["-o".to_owned(), format!("ControlPath={}", socket.display())];
        let master = std::iter::once(tool("ssh", "openssh-client").display().to_string())
            .chain(self.gatehouse.client_options("-p", &self.alice_key))
            .chain(["-o".to_owned(), "ControlMaster=yes".to_owned()])
            .chain(control.iter().cloned())
            .chain(["-tt".to_owned(), "alice+web1@127.0.0.1".to_owned()])
            .collect::<Vec<_>>()
            .join(" ");
        (master, control)
    }

    /// Gives alice a password beside her key (the lock prompt asks for it).
    pub fn add_password(&self, password: &str) {
        let out = self.gatehouse.cli_with_stdin(
            &["user", "passwd", "alice", "--password-stdin"],
            Some(password),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// alice with `password`, and `prod` locking sessions idle for 2 s (60 s lock grace).
    pub fn lock_after_2s_idle(&self, password: &str) {
        self.add_password(password);
        self.gatehouse.set_policy(&[
            "--idle-timeout",
            "2s",
            "--idle-action",
            "lock",
            "--lock-grace",
            "60s",
        ]);
    }

    /// `ssh alice+web1@broker COMMAND`, output captured.
    pub fn ssh_exec(&self, login: &str, command: &str) -> Output {
        self.gatehouse
            .ssh(login, &self.alice_key)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// `asciinema cat` (Debian's asciinema 2.2 opens /dev/tty, so it runs under `script` for a
/// terminal of its own).
pub fn asciinema_cat(path: &str) -> Output {
    tool("asciinema", "asciinema");
    Command::new(tool("script", "bsdutils"))
        .args([
            "-q",
            "-e",
            "-c",
            &format!("asciinema cat '{path}'"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run script")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `ssh -tt` inside tmux so that it has a real terminal that can be resized.
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    pub fn start(dir: &Path, command: &str) -> Tmux {
        let socket = dir.join("tmux.sock");
        let out = Command::new(tool("tmux", "tmux"))
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                command,
            ])
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        Tmux { socket }
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(tool("tmux", "tmux"))
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J"])
    }

    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "'{needle}' never appeared; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends keys literally, without Enter.
    pub fn type_keys(&self, keys: &str) {
        self.run(&["send-keys", "-l", keys]);
    }

    pub fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-l", line]);
        self.run(&["send-keys", "Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}
