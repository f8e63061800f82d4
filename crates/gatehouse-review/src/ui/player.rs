//! The terminal player: the emulator screen at the recorded size, a timeline with the
//! enforcement markers, and the operator's input stream on demand.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::app::PlayerView;
use crate::cast::EventKind;
use crate::filter::{format_position, format_time};
use crate::printable;
use crate::ui::ScreenView;

/// Lines of the input panel, border included.
const INPUT_PANEL: u16 = 7;

pub fn draw(frame: &mut Frame, area: Rect, view: &PlayerView) {
    let p = &view.player;
    let input_height = if view.show_input { INPUT_PANEL } else { 0 };
    let [title, screen_area, input_area, timeline, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(input_height),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    let e = &view.entry;
    let (rows, cols) = p.screen().size();
    let (rows, cols) = (rows.get(), cols.get());
    let mut spans = vec![Span::raw(format!(
        " {} → {} · {} · {} · {} · {cols}×{rows}",
        e.operator,
        e.target,
        e.environment.as_deref().unwrap_or("-"),
        e.protocol,
        format_time(e.started_at),
    ))];
    // an sftp/scp session has no terminal: its transfer log is what there is to see
    let terminal = p.cast().events.iter().any(|e| e.kind == EventKind::Output);
    if terminal && (cols > screen_area.width || rows > screen_area.height) {
        spans.push(Span::raw(format!(
            " (window shows {}×{})",
            cols.min(screen_area.width),
            rows.min(screen_area.height)
        )));
    }
    super::session_title(frame, title, spans, &e.status);

    if !terminal {
        draw_marker_log(frame, screen_area, view);
        draw_timeline(frame, timeline, view);
        draw_status(frame, status, view);
        return;
    }
    let width = screen_area.width.min(cols);
    let height = screen_area.height.min(rows);
    let term = Rect::new(screen_area.x, screen_area.y, width, height);
    frame.render_widget(ScreenView::new(p.screen()), term);
    // show where the recorded terminal ends
    if width < screen_area.width {
        let edge = Rect::new(screen_area.x + width, screen_area.y, 1, height);
        frame.render_widget(
            Paragraph::new(vec![Line::from("│"); usize::from(height)])
                .style(Style::new().fg(Color::DarkGray)),
            edge,
        );
    }
    if height < screen_area.height {
        let edge = Rect::new(screen_area.x, screen_area.y + height, width, 1);
        frame.render_widget(
            Paragraph::new("─".repeat(usize::from(width))).style(Style::new().fg(Color::DarkGray)),
            edge,
        );
    }

    if view.show_input {
        draw_input(frame, input_area, view);
    }
    draw_timeline(frame, timeline, view);
    draw_status(frame, status, view);
}

/// The markers up to the position, one per line, newest at the bottom.
fn draw_marker_log(frame: &mut Frame, area: Rect, view: &PlayerView) {
    let p = &view.player;
    let lines: Vec<Line> = p
        .cast()
        .markers()
        .filter(|(t, _)| *t <= p.position())
        .map(|(t, label)| {
            Line::from(vec![
                Span::styled(
                    format!(" {} ", format_position(t)),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::styled(
                    printable::line(label).into_owned(),
                    Style::new().fg(marker_color(label)),
                ),
            ])
        })
        .collect();
    let shown = usize::from(area.height);
    let lines = lines[lines.len().saturating_sub(shown)..].to_vec();
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_status(frame: &mut Frame, status: Rect, view: &PlayerView) {
    let p = &view.player;
    let state = if p.following {
        "● following live"
    } else if p.playing {
        "▶ playing"
    } else {
        "⏸ paused"
    };
    let mut spans = vec![
        Span::styled(
            format!(" {state} "),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("{}×", p.speed())),
    ];
    if p.idle_skip {
        spans.push(Span::raw("  idle-skip"));
    }
    if let Some((at, label)) = p.current_marker() {
        spans.push(Span::styled(
            format!("  ◆ {} {}", format_position(at), printable::line(label)),
            Style::new().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), status);
}

fn marker_color(label: &str) -> Color {
    if label.starts_with("session end") || label.contains("kill") || label.contains("lock") {
        Color::Red
    } else if label.starts_with("warning") || label.contains("reauth") {
        Color::Yellow
    } else {
        Color::Blue
    }
}

fn draw_timeline(frame: &mut Frame, area: Rect, view: &PlayerView) {
    let p = &view.player;
    let pos = format_position(p.position());
    let total = format_position(p.duration());
    let label = format!(" {pos} / {total} ");
    let bar_width = usize::from(area.width).saturating_sub(label.chars().count() + 1);
    if bar_width == 0 {
        frame.render_widget(Paragraph::new(label), area);
        return;
    }
    let at = |t: Duration| -> usize {
        let d = p.duration().as_secs_f64();
        if d <= 0.0 {
            return 0;
        }
        ((t.as_secs_f64() / d) * (bar_width - 1) as f64).round() as usize
    };
    let here = at(p.position());
    let mut cells: Vec<(char, Style)> = (0..bar_width)
        .map(|i| {
            if i < here {
                ('━', Style::new().fg(Color::Cyan))
            } else {
                ('─', Style::new().fg(Color::DarkGray))
            }
        })
        .collect();
    for (t, label) in p.cast().markers() {
        if let Some(c) = cells.get_mut(at(t)) {
            *c = ('◆', Style::new().fg(marker_color(label)));
        }
    }
    if let Some(c) = cells.get_mut(here) {
        *c = (
            '●',
            Style::new().fg(Color::White).add_modifier(Modifier::BOLD),
        );
    }
    let mut spans = vec![Span::raw(label)];
    spans.extend(
        cells
            .into_iter()
            .map(|(c, s)| Span::styled(c.to_string(), s)),
    );
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Keys as a reader sees them: Enter as ⏎, control characters as ^X, escape sequences of
/// arrow keys by name.
pub fn show_keys(keys: &str) -> String {
    let mut out = String::new();
    let mut rest = keys;
    while let Some(c) = rest.chars().next() {
        let named = [
            ("\u{1b}[A", "↑"),
            ("\u{1b}[B", "↓"),
            ("\u{1b}[C", "→"),
            ("\u{1b}[D", "←"),
            ("\u{1b}OA", "↑"),
            ("\u{1b}OB", "↓"),
            ("\u{1b}OC", "→"),
            ("\u{1b}OD", "←"),
        ]
        .iter()
        .find(|(seq, _)| rest.starts_with(seq));
        if let Some((seq, name)) = named {
            out.push_str(name);
            rest = &rest[seq.len()..];
            continue;
        }
        match c {
            '\r' | '\n' => out.push('⏎'),
            '\u{7f}' => out.push('⌫'),
            '\t' => out.push('⇥'),
            '\u{1b}' => out.push_str("^["),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from_u32(c as u32 + 0x40).unwrap_or('?'));
            }
            // C1 controls and bidi overrides, escaped like every operator-chosen text
            c => out.push_str(&printable::line(c.encode_utf8(&mut [0; 4]))),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn draw_input(frame: &mut Frame, area: Rect, view: &PlayerView) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(" operator input ")
        .border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // group keystrokes into lines: one per Enter
    let mut lines: Vec<(Duration, String)> = vec![];
    let mut open = false;
    for (at, keys) in view.player.input_until_now() {
        if !open {
            lines.push((at, String::new()));
        }
        if let Some((_, text)) = lines.last_mut() {
            text.push_str(&show_keys(keys));
        }
        open = !keys.ends_with('\r') && !keys.ends_with('\n');
    }
    let shown = usize::from(inner.height);
    let lines: Vec<Line> = lines[lines.len().saturating_sub(shown)..]
        .iter()
        .map(|(at, text)| {
            Line::from(vec![
                Span::styled(
                    format!("{} ", format_position(*at)),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::raw(text.clone()),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_readable() {
        assert_eq!(show_keys("ls -l\r"), "ls -l⏎");
        assert_eq!(show_keys("\u{1b}[A\u{3}x\u{7f}"), "↑^Cx⌫");
        assert_eq!(show_keys("\u{1b}:wq"), "^[:wq");
        assert_eq!(show_keys("a\u{9b}b\u{202e}c"), "a\\u{9b}b\\u{202e}c");
    }
}
