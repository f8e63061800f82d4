//! A PostgreSQL session: the statement log as a table with markers inline, and one
//! statement's full text and parameters.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use crate::app::SqlView;
use crate::filter::{format_position, format_time};
use crate::printable;
use crate::sqllog::{SqlEntry, Statement, TargetLine};

pub fn draw(frame: &mut Frame, area: Rect, view: &SqlView) {
    let [title, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let e = &view.entry;
    let h = &view.log.header;
    let mut spans = vec![Span::raw(format!(
        " {} → {} · {} · db {} · {} · {} statements",
        e.operator,
        e.target,
        e.environment.as_deref().unwrap_or("-"),
        printable::line(h.database.as_deref().unwrap_or("-")),
        format_time(e.started_at),
        view.log.statements().count(),
    ))];
    if h.redact_params {
        spans.push(Span::raw(" · params redacted"));
    }
    super::session_title(frame, title, spans, &e.status);

    let rows: Vec<Row> = view.log.entries.iter().map(entry_row).collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Min(20),
        ],
    )
    .header(
        Row::new(["TIME", "DURATION", "ROWS/TAG", "ERROR", "STATEMENT"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("›");
    let mut state = TableState::default()
        .with_selected((!view.log.entries.is_empty()).then_some(view.selected));
    frame.render_stateful_widget(table, table_area, &mut state);

    if view.detail
        && let Some(SqlEntry::Statement(s)) = view.log.entries.get(view.selected)
    {
        draw_detail(frame, area, s, view.log.target.as_ref());
    }
}

fn entry_row(e: &SqlEntry) -> Row<'static> {
    match e {
        SqlEntry::Marker { at, label } => Row::new(vec![
            Cell::from(format_position(*at)),
            Cell::from(""),
            Cell::from(""),
            Cell::from(""),
            Cell::from(format!("◆ {}", printable::line(label))),
        ])
        .style(Style::new().fg(Color::Yellow)),
        SqlEntry::Statement(s) => {
            let error = s
                .error
                .as_ref()
                .map(|e| printable::line(&e.sqlstate).into_owned())
                .unwrap_or_default();
            let row = Row::new(vec![
                Cell::from(format_position(s.at)),
                Cell::from(
                    s.duration_ms
                        .map(|d| format!("{d:.2}ms"))
                        .unwrap_or_default(),
                ),
                Cell::from(printable::line(s.tag.as_deref().unwrap_or_default()).into_owned()),
                Cell::from(error),
                Cell::from(one_line(&s.text)),
            ]);
            if s.error.is_some() {
                row.style(Style::new().fg(Color::Red))
            } else {
                row
            }
        }
    }
}

fn one_line(text: &str) -> String {
    printable::line(&text.split_whitespace().collect::<Vec<_>>().join(" ")).into_owned()
}

fn draw_detail(frame: &mut Frame, area: Rect, s: &Statement, target: Option<&TargetLine>) {
    let popup = area.inner(ratatui::layout::Margin::new(2, 1));
    frame.render_widget(Clear, popup);
    let mut lines = vec![
        Line::from(
            printable::line(&format!(
                "at {} · {} protocol{} · {} · {}",
                format_position(s.at),
                s.protocol,
                s.name
                    .as_ref()
                    .map(|n| format!(" · prepared \"{n}\""))
                    .unwrap_or_default(),
                s.duration_ms
                    .map(|d| format!("{d:.2} ms"))
                    .unwrap_or_else(|| "-".into()),
                s.tag.as_deref().unwrap_or("no tag"),
            ))
            .into_owned(),
        ),
        Line::from(""),
    ];
    lines.extend(
        s.text
            .lines()
            .map(|l| Line::from(printable::line(l).into_owned())),
    );
    lines.push(Line::from(""));
    match (&s.params, s.redacted) {
        (_, true) => lines.push(Line::from(format!(
            "parameters: {} (redacted by policy)",
            s.param_count.map_or("?".into(), |n| n.to_string())
        ))),
        (Some(params), false) if !params.is_empty() => {
            lines.push(Line::from("parameters:"));
            for (i, p) in params.iter().enumerate() {
                lines.push(Line::from(format!(
                    "  ${} = {}",
                    i + 1,
                    p.as_ref()
                        .map_or("NULL".into(), |v| format!("'{}'", printable::line(v)))
                )));
            }
        }
        _ => lines.push(Line::from("parameters: none")),
    }
    if let Some(e) = &s.error {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            printable::line(&format!("error {}: {}", e.sqlstate, e.message)).into_owned(),
            Style::new().fg(Color::Red),
        )));
    }
    if let Some(t) = target {
        // what the server's own log lines (`%p`) name
        lines.push(Line::from(""));
        lines.push(Line::from(format!(
            "server process {}{}",
            t.backend_pid,
            if t.reused {
                " (a login kept from an earlier session)"
            } else {
                ""
            }
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" statement (Enter/Esc closes) "),
        ),
        popup,
    );
}
