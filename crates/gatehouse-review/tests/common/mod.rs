//! What the TUI test files share: recordings written with the recorder's own writer (real
//! hash chains), and keys and frames through `TestBackend`.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_recorder::file::RecordingFile;
use gatehouse_recorder::format::{Code, Header, event_line};
use gatehouse_review::App;
use gatehouse_store::{RecordingRecord, RecordingState};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

/// 2025-11-24 16:00:00 UTC.
pub const T0: i64 = 1_764_000_000_000;

/// A 60×12 header like the SSH front writes for a pty shell.
pub fn shell_header() -> Header {
    Header {
        width: 60,
        height: 12,
        timestamp: (T0 / 1000) as u64,
        term: Some("xterm".into()),
        title: "alice → web1".into(),
        env: vec![("GATEHOUSE_ENVIRONMENT".into(), "prod".into())],
    }
}

/// Writes a sealed recording with `header` and `events` under `root`.
pub fn write_cast_with(
    root: &Path,
    id: &str,
    header: &Header,
    events: &[(f64, Code, &str)],
) -> (PathBuf, RecordingRecord) {
    let started = UNIX_EPOCH + Duration::from_millis(T0 as u64);
    let mut f = RecordingFile::create(root, id, started, header).unwrap();
    for (t, code, data) in events {
        f.append(&event_line(Duration::from_secs_f64(*t), *code, data))
            .unwrap();
    }
    let sealed = f.seal().unwrap();
    let record = RecordingRecord {
        session_id: id.into(),
        path: sealed.path.display().to_string(),
        state: RecordingState::Sealed,
        size: Some(sealed.size as i64),
        events: Some(sealed.events as i64),
        digest: Some(sealed.digest),
        authentic: true,
        checkpoint: None,
        checkpoint_forged: false,
        started_at: T0,
    };
    (sealed.path, record)
}

pub fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.handle(&Event::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )));
    }
}

pub fn key(app: &mut App, code: KeyCode) {
    app.handle(&Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

pub fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| gatehouse_review::ui::draw(f, app)).unwrap();
    t
}
