//! `gatehouse sessions`: the session registry (list, show, kill).

use super::*;

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
