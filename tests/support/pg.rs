//! A PostgreSQL world: a throwaway PostgreSQL server whose `app` role logs in with a SCRAM
//! password, a broker with target `orders` (database `orders`) in environment `prod`, and
//! operator `alice` (password `alice-pw`) granted `prod`. [`RawPg`] is a hand-driven
//! client for the messages and misbehaviour no driver produces; psycopg 3 (Debian's
//! python3) and pgjdbc (compiled with javac) are the real drivers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use gatehouse_testbed::{PgOptions, Postgres};

use crate::{Gatehouse, files_under, run_with_stdin, tool};

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

    /// The statement logs of the world's sessions, as JSON lines, once every session is
    /// closed (a log is sealed just before its session row is closed).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let mut text = String::new();
        for p in self.statement_logs() {
            text.push_str(&std::fs::read_to_string(&p).expect("read statement log"));
        }
        text.lines()
            .map(|l| serde_json::from_str(l).expect("statement log line is JSON"))
            .collect()
    }

    /// Every statement-log file under the broker's recordings root, once every session is
    /// closed (and so its log sealed).
    pub fn statement_logs(&self) -> Vec<std::path::PathBuf> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self
            .gatehouse
            .sessions()
            .iter()
            .any(|s| s["end_reason"].is_null())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "sessions still open:\n{}",
                self.gatehouse.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        files_under(&self.gatehouse.dir().join("recordings"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".sql.jsonl"))
            .collect()
    }

    /// A libpq connection string to the broker with alice's password (for psycopg).
    pub fn conninfo_with_password(&self) -> String {
        format!(
            "{} password={OPERATOR_PASSWORD}",
            self.conninfo("orders", "sslmode=disable")
        )
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

/// Debian's own python3 with psycopg 3 (python3-psycopg): missing, the test fails naming it.
pub fn python3_with_psycopg() -> Command {
    let python = "/usr/bin/python3";
    let ok = Command::new(python)
        .args(["-c", "import psycopg"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import psycopg: install the Debian package python3-psycopg"
    );
    Command::new(python)
}

/// Debian's pgjdbc (libpostgresql-jdbc-java).
pub const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// Compiles `source` (public class `class`) with javac in `dir` and runs it with pgjdbc on
/// the class path and `args`. A missing JDK or pgjdbc fails the test naming the package.
pub fn run_java_with_pgjdbc(dir: &Path, class: &str, source: &str, args: &[&str]) -> Output {
    let javac = tool("javac", "default-jdk-headless");
    let java = tool("java", "default-jdk-headless");
    assert!(
        Path::new(PGJDBC_JAR).exists(),
        "{PGJDBC_JAR} missing: install the Debian package libpostgresql-jdbc-java"
    );
    let file = dir.join(format!("{class}.java"));
    std::fs::write(&file, source).expect("write the Java source");
    let o = Command::new(javac)
        .args(["-cp", PGJDBC_JAR, "-d"])
        .arg(dir)
        .arg(&file)
        .output()
        .expect("run javac");
    assert!(
        o.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let classpath = format!("{PGJDBC_JAR}:{}", dir.display());
    Command::new(java)
        .args(["-cp", &classpath, class])
        .args(args)
        .output()
        .expect("run java")
}

/// Sends a CancelRequest for (`pid`, `key`) to the broker on `port`, as libpq does (a new
/// connection, the packet, close).
pub fn cancel_request(port: u16, pid: i32, key: &[u8]) {
    let mut packet = ((12 + key.len()) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102_i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(key);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse");
    s.write_all(&packet).expect("send the cancel request");
    // the server closes without answering
    let _ = s.read(&mut [0u8; 1]);
}

/// One frontend (or backend) message: type byte, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A startup packet (protocol 3.0) with `params`.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for (k, v) in params {
        for s in [k, v] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut m = (body.len() as i32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// The SQLSTATE (`C` field) of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<String> {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

/// A hand-driven client over a blocking socket, for what no driver sends (FunctionCall,
/// malformed or oversized messages, silence). Logs in with SCRAM like libpq.
pub struct RawPg {
    pub stream: TcpStream,
    /// The BackendKeyData the login gave (pid, secret key).
    pub key: Option<(i32, Vec<u8>)>,
}

impl RawPg {
    /// A client on a socket already connected, before any login.
    pub fn on(stream: TcpStream) -> RawPg {
        RawPg { stream, key: None }
    }

    /// Logs in to the broker on `port` as alice with `params` besides user and database.
    pub fn login(port: u16, dbname: &str, params: &[(&str, &str)]) -> RawPg {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse");
        Self::login_on(stream, dbname, params)
    }

    /// As [`RawPg::login`], on a socket already connected.
    pub fn login_on(stream: TcpStream, dbname: &str, params: &[(&str, &str)]) -> RawPg {
        Self::try_login(stream, dbname, params)
            .unwrap_or_else(|e| panic!("login refused: {}", String::from_utf8_lossy(&e)))
    }

    /// Logs in as alice to `dbname`, expecting a refusal: the ErrorResponse's body.
    pub fn login_error(port: u16, dbname: &str) -> Vec<u8> {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to gatehouse");
        match Self::try_login(stream, dbname, &[]) {
            Ok(_) => panic!("login to {dbname:?} accepted"),
            Err(body) => body,
        }
    }

    /// The login; `Err` with the body of the ErrorResponse that refused it.
    fn try_login(
        stream: TcpStream,
        dbname: &str,
        params: &[(&str, &str)],
    ) -> Result<RawPg, Vec<u8>> {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut c = RawPg::on(stream);
        let mut all = vec![("user", "alice"), ("database", dbname)];
        all.extend_from_slice(params);
        c.send(&startup_packet(&all));
        let mut scram =
            ScramSha256::new(OPERATOR_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        loop {
            let (tag, body) = c.read().expect("login answer");
            let code = body
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match (tag, code) {
                (b'R', Some(10)) => {
                    let mut m = BytesMut::new();
                    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut m)
                        .expect("SASL message");
                    c.send(&m);
                }
                (b'R', Some(11)) => {
                    scram.update(&body[4..]).expect("SCRAM server-first");
                    let mut m = BytesMut::new();
                    frontend::sasl_response(scram.message(), &mut m).expect("SASL message");
                    c.send(&m);
                }
                (b'R', Some(12)) => scram.finish(&body[4..]).expect("SCRAM server-final"),
                (b'K', _) if body.len() >= 8 => {
                    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    c.key = Some((pid, body[4..].to_vec()));
                }
                (b'E', _) => return Err(body),
                (b'Z', _) => return Ok(c),
                _ => {}
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to gatehouse");
    }

    /// The next message; `None` once the server closed the connection (or reset it).
    pub fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
        self.stream.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages up to and including the next ReadyForQuery (or the end of the connection).
    pub fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            let ready = m.0 == b'Z';
            out.push(m);
            if ready {
                break;
            }
        }
        out
    }

    /// Runs a simple query; the first column of each row, as text.
    pub fn query(&mut self, sql: &str) -> Vec<String> {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.send(&message(b'Q', &q));
        let mut rows = Vec::new();
        for (tag, body) in self.until_ready() {
            match tag {
                b'E' => panic!("{sql}: {}", String::from_utf8_lossy(&body)),
                b'D' if body.len() >= 6 => {
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    let end = 6 + usize::try_from(len).unwrap_or(0);
                    rows.push(String::from_utf8_lossy(&body[6..end]).into_owned());
                }
                _ => {}
            }
        }
        rows
    }
}

/// Reads from `stream` until the server closes it (EOF or reset), returning what came;
/// panics if it stays open past `limit`.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept the connection open for {limit:?}")
            }
            Err(_) => return got,
        }
    }
}
