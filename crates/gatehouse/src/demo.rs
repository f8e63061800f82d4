//! `gatehouse demo`: everything a newcomer needs to see Gatehouse work, in one command. It
//! starts a private OpenSSH sshd on loopback as the demo target, registers it in a `demo`
//! environment, creates operator `demo` with a generated key, and serves, printing the exact
//! `ssh` line to try.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use gatehouse_core::Protocol;
use gatehouse_ssh::keys;
use gatehouse_store::{NewTarget, StoreError};
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
    /// Where the broker listens.
    #[arg(long, default_value = crate::config::DEFAULT_SSH_LISTEN)]
    listen: SocketAddr,
}

const ENV: &str = "demo";
const OPERATOR: &str = "demo";
const TARGET: &str = "sandbox";

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
        "[store]\nurl = \"sqlite://gatehouse.db\"\n[ssh]\nlisten = \"{}\"\nhost_key = \"gatehouse_host_ed25519\"\n[recordings]\nroot = \"recordings\"\n",
        args.listen
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

    let sshd =
        gatehouse_testbed::Sshd::start(&[keys::public_key_line(target_identity.public_key())])
            .context("cannot start the demo target (a private sshd)")?;

    let store = open_store(&config).await?;
    ignore_exists(store.add_environment(ENV).await)?;
    ignore_exists(store.add_operator(OPERATOR, None).await)?;
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
    // The sandbox sshd gets a new port and host key every run: re-register it.
    match store.remove_target(TARGET).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let identity_text = target_identity.to_openssh(LineEnding::LF)?;
    store
        .add_target(&NewTarget {
            name: TARGET,
            environment: ENV,
            protocol: Protocol::Ssh,
            host: "127.0.0.1",
            port: sshd.port(),
            username: sshd.user(),
            credential: identity_text.as_bytes(),
            host_key: Some(sshd.host_public_key()),
            database: None,
            tls_mode: None,
            trust_on_first_use: false,
        })
        .await?;
    store.close().await;

    let prepared = serve::prepare(&config).await?;
    let addr = prepared.listener.local_addr()?;
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
    println!("gatehouse: ssh listening on {addr}");
    println!();
    println!("Gatehouse demo is running (Ctrl-C stops it). Try:");
    println!();
    println!(
        "  ssh -p {} -i {} -o UserKnownHostsFile={} {OPERATOR}+{TARGET}@{}",
        addr.port(),
        operator_key.display(),
        known_hosts.display(),
        addr.ip()
    );
    println!();
    println!("then, in another terminal, see the session in the registry:");
    println!();
    println!(
        "  cargo run --release -- --config {} sessions list",
        config_path.display()
    );
    println!();
    let result = serve::run(prepared).await;
    drop(sshd);
    result
}
