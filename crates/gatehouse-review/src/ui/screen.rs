//! A `vt100` screen as a ratatui widget: each emulator cell copied into the buffer with its
//! colours and attributes (our own small widget: `tui-term` pins an older `vt100`).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

pub struct ScreenView<'a> {
    screen: &'a vt100::Screen,
}

impl<'a> ScreenView<'a> {
    pub fn new(screen: &'a vt100::Screen) -> ScreenView<'a> {
        ScreenView { screen }
    }

    /// The first emulator row shown in `height` rows: the top, unless the cursor would be
    /// below the window (a recording taller than the reviewer's terminal).
    pub fn first_row(screen: &vt100::Screen, height: u16) -> u16 {
        let (cursor_row, _) = screen.cursor_position();
        (cursor_row + 1).saturating_sub(height)
    }
}

fn color(c: vt100::Color) -> Color {
    match c {
        vt100::Color::Default => Color::Reset,
        vt100::Color::Idx(i) => Color::Indexed(i),
        vt100::Color::Rgb(r, g, b) => Color::Rgb(r, g, b),
    }
}

pub fn cell_style(cell: &vt100::Cell) -> Style {
    let mut style = Style::new()
        .fg(color(cell.fgcolor()))
        .bg(color(cell.bgcolor()));
    for (on, m) in [
        (cell.bold(), Modifier::BOLD),
        (cell.dim(), Modifier::DIM),
        (cell.italic(), Modifier::ITALIC),
        (cell.underline(), Modifier::UNDERLINED),
        (cell.inverse(), Modifier::REVERSED),
    ] {
        if on {
            style = style.add_modifier(m);
        }
    }
    style
}

impl Widget for ScreenView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (rows, cols) = self.screen.size();
        let height = area.height.min(rows.get());
        let width = area.width.min(cols.get());
        let top = Self::first_row(self.screen, height);
        let (cursor_row, cursor_col) = self.screen.cursor_position();
        for y in 0..height {
            for x in 0..width {
                let Some(cell) = self.screen.cell(top + y, x) else {
                    continue;
                };
                if cell.is_wide_continuation() {
                    continue;
                }
                let mut style = cell_style(cell);
                if !self.screen.hide_cursor() && top + y == cursor_row && x == cursor_col {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                // the emulator keeps what it printed, C1 controls and bidi overrides included:
                // a cell is drawn into the reviewer's terminal as it is, so those never are
                let symbol = if !cell.has_contents() {
                    " "
                } else if cell.contents().chars().any(crate::printable::is_unsafe) {
                    "\u{fffd}"
                } else {
                    cell.contents()
                };
                buf[(area.x + x, area.y + y)]
                    .set_symbol(symbol)
                    .set_style(style);
            }
        }
    }
}
