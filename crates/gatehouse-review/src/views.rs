//! Opening a session's recording as a view (player or SQL list, followed while live) and
//! what each key does inside a view; the list and prompts are `app.rs`.

use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use crate::app::{PlayerView, SqlView, View};
use crate::cast::Cast;
use crate::catalog::{RecordingKind, SessionEntry};
use crate::follow::{Tail, complete_lines};
use crate::player::{Player, SEEK_STEP};
use crate::sqllog::{SqlEntry, SqlLog};

pub(crate) fn open_view(entry: SessionEntry, at: Option<Duration>) -> Result<View, String> {
    let Some(path) = entry.recording.clone() else {
        return Err(format!("session {} has no recording", entry.id));
    };
    let mut bytes =
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // a live session's recording is read in complete lines, then followed
    let live = entry.ended_at.is_none();
    if live {
        bytes.truncate(complete_lines(&bytes).len());
    }
    let tail = live.then(|| Tail::new(path.clone(), bytes.len()));
    match RecordingKind::of_path(&path) {
        RecordingKind::Terminal => {
            let cast = Cast::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut player = Player::new(Arc::new(cast));
            match at {
                Some(at) => player.seek(at),
                None if live => player.follow(),
                None => {}
            }
            Ok(View::Player(Box::new(PlayerView {
                entry,
                player,
                show_input: false,
                tail,
            })))
        }
        RecordingKind::Sql => {
            let log = SqlLog::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let last = log.entries.len().saturating_sub(1);
            let selected = at.map_or(if live { last } else { 0 }, |t| {
                log.entries
                    .iter()
                    .position(|e| e.at() >= t)
                    .unwrap_or(log.entries.len().saturating_sub(1))
            });
            Ok(View::Sql(Box::new(SqlView {
                entry,
                log,
                selected,
                detail: false,
                tail,
            })))
        }
    }
}

/// Moves a selection among `n` rows for j/k/arrows/PgUp/PgDn/g/G; false for other keys.
pub(crate) fn move_selection(selected: &mut usize, n: usize, code: KeyCode) -> bool {
    let last = n.saturating_sub(1);
    *selected = match code {
        KeyCode::Char('j') | KeyCode::Down => (*selected + 1).min(last),
        KeyCode::Char('k') | KeyCode::Up => selected.saturating_sub(1),
        KeyCode::PageDown => (*selected + 10).min(last),
        KeyCode::PageUp => selected.saturating_sub(10),
        KeyCode::Char('g') | KeyCode::Home => 0,
        KeyCode::Char('G') | KeyCode::End => last,
        _ => return false,
    };
    true
}

/// Returns false when the view should close.
pub(crate) fn player_key(p: &mut PlayerView, k: &KeyEvent, message: &mut Option<String>) -> bool {
    let player = &mut p.player;
    let stays = matches!(
        k.code,
        KeyCode::Char('+' | '=' | '-' | '_' | 's' | 'i' | 'G') | KeyCode::End
    );
    if !stays {
        player.following = false; // the reviewer moved away from now
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return false,
        KeyCode::Char(' ') => player.toggle_play(),
        KeyCode::Char('+' | '=') => player.faster(),
        KeyCode::Char('-' | '_') => player.slower(),
        KeyCode::Right | KeyCode::Char('l') | KeyCode::Down | KeyCode::Char('j') => {
            player.seek_by(true, SEEK_STEP);
        }
        KeyCode::Left | KeyCode::Char('h') | KeyCode::Up | KeyCode::Char('k') => {
            player.seek_by(false, SEEK_STEP);
        }
        KeyCode::Char(']') => {
            *message = Some(match player.next_marker() {
                Some(l) => format!("marker: {l}"),
                None => "no later marker".into(),
            });
        }
        KeyCode::Char('[') => {
            *message = Some(match player.prev_marker() {
                Some(l) => format!("marker: {l}"),
                None => "no earlier marker".into(),
            });
        }
        KeyCode::Char('g') | KeyCode::Home => player.seek(Duration::ZERO),
        KeyCode::Char('G') | KeyCode::End if p.tail.is_some() => player.follow(),
        KeyCode::Char('G') | KeyCode::End => player.seek(player.duration()),
        KeyCode::Char('s') => player.idle_skip = !player.idle_skip,
        KeyCode::Char('i') => p.show_input = !p.show_input,
        _ => {}
    }
    true
}

/// Returns false when the view should close.
pub(crate) fn sql_key(s: &mut SqlView, k: &KeyEvent) -> bool {
    let n = s.log.entries.len();
    if s.detail {
        if matches!(k.code, KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter) {
            s.detail = false;
        }
        return true;
    }
    let marker = |i: &usize| matches!(s.log.entries[*i], SqlEntry::Marker { .. });
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return false,
        code if move_selection(&mut s.selected, n, code) => {}
        KeyCode::Char(']') => {
            if let Some(i) = (s.selected + 1..n).find(marker) {
                s.selected = i;
            }
        }
        KeyCode::Char('[') => {
            if let Some(i) = (0..s.selected).rev().find(marker) {
                s.selected = i;
            }
        }
        KeyCode::Enter => {
            s.detail = matches!(s.log.entries.get(s.selected), Some(SqlEntry::Statement(_)));
        }
        _ => {}
    }
    true
}
