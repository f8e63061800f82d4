//! Frames of the review TUI rendered with `TestBackend`: the list, the player at chosen
//! moments, the SQL view, search results and the help screen. Recordings are written with
//! the recorder's own writer (real hash chains), so the list's verdicts come from the real
//! verifier.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_recorder::format::Code;
use gatehouse_review::catalog::{RecordingStatus, SessionEntry, recording_status};
use gatehouse_review::{App, SearchIndex};
use gatehouse_store::RecordingRecord;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;

mod common;
use common::{T0, key, press, render, shell_header, write_cast_with};

fn write_cast(root: &Path, id: &str, events: &[(f64, Code, &str)]) -> (PathBuf, RecordingRecord) {
    write_cast_with(root, id, &shell_header(), events)
}

fn entry(
    id: &str,
    op: &str,
    minutes: i64,
    end: Option<&str>,
    path: Option<PathBuf>,
    status: RecordingStatus,
) -> SessionEntry {
    SessionEntry {
        id: id.into(),
        operator: op.into(),
        target: if path
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().ends_with(".sql.jsonl"))
        {
            "orders".into()
        } else {
            "web1".into()
        },
        environment: Some("prod".into()),
        protocol: if path
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().ends_with(".sql.jsonl"))
        {
            "postgres".into()
        } else {
            "ssh".into()
        },
        started_at: T0 + minutes * 60_000,
        ended_at: end.map(|_| T0 + minutes * 60_000 + 95_000),
        end_reason: end.map(str::to_owned),
        recording: path,
        status,
        live: None,
    }
}

/// A shell session that draws a coloured prompt, a full-screen-ish status line, and
/// carries enforcement markers.
fn shell_events() -> Vec<(f64, Code, &'static str)> {
    vec![
        (0.2, Code::Marker, "channel 0: shell"),
        (0.5, Code::Output, "\u{1b}[1;32malice@web1\u{1b}[0m:~$ "),
        (1.0, Code::Input, "uptime\r"),
        (
            1.1,
            Code::Output,
            "uptime\r\n 16:00:01 up 3 days,  load average: 0.01\r\n\u{1b}[1;32malice@web1\u{1b}[0m:~$ ",
        ),
        (2.0, Code::Input, "sudo systemctl restart nginx\r"),
        (
            2.1,
            Code::Output,
            "sudo systemctl restart nginx\r\n\u{1b}[12;1H\u{1b}[7m restarting nginx \u{1b}[0m\u{1b}[4;1H\u{1b}[1;32malice@web1\u{1b}[0m:~$ ",
        ),
        (40.0, Code::Marker, "warning: idle timeout in 10s"),
        (
            40.0,
            Code::Output,
            "\r\n[gatehouse] idle for 50s — this session closes in 10s\r\n",
        ),
        (50.0, Code::Marker, "session end: idle_timeout"),
    ]
}

struct Fixture {
    _dir: tempfile::TempDir,
    sessions: Vec<SessionEntry>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ok_path, ok_rec) = write_cast(root, "0190-ok", &shell_events());
    let (bad_path, bad_rec) = write_cast(
        root,
        "0190-bad",
        &[(0.5, Code::Output, "rm -rf /tmp/evidence\r\n")],
    );
    // someone edits the recording after the fact
    let text = std::fs::read_to_string(&bad_path).unwrap();
    std::fs::write(&bad_path, text.replace("evidence", "nothing!")).unwrap();
    let sql_path = root.join("2025/11/24/0190-sql.sql.jsonl");
    std::fs::write(&sql_path, SQL_LOG).unwrap();
    let sessions = vec![
        entry(
            "0190-live",
            "carol",
            30,
            None,
            None,
            RecordingStatus::Live { events: 0 },
        ),
        entry(
            "0190-sql",
            "dave",
            20,
            Some("client_closed"),
            Some(sql_path),
            RecordingStatus::Ok { events: 6 },
        ),
        entry(
            "0190-bad",
            "bob",
            10,
            Some("client_closed"),
            Some(bad_path),
            recording_status(&bad_rec),
        ),
        entry(
            "0190-ok",
            "alice",
            0,
            Some("idle_timeout"),
            Some(ok_path),
            recording_status(&ok_rec),
        ),
    ];
    Fixture {
        _dir: dir,
        sessions,
    }
}

/// A PostgreSQL session's statement log in the format the PostgreSQL front writes.
const SQL_LOG: &str = include_str!("fixtures/orders.sql.jsonl");

fn app(f: &Fixture) -> App {
    App::new(
        Box::new(f.sessions.clone()),
        SearchIndex::new(None),
        T0 + 40 * 60_000,
    )
}

/// Search results say how long the search took: zero it so frames are reproducible.
fn search(app: &mut App, query: &str) {
    press(app, "/");
    press(app, query);
    key(app, KeyCode::Enter);
    if let Some(gatehouse_review::app::View::Search(s)) = app.views.last_mut() {
        s.took = Duration::ZERO;
    }
}

#[test]
fn session_list_newest_first_with_tampered_and_live_rows() {
    let f = fixture();
    assert!(
        f.sessions[2].status.is_tampered(),
        "{:?}",
        f.sessions[2].status
    );
    assert_eq!(f.sessions[3].status, RecordingStatus::Ok { events: 9 });
    let a = app(&f);
    let t = render(&a, 80, 24);
    insta::assert_snapshot!(t.backend());
    // the tampered row is red across the whole line
    let buf = t.backend().buffer();
    let row = (0..24)
        .find(|y| {
            (0..80)
                .map(|x| buf[(x, *y)].symbol())
                .collect::<String>()
                .contains("bob")
        })
        .unwrap();
    assert!((1..80).all(|x| buf[(x, row)].bg == Color::Red));
    // wide terminals show the full date
    insta::assert_snapshot!("list_wide", render(&a, 120, 10).backend());
}

#[test]
fn live_sessions_show_idle_time_next_limit_and_lock() {
    use gatehouse_review::liveinfo::{Limit, LiveInfo, Lock};
    let f = fixture();
    let mut sessions = f.sessions.clone();
    let live = |id: &str, op: &str, minutes: i64, info: LiveInfo| {
        let mut e = entry(
            id,
            op,
            minutes,
            None,
            None,
            RecordingStatus::Live { events: 0 },
        );
        e.live = Some(info);
        e
    };
    sessions[0].live = Some(LiveInfo {
        idle_for: Duration::from_secs(75),
        next_limit: Some((Limit::Idle, Duration::from_secs(225))),
        lock: Lock::Open,
    });
    sessions.insert(
        0,
        live(
            "0190-locked",
            "erin",
            35,
            LiveInfo {
                idle_for: Duration::from_secs(400),
                next_limit: Some((Limit::Max, Duration::from_secs(3000))),
                lock: Lock::Session,
            },
        ),
    );
    sessions.insert(
        0,
        live(
            "0190-acct",
            "frank",
            38,
            LiveInfo {
                idle_for: Duration::from_millis(200),
                next_limit: None,
                lock: Lock::Account,
            },
        ),
    );
    // the guard's reauthentication deadline (from the store) when it is the nearest
    sessions.insert(
        0,
        live(
            "0190-reauth",
            "gina",
            39,
            LiveInfo {
                idle_for: Duration::from_secs(12),
                next_limit: Some((Limit::Reauth, Duration::from_secs(250))),
                lock: Lock::Open,
            },
        ),
    );
    let mut a = App::new(Box::new(sessions), SearchIndex::new(None), T0 + 40 * 60_000);
    insta::assert_snapshot!("list_live_columns", render(&a, 120, 11).backend());
    // narrow: the selected live session's state is on the detail line
    press(&mut a, "j");
    press(&mut a, "j");
    insta::assert_snapshot!("list_live_detail", render(&a, 80, 11).backend());
    press(&mut a, "k");
    press(&mut a, "k");
    insta::assert_snapshot!("list_live_detail_reauth", render(&a, 80, 11).backend());
}

#[test]
fn list_filters() {
    let f = fixture();
    let mut a = app(&f);
    press(&mut a, "f");
    press(&mut a, "env:prod end:idle");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.visible().count(), 1);
    insta::assert_snapshot!(render(&a, 80, 8).backend());
    key(&mut a, KeyCode::Esc);
    assert_eq!(a.visible().count(), 4, "Esc clears the filter");
    press(&mut a, "f");
    press(&mut a, "when:now");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.message.as_deref(),
        Some("unknown filter 'when': use op, target, env, end, proto, from, to")
    );
}

fn open_alice(a: &mut App) {
    press(a, "jjj");
    key(a, KeyCode::Enter);
}

#[test]
fn player_at_chosen_moments() {
    let f = fixture();
    let mut a = app(&f);
    open_alice(&mut a);
    insta::assert_snapshot!("player_start", render(&a, 80, 24).backend());
    // → twice: 10 s, after the restart was drawn
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Right);
    let t = render(&a, 80, 24);
    insta::assert_snapshot!("player_10s", t.backend());
    let buf = t.backend().buffer();
    // the prompt is bold green, the status line reversed, at the recorded positions
    assert_eq!(buf[(0, 1)].symbol(), "a");
    assert_eq!(buf[(0, 1)].fg, Color::Indexed(2));
    assert_eq!(buf[(1, 12)].symbol(), "r");
    assert!(
        buf[(1, 12)]
            .modifier
            .contains(ratatui::style::Modifier::REVERSED)
    );
    // next marker, with the input panel
    press(&mut a, "]");
    assert_eq!(
        a.message.as_deref(),
        Some("marker: warning: idle timeout in 10s")
    );
    insta::assert_snapshot!("player_marker", render(&a, 80, 24).backend());
    press(&mut a, "i");
    insta::assert_snapshot!("player_marker_input", render(&a, 80, 24).backend());
    // end, then play from the start at 16x
    press(&mut a, "G");
    insta::assert_snapshot!("player_end", render(&a, 80, 24).backend());
    press(&mut a, "g++++++ ");
    a.tick(Duration::from_millis(125));
    assert!(a.is_playing());
    insta::assert_snapshot!("player_playing_16x", render(&a, 80, 24).backend());
    press(&mut a, "q");
    assert!(a.views.is_empty());
}

#[test]
fn player_is_usable_when_the_window_is_smaller_than_the_recording() {
    let f = fixture();
    let mut a = app(&f);
    open_alice(&mut a);
    press(&mut a, "G");
    insta::assert_snapshot!(render(&a, 40, 10).backend());
}

#[test]
fn sql_session_view_and_statement_detail() {
    let f = fixture();
    let mut a = app(&f);
    press(&mut a, "j");
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("sql_list", render(&a, 80, 14).backend());
    press(&mut a, "j");
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("sql_detail", render(&a, 80, 14).backend());
    key(&mut a, KeyCode::Esc);
    press(&mut a, "]]");
    key(&mut a, KeyCode::Up);
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("sql_redacted", render(&a, 80, 14).backend());
}

#[test]
fn search_finds_output_input_markers_and_sql_and_opens_at_the_moment() {
    let f = fixture();
    let mut a = app(&f);
    search(&mut a, "idle timeout");
    insta::assert_snapshot!("search_idle", render(&a, 80, 10).backend());
    // the second hit is alice's marker at 40 s
    press(&mut a, "jj");
    key(&mut a, KeyCode::Enter);
    let Some(gatehouse_review::app::View::Player(p)) = a.views.last() else {
        panic!("player not open");
    };
    assert_eq!(p.player.position(), Duration::from_secs(40));
    press(&mut a, "q");
    search(&mut a, "systemctl");
    press(&mut a, "q");
    search(&mut a, "42p01");
    insta::assert_snapshot!("search_sql", render(&a, 80, 6).backend());
    key(&mut a, KeyCode::Enter);
    let Some(gatehouse_review::app::View::Sql(s)) = a.views.last() else {
        panic!("sql view not open");
    };
    assert_eq!(s.selected, 3);
}

#[test]
fn help_lists_every_key() {
    let f = fixture();
    let mut a = app(&f);
    press(&mut a, "?");
    insta::assert_snapshot!("help_list", render(&a, 80, 24).backend());
    press(&mut a, "x");
    assert!(!a.help);
    open_alice(&mut a);
    press(&mut a, "?");
    insta::assert_snapshot!("help_player", render(&a, 80, 24).backend());
}

/// Every cell's text, row by row; fails if a cell would send a control character (or a
/// bidi override) to the reviewer's terminal.
fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut text = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let symbol = buf[(x, y)].symbol();
            assert!(
                !symbol.chars().any(gatehouse_review::printable::is_unsafe),
                "cell ({x}, {y}) holds {symbol:?}"
            );
            text.push_str(symbol);
        }
        text.push('\n');
    }
    text
}

#[test]
fn operator_chosen_escapes_are_shown_not_obeyed() {
    let osc52 = "\u{1b}]52;c;cm0gLXJmIH4=\u{7}";
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("sftp remove /tmp/x{osc52}\r\u{1b}[2K");
    let (path, record) = write_cast(
        dir.path(),
        "0190-evil",
        &[
            (0.5, Code::Output, "ok \u{9b}31m\u{202e}txt.exe\r\n"),
            (1.0, Code::Marker, &marker),
            (0.8, Code::Input, "ls\u{9b}\r"),
        ],
    );
    let sql_path = dir.path().join("2025/11/24/0190-esql.sql.jsonl");
    let statement = serde_json::json!({
        "t": 1.0, "type": "statement", "text": format!("select 1{osc52}"),
        "params": [format!("v{osc52}")], "tag": "SELECT 1",
        "error": {"sqlstate": "XX000", "message": format!("bad\r\u{1b}[2K")}
    });
    let log = format!(
        "{}\n{}\n{statement}\n",
        r#"{"gatehouse_sql_log":1,"session":"0190-esql","operator":"dave","target":"orders","database":"orders\u001b[2J"}"#,
        serde_json::json!({"t": 0.5, "type": "marker", "label": format!("m{osc52}")}),
    );
    std::fs::write(&sql_path, log).unwrap();
    let sessions = vec![
        entry(
            "0190-esql",
            "dave",
            1,
            Some("client_closed"),
            Some(sql_path),
            RecordingStatus::Ok { events: 2 },
        ),
        entry(
            "0190-evil",
            "alice",
            0,
            Some("client_closed"),
            Some(path),
            recording_status(&record),
        ),
    ];
    let mut a = App::new(Box::new(sessions), SearchIndex::new(None), T0 + 600_000);
    // the terminal session: the marker in the status line and in the footer message
    press(&mut a, "j");
    key(&mut a, KeyCode::Enter);
    press(&mut a, "]i");
    let text = screen_text(&render(&a, 100, 24));
    assert!(
        text.contains("sftp remove /tmp/x\\x1b]52;c;cm0gLXJmIH4=\\x07\\x0d\\x1b[2K"),
        "{text}"
    );
    assert!(text.contains("ls\\u{9b}⏎"), "{text}");
    press(&mut a, "q");
    // the SQL session: table, statement detail
    press(&mut a, "k");
    key(&mut a, KeyCode::Enter);
    let text = screen_text(&render(&a, 100, 14));
    assert!(text.contains("◆ m\\x1b]52;c;cm0gLXJmIH4=\\x07"), "{text}");
    assert!(text.contains("db orders\\x1b[2J"), "{text}");
    press(&mut a, "j");
    key(&mut a, KeyCode::Enter);
    let text = screen_text(&render(&a, 100, 14));
    assert!(
        text.contains("select 1\\x1b]52;c;cm0gLXJmIH4=\\x07"),
        "{text}"
    );
    assert!(text.contains("$1 = 'v\\x1b]52"), "{text}");
    assert!(text.contains("bad\\x0d\\x1b[2K"), "{text}");
}
