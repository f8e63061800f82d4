//! `gatehouse.toml`: where the store, keys and recordings live and where the broker
//! listens. Every key is optional; a missing file means all defaults, relative to the
//! current directory. Paths in a file are relative to the file. Unknown keys and bad values
//! are rejected with the file, line and reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_core::{LimiterConfig, LoginLimits};
use gatehouse_session::DEFAULT_LOGIN_GRACE;
use serde::Deserialize;

pub const DEFAULT_SSH_LISTEN: &str = "127.0.0.1:2222";
pub const DEFAULT_POSTGRES_LISTEN: &str = "127.0.0.1:6432";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    ssh: RawSsh,
    #[serde(default)]
    postgres: RawPostgres,
    #[serde(default)]
    recordings: RawRecordings,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    detective: RawDetective,
    #[serde(default)]
    fleet: RawFleet,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Where `/metrics` and `/healthz` are served (off when absent).
    listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    /// A node whose heartbeat is older than this is lost: another node closes its sessions
    /// as interrupted, and the detective reports sessions left live on it.
    node_timeout: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<toml::Spanned<String>>,
    /// Pooled store connections (default 8 on SQLite, 16 on PostgreSQL).
    max_connections: Option<toml::Spanned<u32>>,
    /// Longest a login or an admin command waits for a pooled connection (default 30s).
    acquire_timeout: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    listen: Option<SocketAddr>,
    host_key: Option<PathBuf>,
    /// Failed logins from one source address, within `login_failure_window`, that lock it out.
    login_failure_limit: Option<toml::Spanned<u32>>,
    login_failure_window: Option<toml::Spanned<String>>,
    login_lockout: Option<toml::Spanned<String>>,
    /// Failed password/TOTP logins against one account (from any sources), within
    /// `login_account_failure_window`, that lock the account's password logins out.
    login_account_failure_limit: Option<toml::Spanned<u32>>,
    login_account_failure_window: Option<toml::Spanned<String>>,
    login_account_lockout: Option<toml::Spanned<String>>,
    /// Time a connection gets to authenticate before it is dropped.
    login_grace: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    /// `false` turns the PostgreSQL front off.
    enabled: Option<bool>,
    listen: Option<SocketAddr>,
    tls_cert: Option<toml::Spanned<PathBuf>>,
    tls_key: Option<toml::Spanned<PathBuf>>,
    /// Also accept a cleartext password (inside TLS only) besides SCRAM-SHA-256.
    allow_cleartext: Option<bool>,
    /// Time a connection gets for startup, TLS and authentication before it is dropped.
    login_grace: Option<toml::Spanned<String>>,
    /// Threads that run PostgreSQL connections, each an event loop of its own (default: one
    /// per CPU core).
    threads: Option<toml::Spanned<u32>>,
    /// Gatehouse's logins kept open between sessions, per target, reset with `DISCARD ALL`
    /// (PgBouncer's session mode); 0 (default): every session logs in anew.
    target_pool: Option<u32>,
    /// How long a kept target login may stay unused before it is closed.
    target_pool_idle: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecordings {
    root: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<toml::Spanned<String>>,
    /// Sessions in their expensive start (store registration, target login) at once; the
    /// others wait in line (default 16).
    max_starting_sessions: Option<toml::Spanned<u32>>,
    /// Longest a session waits in that line before it is refused as "too busy" (default 180s).
    start_wait: Option<toml::Spanned<String>>,
    /// Live sessions on this node at once, both fronts (default: what the open-files limit
    /// leaves room for); past it a login is refused as busy.
    max_sessions: Option<toml::Spanned<u32>>,
    /// Connections not yet logged in, per front (default: 1,024, or fewer if the open-files
    /// limit calls for it); further ones wait in the listen backlog.
    max_unauthenticated: Option<toml::Spanned<u32>>,
    /// Of those, at most this many from one source (an address, an IPv6 /64); further ones
    /// are closed at once (default: no share per source).
    max_unauthenticated_per_source: Option<toml::Spanned<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetective {
    /// `false`: `serve` does not run the detective control (`gatehouse check` still works).
    enabled: Option<bool>,
    /// Time between two passes inside `serve`.
    interval: Option<toml::Spanned<String>>,
    /// `alert` (default) or `end`: also end live violating sessions.
    action: Option<toml::Spanned<String>>,
    /// Same as `[fleet] node_timeout` (kept for configs written before it; both may be
    /// given only with the same value).
    node_timeout: Option<toml::Spanned<String>>,
}

/// `[detective]`: the independent check that what happened matches policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectiveConfig {
    pub enabled: bool,
    pub interval: Duration,
    pub action: DetectiveAction,
    /// The fleet's node timeout (`[fleet] node_timeout`): one value for both.
    pub node_timeout: Duration,
}

/// `[fleet]`: several nodes on one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// A node silent this long is lost; a live node closes its sessions.
    pub node_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectiveAction {
    /// Report findings (audit and log).
    Alert,
    /// Report, and end live violating sessions.
    End,
}

pub const DEFAULT_DETECTIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// The resolved configuration: absolute paths, checked values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// sqlx URL: `sqlite:///abs/path.db` or `postgres://…`.
    pub store_url: String,
    /// `[store] max_connections` and `acquire_timeout`.
    pub store_options: gatehouse_store::StoreOptions,
    pub ssh_listen: SocketAddr,
    pub host_key: PathBuf,
    pub recordings_root: PathBuf,
    pub secret_key_file: PathBuf,
    pub node: String,
    pub fleet: FleetConfig,
    /// `[metrics] listen`: the Prometheus and health endpoint, off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// `[ssh] login_failure_*`, `login_lockout` and `login_account_*` (both fronts).
    pub login_limits: LoginLimits,
    /// `[ssh] login_grace`.
    pub ssh_login_grace: Duration,
    /// `[node] max_starting_sessions` and `start_wait`: the node's start queue.
    pub max_starting_sessions: u32,
    pub start_wait: Duration,
    /// `[node] max_sessions`; `None`: what the open-files limit leaves room for.
    pub max_sessions: Option<u32>,
    /// `[node] max_unauthenticated`; `None`: from the open-files limit, at most 1,024.
    pub max_unauthenticated: Option<u32>,
    /// `[node] max_unauthenticated_per_source`; `None`: no share per source.
    pub max_unauthenticated_per_source: Option<u32>,
    /// The PostgreSQL front, unless disabled.
    pub postgres: Option<PostgresConfig>,
    pub detective: DetectiveConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// No certificate configured: generate a self-signed one on first start.
    pub generate_tls: bool,
    pub allow_cleartext: bool,
    /// `[postgres] login_grace`.
    pub login_grace: Duration,
    /// `[postgres] threads`: connection threads (default: one per CPU core).
    pub threads: u32,
    /// `[postgres] target_pool` and `target_pool_idle`.
    pub target_pool: gatehouse_pg::PoolConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl Config {
    /// Reads `path`, or returns the defaults (relative to `cwd`) when `path` is `None`.
    pub fn load(path: Option<&Path>, cwd: &Path) -> anyhow::Result<Config> {
        match path {
            None => Ok(Config::resolve(
                RawConfig::default(),
                cwd,
                "(defaults)",
                "",
            )?),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", p.display()))?;
                let abs = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    cwd.join(p)
                };
                let base = abs.parent().unwrap_or(cwd).to_path_buf();
                Ok(Config::parse(&text, &base, &p.display().to_string())?)
            }
        }
    }

    /// Parses config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                file: file.to_owned(),
                line,
                column,
                reason: e.message().trim().to_owned(),
            }
        })?;
        Config::resolve(raw, base, file, text)
    }

    fn resolve(raw: RawConfig, base: &Path, file: &str, text: &str) -> Result<Config, ConfigError> {
        let at = |span: std::ops::Range<usize>, reason: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError {
                file: file.to_owned(),
                line,
                column,
                reason,
            }
        };
        let store_url = match raw.store.url {
            None => sqlite_url(&base.join("gatehouse.db")),
            Some(url) => {
                let span = url.span();
                let url = url.into_inner();
                resolve_store_url(&url, base).map_err(|reason| at(span, reason))?
            }
        };
        let node = match raw.node.name {
            Some(n) => {
                let span = n.span();
                let n = n.into_inner();
                gatehouse_core::validate_name("node", &n).map_err(|e| at(span, e.to_string()))?;
                n
            }
            None => default_node_name(),
        };
        let defaults = LoginLimits::default();
        let duration = |v: Option<toml::Spanned<String>>, default| match v {
            None => Ok(default),
            Some(v) => {
                let span = v.span();
                match humantime::parse_duration(v.get_ref()) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    Ok(_) => Err(at(span, "duration must be greater than zero".into())),
                    Err(e) => Err(at(span, format!("invalid duration '{}': {e}", v.get_ref()))),
                }
            }
        };
        let limit = |v: Option<toml::Spanned<u32>>, key: &str, default| match v {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => Err(at(v.span(), format!("{key} must be at least 1"))),
            Some(v) => Ok(v.into_inner()),
        };
        let login_limits = LoginLimits {
            source: LimiterConfig {
                max_failures: limit(
                    raw.ssh.login_failure_limit,
                    "login_failure_limit",
                    defaults.source.max_failures,
                )?,
                window: duration(raw.ssh.login_failure_window, defaults.source.window)?,
                lockout: duration(raw.ssh.login_lockout, defaults.source.lockout)?,
                ..defaults.source
            },
            account: LimiterConfig {
                max_failures: limit(
                    raw.ssh.login_account_failure_limit,
                    "login_account_failure_limit",
                    defaults.account.max_failures,
                )?,
                window: duration(
                    raw.ssh.login_account_failure_window,
                    defaults.account.window,
                )?,
                lockout: duration(raw.ssh.login_account_lockout, defaults.account.lockout)?,
                ..defaults.account
            },
        };
        let abs = |p: Option<PathBuf>, default: &str| {
            let p = p.unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() { p } else { base.join(p) }
        };
        let ssh_login_grace = duration(raw.ssh.login_grace, DEFAULT_LOGIN_GRACE)?;
        let pg_login_grace = duration(raw.postgres.login_grace.clone(), DEFAULT_LOGIN_GRACE)?;
        let node_timeout = match (raw.fleet.node_timeout, raw.detective.node_timeout) {
            (Some(f), Some(d)) if f.get_ref() != d.get_ref() => {
                return Err(at(
                    d.span(),
                    "detective.node_timeout differs from fleet.node_timeout: give fleet.node_timeout only".into(),
                ));
            }
            (f, d) => duration(f.or(d), DEFAULT_NODE_TIMEOUT)?,
        };
        let fleet = FleetConfig { node_timeout };
        let detective = DetectiveConfig {
            enabled: raw.detective.enabled.unwrap_or(true),
            interval: duration(raw.detective.interval, DEFAULT_DETECTIVE_INTERVAL)?,
            node_timeout,
            action: match raw.detective.action {
                None => DetectiveAction::Alert,
                Some(a) => match a.get_ref().as_str() {
                    "alert" => DetectiveAction::Alert,
                    "end" => DetectiveAction::End,
                    other => {
                        return Err(at(
                            a.span(),
                            format!("detective.action must be \"alert\" or \"end\", not '{other}'"),
                        ));
                    }
                },
            },
        };
        let pg = raw.postgres;
        let generate_tls = pg.tls_cert.is_none() && pg.tls_key.is_none();
        if let (Some(one), None) | (None, Some(one)) = (&pg.tls_cert, &pg.tls_key) {
            return Err(at(
                one.span(),
                "postgres.tls_cert and postgres.tls_key must be given together".into(),
            ));
        }
        let pg_threads = limit(pg.threads, "threads", default_pg_threads())?;
        let target_pool = gatehouse_pg::PoolConfig {
            size: pg.target_pool.unwrap_or(0) as usize,
            idle: duration(pg.target_pool_idle, gatehouse_pg::DEFAULT_TARGET_POOL_IDLE)?,
        };
        let postgres = (pg.enabled != Some(false)).then(|| PostgresConfig {
            listen: pg.listen.unwrap_or_else(|| {
                DEFAULT_POSTGRES_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 6432)))
            }),
            tls_cert: abs(pg.tls_cert.map(|p| p.into_inner()), "gatehouse_pg_tls.crt"),
            tls_key: abs(pg.tls_key.map(|p| p.into_inner()), "gatehouse_pg_tls.key"),
            generate_tls,
            allow_cleartext: pg.allow_cleartext.unwrap_or(false),
            login_grace: pg_login_grace,
            threads: pg_threads,
            target_pool,
        });
        let max_starting_sessions = limit(
            raw.node.max_starting_sessions,
            "max_starting_sessions",
            gatehouse_session::DEFAULT_MAX_STARTING,
        )?;
        let start_wait = duration(raw.node.start_wait, gatehouse_session::DEFAULT_START_WAIT)?;
        // (no default here: `serve` derives these from the open-files limit, the store its
        // pool size from its backend)
        let optional = |v: Option<toml::Spanned<u32>>, key: &str| {
            v.map(|v| limit(Some(v), key, 1)).transpose()
        };
        let max_sessions = optional(raw.node.max_sessions, "max_sessions")?;
        let max_unauthenticated = optional(raw.node.max_unauthenticated, "max_unauthenticated")?;
        let max_unauthenticated_per_source = optional(
            raw.node.max_unauthenticated_per_source,
            "max_unauthenticated_per_source",
        )?;
        let mut store_options = gatehouse_store::StoreOptions {
            max_connections: optional(raw.store.max_connections, "max_connections")?,
            ..Default::default()
        };
        store_options.timeouts.acquire =
            duration(raw.store.acquire_timeout, store_options.timeouts.acquire)?;
        Ok(Config {
            postgres,
            detective,
            store_url,
            store_options,
            ssh_listen: raw.ssh.listen.unwrap_or_else(|| {
                DEFAULT_SSH_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 2222)))
            }),
            host_key: abs(raw.ssh.host_key, "gatehouse_host_ed25519"),
            recordings_root: abs(raw.recordings.root, "recordings"),
            secret_key_file: abs(raw.secrets.key_file, "gatehouse_secret.key"),
            node,
            fleet,
            metrics_listen: raw.metrics.listen,
            login_limits,
            ssh_login_grace,
            max_starting_sessions,
            start_wait,
            max_sessions,
            max_unauthenticated,
            max_unauthenticated_per_source,
        })
    }
}

/// One PostgreSQL connection thread per CPU core the process may use.
fn default_pg_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
}

fn resolve_store_url(url: &str, base: &Path) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err("sqlite url has no file path: use sqlite://FILE".into());
        }
        let p = Path::new(path);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        let mut out = sqlite_url(&abs);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Ok(out)
    } else {
        gatehouse_store::Backend::of_url(url).map_err(|e| e.to_string())?;
        Ok(url.to_owned())
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| gatehouse_core::validate_name("node", h).is_ok())
        .unwrap_or_else(|| "gatehouse".to_owned())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
