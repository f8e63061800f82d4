//! Search results: the moments that match, newest session first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use crate::app::{App, SearchView};
use crate::filter::{format_position, format_time};

pub fn draw(frame: &mut Frame, area: Rect, app: &App, view: &SearchView) {
    let [title, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let r = &view.results;
    let mut text = format!(
        " {} moment(s) in {} session(s) for \"{}\" · {} ms",
        r.hits.len() + r.more,
        r.sessions,
        view.query,
        view.took.as_millis()
    );
    if r.more > 0 {
        text.push_str(&format!(" · {} not listed", r.more));
    }
    if !r.errors.is_empty() {
        text.push_str(&format!(" · {} unreadable", r.errors.len()));
    }
    frame.render_widget(
        Paragraph::new(Line::from(text)).style(super::title_style()),
        title,
    );
    let rows: Vec<Row> = r
        .hits
        .iter()
        .map(|h| {
            let s = app.sessions.iter().find(|s| s.id == h.session);
            let who = s.map_or_else(
                || h.session.clone(),
                |s| format!("{}→{}", s.operator, s.target),
            );
            let started = s
                .map(|s| format_time(s.started_at))
                .and_then(|t| t.get(5..16).map(str::to_owned))
                .unwrap_or_default();
            let row = Row::new(vec![
                Cell::from(started),
                Cell::from(who),
                Cell::from(format_position(h.at)),
                Cell::from(h.kind.label()),
                Cell::from(crate::printable::line(&h.line).into_owned()),
            ]);
            match s {
                Some(s) if s.status.is_tampered() => row.style(super::tampered_style()),
                _ => row,
            }
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(14),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(["STARTED", "SESSION", "AT", "IN", "MATCH"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("›");
    let mut state =
        TableState::default().with_selected((!r.hits.is_empty()).then_some(view.selected));
    frame.render_stateful_widget(table, table_area, &mut state);
}
