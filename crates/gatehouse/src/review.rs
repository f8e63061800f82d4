//! `gatehouse review`, `gatehouse play` and `gatehouse recordings export`: CLI wiring for
//! the review crate. Recordings are resolved through the store and only ever read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use gatehouse_recorder::status::recording_status;
use gatehouse_review::export::{self, Format, Recording};
use gatehouse_review::{App, SearchIndex, StoreActions, StoreCatalog};
use gatehouse_store::{Store, StoreError};

use crate::admin::open_store;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Show only this operator's sessions.
    #[arg(long)]
    operator: Option<String>,
    /// Show only sessions to this target.
    #[arg(long)]
    target: Option<String>,
    /// Show only sessions in this environment.
    #[arg(long)]
    env: Option<String>,
    /// Show only sessions whose end reason contains this (`live` for live ones).
    #[arg(long)]
    end: Option<String>,
    /// Sessions started on or after this day (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DAY")]
    from: Option<String>,
    /// Sessions started on or before this day (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DAY")]
    to: Option<String>,
    /// Where search documents are cached (default: `.index` under the recordings root).
    #[arg(long, value_name = "DIR")]
    index_dir: Option<PathBuf>,
    /// Newest sessions listed.
    #[arg(long, default_value_t = 5000)]
    limit: u32,
    /// Only look: no `K` (end a session) or `L` (lock an operator).
    #[arg(long)]
    read_only: bool,
    /// Who the audit events of `K`/`L` name (default: the OS user running the review).
    #[arg(long = "as", value_name = "NAME")]
    reviewer: Option<String>,
}

impl ReviewArgs {
    fn filter_text(&self) -> String {
        [
            ("op", &self.operator),
            ("target", &self.target),
            ("env", &self.env),
            ("end", &self.end),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}:{v}")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// Session id (or a recording file).
    id: String,
    /// Playback speed, e.g. 2 or 0.5.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Cut idle gaps longer than this (e.g. 2s).
    #[arg(long, value_name = "DURATION")]
    idle_limit: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// The asciicast v2 file as recorded.
    Cast,
    /// Plain text: output without escape sequences, input and markers with their times
    /// (their control characters escaped, e.g. `\x1b`).
    Txt,
    /// Every event as JSON.
    Json,
}

/// Where `gatehouse review` caches search documents unless told otherwise.
pub fn default_index_dir(config: &Config) -> PathBuf {
    config.recordings_root.join(".index")
}

pub async fn review(config: &Config, args: ReviewArgs) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let index_dir = args
        .index_dir
        .clone()
        .unwrap_or_else(|| default_index_dir(config));
    let runtime = tokio::runtime::Handle::current();
    let catalog = StoreCatalog::new(store.clone(), runtime.clone(), args.limit);
    let filter = args.filter_text();
    let reviewer = args.reviewer.clone().unwrap_or_else(crate::admin::os_user);
    // the TUI loop is synchronous; the catalog reaches the store through the runtime handle
    tokio::task::block_in_place(|| {
        let mut app = App::new(
            Box::new(catalog),
            SearchIndex::new(Some(index_dir)),
            gatehouse_store::now_millis(),
        );
        if !args.read_only {
            app = app.with_actions(Box::new(StoreActions::new(store, runtime, reviewer)));
        }
        app.set_filter(&filter).map_err(anyhow::Error::msg)?;
        gatehouse_review::run(&mut app, gatehouse_store::now_millis)
    })
}

/// Reads a session's recording (or a recording file), warning on stderr when it does not
/// verify.
async fn load(store: &Store, what: &str) -> anyhow::Result<Recording> {
    let path = match store.recording(what).await {
        Ok(r) => {
            let status = recording_status(&r);
            if status.is_tampered() {
                eprintln!("warning: recording of session {what} is {status}");
            }
            PathBuf::from(r.path)
        }
        Err(StoreError::NotFound { .. }) if Path::new(what).is_file() => PathBuf::from(what),
        Err(e) => return Err(e.into()),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Recording::parse(&path, bytes).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn play(config: &Config, args: PlayArgs) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let rec = load(&store, &args.id).await?;
    let idle_limit = args
        .idle_limit
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| anyhow::anyhow!("--idle-limit '{s}' is not a duration like 2s: {e}"))
        })
        .transpose()?;
    tokio::task::block_in_place(|| {
        export::play(
            &rec,
            args.speed,
            idle_limit,
            &mut std::io::stdout().lock(),
            std::thread::sleep,
        )
    })
}

pub async fn export(config: &Config, id: &str, format: ExportFormat) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let rec = load(&store, id).await?;
    let format = match format {
        ExportFormat::Cast => Format::Cast,
        ExportFormat::Txt => Format::Txt,
        ExportFormat::Json => Format::Json,
    };
    export::export(&rec, format, &mut std::io::stdout().lock())
}
