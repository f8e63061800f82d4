//! `gatehouse env`: environments and their policies (limits, warnings, lock, reauthentication,
//! allowed subsystems, parameter redaction).

use super::*;

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment.
    Add { name: String },
    /// List environments.
    List,
    /// Change an environment's session policy; live sessions follow within 2 seconds.
    Set(EnvSetArgs),
    /// Show an environment's session policy.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Durations are humantime (`90s`, `15m`, `8h`, `1h30m`); `off` removes a limit.
#[derive(Debug, Args)]
pub struct EnvSetArgs {
    pub name: String,
    /// End (or lock) a session after this long without operator activity.
    #[arg(long, value_name = "DURATION|off")]
    pub idle_timeout: Option<String>,
    /// End a session this long after it opened, active or not.
    #[arg(long, value_name = "DURATION|off")]
    pub max_session: Option<String>,
    /// Warn this long before an idle end, a maximum-length end or a due reauthentication
    /// (comma-separated, e.g. 5m,1m,10s).
    #[arg(long, value_name = "LEADS|off")]
    pub warn_before: Option<String>,
    /// What the idle limit does: disconnect, or lock and ask for the password in-band.
    #[arg(long, value_name = "disconnect|lock")]
    pub idle_action: Option<String>,
    /// How long a locked session waits for the password.
    #[arg(long, value_name = "DURATION")]
    pub lock_grace: Option<String>,
    /// Ask for the password again this long after login, even while active.
    #[arg(long, value_name = "DURATION|off")]
    pub reauth_after: Option<String>,
    /// Replace bind parameter values in SQL statement logs (`--redact-params=off` undoes).
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
    pub redact_params: Option<String>,
    /// SSH subsystems besides sftp to allow, comma-separated (recorded as raw bytes);
    /// `--allow-subsystems ''` allows none again.
    #[arg(long, value_name = "NAME,...")]
    pub allow_subsystems: Option<String>,
}

pub async fn env(config: &Config, cmd: EnvCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        EnvCommand::Add { name } => {
            validate_name("environment", &name)?;
            store.add_environment(&name).await?;
            admin_audit(&store, "environment_added", json!({"environment": name})).await?;
            println!("environment {name} added");
        }
        EnvCommand::List => {
            for e in store.list_environments().await? {
                println!("{e}");
            }
        }
        EnvCommand::Set(args) => {
            let name = args.name.clone();
            let redact = match args.redact_params.as_deref() {
                None => None,
                Some("on") => Some(true),
                Some("off") => Some(false),
                Some(other) => bail!("--redact-params takes on or off, not '{other}'"),
            };
            let subsystems = match args.allow_subsystems.as_deref() {
                None => None,
                Some(list) => Some(parse_subsystems(list)?),
            };
            let current = store.environment_policy(&name).await?.policy;
            let policy = apply_policy_args(current, args)?;
            if let Some(names) = &subsystems {
                store.set_allowed_subsystems(&name, names).await?;
                admin_audit(
                    &store,
                    "subsystems_changed",
                    json!({"environment": name, "ssh_subsystems": names}),
                )
                .await?;
            }
            if let Some(r) = redact {
                store.set_redact_params(&name, r).await?;
                admin_audit(
                    &store,
                    "redact_params_changed",
                    json!({"environment": name, "redact_params": r}),
                )
                .await?;
            }
            store.set_environment_policy(&name, &policy).await?;
            admin_audit(
                &store,
                "policy_changed",
                json!({"environment": name, "policy": policy_json(&policy)}),
            )
            .await?;
            println!("environment {name} policy updated; live sessions follow within 2 seconds");
            print!("{}", policy_text(&policy));
            if let Some(r) = redact {
                println!(
                    "SQL bind parameters: {}",
                    if r { "redacted" } else { "logged" }
                );
            }
            if let Some(names) = subsystems {
                println!("SSH subsystems besides sftp: {}", subsystem_text(&names));
            }
        }
        EnvCommand::Show { name, json } => {
            let stored = store.environment_policy(&name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&policy_json(&stored.policy))?
                );
            } else {
                print!("{}", policy_text(&stored.policy));
                let subsystems = store.allowed_subsystems(&name).await?;
                if !subsystems.is_empty() {
                    println!("subsystems    {}", subsystem_text(&subsystems));
                }
            }
        }
    }
    Ok(())
}

fn parse_limit(flag: &str, value: &str) -> anyhow::Result<Option<Duration>> {
    if matches!(value, "off" | "none") {
        return Ok(None);
    }
    parse_duration(flag, value).map(Some)
}

fn parse_duration(flag: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value.trim())
        .map_err(|e| anyhow::anyhow!("{flag} '{value}' is not a duration like 90s, 15m or 8h: {e}"))
}

fn apply_policy_args(mut p: EnvPolicy, a: EnvSetArgs) -> anyhow::Result<EnvPolicy> {
    if let Some(v) = &a.idle_timeout {
        p.idle_timeout = parse_limit("--idle-timeout", v)?;
    }
    if let Some(v) = &a.max_session {
        p.max_session = parse_limit("--max-session", v)?;
    }
    if let Some(v) = &a.reauth_after {
        p.reauth_after = parse_limit("--reauth-after", v)?;
    }
    if let Some(v) = &a.lock_grace {
        p.lock_grace = parse_duration("--lock-grace", v)?;
    }
    if let Some(v) = &a.idle_action {
        p.idle_action = IdleAction::parse(v)?;
    }
    if let Some(v) = &a.warn_before {
        p.warn_before = if matches!(v.as_str(), "off" | "none" | "") {
            Vec::new()
        } else {
            v.split(',')
                .map(|lead| parse_duration("--warn-before", lead))
                .collect::<anyhow::Result<_>>()?
        };
    }
    Ok(p.validated()?)
}

fn show_limit(d: Option<Duration>) -> String {
    d.map_or_else(|| "off".into(), format_duration)
}

fn policy_text(p: &EnvPolicy) -> String {
    let warn = if p.warn_before.is_empty() {
        "off".to_owned()
    } else {
        p.warn_before
            .iter()
            .map(|d| format_duration(*d))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "idle-timeout  {}\nmax-session   {}\nwarn-before   {warn}\nidle-action   {}\nlock-grace    {}\nreauth-after  {}\n",
        show_limit(p.idle_timeout),
        show_limit(p.max_session),
        p.idle_action.as_str(),
        format_duration(p.lock_grace),
        show_limit(p.reauth_after),
    )
}

fn policy_json(p: &EnvPolicy) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    json!({
        "idle_timeout_ms": ms(p.idle_timeout),
        "max_session_ms": ms(p.max_session),
        "warn_before_ms": p.warn_before.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
        "idle_action": p.idle_action.as_str(),
        "lock_grace_ms": p.lock_grace.as_millis() as u64,
        "reauth_after_ms": ms(p.reauth_after),
    })
}

/// `--allow-subsystems a,b`: names as every other name in Gatehouse; `sftp` needs no
/// allowing (it always runs, with its transfer log).
fn parse_subsystems(list: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        gatehouse_core::validate_name("subsystem", name)?;
        if name != "sftp" && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn subsystem_text(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
