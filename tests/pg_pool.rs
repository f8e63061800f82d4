//! Kept target connections (`[postgres] target_pool`) against a real PostgreSQL: a session
//! gets the previous one's login to the target only after a reset that leaves nothing of
//! it behind, never when the previous one left the server busy, in a transaction, halfway
//! through an extended-protocol exchange or with a cancel in flight; kept connections are
//! closed when idle too long, when the server closed them, and at shutdown.

use std::time::Duration;

use gatehouse_e2e::pg::{PgWorld, RawPg, add_target, cancel_request, message};
use gatehouse_e2e::{stderr, stdout, wait_until};
use gatehouse_testbed::PgOptions;

fn world(config: &str) -> PgWorld {
    PgWorld::with(
        &PgOptions {
            password_auth: true,
            ..Default::default()
        },
        "disable",
        &format!("[postgres]\nlisten = \"127.0.0.1:0\"\n{config}"),
    )
}

fn pooled_world() -> PgWorld {
    world("target_pool = 4\n")
}

fn login(w: &PgWorld, params: &[(&str, &str)]) -> RawPg {
    RawPg::login(w.gatehouse.pg_port(), "orders", params)
}

fn backend_pid(c: &mut RawPg) -> String {
    c.query("select pg_backend_pid()").remove(0)
}

/// The operator's client says goodbye; returns once Gatehouse has closed the session
/// (and so decided what becomes of its target connection).
fn leave(w: &PgWorld, mut c: RawPg) {
    c.send(&message(b'X', &[]));
    drop(c);
    w.gatehouse.wait_all_closed();
}

/// A session on `dbname` that does nothing but ask its backend's pid, then leaves: the pid.
fn one_session(w: &PgWorld, dbname: &str, params: &[(&str, &str)]) -> String {
    let mut c = RawPg::login(w.gatehouse.pg_port(), dbname, params);
    let pid = backend_pid(&mut c);
    leave(w, c);
    pid
}

/// The target's backends of the `app` role (Gatehouse's login), by pid.
fn app_backends(w: &PgWorld) -> Vec<String> {
    w.postgres
        .psql(
            "orders",
            "select pid from pg_stat_activity where usename = 'app' order by pid",
        )
        .expect("query pg_stat_activity")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_gone_from_target(w: &PgWorld, pid: &str, within: Duration) {
    wait_until(
        within,
        || (!app_backends(w).iter().any(|p| p == pid)).then_some(()),
        || format!("backend {pid} still on the target: {:?}", app_backends(w)),
    );
}

#[test]
fn a_kept_target_connection_carries_nothing_to_the_next_session() {
    let w = pooled_world();
    w.postgres
        .psql("orders", "create role leak_role; grant leak_role to app")
        .expect("create a role app may take");
    let mut a = login(&w, &[]);
    let first = backend_pid(&mut a);
    // everything a session can leave in its server session
    for sql in [
        "set search_path = pg_catalog",
        "set application_name = 'leak'",
        "select set_config('leak.setting', 'secret', false)",
        "create temp table leak(x int)",
        "prepare leak_statement as select 1",
        "select pg_advisory_lock(4242)",
        "listen leak_channel",
        "declare leak_cursor cursor with hold for select 1",
        "set role leak_role",
    ] {
        a.query(sql);
    }
    leave(&w, a);
    assert_eq!(app_backends(&w), vec![first.clone()], "the login is kept");

    let mut b = login(&w, &[]);
    assert_eq!(
        backend_pid(&mut b),
        first,
        "the next session reuses the login"
    );
    for (sql, fresh) in [
        ("show search_path", "\"$user\", public"),
        ("select current_setting('application_name') = 'leak'", "f"),
        (
            "select coalesce(current_setting('leak.setting', true), '') = 'secret'",
            "f",
        ),
        ("select to_regclass('pg_temp.leak') is null", "t"),
        ("select count(*) from pg_prepared_statements", "0"),
        (
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
            "0",
        ),
        ("select count(*) from pg_listening_channels()", "0"),
        ("select count(*) from pg_cursors", "0"),
        ("select current_user || '/' || session_user", "app/app"),
    ] {
        assert_eq!(b.query(sql), vec![fresh.to_owned()], "{sql}");
    }
    leave(&w, b);

    // another login (here: another startup parameter) never gets that connection
    assert_ne!(
        one_session(&w, "orders", &[("application_name", "other")]),
        first
    );

    // each session's statement log has its own statements, and none of Gatehouse's reset
    let lines = w.log_lines();
    let statements: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "statement")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert!(statements.contains(&"set application_name = 'leak'"));
    assert!(
        !statements.iter().any(|s| s.contains("DISCARD")),
        "{statements:?}"
    );
    // each statement log says which server process its session ran on, and whether the
    // login was kept from an earlier session: A's and B's the same backend, B's reused
    let targets: Vec<(String, bool)> = w
        .statement_logs()
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("read statement log");
            let line = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
                .find(|l| l["type"] == "target")
                .unwrap_or_else(|| panic!("no target line in {text}"));
            (
                line["backend_pid"].to_string(),
                line["reused"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let reused: Vec<&(String, bool)> = targets.iter().filter(|t| t.1).collect();
    assert_eq!(reused, [&(first.clone(), true)], "{targets:?}");
    assert_eq!(
        targets.iter().filter(|t| t.0 == first).count(),
        2,
        "{targets:?}"
    );
    // the broker's log says which session reused a login: B only
    let log = w.gatehouse.log();
    let reused = log
        .lines()
        .filter(|l| l.contains("session started") && l.contains("reused"))
        .map(|l| l.trim_end().ends_with("true"))
        .collect::<Vec<_>>();
    assert_eq!(reused, [false, true, false], "{log}");
}

/// Each way a session can leave its server session unfinished: the login is closed on the
/// target (its backend exits) and the next session gets a new one.
#[test]
fn a_connection_not_left_at_rest_is_never_kept() {
    let w = pooled_world();
    let port = w.gatehouse.pg_port();
    let not_kept = |what: &str, pid: String| {
        wait_gone_from_target(&w, &pid, Duration::from_secs(5));
        assert_ne!(one_session(&w, "orders", &[]), pid, "{what}: login reused");
        // (the next session's login is kept: it left the server at rest)
        assert_eq!(app_backends(&w).len(), 1, "{what}");
        let kept = app_backends(&w).remove(0);
        // the pool is emptied for the next case: a session takes the kept login and
        // leaves it in a transaction
        let mut taker = login(&w, &[]);
        assert_eq!(backend_pid(&mut taker), kept);
        taker.query("begin");
        leave(&w, taker);
        wait_gone_from_target(&w, &kept, Duration::from_secs(5));
        assert!(app_backends(&w).is_empty(), "{what}");
    };

    // a transaction left open
    let mut a = login(&w, &[]);
    let pid = backend_pid(&mut a);
    a.query("begin");
    a.query("select 1");
    leave(&w, a);
    not_kept("open transaction", pid);

    // an extended-protocol exchange without its Sync (executed, answered, then Terminate)
    let mut a = login(&w, &[]);
    let pid = backend_pid(&mut a);
    a.send(&message(b'P', b"\0select 1\0\0\0"));
    a.send(&message(b'B', b"\0\0\0\0\0\0\0\0"));
    a.send(&message(b'E', b"\0\0\0\0\0"));
    a.send(&message(b'H', b""));
    let mut seen = Vec::new();
    while let Some((tag, _)) = a.read() {
        seen.push(tag);
        if tag == b'C' {
            break;
        }
    }
    assert_eq!(seen, b"12DC", "parse, bind, row, complete");
    leave(&w, a);
    not_kept("no Sync", pid);

    // a query cancel forwarded during the session (a late one could reach the next
    // session's statement)
    let mut a = login(&w, &[]);
    let pid = backend_pid(&mut a);
    let (key_pid, key) = a.key.clone().expect("BackendKeyData");
    a.send(&message(b'Q', b"select pg_sleep(30)\0"));
    std::thread::sleep(Duration::from_millis(300));
    cancel_request(port, key_pid, &key);
    let answer = a.until_ready();
    assert!(
        answer
            .iter()
            .any(|(tag, body)| *tag == b'E' && String::from_utf8_lossy(body).contains("57014")),
        "the statement was cancelled"
    );
    leave(&w, a);
    not_kept("cancel", pid);

    // a statement still running when the client vanished
    let mut a = login(&w, &[]);
    let pid = backend_pid(&mut a);
    a.send(&message(b'Q', b"select pg_sleep(30)\0"));
    std::thread::sleep(Duration::from_millis(300));
    drop(a);
    w.gatehouse.wait_all_closed();
    not_kept("running statement", pid);
}

#[test]
fn a_kept_connection_the_target_closed_is_not_handed_out() {
    let w = pooled_world();
    let pid = one_session(&w, "orders", &[]);
    assert_eq!(app_backends(&w), vec![pid.clone()]);
    w.postgres
        .psql("orders", &format!("select pg_terminate_backend({pid})"))
        .expect("terminate the kept backend");
    wait_gone_from_target(&w, &pid, Duration::from_secs(5));
    let mut b = login(&w, &[]);
    let fresh = backend_pid(&mut b);
    assert_ne!(fresh, pid);
    assert_eq!(b.query("select 41 + 1"), vec!["42"]);
    leave(&w, b);
}

#[test]
fn kept_connections_are_closed_when_idle_too_long() {
    let w = world("target_pool = 4\ntarget_pool_idle = \"2s\"\n");
    let pid = one_session(&w, "orders", &[]);
    assert_eq!(app_backends(&w), vec![pid.clone()], "kept at first");
    wait_gone_from_target(&w, &pid, Duration::from_secs(8));
}

#[test]
fn kept_connections_are_closed_at_shutdown() {
    let mut w = pooled_world();
    // two kept at once (two sessions side by side), then the broker stops
    let (mut a, mut b) = (login(&w, &[]), login(&w, &[]));
    let pids = [backend_pid(&mut a), backend_pid(&mut b)];
    a.send(&message(b'X', &[]));
    b.send(&message(b'X', &[]));
    drop((a, b));
    w.gatehouse.wait_all_closed();
    let mut kept = app_backends(&w);
    kept.sort();
    let mut expected = pids.to_vec();
    expected.sort();
    assert_eq!(kept, expected);
    w.gatehouse.terminate();
    for pid in &pids {
        wait_gone_from_target(&w, pid, Duration::from_secs(3));
    }
}

#[test]
fn without_target_pool_every_session_logs_in_anew() {
    let w = world("");
    let pid = one_session(&w, "orders", &[]);
    wait_gone_from_target(&w, &pid, Duration::from_secs(5));
    assert_ne!(one_session(&w, "orders", &[]), pid);
}

/// With TLS to the target and a stock `psql` as the operator's client: psql's goodbye
/// leaves the login kept, the next psql reuses it (still TLS), and a kept TLS login the
/// server closed is not handed out.
#[test]
fn a_kept_tls_login_serves_the_next_psql() {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let w = PgWorld::with(
        &PgOptions {
            password_auth: true,
            tls: Some((generated.cert.pem(), generated.signing_key.serialize_pem())),
            ..Default::default()
        },
        "require",
        "[postgres]\nlisten = \"127.0.0.1:0\"\ntarget_pool = 2\n",
    );
    let psql = || {
        let o = w.psql(
            &w.conninfo("orders", "sslmode=disable"),
            &[
                "-At",
                "-c",
                "select pg_backend_pid() || ' ' || ssl from pg_stat_ssl where pid = pg_backend_pid()",
            ],
            None,
        );
        assert!(o.status.success(), "psql: {}", stderr(&o));
        w.gatehouse.wait_all_closed();
        stdout(&o).trim().to_owned()
    };
    let first = psql();
    assert!(first.ends_with(" true"), "TLS to the target: {first}");
    assert_eq!(psql(), first, "the second psql reuses the kept login");
    let pid = first.split(' ').next().unwrap_or_default().to_owned();
    w.postgres
        .psql("orders", &format!("select pg_terminate_backend({pid})"))
        .expect("terminate the kept backend");
    wait_gone_from_target(&w, &pid, Duration::from_secs(5));
    let fresh = psql();
    assert!(fresh.ends_with(" true") && fresh != first, "{fresh}");
}

/// An operator who varies a startup parameter on every connection gets a new login each
/// time (another key), but the pool never keeps more than `target_pool` of the target's
/// connection slots: the longest kept is closed to make room.
#[test]
fn kept_logins_per_target_are_bounded_whatever_the_startup_parameters() {
    let w = world("target_pool = 2\n");
    let mut pids = Vec::new();
    for i in 0..5 {
        let name = format!("app{i}");
        pids.push(one_session(
            &w,
            "orders",
            &[("application_name", name.as_str())],
        ));
        // (a backend Gatehouse closed leaves pg_stat_activity a moment later)
        wait_until(
            Duration::from_secs(5),
            || (app_backends(&w).len() <= 2).then_some(()),
            || format!("after session {i}: {:?} on the target", app_backends(&w)),
        );
    }
    // the two most recent are the ones kept
    wait_until(
        Duration::from_secs(5),
        || {
            let mut kept = app_backends(&w);
            kept.sort();
            let mut newest = pids[3..].to_vec();
            newest.sort();
            (kept == newest).then_some(())
        },
        || format!("kept {:?}, sessions ran on {pids:?}", app_backends(&w)),
    );
}

/// A target added with `--no-kept-logins` never has its logins kept, on a node that keeps
/// the others' (targets whose operators use dblink or postgres_fdw, which `DISCARD ALL`
/// does not reset); `target list` says which.
#[test]
fn a_target_added_with_no_kept_logins_never_has_them_kept() {
    let w = pooled_world();
    add_target(
        &w.gatehouse,
        &w.postgres,
        "ledger",
        "prod",
        &["--tls", "disable", "--no-kept-logins"],
    );
    let pid = one_session(&w, "ledger", &[]);
    wait_gone_from_target(&w, &pid, Duration::from_secs(5));
    assert_ne!(one_session(&w, "ledger", &[]), pid);
    // the node's other target keeps its login
    let kept = one_session(&w, "orders", &[]);
    assert_eq!(app_backends(&w), vec![kept]);

    let listed: serde_json::Value =
        serde_json::from_str(&w.gatehouse.cli_ok(&["target", "list", "--json"]))
            .expect("target list --json");
    let kept_logins = |name: &str| {
        listed
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == name))
            .map(|t| t["kept_logins"].clone())
    };
    assert_eq!(kept_logins("ledger"), Some(serde_json::json!(false)));
    assert_eq!(kept_logins("orders"), Some(serde_json::json!(true)));
    let table = w.gatehouse.cli_ok(&["target", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ledger") && l.contains("logins not kept")),
        "{table}"
    );
}
