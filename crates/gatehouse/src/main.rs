//! `gatehouse`: the one binary. CLI wiring only — the broker lives in `gatehouse-ssh`, the
//! store in `gatehouse-store`, the rules in `gatehouse-core`.

mod admin;
#[cfg(feature = "bench-lateness")]
mod bench_lateness;
mod config;
mod demo;
mod detective;
mod fleet;
mod metrics;
mod nodes;
mod recordings;
mod review;
mod serve;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Privileged-access session broker"
)]
struct Cli {
    /// Configuration file (TOML). Without it, defaults relative to the current directory.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve,
    /// Run the broker with a ready demo: a private sshd target, an operator and a grant.
    Demo(demo::DemoArgs),
    /// Manage environments.
    #[command(subcommand)]
    Env(admin::EnvCommand),
    /// Manage targets.
    #[command(subcommand)]
    Target(admin::TargetCommand),
    /// Manage operators.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Let USER reach every target of ENV.
    Grant { user: String, env: String },
    /// Inspect the session registry.
    #[command(subcommand)]
    Sessions(admin::SessionsCommand),
    /// The broker nodes sharing this store.
    #[command(subcommand)]
    Nodes(nodes::NodesCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Verify, prune and export session recordings.
    #[command(subcommand)]
    Recordings(recordings::RecordingsCommand),
    /// Find, replay and search recorded sessions (terminal UI).
    Review(review::ReviewArgs),
    /// Check independently that what happened matches policy (registry, audit log,
    /// recordings); exit 1 on any finding.
    Check(detective::CheckArgs),
    /// Replay a session's recording to stdout, like `asciinema play` (drawing only: what
    /// would act beyond the screen, such as clipboard writes and terminal reports, is dropped).
    Play(review::PlayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, without repeating a cause already in the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir()?;
    let config = config::Config::load(cli.config.as_deref(), &cwd)?;
    let done = match cli.command {
        Command::Check(a) => return detective::check(&config, a).await,
        Command::Serve => serve::serve(config).await,
        Command::Demo(args) => demo::demo(args, &cwd).await,
        Command::Env(c) => admin::env(&config, c).await,
        Command::Target(c) => admin::target(&config, c).await,
        Command::User(c) => admin::user(&config, c).await,
        Command::Grant { user, env } => admin::grant(&config, &user, &env).await,
        Command::Sessions(c) => admin::sessions(&config, c).await,
        Command::Audit(c) => admin::audit(&config, c).await,
        Command::Nodes(c) => nodes::nodes(&config, c).await,
        Command::Recordings(c) => recordings::recordings(&config, c).await,
        Command::Review(a) => review::review(&config, a).await,
        Command::Play(a) => review::play(&config, a).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}
