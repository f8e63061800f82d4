//! The session list: newest first, tampered recordings in red, live sessions marked live
//! with their idle time, next limit and lock state.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use crate::app::App;
use crate::catalog::{RecordingStatus, SessionEntry};
use crate::filter::format_time;
use crate::liveinfo::{Limit, LiveInfo, Lock};
use gatehouse_core::format_elapsed;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [title, table_area, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let visible: Vec<&SessionEntry> = app.visible().collect();
    let tampered = visible.iter().filter(|s| s.status.is_tampered()).count();
    let mut spans = vec![Span::raw(format!(
        " Gatehouse review — {} of {} sessions",
        visible.len(),
        app.sessions.len()
    ))];
    if !app.filter_text.is_empty() {
        spans.push(Span::raw(format!(" · filter: {}", app.filter_text)));
    }
    if tampered > 0 {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            format!(" {tampered} TAMPERED "),
            super::tampered_style(),
        ));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(super::title_style()),
        title,
    );

    let wide = area.width >= 110;
    // live sessions' idle time, next limit and lock get columns when there is room
    let live_columns = area.width >= 120;
    let rows: Vec<Row> = visible
        .iter()
        .map(|s| session_row(s, app.now_millis, wide, live_columns))
        .collect();
    let start_width = if wide { 19 } else { 11 };
    let mut widths = vec![
        Constraint::Length(start_width),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Min(8),
        Constraint::Length(11),
    ];
    let mut header = vec![
        "STARTED",
        "OPERATOR",
        "TARGET",
        "ENV",
        "PROTOCOL",
        "LENGTH",
        "END",
        "RECORDING",
    ];
    if live_columns {
        widths.extend([
            Constraint::Length(6),
            // `reauth 59m59s`
            Constraint::Length(13),
            Constraint::Length(7),
        ]);
        header.extend(["IDLE", "NEXT LIMIT", "LOCK"]);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state =
        TableState::default().with_selected((!visible.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(table, table_area, &mut state);

    let text = match app.selected_entry() {
        Some(s) => {
            let status = match &s.status {
                RecordingStatus::None => "no recording".to_owned(),
                other => other.to_string(),
            };
            match &s.live {
                Some(i) => {
                    let [idle, next, lock] = live_cells(i);
                    format!(
                        " {}  idle {idle} · next: {next} · lock: {lock} · {status}",
                        s.id
                    )
                }
                None => format!(" {}  {status}", s.id),
            }
        }
        None if app.sessions.is_empty() => " no sessions recorded yet".into(),
        None => " no session matches the filter (Esc clears it)".into(),
    };
    let style = match app.selected_entry() {
        Some(s) if s.status.is_tampered() => super::tampered_style(),
        _ => Style::new().fg(Color::DarkGray),
    };
    frame.render_widget(Paragraph::new(text).style(style), detail);
}

/// IDLE, NEXT LIMIT and LOCK of a live session.
fn live_cells(i: &LiveInfo) -> [String; 3] {
    let next = match i.next_limit {
        Some((Limit::Idle, d)) => format!("idle {}", format_elapsed(d)),
        Some((Limit::Max, d)) => format!("max {}", format_elapsed(d)),
        Some((Limit::Reauth, d)) => format!("reauth {}", format_elapsed(d)),
        None => "-".into(),
    };
    let lock = match i.lock {
        Lock::Open => "-",
        Lock::Session => "session",
        Lock::Account => "account",
    };
    [format_elapsed(i.idle_for), next, lock.into()]
}

fn session_row(s: &SessionEntry, now_millis: i64, wide: bool, live_columns: bool) -> Row<'static> {
    let started = format_time(s.started_at);
    let started = if wide {
        started
    } else {
        started.get(5..16).unwrap_or_default().to_owned()
    };
    let end = match &s.end_reason {
        None => Cell::from(Span::styled(
            "● live",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        )),
        Some(r) => Cell::from(r.clone()),
    };
    let recording = match &s.status {
        RecordingStatus::Tampered { .. } => "‼ TAMPERED".to_owned(),
        other => other.short().to_owned(),
    };
    let recording_style = match s.status {
        RecordingStatus::Ok { .. } => Style::new().fg(Color::Green),
        RecordingStatus::Live { .. } => Style::new().fg(Color::Green),
        RecordingStatus::Interrupted { .. } => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    };
    let mut cells = vec![
        Cell::from(started),
        Cell::from(s.operator.clone()),
        Cell::from(s.target.clone()),
        Cell::from(s.environment.clone().unwrap_or_else(|| "-".into())),
        Cell::from(s.protocol.clone()),
        Cell::from(format_elapsed(s.duration(now_millis))),
        end,
        Cell::from(recording).style(recording_style),
    ];
    if live_columns {
        let live = s.live.as_ref().map(live_cells).unwrap_or_default();
        let lock_style = match s.live.map(|i| i.lock) {
            Some(Lock::Session | Lock::Account) => Style::new().fg(Color::Red),
            _ => Style::new(),
        };
        let [idle, next, lock] = live;
        cells.extend([
            Cell::from(idle),
            Cell::from(next),
            Cell::from(lock).style(lock_style),
        ]);
    }
    let row = Row::new(cells);
    if s.status.is_tampered() {
        row.style(super::tampered_style())
    } else {
        row
    }
}
