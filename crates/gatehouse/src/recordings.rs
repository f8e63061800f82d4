//! `gatehouse recordings`: verify recordings against their chain and the store, and prune
//! old ones.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Subcommand;
use gatehouse_recorder::status::recording_status;
use gatehouse_recorder::{RecordingKind, Verdict, verify};
use gatehouse_store::{AuditEvent, RecordingRecord, RecordingState, Store, StoreError};
use serde_json::json;

use crate::admin::open_store;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// Check recordings for tampering: `ok`, `truncated (interrupted)` or `TAMPERED at
    /// event N`. Exits 1 if any recording was tampered with.
    Verify {
        /// Every recording in the store.
        #[arg(long, conflicts_with = "what")]
        all: bool,
        /// A session id, or a .cast or .sql.jsonl file.
        #[arg(required_unless_present = "all")]
        what: Option<String>,
    },
    /// Write a recording to stdout as asciicast (`cast`), plain text or JSON.
    Export {
        /// A session id or a recording file.
        what: String,
        #[arg(long, value_enum, default_value = "cast")]
        format: crate::review::ExportFormat,
    },
    /// Delete recordings of sessions that started longer ago than `--older-than`.
    Prune {
        /// e.g. 90d.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn recordings(config: &Config, cmd: RecordingsCommand) -> anyhow::Result<()> {
    if let RecordingsCommand::Export { what, format } = &cmd {
        return crate::review::export(config, what, *format).await;
    }
    let store = open_store(config).await?;
    match cmd {
        RecordingsCommand::Verify { all, what } => {
            let targets: Vec<RecordingRecord> = if all {
                store.list_recordings(None).await?
            } else {
                let what = what.unwrap_or_default();
                match lookup(&store, &what).await? {
                    Some(r) => vec![r],
                    None => {
                        // a file the store does not know: only its own chain can be checked
                        let verdict = verify(Path::new(&what), None)?;
                        println!("{what}  {verdict} (no store record: chain only)");
                        if matches!(verdict, Verdict::Tampered { .. }) {
                            bail!("recording {what} was tampered with");
                        }
                        return Ok(());
                    }
                }
            };
            let mut tampered = 0;
            for r in &targets {
                let line = check(r);
                if line.contains("TAMPERED") {
                    tampered += 1;
                }
                println!("{}  {line}", r.session_id);
            }
            if tampered > 0 {
                bail!("{tampered} recording(s) were tampered with");
            }
            Ok(())
        }
        RecordingsCommand::Prune {
            older_than,
            dry_run,
        } => prune(&store, config, &older_than, dry_run).await,
        RecordingsCommand::Export { .. } => Ok(()),
    }
}

/// A session id, or a recording path whose file name is `<session id>.cast` (or
/// `<session id>.sql.jsonl`).
async fn lookup(store: &Store, what: &str) -> anyhow::Result<Option<RecordingRecord>> {
    let name = Path::new(what).file_name().and_then(|n| n.to_str());
    let file = name.and_then(RecordingKind::split_file_name);
    let is_file = file.is_some();
    let id = file.map(|(_, id)| id).or(name).unwrap_or(what);
    match store.recording(id).await {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::NotFound { .. }) if is_file => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The verdict line, shared with the review list (`gatehouse_recorder::status`).
fn check(r: &RecordingRecord) -> String {
    recording_status(r).to_string()
}

async fn prune(
    store: &Store,
    config: &Config,
    older_than: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let age = humantime::parse_duration(older_than).map_err(|e| {
        anyhow::anyhow!("--older-than '{older_than}' is not a duration like 90d: {e}")
    })?;
    let cutoff = gatehouse_store::now_millis() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let old: Vec<RecordingRecord> = store
        .list_recordings(Some(cutoff))
        .await?
        .into_iter()
        // live ones are not pruned; pruned ones (listed, for verify) are gone already
        .filter(|r| !matches!(r.state, RecordingState::Recording | RecordingState::Pruned))
        .collect();
    for r in &old {
        if dry_run {
            println!("would remove {}  {}", r.session_id, r.path);
            continue;
        }
        let cast = PathBuf::from(&r.path);
        // the review search index holds the recording's text too
        let index = gatehouse_review::index::index_file(
            &crate::review::default_index_dir(config),
            &r.session_id,
        );
        for p in [
            cast.clone(),
            gatehouse_recorder::file::chain_path(&cast),
            index,
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("cannot remove {}: {e}", p.display()),
            }
        }
        store.recording_pruned(&r.session_id).await?;
        println!("removed {}  {}", r.session_id, r.path);
    }
    if !dry_run {
        store
            .audit(&AuditEvent {
                kind: "recordings_pruned",
                operator: None,
                session_id: None,
                source: Some("admin-cli"),
                detail: json!({"older_than": older_than, "count": old.len()}),
            })
            .await?;
    }
    println!(
        "{} recording(s) {} older than {older_than}",
        old.len(),
        if dry_run {
            "would be removed,"
        } else {
            "removed,"
        }
    );
    Ok(())
}
