//! Admin commands: environments, targets, operators, grants, the session registry and the
//! audit log, one module per command group beside its clap structs. They work on the same
//! store as a running broker; what they share (opening the store, the acting admin, admin
//! audit events, reading secrets and files) is here.

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

mod audit;
mod env;
mod sessions;
mod target;
mod target_pg;
mod user;

pub use audit::{AuditCommand, audit};
pub use env::{EnvCommand, env};
pub use sessions::{SessionsCommand, sessions};
pub use target::{TargetCommand, target};
pub use user::{UserCommand, grant, user};

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

pub(crate) fn read_file(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
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
