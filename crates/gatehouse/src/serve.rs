//! `gatehouse serve`: open the store, load the host key, recover from a previous crash and
//! broker SSH until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use gatehouse_ssh::{Broker, BrokerConfig, keys};
use tokio::net::TcpListener;

use crate::admin::open_store;
use crate::config::Config;

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,russh=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A broker ready to serve: store open, host key loaded, listener bound.
pub struct Prepared {
    pub broker: Arc<Broker>,
    pub listener: TcpListener,
    pub host_key_line: String,
}

pub async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let store = open_store(config).await?;
    let host_key = keys::load_or_generate_host_key(&config.host_key)?;
    let host_key_line = keys::public_key_line(host_key.public_key());
    std::fs::create_dir_all(&config.recordings_root).with_context(|| {
        format!(
            "cannot create recordings root {}",
            config.recordings_root.display()
        )
    })?;
    let interrupted = store.close_interrupted_sessions(&config.node).await?;
    store.interrupt_recordings(&config.node).await?;
    if !interrupted.is_empty() {
        tracing::warn!(count = interrupted.len(), sessions = ?interrupted, "sessions left open by a previous run closed as interrupted");
    }
    let listener = TcpListener::bind(config.ssh_listen)
        .await
        .with_context(|| format!("cannot listen for SSH on {}", config.ssh_listen))?;
    let mut broker_config = BrokerConfig::new(
        config.node.clone(),
        host_key,
        config.recordings_root.clone(),
    );
    broker_config.login_limiter = config.login_limiter;
    let broker = Broker::new(store, broker_config);
    Ok(Prepared {
        broker,
        listener,
        host_key_line,
    })
}

pub async fn run(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared {
        broker, listener, ..
    } = prepared;
    gatehouse_ssh::run(listener, broker.clone(), shutdown_signal()).await?;
    broker.store().close().await;
    tracing::info!("gatehouse stopped");
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing();
    let prepared = prepare(&config).await?;
    let addr = prepared.listener.local_addr()?;
    // One machine-readable line on stdout: scripts and tests read the bound port from it.
    println!("gatehouse: ssh listening on {addr}");
    tracing::info!(%addr, host_key = %prepared.host_key_line, node = %config.node, "gatehouse serving");
    run(prepared).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutdown requested");
}
