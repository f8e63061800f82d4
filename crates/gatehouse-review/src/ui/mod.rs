//! Drawing the application: one module per screen, all drawing into a `Frame` so that tests
//! render with `TestBackend`.

mod help;
mod list;
mod player;
mod screen;
mod search;
mod sql;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Confirm, PromptKind, View};

pub use screen::ScreenView;

pub fn draw(frame: &mut Frame, app: &App) {
    let [body, footer] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(frame.area());
    match app.views.last() {
        None => list::draw(frame, body, app),
        Some(View::Player(p)) => player::draw(frame, body, p),
        Some(View::Sql(s)) => sql::draw(frame, body, s),
        Some(View::Search(s)) => search::draw(frame, body, app, s),
    }
    draw_footer(frame, footer, app);
    if app.help {
        help::draw(frame, frame.area(), app.views.last(), app.has_actions());
    }
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(c) = &app.confirm {
        let question = match c {
            Confirm::Kill { entry, reason } => format!(
                "y ends it, any other key cancels — end session {} of {} → {} with reason '{reason}'?",
                entry.id, entry.operator, entry.target
            ),
            Confirm::Lock { entry } => format!(
                "y locks, any other key cancels — lock operator {} and end all their live sessions?",
                entry.operator
            ),
        };
        Line::from(Span::styled(
            crate::printable::line(&question).into_owned(),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ))
    } else if let Some(p) = &app.prompt {
        let label = match (p.kind, &app.acting_on) {
            (PromptKind::Search, _) => "search: ".to_owned(),
            (PromptKind::Filter, _) => "filter (op: target: env: end: proto: from: to:): ".into(),
            (PromptKind::KillReason, Some(e)) => format!(
                "end {}'s session {} — reason (the operator sees it; Esc cancels): ",
                e.operator, e.id
            ),
            (PromptKind::KillReason, None) => "reason: ".into(),
        };
        Line::from(vec![
            Span::styled(label, Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(p.text.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ])
    } else if let Some(m) = &app.message {
        // messages quote markers and file names: operator-chosen text
        Line::from(Span::styled(
            crate::printable::line(m).into_owned(),
            Style::new().fg(Color::Yellow),
        ))
    } else {
        let (hints, acts) = match app.views.last() {
            None => (
                "Enter open  / search  f filter  r refresh  ? help  q quit",
                "  K end  L lock",
            ),
            Some(View::Player(_)) => (
                "space play  +/- speed  ←/→ seek  [/] marker  s idle  i input  ? help  q back",
                "  K L",
            ),
            Some(View::Sql(_)) => (
                "Enter statement  [/] marker  g/G  / search  ? help  q back",
                "  K end  L lock",
            ),
            Some(View::Search(_)) => ("Enter open at moment  / new search  ? help  q back", ""),
        };
        let acts = if app.has_actions() { acts } else { "" };
        Line::from(Span::styled(
            format!("{hints}{acts}"),
            Style::new().fg(Color::DarkGray),
        ))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The style that makes a tampered recording impossible to miss.
pub(crate) fn tampered_style() -> Style {
    Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD)
}

pub(crate) fn title_style() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(Color::Cyan)
        .add_modifier(Modifier::BOLD)
}

/// The top line of a session's screen; a tampered recording says so there, in red.
pub(crate) fn session_title(
    frame: &mut Frame,
    area: Rect,
    mut spans: Vec<Span<'static>>,
    status: &crate::catalog::RecordingStatus,
) {
    if status.is_tampered() {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {status} "), tampered_style()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(title_style()), area);
}
