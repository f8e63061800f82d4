//! What `gatehouse play` lets through to the reviewer's terminal from a recording's output
//! events. `play` replays a terminal, so the target's drawing must reach the reviewer's
//! terminal emulator: text, colours and attributes, cursor movement, erasing, scrolling,
//! insert/delete, tab stops, the alternate screen and cursor visibility. A hostile target
//! (or an operator who printed a crafted file) can also have written sequences that act
//! beyond the screen; those are dropped:
//!
//! - every OSC, DCS, SOS, PM and APC string (window title, clipboard `OSC 52`, hyperlinks,
//!   colour queries, notifications, terminal-specific commands);
//! - CSI sequences outside a short allow-list of drawing commands, in particular those that
//!   make the terminal *answer* into the reviewer's input (device attributes `c`, status
//!   reports `n`, window reports `t`, `DECRQM` `$p`), printer control `i`, keyboard and
//!   mouse/focus reporting modes;
//! - `ESC Z` (identify terminal), ENQ (answerback), the other C0 controls that do not draw,
//!   and C1 controls (U+0080–U+009F), which some terminals obey even in UTF-8.
//!
//! An allow-list, not a deny-list: an unknown sequence is dropped. Streaming, because a
//! sequence may span two output events. Pure (no terminal, no I/O).

/// Longest CSI or ESC sequence kept; longer ones are dropped whole.
const MAX_SEQUENCE: usize = 64;

/// CSI final bytes that only draw (ECMA-48 / VT100–VT220, no private marker): ICH CUU CUD
/// CUF CUB CNL CPL CHA CUP CHT ED EL IL DL DCH SU SD ECH CBT HPA HPR REP VPA VPR HVP TBC SM
/// RM SGR DECSTBM, and save/restore cursor.
const DRAWING_CSI: &str = "@ABCDEFGHIJKLMPSTXZ`abdefghlmrsu";

/// DEC private modes (`CSI ? n h/l`) that make the terminal report mouse, focus or pasted
/// text to whatever reads it after `play` exits.
const REPORTING_MODES: &[u32] = &[
    9, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1015, 1016, 2004,
];

#[derive(Debug, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC: the bytes of the sequence so far (ESC excluded).
    Escape(String),
    /// After `ESC [`: parameters and intermediates so far.
    Csi(String),
    /// Inside a string sequence, until BEL (OSC only) or ST; `esc` after its ESC.
    Str { esc: bool },
}

/// Filters one recording's output, event after event.
#[derive(Debug, Default)]
pub struct ReplayFilter {
    state: State,
}

impl ReplayFilter {
    /// The part of `text` that may reach the reviewer's terminal.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            self.char(c, &mut out);
        }
        out
    }

    fn char(&mut self, c: char, out: &mut String) {
        let state = std::mem::take(&mut self.state);
        // as in a terminal, a C0 control inside an ESC or CSI sequence is carried out and the
        // sequence goes on
        if matches!(state, State::Escape(_) | State::Csi(_)) && ('\u{7}'..='\u{f}').contains(&c) {
            out.push(c);
            self.state = state;
            return;
        }
        if let State::Str { esc: true } = state
            && c != '\\'
        {
            // an ESC that is not ST ends the string and starts a new sequence
            self.state = State::Escape(String::new());
            return self.char(c, out);
        }
        self.state = match state {
            State::Ground => ground(c, out),
            State::Escape(mut seq) => match c {
                // CAN and SUB abort a sequence
                '\u{18}' | '\u{1a}' => State::Ground,
                '\u{1b}' => State::Escape(String::new()),
                '[' if seq.is_empty() => State::Csi(String::new()),
                ']' | 'P' | 'X' | '^' | '_' if seq.is_empty() => State::Str { esc: false },
                // intermediates (e.g. `ESC ( B`, select a character set)
                ' '..='/' if seq.len() < MAX_SEQUENCE => {
                    seq.push(c);
                    State::Escape(seq)
                }
                '0'..='~' => {
                    // DECID (ESC Z) makes the terminal identify itself
                    if !(seq.is_empty() && c == 'Z') {
                        out.push('\u{1b}');
                        out.push_str(&seq);
                        out.push(c);
                    }
                    State::Ground
                }
                _ => ground(c, out),
            },
            State::Csi(mut seq) => match c {
                '\u{18}' | '\u{1a}' => State::Ground,
                '\u{1b}' => State::Escape(String::new()),
                '0'..='?' | ' '..='/' if seq.len() < MAX_SEQUENCE => {
                    seq.push(c);
                    State::Csi(seq)
                }
                '0'..='?' | ' '..='/' => State::Csi(seq), // too long: will be dropped
                '@'..='~' => {
                    if seq.len() < MAX_SEQUENCE && csi_draws(&seq, c) {
                        out.push_str("\u{1b}[");
                        out.push_str(&seq);
                        out.push(c);
                    }
                    State::Ground
                }
                _ => ground(c, out),
            },
            State::Str { esc } => match c {
                '\u{7}' | '\u{9c}' => State::Ground,
                '\\' if esc => State::Ground,
                '\u{18}' | '\u{1a}' => State::Ground,
                '\u{1b}' => State::Str { esc: true },
                _ => State::Str { esc: false },
            },
        };
    }
}

/// A character outside any sequence.
fn ground(c: char, out: &mut String) -> State {
    match c {
        '\u{1b}' => return State::Escape(String::new()),
        // BEL BS HT LF VT FF CR SO SI draw (or beep); the other C0, DEL and C1 do not
        '\u{7}'..='\u{f}' => out.push(c),
        c if c.is_control() => {}
        c => out.push(c),
    }
    State::Ground
}

/// Whether `CSI seq final` only draws.
fn csi_draws(seq: &str, final_byte: char) -> bool {
    let (private, rest) = match seq.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, seq),
    };
    // other private markers (`<`, `=`, `>`) and intermediates select reports and keyboard
    // modes, not drawing
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || c == ';' || c == ':')
    {
        return false;
    }
    if private {
        return match final_byte {
            'h' | 'l' => !rest
                .split(';')
                .filter_map(|p| p.parse::<u32>().ok())
                .any(|m| REPORTING_MODES.contains(&m)),
            'J' | 'K' => true, // selective erase
            _ => false,
        };
    }
    DRAWING_CSI.contains(final_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(parts: &[&str]) -> String {
        let mut f = ReplayFilter::default();
        parts.iter().map(|p| f.push(p)).collect()
    }

    #[test]
    fn drawing_passes_byte_for_byte() {
        let screen = "\u{1b}[?1049h\u{1b}[H\u{1b}[2J\u{1b}[1;31mred\u{1b}[0m\r\n\t\u{1b}[5;10Hx\u{1b}[K\u{1b}(B\u{1b}7\u{1b}8\u{1b}[?25l\u{1b}[38;2;1;2;3mrgb\u{8}\u{1b}[3;20r\u{1b}M";
        assert_eq!(filter(&[screen]), screen);
    }

    #[test]
    fn sequences_acting_beyond_the_screen_are_dropped() {
        let hostile = [
            "a\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}b", // clipboard, BEL-terminated
            "\u{1b}]0;fake title\u{1b}\\c",        // title, ST-terminated
            "\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", // hyperlink
            "\u{1b}P$q\"p\u{1b}\\d",               // DECRQSS (DCS)
            "\u{1b}_kitty\u{1b}\\\u{1b}^pm\u{1b}\\\u{1b}Xsos\u{1b}\\e", // APC, PM, SOS
            "\u{1b}[c\u{1b}[>c\u{1b}[6n\u{1b}[21t\u{1b}[14t\u{1b}[?1$p\u{1b}[5i", // reports
            "\u{1b}[?1000h\u{1b}[?1004;2004h\u{1b}[>4;2m\u{1b}Zf", // mouse, focus, paste, keys
            "\u{5}\u{0}\u{7f}\u{9b}6n\u{90}g",     // ENQ, NUL, DEL, C1 CSI and DCS
        ];
        assert_eq!(filter(&hostile), "abclinkdef6ng");
    }

    #[test]
    fn controls_inside_sequences_act_as_in_a_terminal() {
        assert_eq!(filter(&["\u{1b}[1\r;31mx"]), "\r\u{1b}[1;31mx");
        // an OSC cut short by a new sequence ends there
        assert_eq!(filter(&["\u{1b}]0;t\u{1b}[1mx"]), "\u{1b}[1mx");
    }

    #[test]
    fn a_sequence_split_across_events_is_judged_whole() {
        assert_eq!(filter(&["x\u{1b}]5", "2;c;aGk=", "\u{7}y"]), "xy");
        assert_eq!(filter(&["\u{1b}[1;3", "1mz"]), "\u{1b}[1;31mz");
        assert_eq!(filter(&["\u{1b}", "[6", "n!"]), "!");
        // an overlong parameter list is dropped whole, and what follows still shows
        let long = format!("\u{1b}[{}m-", "1;".repeat(100));
        assert_eq!(filter(&[&long]), "-");
    }
}
