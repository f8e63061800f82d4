//! `?`: every key, for the screen the reviewer is on and for all screens.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::app::View;

const EVERYWHERE: &[(&str, &str)] = &[
    ("?", "this help (any key closes it)"),
    ("q Esc", "back / quit"),
    ("j k ↑ ↓ wheel", "move (seek in the player)"),
    ("/", "search output, input and SQL"),
    ("Ctrl-C", "quit"),
];
const LIST: &[(&str, &str)] = &[
    ("Enter", "open the session"),
    ("f", "filter: op: target: env: end: proto: from: to:"),
    ("Esc", "clear the filter"),
    ("r", "refresh (live sessions)"),
    ("g G PgUp PgDn", "first / last / page"),
];
const PLAYER: &[(&str, &str)] = &[
    ("space", "play / pause"),
    ("+ -", "speed 0.25× … 16×"),
    ("← →", "seek 5 s"),
    ("[ ]", "previous / next marker"),
    ("g G End", "start / end (live: follow what happens now)"),
    ("s", "skip idle gaps over 2 s"),
    ("i", "operator input panel"),
];
const SQL: &[(&str, &str)] = &[
    ("Enter", "statement text and parameters"),
    ("[ ]", "previous / next marker"),
    ("g G PgUp PgDn", "first / last / page"),
];
/// Only when the review is not `--read-only`.
const ACTIONS: &[(&str, &str)] = &[
    ("K", "end the live session (asks a reason and y)"),
    ("L", "lock the operator, ending their sessions (y)"),
];
const SEARCH: &[(&str, &str)] = &[("Enter", "open the session at that moment")];

pub fn draw(frame: &mut Frame, area: Rect, view: Option<&View>, actions: bool) {
    let (name, keys) = match view {
        None => ("Session list", LIST),
        Some(View::Player(_)) => ("Player", PLAYER),
        Some(View::Sql(_)) => ("SQL session", SQL),
        Some(View::Search(_)) => ("Search results", SEARCH),
    };
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(Span::styled(name, bold))];
    let key_line = |(k, what): &(&'static str, &'static str)| {
        Line::from(vec![
            Span::styled(format!("  {k:<14}"), bold),
            Span::raw(*what),
        ])
    };
    lines.extend(keys.iter().map(key_line));
    if actions && !matches!(view, Some(View::Search(_))) {
        lines.extend(ACTIONS.iter().map(key_line));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Everywhere", bold)));
    lines.extend(EVERYWHERE.iter().map(key_line));
    let height = (lines.len() as u16 + 2).min(area.height);
    let [popup] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(64.min(area.width))])
        .flex(Flex::Center)
        .areas(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}
