//! The PostgreSQL front end to end: real `psql`, `pgbench` and `tokio-postgres` through the
//! real broker to a real PostgreSQL whose role logs in with SCRAM.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatehouse_e2e::pg::{
    OPERATOR_PASSWORD, PgWorld, RawPg, TARGET_PASSWORD, add_target, message, psql_as,
};
use gatehouse_e2e::{files_under, tool, wait_until};
use gatehouse_testbed::PgOptions;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn statement_logs(w: &PgWorld) -> Vec<std::path::PathBuf> {
    w.statement_logs()
}

fn all_text_under(dir: &std::path::Path) -> String {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[test]
fn psql_queries_and_copies_100k_rows_both_ways_into_a_verified_statement_log() {
    let w = PgWorld::new();
    let conn = w.conninfo("orders", "sslmode=disable");
    let o = w.psql(&conn, &["-At", "-c", "select 40 + 2"], None);
    assert_ok(&o, "psql select");
    assert_eq!(stdout(&o).trim(), "42");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let output = dir.path().join("out.csv");
    let rows: String = (0..100_000).map(|i| format!("{i},row-{i}\n")).collect();
    std::fs::write(&input, &rows).unwrap();
    let script = format!(
        "create table items (id int primary key, name text);\n\\copy items from '{}' csv\nselect count(*) from items;\n\\copy (select * from items order by id) to '{}' csv\n",
        input.display(),
        output.display()
    );
    let o = w.psql(&conn, &["-At"], Some(&script));
    assert_ok(&o, "psql copy");
    assert!(stdout(&o).contains("100000"), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), rows);

    // both sessions closed and logged, every statement in order with its tag
    let sessions = w.gatehouse.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let logs = statement_logs(&w);
    assert_eq!(logs.len(), 2);
    let text: String = logs
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let statements: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "statement")
        .collect();
    let find = |needle: &str| {
        statements
            .iter()
            .find(|s| s["text"].as_str().is_some_and(|t| t.contains(needle)))
            .unwrap_or_else(|| panic!("no statement with {needle:?} in {text}"))
    };
    assert_eq!(find("select 40 + 2")["tag"], "SELECT 1");
    assert_eq!(find("create table items")["tag"], "CREATE TABLE");
    assert_eq!(find("items FROM STDIN")["tag"], "COPY 100000");
    assert_eq!(find("TO STDOUT")["tag"], "COPY 100000");
    assert_eq!(find("select count(*)")["tag"], "SELECT 1");
    let order: Vec<&str> = statements
        .iter()
        .filter_map(|s| s["text"].as_str())
        .collect();
    let pos = |n: &str| order.iter().position(|t| t.contains(n)).unwrap();
    assert!(
        pos("create table") < pos("items FROM STDIN") && pos("items FROM STDIN") < pos("count(*)")
    );
    let verify = w.gatehouse.cli(&["recordings", "verify", "--all"]);
    assert_ok(&verify, "recordings verify");
    assert_eq!(
        stdout(&verify).matches(" ok (").count(),
        2,
        "{}",
        stdout(&verify)
    );

    // an edited statement log is caught, by file name too
    let log = &logs[0];
    let edited = std::fs::read_to_string(log)
        .unwrap()
        .replacen("SELECT 1", "SELECT 9", 1);
    std::fs::write(log, edited).unwrap();
    let verify = w
        .gatehouse
        .cli(&["recordings", "verify", &log.display().to_string()]);
    assert!(!verify.status.success());
    assert!(
        stdout(&verify).contains("TAMPERED at event"),
        "{}",
        stdout(&verify)
    );

    // the upstream password is nowhere: not in the log, the statement logs, the store
    let everything = all_text_under(w.gatehouse.dir());
    assert!(
        !everything.contains(TARGET_PASSWORD),
        "the target password leaked"
    );
}

#[test]
fn tls_wrong_password_unknown_target_and_no_grant() {
    let w = PgWorld::new();
    let o = w.psql(
        &w.conninfo("orders", "sslmode=require"),
        &["-c", "\\conninfo"],
        None,
    );
    assert_ok(&o, "psql sslmode=require");
    assert!(stdout(&o).contains("SSL connection"), "{}", stdout(&o));

    let o = psql_as(
        &w.conninfo("orders", "sslmode=disable"),
        "wrong",
        &["-c", "select 1"],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("password authentication failed for user \"alice\"")
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let port = w.gatehouse.pg_port();
        let connect = |user: &str, password: &str, db: &str| {
            let conf =
                format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db}");
            async move { tokio_postgres::connect(&conf, NoTls).await.map(|_| ()) }
        };
        let code = |r: Result<(), tokio_postgres::Error>| r.err().and_then(|e| e.code().cloned());
        assert_eq!(
            code(connect("alice", "wrong", "orders").await),
            Some(SqlState::INVALID_PASSWORD)
        );
        // an unknown operator reads exactly like a wrong password
        assert_eq!(
            code(connect("mallory", "x", "orders").await),
            Some(SqlState::INVALID_PASSWORD)
        );
        let e = connect("alice", OPERATOR_PASSWORD, "nosuch")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::INVALID_CATALOG_NAME));
        let message = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("does not exist or you have no grant"),
            "{message}"
        );
    });
    w.gatehouse.cli_ok(&["env", "add", "dev"]);
    add_target(
        &w.gatehouse,
        &w.postgres,
        "other",
        "dev",
        &["--tls", "disable"],
    );
    let o = w.psql(
        &w.conninfo("other", "sslmode=disable"),
        &["-c", "select 1"],
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("target 'other' does not exist or you have no grant")
    );
    let audit = stdout(&w.gatehouse.cli(&["audit", "list", "--json"]));
    assert!(
        audit.contains("access_denied") && audit.contains("auth_failure"),
        "{audit}"
    );
}

#[test]
fn tokio_postgres_prepared_statements_transaction_and_cancel() {
    let w = PgWorld::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(&w.tokio_config(), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("create table kv (k text primary key, v int)")
            .await
            .unwrap();
        let insert = client
            .prepare("insert into kv values ($1, $2)")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        for i in 0..10 {
            tx.execute(&insert, &[&format!("key{i}"), &i])
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let row = client
            .query_one("select sum(v)::int from kv where k like $1", &[&"key%"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 45);
        // a rolled-back transaction leaves nothing
        let tx = client.transaction().await.unwrap();
        tx.execute("delete from kv", &[]).await.unwrap();
        tx.rollback().await.unwrap();
        let n: i64 = client
            .query_one("select count(*) from kv", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 10);

        // the cancel token goes through Gatehouse's own key
        let token = client.cancel_token();
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await.unwrap();
        let err = sleeper.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
        assert!(
            started.elapsed() < Duration::from_millis(1300),
            "{:?}",
            started.elapsed()
        );
    });
    let logs = statement_logs(&w);
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("insert into kv") && l.contains("\"key3\""))
        .unwrap_or_else(|| panic!("no insert with its parameters in {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["protocol"], "extended");
    assert_eq!(
        v["params"],
        serde_json::json!(["key3", "3"]),
        "binary parameters decoded by type"
    );
    assert_eq!(v["tag"], "INSERT 0 1");
    assert!(
        text.contains("\"sqlstate\":\"57014\""),
        "the cancelled statement is logged with its error"
    );
}

#[test]
fn redacted_parameters_stay_out_of_the_log() {
    let w = PgWorld::new();
    w.gatehouse
        .cli_ok(&["env", "set", "prod", "--redact-params"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&w.tokio_config(), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one("select $1::text", &[&"card-4111-secret"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "card-4111-secret");
    });
    let text = std::fs::read_to_string(&statement_logs(&w)[0]).unwrap();
    assert!(
        text.contains("select $1::text") && text.contains("\"redacted\":true"),
        "{text}"
    );
    assert!(!text.contains("card-4111-secret"));

    // the review companions read the real statement log
    let id = w.gatehouse.sessions()[0]["id"].as_str().unwrap().to_owned();
    let txt = w
        .gatehouse
        .cli(&["recordings", "export", &id, "--format", "txt"]);
    assert_ok(&txt, "recordings export txt");
    assert!(stdout(&txt).contains("select $1::text"), "{}", stdout(&txt));
    assert!(!stdout(&txt).contains("card-4111-secret"));
    let cast = w
        .gatehouse
        .cli(&["recordings", "export", &id, "--format", "cast"]);
    assert!(
        !cast.status.success(),
        "a statement log is not a terminal recording"
    );
}

#[test]
fn pgbench_initialises_and_runs_with_four_clients_without_errors() {
    let w = PgWorld::new();
    let conn = w.conninfo("orders", "sslmode=disable");
    let pgbench = tool("pgbench", "postgresql");
    let run = |args: &[&str]| {
        std::process::Command::new(&pgbench)
            .args(args)
            .arg(&conn)
            .env("PGPASSWORD", OPERATOR_PASSWORD)
            .output()
            .expect("run pgbench")
    };
    let init = run(&["-i", "-s", "1", "-q"]);
    assert_ok(&init, "pgbench -i");
    let bench = run(&["-c", "4", "-j", "2", "-T", "10", "-n"]);
    assert_ok(&bench, "pgbench -c 4");
    let out = stdout(&bench);
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 100, "{out}");
}

/// Connects with tokio-postgres and collects the connection's notices and final error.
async fn watched_client(
    w: &PgWorld,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<Result<String, tokio_postgres::Error>>,
) {
    let (client, mut connection) = tokio_postgres::connect(&w.tokio_config(), NoTls)
        .await
        .expect("connect through gatehouse");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(Ok(format!("{}: {}", n.severity(), n.message())));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    (client, rx)
}

#[test]
fn idle_limit_warns_then_ends_with_57p05_and_absolute_limit_with_57p01() {
    let w = PgWorld::new();
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--warn-before", "1s"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, mut events) = watched_client(&w).await;
        client.simple_query("select 1").await.unwrap();
        let idle_from = Instant::now();
        let first = events.recv().await.unwrap().unwrap();
        assert!(first.starts_with("WARNING: [gatehouse]"), "{first}");
        let end = events.recv().await.unwrap().unwrap_err();
        assert_eq!(end.code(), Some(&SqlState::IDLE_SESSION_TIMEOUT), "{end}");
        let idle = idle_from.elapsed();
        assert!(
            idle >= Duration::from_millis(1900) && idle < Duration::from_millis(3000),
            "{idle:?}"
        );
    });
    // activity keeps a session alive past the idle limit; the absolute limit ends it anyway
    w.gatehouse.set_policy(&[
        "--idle-timeout",
        "2s",
        "--max-session",
        "4s",
        "--warn-before",
        "off",
    ]);
    rt.block_on(async {
        let (client, mut events) = watched_client(&w).await;
        let started = Instant::now();
        let busy = tokio::spawn(async move {
            loop {
                if client.simple_query("select 1").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let end = loop {
            match events.recv().await.unwrap() {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(end.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{end}");
        let lived = started.elapsed();
        assert!(
            lived >= Duration::from_millis(3900) && lived < Duration::from_millis(5000),
            "{lived:?}"
        );
        let _ = busy.await;
    });
    // the row is closed after the log's seal, a moment after the client saw its FATAL
    wait_until(
        Duration::from_secs(5),
        || {
            let reasons: Vec<String> = w
                .gatehouse
                .sessions()
                .iter()
                .filter_map(|s| s["end_reason"].as_str().map(str::to_owned))
                .collect();
            (reasons.iter().any(|r| r == "idle_timeout")
                && reasons.iter().any(|r| r == "max_session"))
            .then_some(())
        },
        || format!("end reasons: {:?}", w.gatehouse.sessions()),
    );
    let text: String = statement_logs(&w)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        text.contains("\"type\":\"marker\"") && text.contains("warning: "),
        "{text}"
    );
}

#[test]
fn upstream_tls_verify_full_against_the_target_ca_and_md5_login() {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (generated.cert.pem(), generated.signing_key.serialize_pem());
    let options = PgOptions {
        password_auth: true,
        md5: true,
        tls: Some((cert.clone(), key)),
        max_connections: None,
    };
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &cert).unwrap();
    let ca_path = ca.path().display().to_string();
    let w = PgWorld::build(
        &options,
        &["--tls", "verify-full", "--tls-ca", &ca_path],
        "",
    );
    let o = w.psql(
        &w.conninfo("orders", "sslmode=disable"),
        &[
            "-At",
            "-c",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ],
        None,
    );
    assert_ok(&o, "psql via verify-full");
    assert_eq!(stdout(&o).trim(), "t", "the target connection is TLS");

    // without the CA the self-signed certificate is refused, and the operator is told
    add_target(&w.gatehouse, &w.postgres, "unverified", "prod", &[]);
    let o = w.psql(
        &w.conninfo("unverified", "sslmode=disable"),
        &["-c", "select 1"],
        None,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach target 'unverified'") && err.contains("TLS"),
        "{err}"
    );
}

/// A client that stops reading (psql blocked writing a COPY to a full pipe) cannot hold a
/// session past its limit: Gatehouse's end never waits on the operator's socket.
#[test]
fn a_client_that_stops_reading_is_still_ended_at_its_limit() {
    let w = PgWorld::new();
    w.gatehouse
        .set_policy(&["--max-session", "2s", "--warn-before", "off"]);
    let started = Instant::now();
    let mut psql = std::process::Command::new(tool("psql", "postgresql-client"))
        .arg(w.conninfo("orders", "sslmode=disable"))
        .args([
            "-X",
            "-c",
            "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 10000000)) TO STDOUT",
        ])
        .env("PGPASSWORD", OPERATOR_PASSWORD)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped()) // never read while the session runs
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start psql");
    w.gatehouse.wait_live();
    let s = w.gatehouse.wait_session_closed();
    let lived = started.elapsed();
    assert_eq!(s["end_reason"], "max_session", "{s}");
    // the limit, plus at most the 2 s Gatehouse gives a stuck socket, login time and slack
    // for a loaded machine (without the fix the session never closes)
    assert!(lived < Duration::from_secs(7), "{lived:?}");
    assert!(
        s["bytes_out"].as_u64().unwrap_or(0) < 100_000_000,
        "the client really stopped reading: {s}"
    );
    let _ = psql.kill();
    let _ = psql.wait();
}

/// The login's audit names the method actually used (a cleartext password inside TLS is
/// not SCRAM), and a session ended by shutdown is told so — not "terminated by admin".
#[test]
fn audits_name_the_login_method_and_shutdown_is_told_as_shutdown() {
    use gatehouse_e2e::pg::{RawPg, error_code};
    let mut w = PgWorld::with(
        &PgOptions {
            password_auth: true,
            ..Default::default()
        },
        "disable",
        "[postgres]\nallow_cleartext = true\n",
    );
    let o = w.psql(
        &w.conninfo("orders", "sslmode=require"),
        &["-c", "select 1"],
        None,
    );
    assert_ok(&o, "psql with a cleartext password inside TLS");
    let methods: Vec<String> = w
        .gatehouse
        .audit()
        .iter()
        .filter(|e| e["kind"] == "auth_success")
        .map(|e| e["detail"]["method"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(methods, ["password"]);

    let mut c = RawPg::login(w.gatehouse.pg_port(), "orders", &[]);
    assert_eq!(c.query("select 41 + 1"), ["42"]);
    w.gatehouse.terminate();
    let mut fatal = None;
    while let Some((tag, body)) = c.read() {
        if tag == b'E' {
            fatal = Some(body);
        }
    }
    let body = fatal.expect("a FATAL before the connection closed");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(error_code(&body).as_deref(), Some("57P01"), "{text}");
    assert!(text.contains("gatehouse is shutting down"), "{text}");
    assert!(!text.contains("admin"), "{text}");
    let sessions = w.gatehouse.sessions();
    let last = sessions
        .iter()
        .find(|s| s["end_reason"] != "client_closed")
        .expect("the session the shutdown ended");
    assert_eq!(last["end_reason"], "shutdown", "{sessions:?}");
    let scram = w
        .gatehouse
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "auth_success")
        .any(|e| e["detail"]["method"] == "scram-sha-256");
    assert!(scram, "the SCRAM login is audited as SCRAM");
}

/// A session Gatehouse ends is ended on the target too: a statement still running when
/// the limit arrives is cancelled there (PostgreSQL would run it to its end, not noticing
/// that its client left while it does not read).
#[test]
fn a_statement_running_when_the_session_ends_is_cancelled_on_the_target() {
    let w = PgWorld::new();
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--warn-before", "off"]);
    let started = Instant::now();
    let o = w.psql(
        &w.conninfo("orders", "sslmode=disable"),
        &["-c", "select pg_sleep(120) -- outlives its session?"],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("idle timeout 2s reached"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert_gone_from_target(&w, "outlives its session");
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "idle_timeout"
    );
}

/// How many backends of the target run a statement containing `marker` (as psql prints it).
fn running_on_target(w: &PgWorld, marker: &str) -> String {
    w.postgres
        .psql(
            "orders",
            &format!("select count(*) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()"),
        )
        .expect("query pg_stat_activity")
        .trim()
        .to_owned()
}

/// Waits (3 s at most) until no backend of the target runs a statement containing `marker`.
fn assert_gone_from_target(w: &PgWorld, marker: &str) {
    let still_running = || running_on_target(w, marker);
    wait_until(
        Duration::from_secs(3),
        || (still_running() == "0").then_some(()),
        || {
            format!(
                "the statement still runs on the target: {} backend(s)",
                still_running()
            )
        },
    );
}

/// The same when the operator's client vanishes mid-statement (its socket closed, no
/// Terminate): the session's end ends the statement it started, rather than leaving it to
/// run on the target after the session is over.
#[test]
fn a_statement_running_when_the_client_vanishes_is_cancelled_on_the_target() {
    let w = PgWorld::new();
    let mut c = RawPg::login(w.gatehouse.pg_port(), "orders", &[]);
    c.send(&message(
        b'Q',
        b"select pg_sleep(120) -- its client vanished\0",
    ));
    wait_until(
        Duration::from_secs(5),
        || (running_on_target(&w, "its client vanished") == "1").then_some(()),
        || "the statement never started on the target".into(),
    );
    drop(c);
    assert_gone_from_target(&w, "its client vanished");
    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "client_closed", "{s}");
    // and the log says it never got its result
    let lines = w.log_lines();
    let stmt = lines
        .iter()
        .find(|l| {
            l["type"] == "statement"
                && l["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("its client vanished"))
        })
        .unwrap_or_else(|| panic!("not logged: {lines:#?}"));
    assert!(!stmt["error"].is_null(), "{stmt}");
}

/// No statement log, no session: with a recordings root nothing can be created under (its
/// files are made on a blocking thread), the login is refused with 58030 and the statement
/// never reaches the target.
#[test]
fn an_unwritable_statement_log_refuses_the_session_and_nothing_runs() {
    let w = PgWorld::new();
    let root = w.gatehouse.dir().join("recordings");
    let _ = std::fs::remove_dir_all(&root);
    // a file where the directory should be: nothing can be created below it, even as root
    std::fs::write(&root, "not a directory").unwrap();
    let o = w.psql(
        &w.conninfo("orders", "sslmode=disable"),
        &["-c", "create table should_not_exist (x int)"],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("this session cannot be logged")
            && err.contains("does not open unrecorded sessions"),
        "{err}"
    );
    let direct = format!(
        "host=127.0.0.1 port={} user=app dbname=orders sslmode=disable",
        w.postgres.port()
    );
    let o = psql_as(
        &direct,
        TARGET_PASSWORD,
        &[
            "-tAc",
            "select to_regclass('public.should_not_exist') is null",
        ],
        None,
    );
    assert_ok(&o, "psql straight to the target");
    assert_eq!(stdout(&o).trim(), "t", "the statement ran on the target");
    assert_eq!(
        w.gatehouse.wait_session_closed()["end_reason"],
        "recording_failed"
    );
    w.gatehouse.wait_audit("recording_failed");
}
