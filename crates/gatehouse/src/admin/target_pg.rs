//! `gatehouse target add NAME --postgres USER@HOST:PORT/DATABASE --password-stdin`: a
//! PostgreSQL target, its role's password sealed in the store, its upstream TLS mode and,
//! for verify-full, the CA its certificate must chain to.

use anyhow::{Context, bail};
use gatehouse_core::PgAddress;
use gatehouse_core::{TargetKind, TlsMode};
use gatehouse_store::{NewTarget, Store};
use serde_json::json;

use super::target::TargetAddArgs;
use super::{admin_audit, read_file, read_password_stdin};

pub async fn add_postgres_target(store: &Store, args: TargetAddArgs) -> anyhow::Result<()> {
    let Some(raw) = &args.postgres else {
        bail!("give --ssh USER@HOST:PORT with --identity, or --postgres USER@HOST:PORT/DATABASE");
    };
    if args.identity.is_some() || args.host_key.is_some() || args.host_key_file.is_some() {
        bail!(
            "--identity and --host-key are for SSH targets; a PostgreSQL target takes --password-stdin and --tls"
        );
    }
    let addr = PgAddress::parse(raw).context("--postgres")?;
    let tls = match &args.tls {
        Some(t) => TlsMode::parse(t).map_err(anyhow::Error::msg)?,
        None => TlsMode::VerifyFull,
    };
    let ca = match &args.tls_ca {
        Some(_) if tls != TlsMode::VerifyFull => {
            bail!("--tls-ca is only used with --tls verify-full")
        }
        Some(path) => {
            let pem = read_file(path, "CA certificate")?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                bail!("{} holds no PEM certificate", path.display());
            }
            Some(pem)
        }
        None => None,
    };
    if !args.password_stdin {
        bail!(
            "target '{}' needs the role's password: give --password-stdin",
            args.name
        );
    }
    let password = read_password_stdin()?;
    store
        .add_target(&NewTarget {
            name: &args.name,
            environment: &args.env,
            host: &addr.host,
            port: addr.port,
            username: &addr.user,
            credential: password.as_bytes(),
            kind: TargetKind::Postgres {
                database: Some(addr.database.clone()),
                tls,
                ca: ca.clone(),
                kept_logins: !args.no_kept_logins,
            },
        })
        .await?;
    admin_audit(
        store,
        "target_added",
        json!({"target": args.name, "environment": args.env, "protocol": "postgres",
               "address": format!("{}@{}:{}/{}", addr.user, addr.host, addr.port, addr.database),
               "tls": tls.as_str(), "tls_ca": ca.is_some(), "kept_logins": !args.no_kept_logins}),
    )
    .await?;
    println!(
        "target {} added (environment {}, postgres {}@{}:{}/{}, tls {}{})",
        args.name,
        args.env,
        addr.user,
        addr.host,
        addr.port,
        addr.database,
        tls.as_str(),
        if args.no_kept_logins {
            ", logins never kept"
        } else {
            ""
        }
    );
    Ok(())
}
