//! `gatehouse nodes`: the broker nodes sharing this store, from their heartbeats. Works
//! from any node (or any machine with the config), like every admin command.

use clap::Subcommand;

use crate::admin::open_store;
use crate::config::Config;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes: id, name, version, heartbeat age, live sessions, state.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn nodes(config: &Config, cmd: NodesCommand) -> anyhow::Result<()> {
    let NodesCommand::List { json } = cmd;
    let store = open_store(config).await?;
    let nodes = store.node_records().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    let now = gatehouse_store::now_millis();
    let timeout = i64::try_from(config.fleet.node_timeout.as_millis()).unwrap_or(i64::MAX);
    let rows: Vec<Vec<String>> = nodes
        .into_iter()
        .map(|n| {
            let age = (now - n.heartbeat_at).max(0);
            let state = if n.stopped_at.is_some() {
                "stopped"
            } else if n.lost_at.is_some() {
                "lost"
            } else if age > timeout {
                "silent"
            } else {
                "live"
            };
            vec![
                n.id,
                n.name,
                n.version,
                format!("{:.1}s", age as f64 / 1000.0),
                n.live_sessions.to_string(),
                state.to_owned(),
                table::time(n.started_at),
                n.listen,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "id",
                "name",
                "version",
                "heartbeat",
                "sessions",
                "state",
                "started",
                "listen"
            ],
            &rows
        )
    );
    Ok(())
}
