//! `gatehouse user` and `gatehouse grant`: operators, their keys, passwords, TOTP, locks,
//! and the environments they may reach.

use super::*;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an operator.
    Add {
        name: String,
        /// Authorized public key file (repeatable).
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
        /// Read the operator's password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List operators.
    List,
    /// Set an operator's password (read from standard input).
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Enroll the operator in TOTP: prints the otpauth URI and a QR code to scan. The code
    /// is then asked after the password at every in-band reauthentication.
    Totp { name: String },
    /// Refuse the operator's logins and end every live session of theirs.
    Lock { name: String },
    /// Allow the operator to log in again.
    Unlock { name: String },
}

pub async fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        UserCommand::Add {
            name,
            public_key,
            password_stdin,
        } => {
            validate_name("user", &name)?;
            if public_key.is_empty() && !password_stdin {
                bail!(
                    "user '{name}' needs a credential: give --public-key FILE or --password-stdin"
                );
            }
            let mut keys_to_add = Vec::new();
            for path in &public_key {
                let k = keys::parse_public_key_line(
                    &read_file(path, "public key")?,
                    &format!("public key {}", path.display()),
                )?;
                keys_to_add.push(k);
            }
            let hash = if password_stdin {
                let pw = read_password_stdin()?;
                Some(passwords::store_password(&pw).map_err(anyhow::Error::msg)?)
            } else {
                None
            };
            store.add_operator(&name, hash.as_ref()).await?;
            for k in &keys_to_add {
                store
                    .add_operator_key(&name, &keys::fingerprint(k), &keys::public_key_line(k))
                    .await?;
            }
            let fps: Vec<String> = keys_to_add.iter().map(keys::fingerprint).collect();
            admin_audit(
                &store,
                "user_added",
                json!({"user": name, "public_keys": fps, "password": hash.is_some()}),
            )
            .await?;
            println!(
                "user {name} added ({} public key{}{})",
                fps.len(),
                if fps.len() == 1 { "" } else { "s" },
                if hash.is_some() { ", password set" } else { "" }
            );
        }
        UserCommand::Passwd { name, .. } => {
            let pw = read_password_stdin()?;
            let hash = passwords::store_password(&pw).map_err(anyhow::Error::msg)?;
            store.set_operator_password(&name, &hash).await?;
            admin_audit(&store, "password_set", json!({"user": name})).await?;
            println!("password of user {name} set");
        }
        UserCommand::Totp { name } => {
            let uri = store.enroll_totp(&name).await?;
            admin_audit(&store, "totp_enrolled", json!({"user": name})).await?;
            println!("{uri}");
            match qrcode::QrCode::new(uri.as_bytes()) {
                Ok(code) => println!(
                    "\n{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                ),
                Err(e) => eprintln!("(cannot draw a QR code: {e})"),
            }
            println!(
                "scan it with an authenticator app; user {name} is asked for the code at reauthentication"
            );
        }
        UserCommand::Lock { name } => {
            let by = os_user();
            let ended = store.lock_operator_by(&name, &cli_actor(&by)).await?;
            println!(
                "user {name} locked; {} live session{} will end within 2 seconds",
                ended.len(),
                if ended.len() == 1 { "" } else { "s" }
            );
        }
        UserCommand::Unlock { name } => {
            store.set_operator_locked(&name, false).await?;
            admin_audit(&store, "user_unlocked", json!({"user": name})).await?;
            println!("user {name} unlocked");
        }
        UserCommand::List => {
            let rows: Vec<Vec<String>> = store
                .list_operators()
                .await?
                .into_iter()
                .map(|o| {
                    vec![
                        o.name,
                        if o.password_hash.is_some() {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        if o.locked { "locked" } else { "active" }.into(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["name", "password", "state"], &rows));
        }
    }
    Ok(())
}

pub async fn grant(config: &Config, user: &str, env: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    store.grant(user, env).await?;
    admin_audit(
        &store,
        "grant_added",
        json!({"user": user, "environment": env}),
    )
    .await?;
    println!("user {user} may now reach environment {env}");
    Ok(())
}
