//! `gatehouse serve`: open the store, load the host key, recover from a previous crash and
//! broker SSH and PostgreSQL until SIGINT/SIGTERM, with the node's heartbeat and the
//! detective control running beside.

use std::sync::Arc;

use anyhow::Context;
use gatehouse_pg::{PgBroker, PgConfig};
use gatehouse_session::{ConnectionThreads, FrontConfig, LiveSessions};
use gatehouse_ssh::{Broker, BrokerConfig, keys};
use tokio::net::TcpListener;

use crate::admin::open_store;
use crate::config::{Config, DetectiveConfig, FleetConfig};
use gatehouse_store::NodeInfo;

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

/// A broker ready to serve: store open, host key loaded, listeners bound.
pub struct Prepared {
    pub broker: Arc<Broker>,
    pub listener: TcpListener,
    pub host_key_line: String,
    /// The PostgreSQL front, unless disabled.
    pub postgres: Option<(Arc<PgBroker>, TcpListener)>,
    /// The node's live sessions (for its heartbeat).
    pub live: Arc<LiveSessions>,
    /// What the node says about itself in its heartbeat.
    pub node: NodeInfo,
    pub detective: DetectiveConfig,
    pub fleet: FleetConfig,
    /// `[metrics] listen`, bound.
    pub metrics: Option<(TcpListener, Arc<crate::metrics::MetricsServer>)>,
}

/// Raises the open-files limit to the hard limit (see `gatehouse_session::open_files`) and
/// returns the node's limits on connections not yet logged in (per front) and on live sessions:
/// `[node] max_unauthenticated` and `max_sessions`, or what the open-files limit leaves room
/// for. Warns when that room is under 1,000 sessions or below the configured limits.
fn node_limits(config: &Config) -> (usize, usize) {
    use gatehouse_session::open_files::{
        DEFAULT_MAX_UNAUTHENTICATED, FILES_PER_SESSION, raise_open_files_limit,
    };
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let files = match raise_open_files_limit() {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit");
            return (
                config
                    .max_unauthenticated
                    .map_or(to_usize(DEFAULT_MAX_UNAUTHENTICATED), |n| n as usize),
                config.max_sessions.map_or(usize::MAX, |n| n as usize),
            );
        }
    };
    // each front has its own login slots (shared, a front that waits for a connection would
    // hold a slot the other needs)
    let fronts = 1 + u64::from(config.postgres.is_some());
    let logins = config
        .max_unauthenticated
        .map_or(files.login_room(fronts), u64::from);
    let room = to_usize(files.session_room(logins * fronts));
    let max = config.max_sessions.map_or(room, |n| n as usize);
    let (limit, was) = (files.limit, files.before);
    let short = if room < max {
        format!(
            "[node] max_sessions is {max} but the open-files limit ({limit}) leaves room for only about {room} live sessions beside {logins} logins"
        )
    } else if room < 1_000 {
        format!(
            "the open-files limit ({limit}) leaves room for only {room} live sessions beside {logins} logins"
        )
    } else {
        tracing::info!(
            limit,
            was,
            max_sessions = max,
            max_unauthenticated = logins,
            "open-files limit {limit}: room for {room} live sessions beside {logins} logins"
        );
        return (to_usize(logins), max);
    };
    tracing::warn!(
        limit,
        was,
        max_sessions = max,
        max_unauthenticated = logins,
        "{short} ({FILES_PER_SESSION} files a session): raise the hard limit (systemd LimitNOFILE=, ulimit -Hn)"
    );
    (to_usize(logins), max)
}

pub async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    if gatehouse_recorder::task::UNRECORDED {
        eprintln!(
            "gatehouse: WARNING: benchmark build (feature bench-unrecorded): terminal output and input are NOT recorded; never deploy this binary"
        );
        tracing::warn!("benchmark build: terminal output and input are not recorded");
    }
    let (max_unauthenticated, max_sessions) = node_limits(config);
    let store = open_store(config).await?;
    let host_key = keys::load_or_generate_host_key(&config.host_key)?;
    let host_key_line = keys::public_key_line(host_key.public_key());
    let node_id = crate::fleet::load_or_create_node_id(&config.host_key)?;
    gatehouse_recorder::file::create_private_dir(&config.recordings_root).with_context(|| {
        format!(
            "cannot create recordings root {}",
            config.recordings_root.display()
        )
    })?;
    let interrupted = store.close_interrupted_sessions(&node_id).await?;
    store.interrupt_recordings(&node_id).await?;
    if !interrupted.is_empty() {
        tracing::warn!(count = interrupted.len(), sessions = ?interrupted, "sessions left open by a previous run closed as interrupted");
    }
    let listener = gatehouse_session::listen(config.ssh_listen)
        .with_context(|| format!("cannot listen for SSH on {}", config.ssh_listen))?;
    let mut front = FrontConfig::new(config.node.clone(), config.recordings_root.clone());
    // one login gate for the node: both fronts get clones of `front`
    front.login = gatehouse_session::LoginGate::new(config.login_limits);
    front.login_grace = config.ssh_login_grace;
    // one start queue for the node, likewise
    front.starting =
        gatehouse_session::StartQueue::new(config.max_starting_sessions, config.start_wait);
    // and one session limit; each front its own login slots (the SSH front's here)
    front.sessions = gatehouse_session::SessionLimit::new(max_sessions);
    let per_source = config.max_unauthenticated_per_source.map(|n| n as usize);
    front.logins = gatehouse_session::LoginSlots::with_per_source(max_unauthenticated, per_source);
    front.node_id = node_id.clone();
    let broker_config = BrokerConfig::new(front.clone(), host_key);
    // one registry and store watcher for the node, shared by both fronts
    let live = LiveSessions::new(store.clone(), node_id.clone());
    // each front's login slots, for the metrics
    let mut login_slots = vec![(gatehouse_core::Protocol::Ssh, front.logins.clone())];
    let postgres = match &config.postgres {
        None => None,
        Some(pg) => {
            let tls = gatehouse_pg::tls::server_config(&pg.tls_cert, &pg.tls_key, pg.generate_tls)
                .context("PostgreSQL front TLS")?;
            let mut pg_front = front.clone();
            pg_front.login_grace = pg.login_grace;
            pg_front.logins =
                gatehouse_session::LoginSlots::with_per_source(max_unauthenticated, per_source);
            login_slots.push((gatehouse_core::Protocol::Postgres, pg_front.logins.clone()));
            let mut pg_config = PgConfig::new(pg_front, tls);
            pg_config.allow_cleartext = pg.allow_cleartext;
            pg_config.pool = pg.target_pool;
            pg_config.threads = Some(
                ConnectionThreads::start("gatehouse-pg", pg.threads as usize)
                    .context("cannot start the PostgreSQL connection threads")?,
            );
            // statement logs are written on the shared runtime, off the connection threads
            pg_config.recorders = Some(tokio::runtime::Handle::current());
            let listener = gatehouse_session::listen(pg.listen)
                .with_context(|| format!("cannot listen for PostgreSQL on {}", pg.listen))?;
            Some((
                PgBroker::new(store.clone(), pg_config, live.clone()),
                listener,
            ))
        }
    };
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let l = gatehouse_session::listen(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let server = crate::metrics::MetricsServer {
                store: store.clone(),
                live: live.clone(),
                node_name: config.node.clone(),
                recordings_root: config.recordings_root.clone(),
                sessions: front.sessions.clone(),
                login_slots,
            };
            Some((l, Arc::new(server)))
        }
    };
    let broker = Broker::with_live(store, broker_config, live.clone());
    let mut listen = format!("ssh {}", listener.local_addr()?);
    if let Some((_, l)) = &postgres {
        listen.push_str(&format!(", postgres {}", l.local_addr()?));
    }
    let node = NodeInfo {
        id: node_id,
        name: config.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: gatehouse_store::now_millis(),
        listen,
    };
    Ok(Prepared {
        broker,
        listener,
        host_key_line,
        postgres,
        live,
        node,
        detective: config.detective.clone(),
        fleet: config.fleet,
        metrics,
    })
}

pub async fn run(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared {
        broker,
        listener,
        postgres,
        live,
        node,
        detective,
        fleet,
        metrics,
        ..
    } = prepared;
    // every guard of the node wakes on its own thread, not behind the relays' work
    gatehouse_session::enforcement_thread::start()
        .context("cannot start the enforcement thread")?;
    let metrics_task = metrics.map(|(l, server)| tokio::spawn(crate::metrics::run(l, server)));
    let store = broker.store().clone();
    let heartbeat = live.spawn_heartbeat(node.clone());
    // listening for the store's changes from the start, not from the first session: a kill
    // right after the first login must not wait for the poll
    live.ensure_watcher();
    let takeover = tokio::spawn(crate::fleet::watch_lost_nodes(
        store.clone(),
        node.id.clone(),
        fleet.node_timeout,
        gatehouse_session::HEARTBEAT_INTERVAL,
    ));
    #[cfg(feature = "bench-lateness")]
    let _lateness = crate::bench_lateness::spawn();
    let detective_task = detective
        .enabled
        .then(|| tokio::spawn(crate::detective::watch(store.clone(), detective)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let pg_task =
        postgres.map(|(pg, l)| tokio::spawn(gatehouse_pg::run(l, pg, stopped(stop_rx.clone()))));
    let ssh = gatehouse_ssh::run(listener, broker.clone(), async {
        shutdown_signal().await;
        stop_tx.send_replace(true);
    });
    let ssh_result = ssh.await;
    stop_tx.send_replace(true);
    if let Some(t) = pg_task {
        match t.await {
            Ok(Err(e)) => tracing::error!(error = %e, "PostgreSQL front failed"),
            Err(e) => tracing::error!(error = %e, "PostgreSQL front panicked"),
            Ok(Ok(())) => {}
        }
    }
    heartbeat.abort();
    takeover.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = detective_task {
        t.abort();
    }
    // the enforcement and refusal events still in the audit writer's queue
    if !store.flush_audits(std::time::Duration::from_secs(5)).await {
        tracing::error!("audit events still queued at shutdown were not all written");
    }
    if let Err(e) = store.node_stopped(live.node()).await {
        tracing::error!(error = %e, "cannot record the node's stop");
    }
    ssh_result?;
    broker.store().close().await;
    tracing::info!("gatehouse stopped");
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing();
    let prepared = prepare(&config).await?;
    let addr = prepared.listener.local_addr()?;
    // One machine-readable line on stdout: scripts and tests read the bound port from it.
    // the ssh line last: readers may stop at it
    if let Some((l, _)) = &prepared.metrics {
        println!("gatehouse: metrics listening on {}", l.local_addr()?);
    }
    if let Some((_, l)) = &prepared.postgres {
        println!("gatehouse: postgres listening on {}", l.local_addr()?);
    }
    println!("gatehouse: ssh listening on {addr}");
    tracing::info!(%addr, host_key = %prepared.host_key_line, node = %config.node, node_id = %prepared.node.id, "gatehouse serving");
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
