//! `gatehouse target`: SSH targets (identity, pinned host key or trust on first use); the
//! PostgreSQL kind is `target_pg.rs`.

use super::*;

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
    /// PostgreSQL: never keep Gatehouse's logins to this target between sessions, even on
    /// nodes with `[postgres] target_pool` (for targets whose operators use dblink,
    /// postgres_fdw or `LOAD`: what `DISCARD ALL` does not reset).
    #[arg(long, requires = "postgres")]
    pub no_kept_logins: bool,
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
                            TargetKind::Postgres {
                                database,
                                tls,
                                ca,
                                kept_logins,
                            } => {
                                v["database"] = json!(database);
                                v["tls"] = json!(tls.as_str());
                                v["tls_ca"] = json!(ca.is_some());
                                v["kept_logins"] = json!(kept_logins);
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
                                TargetKind::Postgres {
                                    tls, kept_logins, ..
                                } => {
                                    format!(
                                        "tls {}{}",
                                        tls.as_str(),
                                        if *kept_logins {
                                            ""
                                        } else {
                                            ", logins not kept"
                                        }
                                    )
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

async fn add_target(store: &Store, args: TargetAddArgs) -> anyhow::Result<()> {
    validate_name("target", &args.name)?;
    let (Some(ssh), Some(identity_path)) = (&args.ssh, &args.identity) else {
        return super::target_pg::add_postgres_target(store, args).await;
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
    if addr.user == "root" {
        eprintln!("{ROOT_LOGIN_WARNING}");
    }
    Ok(())
}

/// Said when a target is logged in to as root. OpenSSH's sshd serves root without privilege
/// separation and refuses `signal` requests there ("session signalling requires privilege
/// separation"), so the hangup Gatehouse sends when it ends a session cannot reach the
/// command: one run without a terminal keeps running on the target until it next writes.
const ROOT_LOGIN_WARNING: &str = "warning: this target is logged in to as root: \
OpenSSH's sshd does not let Gatehouse hang up a root session's command, so a command run without \
a terminal keeps running on the target after Gatehouse ends its session (until it next writes); \
prefer an unprivileged login (with sudo on the target where needed)";
