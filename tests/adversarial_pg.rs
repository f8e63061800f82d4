//! The PostgreSQL front against clients that misbehave on purpose: psycopg 3 with 40,000
//! parameters, hand-built FunctionCall and malformed or oversized messages, startup
//! `options`, and raw sockets that stay silent or stall during login. Each test asserts
//! the effect that matters: what reached the target (a row present or absent), what the
//! statement log and audit say, and when the socket was closed.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_e2e::pg::{
    OPERATOR_PASSWORD, PgWorld, RawPg, cancel_request, error_code, message, psql_as,
    python3_with_psycopg, read_until_closed, startup_packet,
};
use gatehouse_e2e::{stderr, stdout};
use gatehouse_testbed::PgOptions;
use serde_json::Value;

fn world_with(extra_config: &str) -> PgWorld {
    PgWorld::with(
        &PgOptions {
            password_auth: true,
            ..Default::default()
        },
        "disable",
        extra_config,
    )
}

/// psycopg 3 binds `IN (%s × 40000)` as 40,000 parameters (more than an `i16` holds): the
/// rows are deleted, so the log must show that statement, with its 40,000 parameters, and
/// not the previous statement's text.
#[test]
fn a_forty_thousand_parameter_delete_is_logged_as_itself() {
    let w = PgWorld::new();
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("create table t (id int primary key)")
    conn.execute("insert into t select generate_series(1, 50000)")
    conn.execute("select %s::text as previous", ["the previous statement"])
    ids = list(range(1, 40001))
    cur = conn.execute("DELETE FROM t WHERE id IN (" + ",".join(["%s"] * len(ids)) + ")", ids)
    print(cur.rowcount)
"#;
    let conninfo = format!(
        "{} password={OPERATOR_PASSWORD}",
        w.conninfo("orders", "sslmode=disable")
    );
    let o = python3_with_psycopg()
        .args(["-c", script, &conninfo])
        .output()
        .expect("run python3");
    assert!(o.status.success(), "psycopg: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "40000");
    let left = w
        .postgres
        .psql("orders", "select count(*) from t")
        .expect("count on the target");
    assert_eq!(left.trim(), "10000");

    let lines = w.log_lines();
    let delete = lines
        .iter()
        .find(|l| l["tag"] == "DELETE 40000")
        .unwrap_or_else(|| panic!("no DELETE 40000 in the log: {:.2000}", format!("{lines:?}")));
    let text = delete["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("DELETE FROM t WHERE id IN ($1,") && text.ends_with("$40000)"),
        "the log shows another statement's text: {:.200}",
        text
    );
    let params = delete["params"].as_array().expect("parameters logged");
    assert_eq!(params.len(), 40_000);
    assert_eq!(
        (&params[0], &params[39_999]),
        (&Value::from("1"), &Value::from("40000"))
    );
}

/// A message Gatehouse cannot parse is never forwarded: the operator gets FATAL 08P01, the
/// session ends, the log names the message's type and length, and nothing sent after it
/// (here a Sync and an INSERT that PostgreSQL would run after rejecting the Bind) reaches
/// the target.
#[test]
fn a_malformed_message_is_refused_logged_and_nothing_after_it_reaches_the_target() {
    let w = PgWorld::new();
    let mut c = RawPg::login(w.gatehouse.pg_port(), "orders", &[]);
    c.query("create table marks (v text)");
    // Bind whose only parameter claims 1000 bytes and carries 3
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&1000_i32.to_be_bytes());
    bind.extend_from_slice(b"abc");
    let mut batch = message(b'B', &bind);
    batch.extend_from_slice(&message(b'S', &[]));
    batch.extend_from_slice(&message(b'Q', b"insert into marks values ('smuggled')\0"));
    c.send(&batch);
    let answers = c.until_ready();
    let fatal = answers
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .unwrap_or_else(|| panic!("no error, got {answers:?}"));
    assert_eq!(error_code(&fatal.1).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&fatal.1).contains("FATAL"));
    assert!(c.read().is_none(), "the connection stays open");

    let rows = w
        .postgres
        .psql("orders", "select count(*) from marks")
        .expect("count on the target");
    assert_eq!(rows.trim(), "0", "the INSERT after the refused message ran");
    let s = w.gatehouse.wait_session_closed();
    assert!(
        s["end_reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{s}"
    );
    let lines = w.log_lines();
    let refused = lines
        .iter()
        .find(|l| l["type"] == "marker" && !l["refused"].is_null())
        .unwrap_or_else(|| panic!("no refusal in the log: {lines:?}"));
    assert_eq!(refused["refused"]["message_type"], "B");
    assert_eq!(refused["refused"]["length"], bind.len() + 4);
    assert!(
        !lines
            .iter()
            .any(|l| l["text"].as_str().is_some_and(|t| t.contains("smuggled"))),
        "a statement that never ran is in the log"
    );
}

/// After login, a message over the 64 MiB cap ends the session at once (from its header,
/// without waiting for 100 MB), with FATAL 54000 and a refusal line in the log; before
/// login, a password message over 64 KiB is refused at once (the login grace here is the
/// default 60 s).
#[test]
fn oversized_messages_are_refused_at_once_before_and_after_login() {
    let w = PgWorld::new();
    let mut c = RawPg::login(w.gatehouse.pg_port(), "orders", &[]);
    let mut header = vec![b'Q'];
    header.extend_from_slice(&100_000_000_i32.to_be_bytes());
    header.extend_from_slice(b"select ");
    c.send(&header);
    let started = Instant::now();
    let (tag, body) = c.read().expect("an error before the close");
    assert_eq!((tag, error_code(&body).as_deref()), (b'E', Some("54000")));
    assert!(c.read().is_none());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let lines = w.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["refused"]["message_type"] == "Q" && l["refused"]["length"] == 100_000_000),
        "{lines:?}"
    );

    // before login: a SASL answer declaring 100 MB
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.gatehouse.pg_port())).unwrap();
    s.write_all(&startup_packet(&[
        ("user", "alice"),
        ("database", "orders"),
    ]))
    .unwrap();
    let mut raw = RawPg::on(s);
    let (tag, _) = raw.read().expect("authentication request");
    assert_eq!(tag, b'R');
    let mut huge = vec![b'p'];
    huge.extend_from_slice(&100_000_000_i32.to_be_bytes());
    huge.extend_from_slice(b"SCRAM-SHA-256\0");
    raw.send(&huge);
    let started = Instant::now();
    let rest = read_until_closed(&mut raw.stream, Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&rest).contains("08P01"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// FunctionCall runs a function without SQL text (`query_to_xml` then runs its argument):
/// the log shows the function's OID and its arguments.
#[test]
fn a_function_call_is_logged_with_its_oid_and_arguments() {
    let w = PgWorld::new();
    let mut c = RawPg::login(w.gatehouse.pg_port(), "orders", &[]);
    let oid: u32 = c.query("select 'query_to_xml(text,boolean,boolean,text)'::regprocedure::oid")
        [0]
    .parse()
    .expect("function oid");
    let mut call = oid.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 4]); // no format codes (all text), 4 arguments
    for arg in ["select 6 * 7 as answer", "false", "false", ""] {
        call.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        call.extend_from_slice(arg.as_bytes());
    }
    call.extend_from_slice(&[0, 0]); // text result
    c.send(&message(b'F', &call));
    let answers = c.until_ready();
    let result = answers
        .iter()
        .find(|(tag, _)| *tag == b'V')
        .unwrap_or_else(|| panic!("no FunctionCallResponse in {answers:?}"));
    assert!(String::from_utf8_lossy(&result.1).contains("<answer>42</answer>"));
    c.send(&message(b'X', &[]));

    let lines = w.log_lines();
    let logged = lines
        .iter()
        .find(|l| l["protocol"] == "function_call")
        .unwrap_or_else(|| panic!("no function call in the log: {lines:?}"));
    assert_eq!(logged["text"], format!("<function call, oid {oid}>"));
    assert_eq!(
        logged["params"],
        serde_json::json!(["select 6 * 7 as answer", "false", "false", ""])
    );
}

/// Startup parameters passed to the target change what statements do (`search_path`):
/// they are in the statement log's header and the session_start audit event.
#[test]
fn startup_options_and_application_name_are_in_the_log_header_and_the_audit() {
    let w = PgWorld::new();
    let conn = w.conninfo(
        "orders",
        "sslmode=disable options='-c search_path=x' application_name=evil-app",
    );
    let o = psql_as(
        &conn,
        OPERATOR_PASSWORD,
        &["-At", "-c", "show search_path"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "x", "the option reached the target");

    let header = w.log_lines().remove(0);
    assert_eq!(
        header["startup_params"]["options"], "-c search_path=x",
        "{header}"
    );
    assert_eq!(header["startup_params"]["application_name"], "evil-app");
    let audit = w.gatehouse.audit();
    let start = audit
        .iter()
        .find(|e| e["kind"] == "session_start")
        .unwrap_or_else(|| panic!("no session_start in {audit:?}"));
    assert_eq!(
        start["detail"]["startup_params"]["options"],
        "-c search_path=x"
    );
    assert_eq!(
        start["detail"]["startup_params"]["application_name"],
        "evil-app"
    );
}

/// With `login_grace = "1s"`: a socket that sends nothing, one that stops after the TLS
/// request, and one that stops in the middle of SCRAM are all closed within about 2 s; a
/// logged-in session is not bound by the grace.
#[test]
fn silent_and_stalled_clients_are_dropped_at_the_login_grace() {
    let w = world_with("[postgres]\nlisten = \"127.0.0.1:0\"\nlogin_grace = \"1s\"");
    let port = w.gatehouse.pg_port();
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let mut silent = connect();
    let mut after_ssl = connect();
    after_ssl
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .unwrap();
    let mut mid_scram = RawPg::on(connect());
    mid_scram.send(&startup_packet(&[
        ("user", "alice"),
        ("database", "orders"),
    ]));
    assert_eq!(mid_scram.read().map(|m| m.0), Some(b'R'));

    let limit = Duration::from_secs(5);
    for (what, stream) in [
        ("silent", &mut silent),
        ("after SSLRequest", &mut after_ssl),
        ("in the middle of SCRAM", &mut mid_scram.stream),
    ] {
        let got = read_until_closed(stream, limit);
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
            "{what}: closed after {after:?}"
        );
        if what == "in the middle of SCRAM" {
            assert!(String::from_utf8_lossy(&got).contains("57014"), "{got:?}");
        }
    }
    // the grace bounds the login only
    let o = w.psql(
        &w.conninfo("orders", "sslmode=disable"),
        &[
            "-At",
            "-c",
            "select pg_sleep(1.5)",
            "-c",
            "select 'still here'",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("still here"));
}

/// A bad target name in `dbname` gets the same 3D000 refusal as an unknown target, and
/// never reaches the session registry.
#[test]
fn garbage_target_names_are_refused_like_unknown_targets() {
    let w = PgWorld::new();
    let port = w.gatehouse.pg_port();
    for dbname in [
        "\u{1b}]52;c;ZXZpbA==\u{7}",
        "../../orders",
        "orders;drop/orders",
    ] {
        let refusal = RawPg::login_error(port, dbname);
        assert_eq!(error_code(&refusal).as_deref(), Some("3D000"), "{dbname:?}");
        let text = String::from_utf8_lossy(&refusal);
        assert!(
            text.contains("does not exist or you have no grant"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }
    assert!(
        w.gatehouse.sessions().is_empty(),
        "{:?}",
        w.gatehouse.sessions()
    );
    let audit = w.gatehouse.audit();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["detail"]["reason"] == "invalid_target_name")
            .count(),
        3,
        "{audit:?}"
    );
}

/// Once the guard has ended a session, nothing the operator sends reaches the target, even
/// while the FATAL is still waiting to go out: here the operator stops reading (a 16 MB row
/// fills its socket, so the FATAL waits the whole 2 s) and sends an INSERT in that window.
#[test]
fn after_an_idle_end_nothing_sent_in_the_fatal_window_reaches_the_target() {
    let w = PgWorld::new();
    w.postgres
        .psql(
            "orders",
            "create table marks (v text); grant all on marks to app",
        )
        .expect("create table");
    w.gatehouse
        .set_policy(&["--idle-timeout", "2s", "--warn-before", "off"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let s = socket
            .connect(([127, 0, 0, 1], w.gatehouse.pg_port()).into())
            .await
            .expect("connect");
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    });
    let mut c = RawPg::login_on(stream, "orders", &[]);
    c.send(&message(b'Q', b"select repeat('x', 16000000)\0"));
    let asked = Instant::now();
    // the guard ends the session 2 s after the query; the FATAL then waits up to 2 s
    std::thread::sleep(Duration::from_secs(3).saturating_sub(asked.elapsed()));
    let sent_at = unix_millis();
    c.send(&message(
        b'Q',
        b"insert into marks values ('after the end')\0",
    ));
    let _ = read_until_closed(&mut c.stream, Duration::from_secs(20));

    let s = w.gatehouse.wait_session_closed();
    assert_eq!(s["end_reason"], "idle_timeout", "{s}");
    let ended = w
        .gatehouse
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "enforcement_end")
        .expect("the guard's end is audited");
    assert!(
        ended["at"].as_i64().unwrap() < sent_at && sent_at < s["ended_at"].as_i64().unwrap(),
        "the INSERT was not sent inside the FATAL window: end {} sent {sent_at} closed {}",
        ended["at"],
        s["ended_at"]
    );
    let rows = w
        .postgres
        .psql("orders", "select count(*) from marks")
        .expect("count on the target");
    assert_eq!(rows.trim(), "0", "the INSERT sent after the end ran");
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The client's BackendKeyData carries the target's real pid (what `pg_backend_pid()` says)
/// and a key of Gatehouse's own: a CancelRequest with that pid and any other key does
/// nothing (the statement runs to its end), one with the key given cancels it.
#[test]
fn a_cancel_with_a_wrong_key_does_nothing_and_the_right_one_cancels() {
    let w = PgWorld::new();
    let port = w.gatehouse.pg_port();
    let mut c = RawPg::login(port, "orders", &[]);
    let (pid, key) = c.key.clone().expect("BackendKeyData at login");
    assert_eq!(
        c.query("select pg_backend_pid()::text"),
        vec![pid.to_string()]
    );
    assert_eq!(key.len(), 4);

    let run = |c: &mut RawPg, sql: &str, cancel: &[Vec<u8>]| {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        let started = Instant::now();
        c.send(&message(b'Q', &q));
        std::thread::sleep(Duration::from_millis(300));
        for k in cancel {
            cancel_request(port, pid, k);
        }
        let codes: Vec<String> = c
            .until_ready()
            .iter()
            .filter(|(tag, _)| *tag == b'E')
            .filter_map(|(_, body)| error_code(body))
            .collect();
        (codes, started.elapsed())
    };
    let mut flipped = key.clone();
    flipped[0] ^= 1;
    let wrong = vec![flipped, vec![0; 4], [key.clone(), vec![0]].concat()];
    let (codes, took) = run(&mut c, "select pg_sleep(1.5)", &wrong);
    assert!(
        codes.is_empty(),
        "a wrong key cancelled the query: {codes:?}"
    );
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    // the same pid with another session's key (a second session of the same operator)
    let other = RawPg::login(port, "orders", &[]);
    let (other_pid, other_key) = other.key.clone().expect("BackendKeyData");
    assert_ne!(other_pid, pid);
    let (codes, _) = run(&mut c, "select pg_sleep(1)", &[other_key]);
    assert!(
        codes.is_empty(),
        "another session's key cancelled this one: {codes:?}"
    );

    let (codes, took) = run(&mut c, "select pg_sleep(30)", &[key]);
    assert_eq!(codes, vec!["57014".to_owned()]);
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(other);
    drop(c);
    let lines = w.log_lines();
    let sleeps: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("select pg_sleep"))
        })
        .map(|l| {
            (
                l["text"].as_str().unwrap_or_default(),
                l["error"]["sqlstate"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        sleeps,
        vec![
            ("select pg_sleep(1.5)", None),
            ("select pg_sleep(1)", None),
            ("select pg_sleep(30)", Some("57014"))
        ]
    );
}
