//! `K` (end a live session) and `L` (lock its operator) from the list and the player: the
//! prompts, the confirmation, what reaches the store, and `--read-only` without them.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};

use gatehouse_recorder::format::Code;
use gatehouse_review::catalog::{RecordingStatus, SessionEntry};
use gatehouse_review::{Actions, App, SearchIndex};
use ratatui::crossterm::event::KeyCode;

mod common;
use common::{T0, key, press, render, shell_header, write_cast_with};

/// Remembers what it was asked to do.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Actions for Calls {
    fn kill(&mut self, session: &str, reason: &str) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("kill {session}: {reason}"));
        Ok(())
    }

    fn lock(&mut self, operator: &str) -> anyhow::Result<Vec<String>> {
        self.0.lock().unwrap().push(format!("lock {operator}"));
        Ok(vec!["0190-live".into()])
    }
}

fn session(id: &str, live: bool, recording: Option<std::path::PathBuf>) -> SessionEntry {
    SessionEntry {
        id: id.into(),
        operator: "alice".into(),
        target: "web1".into(),
        environment: Some("prod".into()),
        protocol: "ssh".into(),
        started_at: T0,
        ended_at: (!live).then_some(T0 + 5_000),
        end_reason: (!live).then(|| "client_closed".into()),
        recording,
        status: RecordingStatus::Live { events: 0 },
        live: None,
    }
}

fn footer(app: &App) -> String {
    let t = render(app, 120, 8);
    let buf = t.backend().buffer();
    (0..120).map(|x| buf[(x, 7)].symbol()).collect::<String>()
}

#[test]
fn k_asks_a_reason_and_a_confirmation_then_ends_the_session() {
    let calls = Calls::default();
    let sessions = vec![
        session("0190-live", true, None),
        session("0190-old", false, None),
    ];
    let mut a = App::new(Box::new(sessions), SearchIndex::new(None), T0 + 60_000)
        .with_actions(Box::new(calls.clone()));
    assert!(footer(&a).contains("K end  L lock"), "{}", footer(&a));
    press(&mut a, "K");
    press(&mut a, "disk full");
    insta::assert_snapshot!("kill_reason_prompt", render(&a, 120, 8).backend());
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("kill_confirmation", render(&a, 120, 8).backend());
    press(&mut a, "y");
    assert_eq!(*calls.0.lock().unwrap(), ["kill 0190-live: disk full"]);
    assert!(
        footer(&a).contains("will end within 2 seconds"),
        "{}",
        footer(&a)
    );

    // anything but y cancels; an empty reason is refused; an ended session cannot be ended
    press(&mut a, "Kx");
    key(&mut a, KeyCode::Enter);
    press(&mut a, "n");
    assert_eq!(a.message.as_deref(), Some("cancelled"));
    press(&mut a, "K");
    key(&mut a, KeyCode::Enter);
    assert!(a.message.as_deref().unwrap().contains("give a reason"));
    press(&mut a, "jK");
    assert_eq!(
        a.message.as_deref(),
        Some("session 0190-old has already ended")
    );
    assert_eq!(calls.0.lock().unwrap().len(), 1);
}

#[test]
fn l_locks_the_operator_from_the_player() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_cast_with(
        dir.path(),
        "0190-live",
        &shell_header(),
        &[(0.2, Code::Output, "$ ")],
    );
    let calls = Calls::default();
    let e = session("0190-live", true, Some(path));
    let mut a = App::new(
        Box::new(vec![e.clone()]),
        SearchIndex::new(None),
        T0 + 60_000,
    )
    .with_actions(Box::new(calls.clone()));
    a.open(e, None);
    press(&mut a, "L");
    assert!(footer(&a).contains("lock operator alice"), "{}", footer(&a));
    press(&mut a, "y");
    assert_eq!(*calls.0.lock().unwrap(), ["lock alice"]);
    assert_eq!(
        a.message.as_deref(),
        Some("operator alice locked; 1 live session will end within 2 seconds")
    );
    assert_eq!(a.views.len(), 1, "the player stays open");
}

#[test]
fn a_read_only_review_has_no_actions() {
    let mut a = App::new(
        Box::new(vec![session("0190-live", true, None)]),
        SearchIndex::new(None),
        T0 + 60_000,
    );
    assert!(!footer(&a).contains("K end"), "{}", footer(&a));
    press(&mut a, "KL");
    assert!(a.prompt.is_none() && a.confirm.is_none());
    press(&mut a, "?");
    let t = render(&a, 120, 30);
    assert!(!t.backend().to_string().contains("lock the operator"));
}
