//! The player's frames for each kind of SSH session a reviewer meets: a pty shell, an exec
//! without a pty (bare `\n` line ends), an sftp/scp session (a transfer log, no terminal),
//! several channels of one connection (a ControlMaster), and recordings whose size differs
//! from the reviewer's window (including old 0×0 headers); and live sessions followed as
//! they grow (a terminal recording, a statement log).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use gatehouse_recorder::format::{Code, Header};
use gatehouse_review::catalog::{SessionEntry, recording_status};
use gatehouse_review::{App, SearchIndex};
use ratatui::crossterm::event::KeyCode;

mod common;
use common::{T0, key, press, render, shell_header, write_cast_with};

/// A header as the SSH front writes it; `pty` `None` is a recording made before the front
/// wrote `GATEHOUSE_PTY`.
fn header(width: u32, height: u32, first: &str, pty: Option<bool>) -> Header {
    let mut h = shell_header();
    h.width = width;
    h.height = height;
    h.env.push(("GATEHOUSE_FIRST_CHANNEL".into(), first.into()));
    if let Some(pty) = pty {
        h.env.push((
            "GATEHOUSE_PTY".into(),
            if pty { "yes" } else { "no" }.into(),
        ));
    }
    if pty != Some(true) {
        h.term = None; // the front writes TERM only for a pty
    }
    h
}

struct Opened {
    _dir: tempfile::TempDir,
    app: App,
}

/// The app with the recording open in the player.
fn open(header: &Header, events: &[(f64, Code, &str)]) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let (path, record) = write_cast_with(dir.path(), "0190-s", header, events);
    let e = entry(path, recording_status(&record));
    let mut app = App::new(
        Box::new(vec![e.clone()]),
        SearchIndex::new(None),
        T0 + 60_000,
    );
    app.open(e, None);
    assert!(app.message.is_none(), "{:?}", app.message);
    Opened { _dir: dir, app }
}

fn entry(path: PathBuf, status: gatehouse_review::RecordingStatus) -> SessionEntry {
    SessionEntry {
        id: "0190-s".into(),
        operator: "alice".into(),
        target: "web1".into(),
        environment: Some("prod".into()),
        protocol: "ssh".into(),
        started_at: T0,
        ended_at: Some(T0 + 30_000),
        end_reason: Some("client_closed".into()),
        recording: Some(path),
        status,
        live: None,
    }
}

/// The app with `e`, made live, open (followed).
fn open_live(mut e: SessionEntry) -> App {
    e.ended_at = None;
    e.end_reason = None;
    let mut app = App::new(
        Box::new(vec![e.clone()]),
        SearchIndex::new(None),
        T0 + 60_000,
    );
    app.open(e, None);
    app
}

/// Rows of the rendered screen, trailing blanks (and the recording's right edge) trimmed.
fn rows(app: &App, w: u16, h: u16) -> Vec<String> {
    let t = render(app, w, h);
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end_matches([' ', '│'])
                .to_owned()
        })
        .collect()
}

const LISTING: &str = "hosts\npasswd\nshadow\n";

fn exec_events() -> Vec<(f64, Code, &'static str)> {
    vec![
        (0.1, Code::Marker, "channel: exec: ls /etc"),
        (0.3, Code::Output, LISTING),
        (0.4, Code::Marker, "session end: client_closed"),
    ]
}

#[test]
fn pty_session_keeps_a_bare_line_feed_a_cursor_move() {
    // a full-screen program in a pty moves the cursor down with a bare \n: not a new line
    let mut o = open(
        &header(60, 12, "shell", Some(true)),
        &[
            (0.1, Code::Marker, "channel: shell"),
            (0.2, Code::Output, "$ top\r\nPID CMD\n1   init"),
        ],
    );
    press(&mut o.app, "G");
    let r = rows(&o.app, 80, 16);
    assert_eq!(r[2], "PID CMD", "{r:#?}");
    assert_eq!(r[3], "       1   init", "{r:#?}");
    insta::assert_snapshot!(render(&o.app, 80, 16).backend());
}

#[test]
fn exec_without_a_pty_shows_lines_as_the_operator_saw_them() {
    let mut o = open(
        &header(80, 24, "exec: ls /etc", Some(false)),
        &exec_events(),
    );
    press(&mut o.app, "G");
    let r = rows(&o.app, 80, 12);
    assert_eq!(&r[1..4], ["hosts", "passwd", "shadow"], "{r:#?}");
    insta::assert_snapshot!(render(&o.app, 80, 12).backend());
}

#[test]
fn old_recordings_without_pty_info_are_judged_by_their_header() {
    // before GATEHOUSE_PTY: no TERM means the first channel had no pty request
    let mut old = open(&header(80, 24, "exec: ls /etc", None), &exec_events());
    press(&mut old.app, "G");
    assert_eq!(&rows(&old.app, 80, 12)[1..4], ["hosts", "passwd", "shadow"]);
    // a recording from elsewhere (no Gatehouse metadata) is shown as written
    let mut foreign_header = shell_header();
    foreign_header.term = None;
    let mut foreign = open(&foreign_header, &exec_events());
    press(&mut foreign.app, "G");
    let r = rows(&foreign.app, 80, 12);
    assert_eq!(&r[1..4], ["hosts", "     passwd", "           shadow"]);
}

#[test]
fn sftp_session_shows_its_transfer_log() {
    let mut o = open(
        &header(80, 24, "subsystem: sftp", Some(false)),
        &[
            (0.1, Code::Marker, "channel: subsystem: sftp"),
            (
                1.0,
                Code::Marker,
                "sftp upload /tmp/report.csv (1048576 bytes)",
            ),
            (2.0, Code::Marker, "sftp fsetstat /tmp/report.csv (size)"),
            (3.0, Code::Marker, "sftp remove /tmp/old.csv"),
            (4.0, Code::Marker, "session end: client_closed"),
        ],
    );
    press(&mut o.app, "]]");
    assert_eq!(
        o.app.message.as_deref(),
        Some("marker: sftp upload /tmp/report.csv (1048576 bytes)")
    );
    insta::assert_snapshot!(render(&o.app, 80, 14).backend());
}

#[test]
fn several_channels_keep_each_channels_terminal_mode() {
    // a ControlMaster: a pty shell, then `ssh -S … uname -a` (no pty) on the same
    // connection, then the shell draws again with a bare \n cursor move
    let mut o = open(
        &header(60, 12, "shell", Some(true)),
        &[
            (0.1, Code::Marker, "channel: shell"),
            (0.2, Code::Output, "$ "),
            (1.0, Code::Marker, "channel: exec: uname -a"),
            (1.1, Code::TerminalMode, "no-pty"),
            (1.2, Code::Output, "Linux web1\nx86_64\n"),
            (2.0, Code::TerminalMode, "pty"),
            (2.1, Code::Output, "ab\ncd"),
        ],
    );
    press(&mut o.app, "G");
    let r = rows(&o.app, 80, 16);
    assert_eq!(&r[1..4], ["$ Linux web1", "x86_64", "ab"], "{r:#?}");
    assert_eq!(r[4], "  cd", "{r:#?}");
    insta::assert_snapshot!(render(&o.app, 80, 16).backend());
}

#[test]
fn recording_smaller_than_the_window_shows_its_edges() {
    let mut o = open(
        &header(30, 5, "shell", Some(true)),
        &[(0.2, Code::Output, "small terminal\r\n$ ")],
    );
    press(&mut o.app, "G");
    insta::assert_snapshot!(render(&o.app, 80, 12).backend());
}

#[test]
fn an_old_zero_by_zero_recording_plays_at_80_by_24() {
    // `ssh -tt` with stdin not a terminal asked for a 0×0 pty; old recordings say so
    let mut o = open(
        &header(0, 0, "shell", Some(true)),
        &[(0.2, Code::Output, "still readable\r\n$ ")],
    );
    press(&mut o.app, "G");
    let Some(gatehouse_review::app::View::Player(p)) = o.app.views.last() else {
        panic!("player not open");
    };
    let (r, c) = p.player.screen().size();
    assert_eq!((c.get(), r.get()), (80, 24));
    let r = rows(&o.app, 100, 30);
    assert!(r[0].contains("80×24"), "{r:#?}");
    assert_eq!(r[1], "still readable");
    key(&mut o.app, KeyCode::Char('q'));
    assert!(o.app.views.is_empty());
}

#[test]
fn a_live_recording_is_followed_like_tail_f() {
    use std::io::Write;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (path, record) = write_cast_with(
        dir.path(),
        "0190-s",
        &header(60, 12, "shell", Some(true)),
        &[
            (0.1, Code::Marker, "channel: shell"),
            (0.2, Code::Output, "$ "),
        ],
    );
    let mut app = open_live(entry(path.clone(), recording_status(&record)));
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    };
    // a line still being written waits; complete ones show at the next look
    append(
        "[1.0, \"o\", \"echo hi\\r\\nhi\\r\\n$ \"]\n[1.5, \"m\", \"warning: idle\"]\n[2.0, \"o\", \"cut",
    );
    app.tick(gatehouse_review::follow::POLL);
    let r = rows(&app, 80, 16);
    assert_eq!(&r[1..3], ["$ echo hi", "hi"], "{r:#?}");
    assert!(
        r[14].contains("following live") && r[14].contains("warning: idle"),
        "{r:#?}"
    );
    insta::assert_snapshot!(render(&app, 80, 16).backend());
    // moving away stops following; G follows again
    press(&mut app, "g");
    append(" short\"]\n");
    app.tick(gatehouse_review::follow::POLL);
    assert_eq!(rows(&app, 80, 16)[1], "", "not following");
    press(&mut app, "G");
    assert_eq!(rows(&app, 80, 16)[3], "$ cut short");
    // playing from the start reaches now and keeps following
    press(&mut app, "g ");
    app.tick(Duration::from_secs(5));
    assert!(rows(&app, 80, 16)[14].contains("following live"));
}

#[test]
fn a_live_sql_sessions_statement_list_grows() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0190-q.sql.jsonl");
    let mut lines = include_str!("fixtures/orders.sql.jsonl").lines();
    let head = lines.next().unwrap();
    let first = lines.next().unwrap();
    std::fs::write(&path, format!("{head}\n{first}\n")).unwrap();
    let mut e = entry(
        path.clone(),
        gatehouse_review::RecordingStatus::Live { events: 1 },
    );
    e.protocol = "postgres".into();
    let mut app = open_live(e);
    let statements = |app: &App| match app.views.last() {
        Some(gatehouse_review::app::View::Sql(s)) => (s.log.entries.len(), s.selected),
        _ => panic!("sql view not open"),
    };
    assert_eq!(statements(&app), (1, 0));
    let rest: String = lines.map(|l| format!("{l}\n")).collect();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(rest.as_bytes()).unwrap();
    app.tick(gatehouse_review::follow::POLL);
    assert_eq!(
        statements(&app),
        (6, 5),
        "grown, and the selection stays at the newest"
    );
    let text = rows(&app, 80, 14).join("\n");
    assert!(text.contains("update orders"), "{text}");
}
