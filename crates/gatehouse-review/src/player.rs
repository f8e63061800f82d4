//! The terminal player: a recording, a position in it, and the emulator screen at that
//! position.
//!
//! Time is an input: the caller says how much wall time passed ([`Player::tick`]); the player
//! never reads a clock. Seeking restores the nearest emulator snapshot at or before the
//! target and replays only from there, so a jump anywhere in a 100 MiB recording costs at
//! most [`SNAPSHOT_EVERY`] bytes of emulation.

use std::sync::Arc;
use std::time::Duration;

use crate::cast::{Cast, EventKind};

/// Output bytes between two emulator snapshots.
pub const SNAPSHOT_EVERY: usize = 256 * 1024;

/// Playback speeds, slowest first.
pub const SPEEDS: [f64; 7] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];

/// Idle gaps longer than this are cut to it when idle skipping is on.
pub const IDLE_LIMIT: Duration = Duration::from_secs(2);

/// Seek step of ←/→.
pub const SEEK_STEP: Duration = Duration::from_secs(5);

struct Snapshot {
    /// Events applied to reach this screen.
    applied: usize,
    screen: vt100::Screen,
}

/// The snapshot pass: an emulator walked once over every event, taking snapshots; kept so
/// a live recording's new events continue it.
struct Walk {
    parser: vt100::Parser,
    /// Events applied to `parser`.
    applied: usize,
    /// Output bytes since the last snapshot.
    since: usize,
    /// The emulator is between escape sequences.
    ground: bool,
}

pub struct Player {
    cast: Arc<Cast>,
    parser: vt100::Parser,
    /// Events applied to `parser`.
    applied: usize,
    snapshots: Vec<Snapshot>,
    walk: Walk,
    position: Duration,
    pub playing: bool,
    speed: usize,
    pub idle_skip: bool,
    /// Stays at the end as a live recording grows (`tail -f`); seeking away stops it,
    /// `G`/End starts it again.
    pub following: bool,
}

/// Largest screen the player emulates. A recording states its own size (header, resize
/// events) and a hostile one says 65535×65535: billions of cells, in the emulator and again
/// in every snapshot. Wider or taller screens are cut to this (far past any real terminal's
/// use; what falls outside is not shown).
pub const MAX_COLS: u16 = 512;
pub const MAX_ROWS: u16 = 256;

/// `(rows, cols)` for the emulator: at least 1, at most [`MAX_ROWS`]×[`MAX_COLS`].
fn screen_size(cols: u16, rows: u16) -> (std::num::NonZeroU16, std::num::NonZeroU16) {
    let fit = |n: u16, max: u16| {
        std::num::NonZeroU16::new(n.min(max)).unwrap_or(std::num::NonZeroU16::MIN)
    };
    (fit(rows, MAX_ROWS), fit(cols, MAX_COLS))
}

fn new_parser(cols: u16, rows: u16) -> vt100::Parser {
    let (rows, cols) = screen_size(cols, rows);
    vt100::Parser::new(rows, cols, 0)
}

/// Whether output ending with `data` leaves the emulator between escape sequences, given
/// whether it was before. A snapshot is only taken there: restoring one starts a fresh
/// escape parser. Conservative: anything unclear counts as "inside".
fn ends_in_ground(data: &[u8], before: bool) -> bool {
    let Some(esc) = memchr::memrchr(0x1b, data) else {
        return before;
    };
    let tail = &data[esc + 1..];
    match tail.first() {
        None => false,
        // CSI: parameters, then one final byte 0x40..=0x7e
        Some(b'[') => tail[1..].iter().any(|b| (0x40..=0x7e).contains(b)),
        // OSC, DCS, APC, PM, SOS: until BEL (ST would be an ESC, found above)
        Some(b']' | b'P' | b'_' | b'^' | b'X') => tail[1..].contains(&0x07),
        // charset designations take one more byte
        Some(b'(' | b')' | b'*' | b'+' | b'#' | b'%') => tail.len() >= 2,
        Some(_) => true,
    }
}

impl Player {
    /// Loads a recording and walks it once to take the snapshots.
    pub fn new(cast: Arc<Cast>) -> Player {
        let (cols, rows) = cast.size();
        let walk = new_parser(cols, rows);
        let mut player = Player {
            parser: new_parser(cols, rows),
            snapshots: vec![Snapshot {
                applied: 0,
                screen: walk.screen().clone(),
            }],
            walk: Walk {
                parser: walk,
                applied: 0,
                since: 0,
                ground: true,
            },
            cast,
            applied: 0,
            position: Duration::ZERO,
            playing: false,
            speed: 2,
            idle_skip: false,
            following: false,
        };
        player.take_snapshots();
        player.seek(Duration::ZERO);
        player
    }

    /// Continues the snapshot pass over events not walked yet.
    fn take_snapshots(&mut self) {
        let w = &mut self.walk;
        for (i, e) in self.cast.events.iter().enumerate().skip(w.applied) {
            let data = self.cast.shown(e);
            apply(&mut w.parser, e.kind, &data);
            if e.kind == EventKind::Output {
                w.since += data.len();
                w.ground = ends_in_ground(data.as_bytes(), w.ground);
            }
            if w.since >= SNAPSHOT_EVERY && w.ground {
                self.snapshots.push(Snapshot {
                    applied: i + 1,
                    screen: w.parser.screen().clone(),
                });
                w.since = 0;
            }
        }
        w.applied = self.cast.events.len();
    }

    /// Adds the complete lines a live recording gained; a following player moves to the
    /// new end. Returns how many events were added.
    pub fn extend(&mut self, lines: &[u8]) -> usize {
        let added = Arc::make_mut(&mut self.cast).extend(lines);
        if added > 0 {
            self.take_snapshots();
            if self.following {
                self.seek(self.duration());
            }
        }
        added
    }

    /// Goes to the end and stays there as the recording grows.
    pub fn follow(&mut self) {
        self.following = true;
        self.playing = false;
        self.seek(self.duration());
    }

    pub fn cast(&self) -> &Cast {
        &self.cast
    }

    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    pub fn position(&self) -> Duration {
        self.position
    }

    pub fn duration(&self) -> Duration {
        self.cast.duration()
    }

    pub fn speed(&self) -> f64 {
        SPEEDS[self.speed]
    }

    pub fn faster(&mut self) {
        self.speed = (self.speed + 1).min(SPEEDS.len() - 1);
    }

    pub fn slower(&mut self) {
        self.speed = self.speed.saturating_sub(1);
    }

    /// Sets the speed to the listed one nearest `speed`.
    pub fn set_speed(&mut self, speed: f64) {
        self.speed = SPEEDS
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - speed).abs().total_cmp(&(b.1 - speed).abs()))
            .map_or(2, |(i, _)| i);
    }

    pub fn snapshot_count(&self) -> usize {
        self.snapshots.len()
    }

    /// Events with `at <= position` are on screen.
    fn events_until(&self, t: Duration) -> usize {
        self.cast.events.partition_point(|e| e.at <= t)
    }

    /// Moves to `t` (clamped to the recording) and brings the screen there.
    pub fn seek(&mut self, t: Duration) {
        self.position = t.min(self.duration());
        let target = self.events_until(self.position);
        let snap = self.snapshots.partition_point(|s| s.applied <= target);
        if let Some(s) = snap.checked_sub(1).and_then(|i| self.snapshots.get(i))
            && (target < self.applied || s.applied > self.applied)
        {
            let (rows, cols) = s.screen.size();
            self.parser = new_parser(cols.get(), rows.get());
            *self.parser.screen_mut() = s.screen.clone();
            self.applied = s.applied;
        }
        let cast = Arc::clone(&self.cast);
        for e in &cast.events[self.applied..target] {
            apply(&mut self.parser, e.kind, &cast.shown(e));
        }
        self.applied = target;
    }

    pub fn seek_by(&mut self, forward: bool, step: Duration) {
        let t = if forward {
            self.position + step
        } else {
            self.position.saturating_sub(step)
        };
        self.seek(t);
    }

    pub fn toggle_play(&mut self) {
        if !self.playing && self.position >= self.duration() {
            self.seek(Duration::ZERO);
        }
        self.playing = !self.playing;
    }

    /// Advances playback by `elapsed` wall time (scaled by the speed).
    pub fn tick(&mut self, elapsed: Duration) {
        if !self.playing {
            return;
        }
        let mut t = self.position + elapsed.mul_f64(self.speed());
        if self.idle_skip {
            // an idle gap shows for at most IDLE_LIMIT, then the next event comes
            let next = self.cast.events.get(self.applied).map(|e| e.at);
            let prev = self
                .applied
                .checked_sub(1)
                .and_then(|i| self.cast.events.get(i))
                .map_or(Duration::ZERO, |e| e.at);
            if let Some(next) = next
                && t < next
                && t > prev + IDLE_LIMIT
            {
                t = next;
            }
        }
        if t >= self.duration() {
            t = self.duration();
            self.playing = false;
        }
        self.seek(t);
    }

    /// The first marker after the position (half a second of slack, so that a marker just
    /// jumped to is not found again).
    pub fn next_marker(&mut self) -> Option<String> {
        let from = self.position + Duration::from_millis(1);
        let found = self
            .cast
            .markers()
            .find(|(t, _)| *t >= from)
            .map(|(t, l)| (t, l.to_owned()));
        found.map(|(t, l)| {
            self.seek(t);
            l
        })
    }

    pub fn prev_marker(&mut self) -> Option<String> {
        let before = self.position.saturating_sub(Duration::from_millis(500));
        let found = self
            .cast
            .markers()
            .filter(|(t, _)| *t < before)
            .last()
            .map(|(t, l)| (t, l.to_owned()));
        found.map(|(t, l)| {
            self.seek(t);
            l
        })
    }

    /// The marker at or just before the position, if any.
    pub fn current_marker(&self) -> Option<(Duration, &str)> {
        self.cast
            .markers()
            .filter(|(t, _)| *t <= self.position)
            .last()
    }

    /// The operator's input up to the position: `(time, keys)`.
    pub fn input_until_now(&self) -> impl Iterator<Item = (Duration, &str)> {
        self.cast.events[..self.applied]
            .iter()
            .filter(|e| e.kind == EventKind::Input)
            .map(|e| (e.at, self.cast.data(e)))
    }
}

fn apply(parser: &mut vt100::Parser, kind: EventKind, data: &str) {
    match kind {
        EventKind::Output => parser.process(data.as_bytes()),
        EventKind::Resize { cols, rows } => {
            let (rows, cols) = screen_size(cols, rows);
            parser.set_size(rows, cols);
        }
        EventKind::Input | EventKind::Marker => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cast(events: &[(f64, &str, &str)]) -> Arc<Cast> {
        let mut text = String::from(r#"{"version": 2, "width": 20, "height": 4}"#);
        for (t, c, d) in events {
            text.push('\n');
            text.push_str(&serde_json::json!([t, c, d]).to_string());
        }
        text.push('\n');
        Arc::new(Cast::parse(text.as_bytes()).unwrap())
    }

    fn row(p: &Player, r: u16) -> String {
        p.screen()
            .contents_between(r, 0, r, 20)
            .trim_end()
            .to_owned()
    }

    #[test]
    fn seeking_shows_the_screen_at_that_moment() {
        let c = cast(&[
            (1.0, "o", "one\r\n"),
            (2.0, "o", "two\r\n"),
            (3.0, "m", "warning: idle"),
            (4.0, "o", "\u{1b}[2J\u{1b}[Hcleared"),
        ]);
        let mut p = Player::new(c);
        assert_eq!(row(&p, 0), "");
        p.seek(Duration::from_millis(2500));
        assert_eq!((row(&p, 0), row(&p, 1)), ("one".into(), "two".into()));
        p.seek(Duration::from_secs(9));
        assert_eq!(p.position(), Duration::from_secs(4));
        assert_eq!(row(&p, 0), "cleared");
        p.seek(Duration::from_secs(1));
        assert_eq!((row(&p, 0), row(&p, 1)), ("one".into(), "".into()));
        p.seek(Duration::ZERO);
        assert_eq!(p.next_marker().as_deref(), Some("warning: idle"));
        assert_eq!(p.position(), Duration::from_secs(3));
        assert_eq!(p.next_marker(), None);
        p.seek(Duration::from_secs(4));
        assert_eq!(p.prev_marker().as_deref(), Some("warning: idle"));
        assert_eq!(p.current_marker().map(|m| m.1), Some("warning: idle"));
    }

    #[test]
    fn playback_follows_speed_and_skips_idle_gaps() {
        let c = cast(&[(1.0, "o", "a"), (60.0, "o", "b"), (61.0, "o", "c")]);
        let mut p = Player::new(c);
        p.toggle_play();
        p.tick(Duration::from_millis(500));
        assert_eq!(p.position(), Duration::from_millis(500));
        p.faster();
        p.faster();
        assert_eq!(p.speed(), 4.0);
        p.tick(Duration::from_secs(1));
        assert_eq!(p.position(), Duration::from_millis(4500));
        p.idle_skip = true;
        p.tick(Duration::from_millis(250));
        assert_eq!(p.position(), Duration::from_secs(60), "gap cut short");
        assert_eq!(row(&p, 0), "ab");
        p.tick(Duration::from_secs(10));
        assert_eq!(p.position(), Duration::from_secs(61));
        assert!(!p.playing, "stops at the end");
        p.set_speed(100.0);
        assert_eq!(p.speed(), 16.0);
        for _ in 0..10 {
            p.slower();
        }
        assert_eq!(p.speed(), 0.25);
    }

    #[test]
    fn resizes_apply_and_input_is_listed() {
        let c = cast(&[(0.5, "i", "ls\r"), (1.0, "r", "30x5"), (2.0, "i", "q")]);
        let mut p = Player::new(c);
        p.seek(Duration::from_secs(1));
        let (rows, cols) = p.screen().size();
        assert_eq!((rows.get(), cols.get()), (5, 30));
        let input: Vec<_> = p.input_until_now().map(|(_, k)| k).collect();
        assert_eq!(input, vec!["ls\r"]);
    }

    #[test]
    fn a_recording_claiming_a_huge_screen_is_played_on_a_capped_one() {
        let text = concat!(
            r#"{"version": 2, "width": 65535, "height": 65535}"#,
            "\n",
            r#"[0.5, "o", "hello"]"#,
            "\n",
            r#"[1.0, "r", "65535x65535"]"#,
            "\n",
        );
        let mut p = Player::new(Arc::new(Cast::parse(text.as_bytes()).unwrap()));
        let (rows, cols) = p.screen().size();
        assert_eq!((rows.get(), cols.get()), (MAX_ROWS, MAX_COLS));
        p.seek(Duration::from_millis(1200));
        assert!(p.screen().contents().starts_with("hello"));
        let (rows, cols) = p.screen().size();
        assert_eq!((rows.get(), cols.get()), (MAX_ROWS, MAX_COLS));
    }

    #[test]
    fn snapshots_give_the_same_screen_as_replaying_from_the_start() {
        let line = "x".repeat(1000) + "\r\n";
        let mut events = vec![];
        for i in 0..2000 {
            events.push((f64::from(i) * 0.01, "o", line.as_str()));
        }
        let owned: Vec<(f64, &str, String)> = (0..50)
            .map(|i| {
                (
                    20.0 + f64::from(i),
                    "o",
                    format!("\u{1b}[3{}mline {i}\r\n", i % 8),
                )
            })
            .collect();
        let c = {
            let mut all: Vec<(f64, &str, &str)> = events;
            all.extend(owned.iter().map(|(t, c, d)| (*t, *c, d.as_str())));
            cast(&all)
        };
        let mut p = Player::new(Arc::clone(&c));
        assert!(p.snapshot_count() > 5, "{}", p.snapshot_count());
        p.seek(Duration::from_secs(69));
        let jumped = p.screen().contents_formatted();
        p.seek(Duration::from_secs(30));
        p.seek(Duration::from_secs(69));
        assert_eq!(p.screen().contents_formatted(), jumped);
        let mut fresh = new_parser(20, 4);
        for e in &c.events {
            apply(&mut fresh, e.kind, &c.shown(e));
        }
        assert_eq!(fresh.screen().contents_formatted(), jumped);
    }

    #[test]
    fn escape_state_at_chunk_ends() {
        assert!(ends_in_ground(b"abc", true));
        assert!(!ends_in_ground(b"abc", false));
        assert!(ends_in_ground(b"\x1b[31mx", false));
        assert!(!ends_in_ground(b"x\x1b[3", true));
        assert!(!ends_in_ground(b"x\x1b", true));
        assert!(!ends_in_ground(b"\x1b]0;title", true));
        assert!(ends_in_ground(b"\x1b]0;title\x07", false));
        assert!(ends_in_ground(b"\x1b(B", false));
        assert!(!ends_in_ground(b"\x1b(", true));
    }
}
