//! The terminal loop: crossterm events in, frames out. Everything it calls is tested
//! without a terminal; this file only owns the terminal and the clock.

use std::time::{Duration, Instant};

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;

use crate::app::App;

/// How often the list is reloaded so live sessions move on.
const REFRESH: Duration = Duration::from_secs(2);
/// Frame interval while a recording plays.
const FRAME: Duration = Duration::from_millis(33);

/// Runs the application until the reviewer quits. Restores the terminal on the way out,
/// also on error (and ratatui's panic hook does on a panic).
pub fn run(app: &mut App, now_millis: impl Fn() -> i64) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()
        .map_err(|e| anyhow::anyhow!("gatehouse review needs a terminal: {e}"))?;
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    let result = event_loop(&mut terminal, app, now_millis);
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    now_millis: impl Fn() -> i64,
) -> anyhow::Result<()> {
    let mut last_tick = Instant::now();
    let mut last_refresh = Instant::now();
    while !app.quit {
        terminal.draw(|f| crate::ui::draw(f, app))?;
        let wait = if app.is_playing() {
            FRAME
        } else if app.is_following() {
            crate::follow::POLL
        } else {
            REFRESH / 4
        };
        if event::poll(wait)? {
            app.handle(&event::read()?);
        }
        let now = Instant::now();
        app.tick(now - last_tick);
        last_tick = now;
        if app.views.is_empty()
            && app.prompt.is_none()
            && app.confirm.is_none()
            && last_refresh.elapsed() >= REFRESH
        {
            app.refresh(now_millis());
            last_refresh = now;
        }
    }
    Ok(())
}
