//! Admin commands: environments, targets, operators, grants, the session registry and the
//! audit log. They work on the same store as a running broker.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::time::Duration;

use gatehouse_core::{
    EnvPolicy, IdleAction, SshAddress, TargetKind, format_duration, validate_name,
};
use gatehouse_session::passwords;
use gatehouse_ssh::keys;
use gatehouse_store::{AuditEvent, AuditFilter, MasterKey, NewTarget, Store};
use russh::keys::ssh_key::LineEnding;
use serde_json::json;

use crate::config::Config;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment.
    Add { name: String },
    /// List environments.
    List,
    /// Change an environment's session policy; live sessions follow within 2 seconds.
    Set(EnvSetArgs),
    /// Show an environment's session policy.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Durations are humantime (`90s`, `15m`, `8h`, `1h30m`); `off` removes a limit.
#[derive(Debug, Args)]
pub struct EnvSetArgs {
    pub name: String,
    /// End (or lock) a session after this long without operator activity.
    #[arg(long, value_name = "DURATION|off")]
    pub idle_timeout: Option<String>,
    /// End a session this long after it opened, active or not.
    #[arg(long, value_name = "DURATION|off")]
    pub max_session: Option<String>,
    /// Warn this long before an idle end, a maximum-length end or a due reauthentication
    /// (comma-separated, e.g. 5m,1m,10s).
    #[arg(long, value_name = "LEADS|off")]
    pub warn_before: Option<String>,
    /// What the idle limit does: disconnect, or lock and ask for the password in-band.
    #[arg(long, value_name = "disconnect|lock")]
    pub idle_action: Option<String>,
    /// How long a locked session waits for the password.
    #[arg(long, value_name = "DURATION")]
    pub lock_grace: Option<String>,
    /// Ask for the password again this long after login, even while active.
    #[arg(long, value_name = "DURATION|off")]
    pub reauth_after: Option<String>,
    /// Replace bind parameter values in SQL statement logs (`--redact-params=off` undoes).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    pub redact_params: Option<String>,
    /// SSH subsystems besides sftp to allow, comma-separated (recorded as raw bytes);
    /// `--allow-subsystems ''` allows none again.
    #[arg(long, value_name = "NAME,...")]
    pub allow_subsystems: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Register a target that operators reach through Gatehouse.
    Add(TargetAddArgs),
    /// List targets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a target (its past sessions stay in the registry).
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct TargetAddArgs {
    pub name: String,
    /// Environment the target belongs to.
    #[arg(long)]
    pub env: String,
    /// An SSH target: where Gatehouse connects, USER@HOST[:PORT].
    #[arg(
        long,
        value_name = "USER@HOST:PORT",
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    pub ssh: Option<String>,
    /// A PostgreSQL target: role, server and default database.
    #[arg(long, value_name = "USER@HOST:PORT/DATABASE")]
    pub postgres: Option<String>,
    /// SSH: private key Gatehouse logs in with (OpenSSH format, unencrypted). Stored encrypted.
    #[arg(
        long,
        value_name = "PRIVATE_KEY_FILE",
        required_unless_present = "postgres"
    )]
    pub identity: Option<PathBuf>,
    /// SSH: the target's host key, "ssh-ed25519 AAAA…".
    #[arg(long, conflicts_with_all = ["host_key_file", "trust_on_first_use"])]
    pub host_key: Option<String>,
    /// SSH: file holding the target's host key (a .pub file or a known_hosts line).
    #[arg(long, conflicts_with = "trust_on_first_use")]
    pub host_key_file: Option<PathBuf>,
    /// SSH: pin whatever host key the target presents first (recorded in the audit log).
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// PostgreSQL: read the role's password from standard input. Stored encrypted.
    #[arg(long, requires = "postgres")]
    pub password_stdin: bool,
    /// PostgreSQL: TLS to the target (default verify-full).
    #[arg(
        long,
        value_name = "verify-full|require|disable",
        requires = "postgres"
    )]
    pub tls: Option<String>,
    /// PostgreSQL: CA certificate (PEM) the target's certificate must chain to for
    /// verify-full (default: the system's trusted roots).
    #[arg(long, value_name = "PEM_FILE", requires = "postgres")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an operator.
    Add {
        name: String,
        /// Authorized public key file (repeatable).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
        /// Read the operator's password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List operators.
    List,
    /// Set an operator's password (read from standard input).
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Enroll the operator in TOTP: prints the otpauth URI and a QR code to scan. The code
    /// is then asked after the password at every in-band reauthentication.
    Totp { name: String },
    /// Refuse the operator's logins and end every live session of theirs.
    Lock { name: String },
    /// Allow the operator to log in again.
    Unlock { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// End a live session (within 2 seconds); the operator is told why.
    Kill {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, oldest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only events newer than this (e.g. 1h, 7d, or an RFC 3339 time).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Events of sessions in this environment, and admin events naming it.
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let key = MasterKey::load_or_create(&config.secret_key_file)?;
    Ok(Store::open_with_options(&config.store_url, key, config.store_options).await?)
}

/// The OS user running this command: who an admin action's audit event names.
pub(crate) fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn cli_actor(name: &str) -> gatehouse_store::Actor<'_> {
    gatehouse_store::Actor {
        name,
        via: "admin-cli",
    }
}

pub(crate) async fn admin_audit(
    store: &Store,
    kind: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .audit(&AuditEvent {
            kind,
            operator: None,
            session_id: None,
            source: Some("admin-cli"),
            detail,
        })
        .await?;
    Ok(())
}

pub async fn env(config: &Config, cmd: EnvCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        EnvCommand::Add { name } => {
            validate_name("environment", &name)?;
            store.add_environment(&name).await?;
            admin_audit(&store, "environment_added", json!({"environment": name})).await?;
            println!("environment {name} added");
        }
        EnvCommand::List => {
            for e in store.list_environments().await? {
                println!("{e}");
            }
        }
        EnvCommand::Set(args) => {
            let name = args.name.clone();
            let redact = match args.redact_params.as_deref() {
                None => None,
                Some("on") => Some(true),
                Some("off") => Some(false),
                Some(other) => bail!("--redact-params takes on or off, not '{other}'"),
            };
            let subsystems = match args.allow_subsystems.as_deref() {
                None => None,
                Some(list) => Some(parse_subsystems(list)?),
            };
            let current = store.environment_policy(&name).await?.policy;
            let policy = apply_policy_args(current, args)?;
            if let Some(names) = &subsystems {
                store.set_allowed_subsystems(&name, names).await?;
                admin_audit(
                    &store,
                    "subsystems_changed",
                    json!({"environment": name, "ssh_subsystems": names}),
                )
                .await?;
            }
            if let Some(r) = redact {
                store.set_redact_params(&name, r).await?;
                admin_audit(
                    &store,
                    "redact_params_changed",
                    json!({"environment": name, "redact_params": r}),
                )
                .await?;
            }
            store.set_environment_policy(&name, &policy).await?;
            admin_audit(
                &store,
                "policy_changed",
                json!({"environment": name, "policy": policy_json(&policy)}),
            )
            .await?;
            println!("environment {name} policy updated; live sessions follow within 2 seconds");
            print!("{}", policy_text(&policy));
            if let Some(r) = redact {
                println!(
                    "SQL bind parameters: {}",
                    if r { "redacted" } else { "logged" }
                );
            }
            if let Some(names) = subsystems {
                println!("SSH subsystems besides sftp: {}", subsystem_text(&names));
            }
        }
        EnvCommand::Show { name, json } => {
            let stored = store.environment_policy(&name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&policy_json(&stored.policy))?
                );
            } else {
                print!("{}", policy_text(&stored.policy));
                let subsystems = store.allowed_subsystems(&name).await?;
                if !subsystems.is_empty() {
                    println!("subsystems    {}", subsystem_text(&subsystems));
                }
            }
        }
    }
    Ok(())
}

fn parse_limit(flag: &str, value: &str) -> anyhow::Result<Option<Duration>> {
    if matches!(value, "off" | "none") {
        return Ok(None);
    }
    parse_duration(flag, value).map(Some)
}

fn parse_duration(flag: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value.trim())
        .map_err(|e| anyhow::anyhow!("{flag} '{value}' is not a duration like 90s, 15m or 8h: {e}"))
}

fn apply_policy_args(mut p: EnvPolicy, a: EnvSetArgs) -> anyhow::Result<EnvPolicy> {
    if let Some(v) = &a.idle_timeout {
        p.idle_timeout = parse_limit("--idle-timeout", v)?;
    }
    if let Some(v) = &a.max_session {
        p.max_session = parse_limit("--max-session", v)?;
    }
    if let Some(v) = &a.reauth_after {
        p.reauth_after = parse_limit("--reauth-after", v)?;
    }
    if let Some(v) = &a.lock_grace {
        p.lock_grace = parse_duration("--lock-grace", v)?;
    }
    if let Some(v) = &a.idle_action {
        p.idle_action = IdleAction::parse(v)?;
    }
    if let Some(v) = &a.warn_before {
        p.warn_before = if matches!(v.as_str(), "off" | "none" | "") {
            Vec::new()
        } else {
            v.split(',')
                .map(|lead| parse_duration("--warn-before", lead))
                .collect::<anyhow::Result<_>>()?
        };
    }
    Ok(p.validated()?)
}

fn show_limit(d: Option<Duration>) -> String {
    d.map_or_else(|| "off".into(), format_duration)
}

fn policy_text(p: &EnvPolicy) -> String {
    let warn = if p.warn_before.is_empty() {
        "off".to_owned()
    } else {
        p.warn_before
            .iter()
            .map(|d| format_duration(*d))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "idle-timeout  {}\nmax-session   {}\nwarn-before   {warn}\nidle-action   {}\nlock-grace    {}\nreauth-after  {}\n",
        show_limit(p.idle_timeout),
        show_limit(p.max_session),
        p.idle_action.as_str(),
        format_duration(p.lock_grace),
        show_limit(p.reauth_after),
    )
}

fn policy_json(p: &EnvPolicy) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    json!({
        "idle_timeout_ms": ms(p.idle_timeout),
        "max_session_ms": ms(p.max_session),
        "warn_before_ms": p.warn_before.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
        "idle_action": p.idle_action.as_str(),
        "lock_grace_ms": p.lock_grace.as_millis() as u64,
        "reauth_after_ms": ms(p.reauth_after),
    })
}

pub async fn target(config: &Config, cmd: TargetCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        TargetCommand::Add(args) => add_target(&store, args).await,
        TargetCommand::List { json } => {
            let targets = store.list_targets().await?;
            if json {
                let v: Vec<_> = targets
                    .iter()
                    .map(|t| {
                        let mut v = json!({"name": t.name, "environment": t.environment,
                               "protocol": t.protocol().as_str(), "host": t.host, "port": t.port,
                               "username": t.username});
                        match &t.kind {
                            TargetKind::Ssh { host_key, tofu } => {
                                v["host_key"] = json!(host_key);
                                v["trust_on_first_use"] = json!(tofu);
                            }
                            TargetKind::Postgres { database, tls, ca } => {
                                v["database"] = json!(database);
                                v["tls"] = json!(tls.as_str());
                                v["tls_ca"] = json!(ca.is_some());
                            }
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = targets
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.environment.clone(),
                            t.protocol().to_string(),
                            format!("{}@{}:{}", t.username, t.host, t.port)
                                + &match &t.kind {
                                    TargetKind::Postgres {
                                        database: Some(d), ..
                                    } => format!("/{d}"),
                                    _ => String::new(),
                                },
                            match &t.kind {
                                TargetKind::Postgres { tls, .. } => {
                                    format!("tls {}", tls.as_str())
                                }
                                TargetKind::Ssh { host_key, tofu } => {
                                    host_key_summary(host_key.as_deref(), *tofu)
                                }
                            },
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["name", "env", "protocol", "address", "host key"], &rows)
                );
            }
            Ok(())
        }
        TargetCommand::Remove { name } => {
            store.remove_target(&name).await?;
            admin_audit(&store, "target_removed", json!({"target": name})).await?;
            println!("target {name} removed");
            Ok(())
        }
    }
}

fn host_key_summary(line: Option<&str>, tofu: bool) -> String {
    match line.map(|l| keys::parse_public_key_line(l, "host key")) {
        Some(Ok(k)) => keys::fingerprint(&k),
        Some(Err(_)) => "invalid".into(),
        None if tofu => "(trust on first use)".into(),
        None => "(none)".into(),
    }
}

pub(crate) fn read_file(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

async fn add_target(store: &Store, args: TargetAddArgs) -> anyhow::Result<()> {
    validate_name("target", &args.name)?;
    let (Some(ssh), Some(identity_path)) = (&args.ssh, &args.identity) else {
        return crate::pg_admin::add_postgres_target(store, args).await;
    };
    let addr = SshAddress::parse(ssh, 22).context("--ssh")?;
    let identity_text = read_file(identity_path, "identity")?;
    let identity = keys::parse_private_key(
        &identity_text,
        &format!("identity {}", identity_path.display()),
    )?;
    let identity_text = identity
        .to_openssh(LineEnding::LF)
        .context("cannot encode identity")?;
    let host_key = match (&args.host_key, &args.host_key_file) {
        (Some(text), _) => Some(keys::parse_public_key_line(text, "--host-key")?),
        (None, Some(path)) => Some(keys::parse_public_key_line(
            &read_file(path, "host key file")?,
            &format!("host key file {}", path.display()),
        )?),
        (None, None) if args.trust_on_first_use => None,
        (None, None) => bail!(
            "target '{}' needs a pinned host key: give --host-key or --host-key-file, or --trust-on-first-use",
            args.name
        ),
    };
    let host_key_line = host_key.as_ref().map(keys::public_key_line);
    store
        .add_target(&NewTarget {
            name: &args.name,
            environment: &args.env,
            host: &addr.host,
            port: addr.port,
            username: &addr.user,
            credential: identity_text.as_bytes(),
            kind: TargetKind::Ssh {
                host_key: host_key_line.clone(),
                tofu: args.trust_on_first_use,
            },
        })
        .await?;
    let key_summary = host_key_summary(host_key_line.as_deref(), args.trust_on_first_use);
    admin_audit(
        store,
        "target_added",
        json!({"target": args.name, "environment": args.env,
               "address": format!("{}@{}:{}", addr.user, addr.host, addr.port),
               "host_key": key_summary,
               "identity": keys::fingerprint(identity.public_key())}),
    )
    .await?;
    println!(
        "target {} added (environment {}, ssh {}@{}:{}, host key {})",
        args.name, args.env, addr.user, addr.host, addr.port, key_summary
    );
    Ok(())
}

pub(crate) fn read_password_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the password from standard input")?;
    let password = s.strip_suffix('\n').unwrap_or(&s);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("the password read from standard input is empty");
    }
    Ok(password.to_owned())
}

pub async fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        UserCommand::Add {
            name,
            public_key,
            password_stdin,
        } => {
            validate_name("user", &name)?;
            if public_key.is_empty() && !password_stdin {
                bail!(
                    "user '{name}' needs a credential: give --public-key FILE or --password-stdin"
                );
            }
            let mut keys_to_add = Vec::new();
            for path in &public_key {
                let k = keys::parse_public_key_line(
                    &read_file(path, "public key")?,
                    &format!("public key {}", path.display()),
                )?;
                keys_to_add.push(k);
            }
            let hash = if password_stdin {
                let pw = read_password_stdin()?;
                Some(passwords::store_password(&pw).map_err(anyhow::Error::msg)?)
            } else {
                None
            };
            store.add_operator(&name, hash.as_ref()).await?;
            for k in &keys_to_add {
                store
                    .add_operator_key(&name, &keys::fingerprint(k), &keys::public_key_line(k))
                    .await?;
            }
            let fps: Vec<String> = keys_to_add.iter().map(keys::fingerprint).collect();
            admin_audit(
                &store,
                "user_added",
                json!({"user": name, "public_keys": fps, "password": hash.is_some()}),
            )
            .await?;
            println!(
                "user {name} added ({} public key{}{})",
                fps.len(),
                if fps.len() == 1 { "" } else { "s" },
                if hash.is_some() { ", password set" } else { "" }
            );
        }
        UserCommand::Passwd { name, .. } => {
            let pw = read_password_stdin()?;
            let hash = passwords::store_password(&pw).map_err(anyhow::Error::msg)?;
            store.set_operator_password(&name, &hash).await?;
            admin_audit(&store, "password_set", json!({"user": name})).await?;
            println!("password of user {name} set");
        }
        UserCommand::Totp { name } => {
            let uri = store.enroll_totp(&name).await?;
            admin_audit(&store, "totp_enrolled", json!({"user": name})).await?;
            println!("{uri}");
            match qrcode::QrCode::new(uri.as_bytes()) {
                Ok(code) => println!(
                    "\n{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                ),
                Err(e) => eprintln!("(cannot draw a QR code: {e})"),
            }
            println!(
                "scan it with an authenticator app; user {name} is asked for the code at reauthentication"
            );
        }
        UserCommand::Lock { name } => {
            let by = os_user();
            let ended = store.lock_operator_by(&name, &cli_actor(&by)).await?;
            println!(
                "user {name} locked; {} live session{} will end within 2 seconds",
                ended.len(),
                if ended.len() == 1 { "" } else { "s" }
            );
        }
        UserCommand::Unlock { name } => {
            store.set_operator_locked(&name, false).await?;
            admin_audit(&store, "user_unlocked", json!({"user": name})).await?;
            println!("user {name} unlocked");
        }
        UserCommand::List => {
            let rows: Vec<Vec<String>> = store
                .list_operators()
                .await?
                .into_iter()
                .map(|o| {
                    vec![
                        o.name,
                        if o.password_hash.is_some() {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        if o.locked { "locked" } else { "active" }.into(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["name", "password", "state"], &rows));
        }
    }
    Ok(())
}

pub async fn grant(config: &Config, user: &str, env: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    store.grant(user, env).await?;
    admin_audit(
        &store,
        "grant_added",
        json!({"user": user, "environment": env}),
    )
    .await?;
    println!("user {user} may now reach environment {env}");
    Ok(())
}

pub async fn sessions(config: &Config, cmd: SessionsCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        SessionsCommand::Kill { id, reason } => {
            let by = os_user();
            store.kill_session_by(&id, &reason, &cli_actor(&by)).await?;
            println!("session {id} will end within 2 seconds");
        }
        SessionsCommand::List { json, limit } => {
            let sessions = store.list_sessions(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
                return Ok(());
            }
            let now = gatehouse_store::now_millis();
            let rows: Vec<Vec<String>> = sessions
                .into_iter()
                .map(|s| {
                    let end = s.ended_at.unwrap_or(now);
                    let dur =
                        std::time::Duration::from_secs(((end - s.started_at).max(0) / 1000) as u64);
                    vec![
                        s.id,
                        s.operator,
                        s.target,
                        s.environment.unwrap_or_else(|| "-".into()),
                        s.node,
                        s.client_addr,
                        table::time(s.started_at),
                        gatehouse_core::format_elapsed(dur),
                        s.end_reason.unwrap_or_else(|| "live".into()),
                        s.bytes_in.to_string(),
                        s.bytes_out.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "id", "operator", "target", "env", "node", "client", "started", "duration",
                        "end", "in", "out"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(gatehouse_store::now_millis() - d.as_millis() as i64);
    }
    let t = humantime::parse_rfc3339_weak(s).with_context(|| {
        format!("--since '{s}' is neither a duration (1h, 7d) nor a time (2026-01-31T12:00:00Z)")
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

pub async fn audit(config: &Config, cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List {
        json,
        since,
        user,
        session,
        kind,
        env,
        limit,
    } = cmd;
    let since_millis = since.as_deref().map(parse_since).transpose()?;
    let store = open_store(config).await?;
    let events = store
        .list_audit(&AuditFilter {
            since_millis,
            operator: user.as_deref(),
            session_id: session.as_deref(),
            kind: kind.as_deref(),
            environment: env.as_deref(),
            limit,
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .into_iter()
        .map(|e| {
            vec![
                table::time(e.at),
                e.kind,
                e.operator.unwrap_or_else(|| "-".into()),
                e.session_id.unwrap_or_else(|| "-".into()),
                e.source.unwrap_or_else(|| "-".into()),
                e.detail.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["time", "kind", "operator", "session", "source", "detail"],
            &rows
        )
    );
    Ok(())
}

/// `--allow-subsystems a,b`: names as every other name in Gatehouse; `sftp` needs no
/// allowing (it always runs, with its transfer log).
fn parse_subsystems(list: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        gatehouse_core::validate_name("subsystem", name)?;
        if name != "sftp" && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn subsystem_text(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
