//! Operator- and target-chosen text shown to a reviewer *as text* (markers, file names in the
//! transfer log, SQL statements, parameters, error messages, typed input): every character
//! that would act on a terminal instead of being shown is escaped, so a label such as
//! `\e]52;c;…\a` (write the reviewer's clipboard) or `\r\e[2K` (erase the line being shown)
//! reaches the reviewer's screen as visible `\x1b]52;c;…\x07` rather than as a command.
//!
//! Escaped, not stripped: the reviewer sees that an escape was sent. Pure and std-only (the
//! fuzz targets compile it on its own).

use std::borrow::Cow;

/// Whether `c` would drive a terminal (C0, DEL, C1 controls) or silently reorder what it
/// shows (bidirectional overrides and isolates, the "Trojan Source" characters).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Text for one line: every unsafe character escaped, newlines and tabs included (a file
/// name with a newline must not forge a second marker line).
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// Text that may span lines (a SQL statement): newlines and tabs are kept, every other
/// unsafe character (a carriage return too: it would overwrite the line shown) is escaped.
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) || keep(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_drives_a_terminal() {
        assert_eq!(
            line("a\u{1b}]52;c;aGk=\u{7}b\r\u{1b}[2Kc\nd\u{9b}31m\u{202e}e\u{7f}"),
            "a\\x1b]52;c;aGk=\\x07b\\x0d\\x1b[2Kc\\x0ad\\u{9b}31m\\u{202e}e\\x7f"
        );
        assert_eq!(
            block("select 1\n\tfrom t\r\u{1b}[2K"),
            "select 1\n\tfrom t\\x0d\\x1b[2K"
        );
        assert!(matches!(line("plain ünïcode"), Cow::Borrowed(_)));
    }
}
