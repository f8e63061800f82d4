//! `gatehouse demo`: everything a newcomer needs to see Gatehouse work, in one command. It
//! starts a private OpenSSH sshd and a throwaway PostgreSQL on loopback as the demo targets
//! (`sandbox`, `sandboxdb`), registers them in a `demo` environment whose policy shows
//! enforcement within two minutes, creates operator `demo` with a generated key and
//! password, and serves, printing the exact `ssh`, `psql`, `sessions list` and `review`
//! lines to try.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use std::time::Duration;

use gatehouse_core::{EnvPolicy, IdleAction, TargetKind, TlsMode};
use gatehouse_session::passwords::store_password;
use gatehouse_ssh::keys;
use gatehouse_store::{NewTarget, StoreError};
use gatehouse_testbed::{PgOptions, Postgres};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use crate::admin::open_store;
use crate::config::Config;
use crate::serve;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's store, keys and recordings.
    #[arg(long, default_value = "demo")]
    dir: PathBuf,
    /// Where the broker listens for SSH.
    #[arg(long, default_value = crate::config::DEFAULT_SSH_LISTEN)]
    listen: SocketAddr,
    /// Where the broker listens for PostgreSQL clients.
    #[arg(long, default_value = crate::config::DEFAULT_POSTGRES_LISTEN)]
    pg_listen: SocketAddr,
}

const ENV: &str = "demo";
const OPERATOR: &str = "demo";
const TARGET: &str = "sandbox";
const DB_TARGET: &str = "sandboxdb";
/// The database and role of the demo's PostgreSQL that `sandboxdb` reaches.
const DB_NAME: &str = "sandbox";
const DB_ROLE: &str = "app";

/// A random password of `len` letters and digits.
fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let seed: [u8; 32] = rand::random();
    // 32 random bytes, each mapped to the 56-character alphabet (the small bias of the
    // modulo does not matter for a demo credential)
    seed.iter()
        .cycle()
        .take(len)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The operator's password, generated once and kept beside the key (mode 0600).
fn ensure_password(path: &Path) -> anyhow::Result<String> {
    if let Ok(p) = std::fs::read_to_string(path) {
        return Ok(p.trim().to_owned());
    }
    let password = random_password(20);
    let mut f = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    std::io::Write::write_all(
        &mut f.create(true).write(true).truncate(true).open(path)?,
        format!("{password}\n").as_bytes(),
    )?;
    Ok(password)
}

/// The demo policy: enforcement a newcomer sees within minutes.
fn demo_policy() -> EnvPolicy {
    EnvPolicy {
        idle_timeout: Some(Duration::from_secs(120)),
        warn_before: vec![Duration::from_secs(60), Duration::from_secs(10)],
        idle_action: IdleAction::Lock,
        ..EnvPolicy::default()
    }
}

fn ensure_key(path: &Path, comment: &str) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return Ok(keys::parse_private_key(
            &std::fs::read_to_string(path)?,
            &path.display().to_string(),
        )?);
    }
    let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .context("cannot generate a key")?;
    key.set_comment(comment);
    keys::write_private_key(path, &key)?;
    std::fs::write(
        path.with_extension("pub"),
        keys::public_key_line(key.public_key()) + "\n",
    )?;
    Ok(key)
}

fn ignore_exists(r: Result<(), StoreError>) -> anyhow::Result<()> {
    match r {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn demo(args: DemoArgs, cwd: &Path) -> anyhow::Result<()> {
    serve::init_tracing();
    let dir = if args.dir.is_absolute() {
        args.dir.clone()
    } else {
        cwd.join(&args.dir)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_text = format!(
        "[store]\nurl = \"sqlite://gatehouse.db\"\n[ssh]\nlisten = \"{}\"\nhost_key = \"gatehouse_host_ed25519\"\n[postgres]\nlisten = \"{}\"\n[recordings]\nroot = \"recordings\"\n",
        args.listen, args.pg_listen
    );
    let config_path = dir.join("gatehouse.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::parse(&config_text, &dir, &config_path.display().to_string())?;

    let target_identity = ensure_key(
        &dir.join("target_identity_ed25519"),
        "gatehouse demo target identity",
    )?;
    let operator_key = dir.join("operator_ed25519");
    let operator = ensure_key(&operator_key, "gatehouse demo operator")?;
    let password_file = dir.join("operator_password");
    let password = ensure_password(&password_file)?;

    let sshd =
        gatehouse_testbed::Sshd::start(&[keys::public_key_line(target_identity.public_key())])
            .context("cannot start the demo target (a private sshd)")?;
    let db_password = random_password(24);
    let postgres = start_demo_postgres(&db_password)?;

    let store = open_store(&config).await?;
    ignore_exists(store.add_environment(ENV).await)?;
    let stored = store_password(&password).map_err(anyhow::Error::msg)?;
    match store.add_operator(OPERATOR, Some(&stored)).await {
        Err(StoreError::AlreadyExists { .. }) => {
            store.set_operator_password(OPERATOR, &stored).await?
        }
        other => other?,
    }
    ignore_exists(
        store
            .add_operator_key(
                OPERATOR,
                &keys::fingerprint(operator.public_key()),
                &keys::public_key_line(operator.public_key()),
            )
            .await,
    )?;
    ignore_exists(store.grant(OPERATOR, ENV).await)?;
    store.set_environment_policy(ENV, &demo_policy()).await?;
    // The sandboxes get new ports and keys every run: re-register them.
    for name in [TARGET, DB_TARGET] {
        match store.remove_target(name).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let identity_text = target_identity.to_openssh(LineEnding::LF)?;
    store
        .add_target(&NewTarget {
            name: TARGET,
            environment: ENV,
            host: "127.0.0.1",
            port: sshd.port(),
            username: sshd.user(),
            credential: identity_text.as_bytes(),
            kind: TargetKind::Ssh {
                host_key: Some(sshd.host_public_key().to_owned()),
                tofu: false,
            },
        })
        .await?;
    store
        .add_target(&NewTarget {
            name: DB_TARGET,
            environment: ENV,
            host: "127.0.0.1",
            port: postgres.port(),
            username: DB_ROLE,
            credential: db_password.as_bytes(),
            kind: TargetKind::Postgres {
                database: Some(DB_NAME.to_owned()),
                // loopback to a server of the demo's own, which has no certificate
                tls: TlsMode::Disable,
                ca: None,
                kept_logins: true,
            },
        })
        .await?;
    store.close().await;

    let prepared = serve::prepare(&config).await?;
    let addr = prepared.listener.local_addr()?;
    let pg_addr = match &prepared.postgres {
        Some((_, l)) => l.local_addr()?,
        None => anyhow::bail!("the demo needs the PostgreSQL front"),
    };
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[{}]:{} {}\n",
            addr.ip(),
            addr.port(),
            prepared.host_key_line
        ),
    )?;
    let bin = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "gatehouse".into());
    let admin = format!("{bin} --config {}", config_path.display());
    println!("gatehouse: postgres listening on {pg_addr}");
    println!("gatehouse: ssh listening on {addr}");
    println!();
    println!("Gatehouse demo is running (Ctrl-C stops it). Try:");
    println!();
    println!("  # a shell on the sandbox sshd, recorded");
    println!(
        "  ssh -p {} -i {} -o UserKnownHostsFile={} {OPERATOR}+{TARGET}@{}",
        addr.port(),
        operator_key.display(),
        known_hosts.display(),
        addr.ip()
    );
    println!();
    println!("  # SQL on the sandbox PostgreSQL, every statement logged");
    println!(
        "  PGPASSWORD=$(cat {}) psql \"host={} port={} user={OPERATOR} dbname={DB_TARGET} sslmode=require\"",
        password_file.display(),
        pg_addr.ip(),
        pg_addr.port()
    );
    println!();
    println!(
        "Environment '{ENV}' locks a session idle for 2m (warnings 1m and 10s before); unlock it"
    );
    println!(
        "with the password in {}. In another terminal, see the sessions and replay them:",
        password_file.display()
    );
    println!();
    println!("  {admin} sessions list");
    println!("  {admin} review");
    println!();
    let result = serve::run(prepared).await;
    drop(sshd);
    drop(postgres);
    result
}

/// A throwaway PostgreSQL whose role `app` owns database `sandbox`, with a table to query.
fn start_demo_postgres(password: &str) -> anyhow::Result<Postgres> {
    let postgres = Postgres::start_with(&PgOptions {
        password_auth: true,
        ..PgOptions::default()
    })
    .context("cannot start the demo database (a throwaway PostgreSQL)")?;
    postgres.create_database(DB_NAME)?;
    postgres.psql(
        DB_NAME,
        &format!(
            "CREATE ROLE {DB_ROLE} LOGIN PASSWORD '{password}'; ALTER DATABASE {DB_NAME} OWNER TO {DB_ROLE}; \
             GRANT ALL ON SCHEMA public TO {DB_ROLE}; \
             CREATE TABLE hosts (name text PRIMARY KEY, env text); \
             INSERT INTO hosts VALUES ('web1', 'prod'), ('web2', 'prod'), ('ci', 'dev'); \
             ALTER TABLE hosts OWNER TO {DB_ROLE};"
        ),
    )?;
    Ok(postgres)
}
