//! `gatehouse audit`: the audit log, filtered.

use super::*;

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
