//! A PostgreSQL world: a throwaway PostgreSQL server whose `app` role logs in with a SCRAM
//! password, a broker with target `orders` (database `orders`) in environment `prod`, and
//! operator `alice` (password `alice-pw`) granted `prod`.

use std::process::{Command, Output};

use gatehouse_testbed::{PgOptions, Postgres};

use crate::{Gatehouse, run_with_stdin, tool};

pub const OPERATOR_PASSWORD: &str = "alice-pw";
pub const TARGET_PASSWORD: &str = "app-Secret-9f3";

pub struct PgWorld {
    pub gatehouse: Gatehouse,
    pub postgres: Postgres,
}

impl PgWorld {
    pub fn new() -> PgWorld {
        Self::with(
            &PgOptions {
                password_auth: true,
                ..Default::default()
            },
            "disable",
            "",
        )
    }

    /// A world on a server started with `options`, the target added with `--tls tls`
    /// (plus `extra_target_args`), the broker configured with `extra_config`.
    pub fn with(options: &PgOptions, tls: &str, extra_config: &str) -> PgWorld {
        Self::build(options, &["--tls", tls], extra_config)
    }

    pub fn build(options: &PgOptions, target_args: &[&str], extra_config: &str) -> PgWorld {
        let postgres = Postgres::start_with(options).unwrap_or_else(|e| panic!("{e}"));
        postgres.create_database("orders").expect("create database");
        postgres
            .psql(
                "orders",
                &format!(
                    "CREATE ROLE app LOGIN PASSWORD '{TARGET_PASSWORD}'; GRANT ALL ON SCHEMA public TO app; ALTER DATABASE orders OWNER TO app;"
                ),
            )
            .expect("create role");
        let gatehouse = Gatehouse::start_with(extra_config);
        gatehouse.cli_ok(&["env", "add", "prod"]);
        add_target(&gatehouse, &postgres, "orders", "prod", target_args);
        let out = gatehouse.cli_with_stdin(
            &["user", "add", "alice", "--password-stdin"],
            Some(OPERATOR_PASSWORD),
        );
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        gatehouse.cli_ok(&["grant", "alice", "prod"]);
        PgWorld {
            gatehouse,
            postgres,
        }
    }

    /// A libpq connection string to the broker.
    pub fn conninfo(&self, dbname: &str, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=alice dbname={dbname} {extra}",
            self.gatehouse.pg_port()
        )
    }

    /// Runs `psql` through Gatehouse with alice's password.
    pub fn psql(&self, conninfo: &str, args: &[&str], stdin: Option<&str>) -> Output {
        psql_as(conninfo, OPERATOR_PASSWORD, args, stdin)
    }

    /// `tokio-postgres` connection string to the broker.
    pub fn tokio_config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=alice password={OPERATOR_PASSWORD} dbname=orders",
            self.gatehouse.pg_port()
        )
    }
}

/// Registers `name` in `env` as the server's `app` role on database `orders`, with the
/// role's password on stdin and `extra_args` (e.g. `--tls disable`).
pub fn add_target(
    gatehouse: &Gatehouse,
    postgres: &Postgres,
    name: &str,
    env: &str,
    extra_args: &[&str],
) {
    let address = format!("app@127.0.0.1:{}/orders", postgres.port());
    let mut args = vec![
        "target",
        "add",
        name,
        "--env",
        env,
        "--postgres",
        &address,
        "--password-stdin",
    ];
    args.extend_from_slice(extra_args);
    let out = gatehouse.cli_with_stdin(&args, Some(TARGET_PASSWORD));
    assert!(
        out.status.success(),
        "target add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Default for PgWorld {
    fn default() -> Self {
        Self::new()
    }
}

pub fn psql_as(conninfo: &str, password: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool("psql", "postgresql-client"));
    cmd.arg(conninfo)
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    run_with_stdin(&mut cmd, stdin)
}
