//! Real drivers through the PostgreSQL front, for what each one does differently: psycopg 3
//! (LISTEN/NOTIFY and its own backend pid, cancel, binary parameters of every type it sends
//! in binary) and pgjdbc (binary `numeric` parameters, a fetch size reading a portal in
//! pieces). Each test asserts what the statement log says.

use std::time::Duration;

use gatehouse_e2e::pg::{PgWorld, python3_with_psycopg, run_java_with_pgjdbc};
use gatehouse_e2e::{stderr, stdout};
use serde_json::Value;

/// Statement lines whose text is `text`.
fn statements<'a>(lines: &'a [Value], text: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "statement" && l["text"] == text)
        .collect()
}

/// psycopg ignores its own notifications by comparing `Notify.pid` with its backend pid: the
/// pid Gatehouse gives the client must be the target's. `conn.cancel()` (libpq's cancel with
/// the key Gatehouse gave) still cancels a long statement.
#[test]
fn psycopg_sees_its_own_pid_in_notifications_and_cancels_through_gatehouse() {
    let w = PgWorld::new();
    let script = r#"
import json, sys, threading, time, psycopg
conninfo = sys.argv[1]
conn = psycopg.connect(conninfo, autocommit=True)
other = psycopg.connect(conninfo, autocommit=True)
got = []
conn.add_notify_handler(got.append)
conn.execute("LISTEN jobs")
conn.execute("NOTIFY jobs, 'mine'")
other.execute("NOTIFY jobs, 'theirs'")
time.sleep(0.5)
conn.execute("select 1")
mine = conn.execute("select pg_backend_pid()").fetchone()[0]
theirs = other.execute("select pg_backend_pid()").fetchone()[0]

def cancel_soon():
    time.sleep(0.5)
    conn.cancel()

threading.Thread(target=cancel_soon).start()
started = time.monotonic()
try:
    conn.execute("select pg_sleep(30)")
    outcome = "completed"
except psycopg.errors.QueryCanceled:
    outcome = "canceled"
print(json.dumps({
    "info_pid": conn.info.backend_pid, "pg_backend_pid": mine, "other_pid": theirs,
    "other_info_pid": other.info.backend_pid,
    "notifies": [[n.payload, n.pid] for n in got],
    "cancel": outcome, "seconds": time.monotonic() - started,
}))
"#;
    let o = python3_with_psycopg()
        .args(["-c", script, &w.conninfo_with_password()])
        .output()
        .expect("run python3");
    assert!(o.status.success(), "psycopg: {}", stderr(&o));
    let r: Value = serde_json::from_str(stdout(&o).trim()).expect("the script's JSON");
    let mine = &r["pg_backend_pid"];
    assert_eq!(
        &r["info_pid"], mine,
        "BackendKeyData pid is the target's: {r}"
    );
    assert_eq!(r["other_info_pid"], r["other_pid"], "{r}");
    assert_ne!(mine, &r["other_pid"]);
    assert_eq!(
        r["notifies"],
        serde_json::json!([["mine", mine], ["theirs", r["other_pid"]]]),
        "{r}"
    );
    assert_eq!(r["cancel"], "canceled", "{r}");
    assert!(r["seconds"].as_f64().is_some_and(|s| s < 10.0), "{r}");

    let lines = w.log_lines();
    let sleep = statements(&lines, "select pg_sleep(30)");
    assert_eq!(sleep.len(), 1, "{lines:?}");
    assert_eq!(sleep[0]["error"]["sqlstate"], "57014");
}

/// psycopg 3 with `%b` placeholders sends every parameter in binary, with its type's OID in
/// Parse: each one appears in the log as PostgreSQL would print it, not as hex.
#[test]
fn psycopg_binary_parameters_of_each_type_are_logged_decoded() {
    // (label, Python expression, as logged)
    let cases: &[(&str, &str, &str)] = &[
        ("int2", "42", "42"),
        ("int4", "-100000", "-100000"),
        ("int8", "2**40", "1099511627776"),
        (
            "bigint_as_numeric",
            "10**30",
            "1000000000000000000000000000000",
        ),
        ("float8", "1.5", "1.5"),
        ("bool", "True", "true"),
        ("numeric", "Decimal('1.25')", "1.25"),
        ("numeric_small", "Decimal('-0.00012')", "-0.00012"),
        ("numeric_nan", "Decimal('NaN')", "NaN"),
        ("text", "'naïve text'", "naïve text"),
        ("bytea", "b'\\xde\\xad'", "\\xdead::bytea"),
        (
            "uuid",
            "UUID('12345678-1234-5678-1234-567812345678')",
            "12345678-1234-5678-1234-567812345678",
        ),
        ("date", "date(2024, 2, 29)", "2024-02-29"),
        ("time", "time(12, 34, 56)", "12:34:56"),
        (
            "timestamp",
            "datetime(2024, 2, 29, 1, 2, 3, 500000)",
            "2024-02-29 01:02:03.5",
        ),
        (
            "timestamptz",
            "datetime(2024, 2, 29, 1, 2, 3, tzinfo=timezone(timedelta(hours=1)))",
            "2024-02-29 00:02:03+00",
        ),
        ("interval", "timedelta(days=3, hours=4)", "3 days 04:00:00"),
        ("jsonb", "Jsonb({'a': 1})", "{\"a\": 1}"),
        ("int_array", "[1, 2, None]", "{1,2,NULL}"),
        ("text_array", "['a', 'b c']", "{a,\"b c\"}"),
        (
            "numeric_array",
            "[Decimal('1.5'), Decimal('-2')]",
            "{1.5,-2}",
        ),
    ];
    let w = PgWorld::new();
    let calls: String = cases
        .iter()
        .map(|(label, expr, _)| {
            format!("    cur.execute('select %b as {label}', [{expr}], binary=True)\n")
        })
        .collect();
    let script = format!(
        "import sys, psycopg\n\
         from datetime import date, time, datetime, timedelta, timezone\n\
         from decimal import Decimal\n\
         from uuid import UUID\n\
         from psycopg.types.json import Jsonb\n\
         with psycopg.connect(sys.argv[1], autocommit=True) as conn:\n\
         \x20   cur = conn.cursor()\n{calls}"
    );
    let o = python3_with_psycopg()
        .args(["-c", &script, &w.conninfo_with_password()])
        .output()
        .expect("run python3");
    assert!(o.status.success(), "psycopg: {}", stderr(&o));
    let lines = w.log_lines();
    let mut wrong = Vec::new();
    for (label, _, shown) in cases {
        let found = statements(&lines, &format!("select $1 as {label}"));
        let got = found.first().map(|l| l["params"].clone());
        if got != Some(serde_json::json!([shown])) {
            wrong.push(format!("{label}: expected {shown:?}, logged {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const JDBC_PROBE: &str = r#"
import java.math.BigDecimal;
import java.sql.*;

public class Probe {
    public static void main(String[] a) throws Exception {
        try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
            try (Statement s = c.createStatement()) {
                s.execute("create table big as select g as id, g * 1.5 as amount from generate_series(1, 20000) g");
            }
            try (PreparedStatement p = c.prepareStatement("select ?::numeric + ?::numeric as probe_numeric")) {
                p.setBigDecimal(1, new BigDecimal("1.25"));
                p.setBigDecimal(2, new BigDecimal("-12345678901234567890.000123"));
                try (ResultSet r = p.executeQuery()) {
                    r.next();
                    System.out.println(r.getBigDecimal(1));
                }
            }
            c.setAutoCommit(false);
            long rows = 0;
            try (PreparedStatement p = c.prepareStatement("select id, amount from big where amount > ? order by id")) {
                p.setFetchSize(100);
                p.setBigDecimal(1, new BigDecimal("0.5"));
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) {
                        rows++;
                    }
                }
            }
            c.commit();
            System.out.println(rows);
        }
    }
}
"#;

/// pgjdbc sends `BigDecimal` as binary `numeric`: the log shows the numbers. With
/// `setFetchSize(100)` it reads 20,000 rows as 201 Executes of one portal (200 answered by
/// PortalSuspended): the log has ONE entry for it, with its executions and rows counted.
#[test]
fn pgjdbc_numeric_parameters_and_a_fetch_size_read_are_logged_as_one_statement() {
    let w = PgWorld::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/orders?sslmode=disable",
        w.gatehouse.pg_port()
    );
    let o = run_java_with_pgjdbc(
        dir.path(),
        "Probe",
        JDBC_PROBE,
        &[&url, "alice", gatehouse_e2e::pg::OPERATOR_PASSWORD],
    );
    assert!(o.status.success(), "pgjdbc: {}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        vec!["-12345678901234567888.750123", "20000"]
    );
    let lines = w.log_lines();
    let sum = statements(&lines, "select $1::numeric + $2::numeric as probe_numeric");
    assert_eq!(sum.len(), 1, "{lines:?}");
    assert_eq!(
        sum[0]["params"],
        serde_json::json!(["1.25", "-12345678901234567890.000123"])
    );
    let read = statements(
        &lines,
        "select id, amount from big where amount > $1 order by id",
    );
    assert_eq!(read.len(), 1, "one entry for the whole read: {read:?}");
    let r = read[0];
    assert_eq!(r["params"], serde_json::json!(["0.5"]));
    assert_eq!(
        (&r["executions"], &r["rows"]),
        (&Value::from(201), &Value::from(20_000))
    );
    assert_eq!(r["suspended"], false);
    assert!(r["error"].is_null(), "{r}");
    assert!(
        r["duration_ms"].as_f64().is_some_and(|d| d > 0.0)
            && Duration::from_secs_f64(r["t"].as_f64().unwrap_or(-1.0)) > Duration::ZERO,
        "{r}"
    );
}
