//! The PostgreSQL front's statement log (`<session>.sql.jsonl`): the line types, written by
//! the front and read back by the review TUI and the detective with the same structs.
//!
//! Line 0 is a [`SqlLogHeader`]; each further line is a [`StatementLine`], a
//! [`MarkerLine`] (enforcement events, and messages refused rather than relayed) or a
//! [`TargetLine`] (which server process the session ran on) with `t`, seconds since the
//! session opened. The log is hash-chained like a terminal recording, so
//! the bytes of every line matter: fields are declared in alphabetical order because the
//! front wrote these lines as `serde_json` maps (sorted keys) before these types existed,
//! and serde writes a struct's fields in declaration order. Readers are tolerant: every
//! field but `t` and `type` may be missing (older logs), unknown fields and line types are
//! ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header's `gatehouse_sql_log` value this version writes and reads.
pub const SQL_LOG_VERSION: u32 = 1;

/// The first line of a statement log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlLogHeader {
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    pub gatehouse_sql_log: u32,
    pub operator: String,
    #[serde(default)]
    pub redact_params: bool,
    pub session: String,
    /// Startup parameters passed through to the target (they can change what statements
    /// do: `options=-c search_path=…`).
    #[serde(default)]
    pub startup_params: BTreeMap<String, String>,
    pub target: String,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: Option<i64>,
}

/// `"type": "statement"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatementType {
    #[serde(rename = "statement")]
    Statement,
}

/// `"type": "marker"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarkerType {
    #[serde(rename = "marker")]
    Marker,
}

/// `"type": "target"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetType {
    #[serde(rename = "target")]
    Target,
}

/// The target connection the session's statements ran on, written once Gatehouse's login to
/// the target is done: the server's process id (`pg_backend_pid()`, `%p` in the server's
/// own log lines) and whether the login was kept from an earlier session (`[postgres]
/// target_pool`), so that the server's logs can be matched to sessions (readers that
/// predate it skip the line as an unknown type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetLine {
    pub backend_pid: i32,
    pub reused: bool,
    pub t: f64,
    #[serde(rename = "type")]
    pub kind: TargetType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlError {
    pub message: String,
    pub sqlstate: String,
}

/// One statement (a simple query, or an extended-protocol portal run however many Executes
/// it took).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementLine {
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<SqlError>,
    /// Extended protocol: Executes of the portal (more than 1 when read in pieces, e.g. a
    /// JDBC fetch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<u64>,
    /// Set (with `redacted`) when the parameters were redacted by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_count: Option<u64>,
    #[serde(default)]
    pub params: Option<Vec<Option<String>>>,
    /// `simple` or `extended`.
    #[serde(default = "simple")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub redacted: bool,
    /// DataRows returned.
    #[serde(default)]
    pub rows: u64,
    /// Prepared statement name (extended protocol only).
    #[serde(default, rename = "statement", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extended protocol: the portal was left unfinished (`tag` is then null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    pub t: f64,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(rename = "type")]
    pub kind: StatementType,
}

impl StatementLine {
    /// Appends this line as JSON: byte for byte what `serde_json` writes for it (fields in
    /// declaration order, the same ones skipped; the chain covers the bytes), with the
    /// recorder's string escaper (`json::push_str`) instead of serde_json's byte-at-a-time
    /// one: a line is written for every statement, on the relay's thread, and escaping its
    /// strings was most of that cost. Numbers and booleans are written by serde_json itself.
    /// Tested against serde_json on every field's edge cases and thousands of random lines.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.borrowed().write_json(out);
    }

    /// The line's fields, borrowed (what [`StatementLineRef::write_json`] writes).
    pub fn borrowed(&self) -> StatementLineRef<'_> {
        StatementLineRef {
            duration_ms: self.duration_ms,
            error: self
                .error
                .as_ref()
                .map(|e| (e.message.as_str(), e.sqlstate.as_str())),
            executions: self.executions,
            param_count: self.param_count,
            params: self.params.as_deref(),
            protocol: &self.protocol,
            redacted: self.redacted,
            rows: self.rows,
            name: self.name.as_deref(),
            suspended: self.suspended,
            t: self.t,
            tag: self.tag.as_deref(),
            text: &self.text,
        }
    }
}

/// A [`StatementLine`] to write, its strings borrowed: the relay writes a line per
/// statement from the tracker's statement without moving or copying its strings into an
/// owned line first. Fields as in [`StatementLine`]; `error` is (message, sqlstate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatementLineRef<'a> {
    pub duration_ms: Option<f64>,
    pub error: Option<(&'a str, &'a str)>,
    pub executions: Option<u64>,
    pub param_count: Option<u64>,
    pub params: Option<&'a [Option<String>]>,
    pub protocol: &'a str,
    pub redacted: bool,
    pub rows: u64,
    pub name: Option<&'a str>,
    pub suspended: Option<bool>,
    pub t: f64,
    pub tag: Option<&'a str>,
    pub text: &'a str,
}

impl StatementLineRef<'_> {
    /// [`StatementLine::write_json`] of the line these fields make.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        /// A number or boolean, as serde_json writes it (NaN and infinities as `null`).
        fn scalar(out: &mut Vec<u8>, v: &impl Serialize) {
            // writing to a Vec cannot fail
            let _ = serde_json::to_writer(&mut *out, v);
        }
        fn string_or_null(out: &mut Vec<u8>, v: Option<&str>) {
            match v {
                Some(s) => crate::json::push_str(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"{\"duration_ms\":");
        scalar(out, &self.duration_ms);
        out.extend_from_slice(b",\"error\":");
        match self.error {
            Some((message, sqlstate)) => {
                out.extend_from_slice(b"{\"message\":");
                crate::json::push_str(out, message);
                out.extend_from_slice(b",\"sqlstate\":");
                crate::json::push_str(out, sqlstate);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        if let Some(n) = self.executions {
            out.extend_from_slice(b",\"executions\":");
            scalar(out, &n);
        }
        if let Some(n) = self.param_count {
            out.extend_from_slice(b",\"param_count\":");
            scalar(out, &n);
        }
        out.extend_from_slice(b",\"params\":");
        match self.params {
            Some(params) => {
                out.push(b'[');
                for (i, p) in params.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string_or_null(out, p.as_deref());
                }
                out.push(b']');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"protocol\":");
        crate::json::push_str(out, self.protocol);
        if self.redacted {
            out.extend_from_slice(b",\"redacted\":true");
        }
        out.extend_from_slice(b",\"rows\":");
        scalar(out, &self.rows);
        if let Some(name) = self.name {
            out.extend_from_slice(b",\"statement\":");
            crate::json::push_str(out, name);
        }
        if let Some(b) = self.suspended {
            out.extend_from_slice(b",\"suspended\":");
            scalar(out, &b);
        }
        out.extend_from_slice(b",\"t\":");
        scalar(out, &self.t);
        out.extend_from_slice(b",\"tag\":");
        string_or_null(out, self.tag);
        out.extend_from_slice(b",\"text\":");
        crate::json::push_str(out, self.text);
        out.extend_from_slice(b",\"type\":\"statement\"}");
    }
}

/// A message that was not relayed: its direction, type byte and declared length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub from: String,
    pub length: i64,
    pub message_type: String,
    pub sqlstate: String,
}

/// An enforcement event or a refused message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerLine {
    #[serde(default)]
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    pub t: f64,
    #[serde(rename = "type")]
    pub kind: MarkerType,
}

/// A line after the header, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlLogLine {
    Statement(StatementLine),
    Marker(MarkerLine),
    Target(TargetLine),
    /// A line type this version does not know (ignored).
    Other {
        t: f64,
        kind: String,
    },
}

/// What every line has: its time and type (other fields skipped, not kept).
#[derive(Deserialize)]
struct LineHead<'a> {
    t: f64,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl SqlLogLine {
    /// One line; `None` if it is not a log line at all (malformed JSON, no `t` or `type`,
    /// a statement or marker that does not parse as one, a time that is not a finite
    /// non-negative number).
    ///
    /// Read in two passes rather than as an untagged enum: serde reads an untagged enum by
    /// copying the whole line into a generic tree first and trying each variant on it,
    /// several times what reading the struct the type names costs (the detective reads
    /// every line of every live log, a statement per round trip).
    ///
    /// A line is a JSON object: serde would also read a struct from an array of its fields
    /// in order, which no writer produces.
    pub fn parse(line: &[u8]) -> Option<SqlLogLine> {
        if line.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let head: LineHead<'_> = serde_json::from_slice(line).ok()?;
        if !(head.t.is_finite() && head.t >= 0.0) {
            return None;
        }
        match head.kind.as_ref() {
            "statement" => serde_json::from_slice(line).ok().map(SqlLogLine::Statement),
            "marker" => serde_json::from_slice(line).ok().map(SqlLogLine::Marker),
            "target" => serde_json::from_slice(line).ok().map(SqlLogLine::Target),
            _ => Some(SqlLogLine::Other {
                t: head.t,
                kind: head.kind.into_owned(),
            }),
        }
    }
}

/// A line after the header as a reader needs it who asks only when statements ran and what
/// the markers say (the detective, every pass over every live log; the review's live
/// status): the same lines are read and refused as by [`SqlLogLine::parse`], but a
/// statement line is only checked, field by field and type by type, not copied — its text,
/// parameters and tag are where most of a busy log's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum LineMark {
    Statement {
        t: f64,
    },
    Marker(MarkerLine),
    Target {
        t: f64,
    },
    /// A line type this version does not know (ignored).
    Other {
        t: f64,
    },
}

impl LineMark {
    /// One line; `None` exactly where [`SqlLogLine::parse`] says `None`.
    ///
    /// A statement line, nearly every line of a busy log, is read in one pass: as Gatehouse
    /// writes it ([`written_statement_t`]), else as a [`StatementShape`] (which also holds
    /// the type); the other lines, and any line that does not read either way, are read as
    /// [`SqlLogLine::parse`] reads them, the type first.
    pub fn parse(line: &[u8]) -> Option<LineMark> {
        if line.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let t = written_statement_t(line).or_else(|| {
            serde_json::from_slice::<StatementShape>(line)
                .ok()
                .map(|s| s.t)
        });
        if let Some(t) = t
            && t.is_finite()
            && t >= 0.0
        {
            return Some(LineMark::Statement { t });
        }
        let head: LineHead<'_> = serde_json::from_slice(line).ok()?;
        if !(head.t.is_finite() && head.t >= 0.0) {
            return None;
        }
        match head.kind.as_ref() {
            "statement" => serde_json::from_slice::<StatementShape>(line)
                .ok()
                .map(|s| LineMark::Statement { t: s.t }),
            "marker" => serde_json::from_slice(line).ok().map(LineMark::Marker),
            "target" => serde_json::from_slice::<TargetLine>(line)
                .ok()
                .map(|l| LineMark::Target { t: l.t }),
            _ => Some(LineMark::Other { t: head.t }),
        }
    }
}

/// The time of a statement line exactly as [`StatementLine::write_json`] lays it out (no
/// space, fields in order, no `\u` escape), or `None` for any other line: a reader's fast
/// path, not a parser. Every line it takes serde_json also reads as a [`StatementShape`]
/// with the same `t` (`t` and `duration_ms` are read by serde_json itself; the tests and
/// the `sql_log_reader` fuzz target check the rest), so a line it does not take is simply
/// read the slow way. Written by hand because serde_json spends ~4k instructions on a
/// 250-byte line finding its fields, and the detective reads every line of every log.
fn written_statement_t(line: &[u8]) -> Option<f64> {
    let mut c = Cursor { s: line, at: 0 };
    c.eat(b"{\"duration_ms\":")?;
    if !c.eat_null() {
        serde_f64(c.number()?)?;
    }
    c.eat(b",\"error\":")?;
    if !c.eat_null() {
        c.eat(b"{\"message\":")?;
        c.string()?;
        c.eat(b",\"sqlstate\":")?;
        c.string()?;
        c.eat(b"}")?;
    }
    if c.eat(b",\"executions\":").is_some() {
        c.u64()?;
    }
    if c.eat(b",\"param_count\":").is_some() {
        c.u64()?;
    }
    c.eat(b",\"params\":")?;
    if !c.eat_null() {
        c.eat(b"[")?;
        if c.eat(b"]").is_none() {
            loop {
                if !c.eat_null() {
                    c.string()?;
                }
                if c.eat(b"]").is_some() {
                    break;
                }
                c.eat(b",")?;
            }
        }
    }
    c.eat(b",\"protocol\":")?;
    c.string()?;
    // `redacted` is written only when true
    let _ = c.eat(b",\"redacted\":true");
    c.eat(b",\"rows\":")?;
    c.u64()?;
    if c.eat(b",\"statement\":").is_some() {
        c.string()?;
    }
    if c.eat(b",\"suspended\":").is_some() && c.eat(b"true").or_else(|| c.eat(b"false")).is_none() {
        return None;
    }
    c.eat(b",\"t\":")?;
    let t = serde_f64(c.number()?)?;
    c.eat(b",\"tag\":")?;
    if !c.eat_null() {
        c.string()?;
    }
    c.eat(b",\"text\":")?;
    c.string()?;
    c.eat(b",\"type\":\"statement\"}")?;
    (c.at == line.len()).then_some(t)
}

/// Whether none of the eight bytes of `w` is a quote, a backslash or below 0x20, with
/// the word-at-a-time tests for a zero byte and for a byte below a bound (each exact as a
/// whole: it may flag the wrong byte, never a word with none).
fn plain_word(w: u64) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    let below_0x20 = w.wrapping_sub(LOW * 0x20) & !w & HIGH;
    (zero_in(w ^ (LOW * u64::from(b'"'))) | zero_in(w ^ (LOW * u64::from(b'\\'))) | below_0x20) == 0
}

/// A JSON number's text read as serde_json reads it into an `f64` (its own rounding; out
/// of range is an error).
fn serde_f64(text: &[u8]) -> Option<f64> {
    serde_json::from_slice(text).ok()
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, token: &[u8]) -> Option<()> {
        let rest = self.s.get(self.at..)?;
        rest.starts_with(token).then(|| self.at += token.len())
    }

    fn eat_null(&mut self) -> bool {
        self.eat(b"null").is_some()
    }

    /// A string: no byte below 0x20, escapes only `\" \\ \/ \b \f \n \r \t` (a `\u`
    /// escape, rare, goes the slow way), UTF-8 (checked where it lies).
    fn string(&mut self) -> Option<()> {
        self.eat(b"\"")?;
        let start = self.at;
        // the bits of every byte read, to skip the UTF-8 check of a string all ASCII
        let mut bits = 0u64;
        loop {
            // eight bytes at a time while none of them ends the string, escapes or is a
            // control byte (a statement's text is read here on every line of every log)
            while let Some(word) = self.s.get(self.at..self.at + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                let w = u64::from_le_bytes(w);
                if plain_word(w) {
                    bits |= w;
                    self.at += 8;
                } else {
                    break;
                }
            }
            let b = *self.s.get(self.at)?;
            bits |= u64::from(b);
            match b {
                b'"' => break,
                b'\\' => match self.s.get(self.at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                    _ => return None,
                },
                0..0x20 => return None,
                _ => self.at += 1,
            }
        }
        if bits & 0x8080_8080_8080_8080 != 0 {
            std::str::from_utf8(&self.s[start..self.at]).ok()?;
        }
        self.at += 1;
        Some(())
    }

    /// A JSON number's text: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<&[u8]> {
        let start = self.at;
        let _ = self.eat(b"-");
        match self.s.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b".").is_some() {
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.s.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.s.get(self.at) {
                self.at += 1;
            }
            self.digits1()?;
        }
        Some(&self.s[start..self.at])
    }

    fn digits(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn digits1(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// An unsigned integer as serde_json takes one for a `u64` (no sign, fraction,
    /// exponent or leading zero; at most `u64::MAX`).
    fn u64(&mut self) -> Option<()> {
        let start = self.at;
        match self.s.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if let Some(b'.' | b'e' | b'E') = self.s.get(self.at) {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.at])
            .ok()?
            .parse::<u64>()
            .ok()?;
        Some(())
    }
}

/// [`StatementLine`]'s fields with their types, read without keeping what the strings hold
/// (the test `line_marks_are_read_as_lines_are` retypes every field a full statement line
/// has, so a field added there and not here fails it).
#[derive(Deserialize)]
#[allow(dead_code)] // fields read to check their types, not kept
struct StatementShape {
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    error: Option<SqlErrorShape>,
    #[serde(default)]
    executions: Option<u64>,
    #[serde(default)]
    param_count: Option<u64>,
    #[serde(default)]
    params: Option<Params>,
    #[serde(default)]
    protocol: AnyStr,
    #[serde(default)]
    redacted: bool,
    #[serde(default)]
    rows: u64,
    #[serde(default, rename = "statement")]
    name: Option<AnyStr>,
    #[serde(default)]
    suspended: Option<bool>,
    t: f64,
    #[serde(default)]
    tag: Option<AnyStr>,
    #[serde(default)]
    text: AnyStr,
    #[serde(rename = "type")]
    kind: StatementType,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SqlErrorShape {
    message: AnyStr,
    sqlstate: AnyStr,
}

/// A JSON string, checked (escapes, UTF-8) and not kept.
#[derive(Default)]
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// `params`: an array of strings and nulls, checked and not kept.
struct Params;

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings and nulls")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Params, A::Error> {
                while seq.next_element::<Option<AnyStr>>()?.is_some() {}
                Ok(Params)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Seconds as written in `t` (microsecond precision).
pub fn seconds(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1e6
}

fn simple() -> String {
    "simple".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The target line: its bytes (fields in alphabetical order, as every line's), read
    /// back as written (readers that predate it skip it as a line type they do not know).
    #[test]
    fn target_lines_are_written_sorted_and_read_back() {
        let written = TargetLine {
            backend_pid: 4242,
            reused: true,
            t: 0.5,
            kind: TargetType::Target,
        };
        let line = serde_json::to_string(&written).unwrap();
        assert_eq!(
            line,
            r#"{"backend_pid":4242,"reused":true,"t":0.5,"type":"target"}"#
        );
        assert_eq!(
            SqlLogLine::parse(line.as_bytes()),
            Some(SqlLogLine::Target(written))
        );
        // a target line that is not one is not a log line
        assert_eq!(
            SqlLogLine::parse(br#"{"backend_pid":"x","t":0.5,"type":"target"}"#),
            None
        );
    }

    /// Lines as the front wrote them before these types existed (through `json!` maps):
    /// serializing what they parse to gives the same bytes.
    #[test]
    fn lines_round_trip_byte_for_byte() {
        let line = r#"{"database":"shop","environment":"prod","gatehouse_sql_log":1,"operator":"dave","redact_params":false,"session":"0190","startup_params":{"application_name":"psql","options":"-c x=1"},"target":"db1","timestamp":1764000000}"#;
        let h: SqlLogHeader = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&h).unwrap(), line);
        for line in [
            r#"{"duration_ms":0.42,"error":null,"executions":1,"params":["42",null],"protocol":"extended","rows":1,"statement":"s1","suspended":false,"t":1.234567,"tag":"SELECT 1","text":"select $1","type":"statement"}"#,
            r#"{"duration_ms":3.0,"error":{"message":"relation \"x\" does not exist","sqlstate":"42P01"},"params":null,"protocol":"simple","rows":0,"t":2.0,"tag":null,"text":"select * from x","type":"statement"}"#,
            r#"{"duration_ms":0.1,"error":null,"executions":201,"param_count":2,"params":null,"protocol":"extended","redacted":true,"rows":20000,"suspended":true,"t":3.5,"tag":null,"text":"select","type":"statement"}"#,
        ] {
            let Some(SqlLogLine::Statement(s)) = SqlLogLine::parse(line.as_bytes()) else {
                panic!("{line}");
            };
            assert_eq!(serde_json::to_string(&s).unwrap(), line);
        }
        for line in [
            r#"{"label":"warning: idle","t":4.0,"type":"marker"}"#,
            r#"{"label":"refused from the client: x","refused":{"from":"client","length":70000000,"message_type":"Q","sqlstate":"54000"},"t":5.25,"type":"marker"}"#,
        ] {
            let Some(SqlLogLine::Marker(m)) = SqlLogLine::parse(line.as_bytes()) else {
                panic!("{line}");
            };
            assert_eq!(serde_json::to_string(&m).unwrap(), line);
        }
    }

    /// The reading as an untagged enum this replaced (serde tries each variant in turn).
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Statement(StatementLine),
        Marker(MarkerLine),
        Other {
            t: f64,
            #[serde(rename = "type")]
            kind: String,
        },
    }

    fn untagged(line: &[u8]) -> Option<SqlLogLine> {
        let (t, l) = match serde_json::from_slice(line).ok()? {
            Untagged::Statement(s) => (s.t, SqlLogLine::Statement(s)),
            Untagged::Marker(m) => (m.t, SqlLogLine::Marker(m)),
            Untagged::Other { kind, .. } if kind == "statement" || kind == "marker" => {
                return None;
            }
            Untagged::Other { t, kind } => (t, SqlLogLine::Other { t, kind }),
        };
        (t.is_finite() && t >= 0.0).then_some(l)
    }

    /// The fast path's string reading, eight bytes at a time, ends exactly where a byte at
    /// a time did (or fails where it failed): strings of every length up to 40 with each
    /// special byte (quote, backslash and its escapes, every control byte, a `\u`, bytes
    /// of multi-byte and invalid UTF-8) at every position, and random strings.
    #[test]
    fn strings_are_read_eight_bytes_at_a_time_as_one_at_a_time() {
        fn one_at_a_time(s: &[u8]) -> Option<usize> {
            let mut at = 1;
            if s.first() != Some(&b'"') {
                return None;
            }
            loop {
                match *s.get(at)? {
                    b'"' => break,
                    b'\\' => match s.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                        _ => return None,
                    },
                    0..0x20 => return None,
                    _ => at += 1,
                }
            }
            std::str::from_utf8(&s[1..at]).ok()?;
            Some(at + 1)
        }
        let check = |s: &[u8]| {
            let mut c = Cursor { s, at: 0 };
            let got = c.string().map(|()| c.at);
            assert_eq!(got, one_at_a_time(s), "{:?}", String::from_utf8_lossy(s));
        };
        let mut specials: Vec<&[u8]> = vec![
            b"\"",
            b"\\\"",
            b"\\\\",
            b"\\/",
            b"\\n",
            b"\\t",
            b"\\u00e9",
            b"\\x",
            b"\\",
            "é".as_bytes(),
            "€".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\x7f",
            b" ",
            b"~",
        ];
        let controls: Vec<[u8; 1]> = (0u8..0x20).map(|b| [b]).collect();
        specials.extend(controls.iter().map(|c| &c[..]));
        for len in 0..40 {
            for special in &specials {
                for at in 0..=len {
                    let mut s = vec![b'"'];
                    s.extend(std::iter::repeat_n(b'a', at));
                    s.extend_from_slice(special);
                    s.extend(std::iter::repeat_n(b'b', len - at));
                    s.extend_from_slice(b"\",\"x\":1}");
                    check(&s);
                    check(&s[..s.len() - 8]);
                }
            }
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let alphabet = b"ab \"\\/ntu0\x01\x1f\x7f\x80\xc3\xa9\xff";
        for _ in 0..50_000 {
            let len = (next() % 48) as usize;
            let mut s = vec![b'"'];
            s.extend((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]));
            check(&s);
        }
    }

    /// Each line of `base`, then `per_line` variants of it: a random span replaced by a
    /// random token (a field dropped, retyped, duplicated…) or the line cut short.
    fn for_each_variant(base: &[&str], per_line: usize, mut f: impl FnMut(&[u8])) {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let replacements: [&[u8]; 12] = [
            b"",
            b"null",
            b"1",
            b"-1",
            b"\"",
            b",",
            b"{}",
            b"[]",
            b"\"marker\"",
            b"\"statement\"",
            b"[\"a\",null]",
            b"\"\\u00e9\"",
        ];
        for line in base {
            let line = line.as_bytes();
            f(line);
            for _ in 0..per_line {
                let mut v = line.to_vec();
                let a = next(v.len());
                let b = (a + next(12)).min(v.len());
                if next(8) == 0 {
                    v.truncate(a);
                } else {
                    v.splice(a..b, replacements[next(replacements.len())].iter().copied());
                }
                f(&v);
            }
        }
    }

    /// The two-pass reading accepts and rejects exactly what the untagged enum did (JSON
    /// objects; arrays are no longer read as structs): every line of the tests here, and
    /// thousands of variants of them with fields dropped, retyped, duplicated or cut short.
    #[test]
    fn two_pass_reading_is_the_untagged_reading() {
        let base = [
            r#"{"duration_ms":0.42,"error":null,"executions":1,"params":["42",null],"protocol":"extended","rows":1,"statement":"s1","suspended":false,"t":1.234567,"tag":"SELECT 1","text":"select $1","type":"statement"}"#,
            r#"{"duration_ms":3.0,"error":{"message":"x","sqlstate":"42P01"},"params":null,"protocol":"simple","rows":0,"t":2.0,"tag":null,"text":"select \"a\"","type":"statement"}"#,
            r#"{"label":"refused from the client: x","refused":{"from":"client","length":7,"message_type":"Q","sqlstate":"54000"},"t":5.25,"type":"marker"}"#,
            r#"{"label":"warning: idle","t":4.0,"type":"marker"}"#,
            r#"{"t":1,"type":"future","x":[1]}"#,
            r#"{"t":1,"type":"stat\u0065ment","text":"x"}"#,
            r#"{"type":"marker","t":1e400}"#,
            r#"{"t":1,"t":2,"type":"marker"}"#,
            r#"{"t":1,"type":"statement","rows":-1}"#,
            r#"{"t":"1","type":"statement"}"#,
            r#"{"t":1,"type":7}"#,
            r#"  {"t":0,"type":"marker"}"#,
        ];
        let mut seen = 0;
        for_each_variant(&base, 2_000, |v| {
            if v.trim_ascii_start().first() == Some(&b'[') {
                assert_eq!(SqlLogLine::parse(v), None);
                return;
            }
            let (new, old) = (SqlLogLine::parse(v), untagged(v));
            seen += usize::from(new.is_some());
            assert_eq!(new, old, "{}", String::from_utf8_lossy(v));
        });
        assert!(seen > 1_000, "too few variants parse at all: {seen}");
    }

    /// `write_json` writes what serde_json writes: every optional field present and absent,
    /// numbers at their edges (NaN, infinities, tiny, huge), and thousands of random lines
    /// whose strings hold characters to escape, non-ASCII and long runs.
    #[test]
    fn statement_lines_are_written_as_serde_json_writes_them() {
        let assert_same = |line: &StatementLine| {
            let mut out = b"before".to_vec();
            line.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out[6..].to_vec()).unwrap(),
                serde_json::to_string(line).unwrap(),
                "{line:?}"
            );
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let pieces = [
            "",
            "a",
            "select $1",
            "\"",
            "\\",
            "\n",
            "\r\n",
            "\t",
            "\u{0}",
            "\u{1b}[0m",
            "\u{1f}",
            "\u{7f}",
            "é",
            "€",
            "\u{2028}",
            "🚀",
            "/",
            "'",
            "…[12 bytes truncated]",
        ];
        let floats = [
            0.0,
            -0.0,
            1.5,
            0.1,
            1e-7,
            1e21,
            123_456.789_012,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
        ];
        let string = |next: &mut dyn FnMut() -> u64| -> String {
            let n = (next() % 8) as usize;
            let mut s: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            if next().is_multiple_of(16) {
                s.push_str(&"x\"y".repeat((next() % 100) as usize));
            }
            s
        };
        let mut taken = 0;
        for i in 0..20_000u64 {
            let mut pick = || next();
            let some = |pick: &mut dyn FnMut() -> u64| pick().is_multiple_of(2);
            let line = StatementLine {
                duration_ms: some(&mut pick)
                    .then(|| floats[(pick() % floats.len() as u64) as usize]),
                error: some(&mut pick).then(|| SqlError {
                    message: string(&mut pick),
                    sqlstate: string(&mut pick),
                }),
                executions: some(&mut pick).then(|| pick() >> (pick() % 64)),
                param_count: some(&mut pick).then(|| pick() >> (pick() % 64)),
                params: some(&mut pick).then(|| {
                    (0..pick() % 5)
                        .map(|_| some(&mut pick).then(|| string(&mut pick)))
                        .collect()
                }),
                protocol: string(&mut pick),
                redacted: some(&mut pick),
                rows: if i == 0 {
                    u64::MAX
                } else {
                    pick() >> (pick() % 64)
                },
                name: some(&mut pick).then(|| string(&mut pick)),
                suspended: some(&mut pick).then(|| some(&mut pick)),
                t: floats[(pick() % floats.len() as u64) as usize],
                tag: some(&mut pick).then(|| string(&mut pick)),
                text: string(&mut pick),
                kind: StatementType::Statement,
            };
            assert_same(&line);
            // the reader's fast path takes what was written, with serde_json's `t`
            let mut out = Vec::new();
            line.write_json(&mut out);
            let slow = serde_json::from_slice::<StatementShape>(&out)
                .ok()
                .map(|s| s.t.to_bits());
            match written_statement_t(&out) {
                Some(t) => {
                    taken += 1;
                    assert_eq!(Some(t.to_bits()), slow, "{line:?}");
                }
                None => assert!(
                    !line.t.is_finite()
                        || line.duration_ms.is_some_and(|d| !d.is_finite())
                        || out.windows(2).any(|w| w == b"\\u"),
                    "not taken: {line:?}"
                ),
            }
        }
        assert!(taken > 1_000, "the fast path took {taken} lines");
    }

    /// The fast path takes a line as written and nothing else: each near miss (a space, a
    /// field moved, unknown or retyped, an escape it leaves to serde_json, a number serde
    /// reads another way) is left to the full reading, which decides as before.
    #[test]
    fn the_fast_path_takes_only_lines_as_written() {
        let written = r#"{"duration_ms":0.052,"error":null,"executions":1,"params":["4242"],"protocol":"extended","rows":1,"statement":"P0_1","suspended":false,"t":12.345678,"tag":"SELECT 1","text":"SELECT abalance FROM pgbench_accounts WHERE aid = $1;","type":"statement"}"#;
        assert_eq!(written_statement_t(written.as_bytes()), Some(12.345678));
        assert_eq!(
            LineMark::parse(written.as_bytes()),
            Some(LineMark::Statement { t: 12.345678 })
        );
        for (from, to) in [
            ("{", "{ "),
            (r#""rows":1"#, r#""rows":01"#),
            (r#""rows":1"#, r#""rows":-0"#),
            (r#""rows":1"#, r#""rows":1.0"#),
            (r#""rows":1"#, r#""rows":18446744073709551616"#),
            (r#""rows":1"#, r#""rows":"1""#),
            (r#""error":null,"#, ""),
            (r#""error":null"#, r#""error":{"message":"m"}"#),
            (r#""t":12.345678"#, r#""t":1e400"#),
            (r#""t":12.345678"#, r#""t":12."#),
            (r#""duration_ms":0.052"#, r#""duration_ms":.5"#),
            (r#""tag":"SELECT 1""#, r#""tag":"SELECT \u0031""#),
            (r#""tag":"SELECT 1""#, r#""tag":"SELECT \x""#),
            (r#""tag":"SELECT 1""#, "\"tag\":\"SELECT\u{1}\""),
            (r#""suspended":false"#, r#""suspended":0"#),
            (r#""params":["4242"]"#, r#""params":["4242",]"#),
            (r#""params":["4242"]"#, r#""params":[4242]"#),
            (r#""type":"statement"}"#, r#""type":"statement","x":1}"#),
            (r#""type":"statement"}"#, r#""type":"statement"} "#),
            (
                r#""protocol":"extended","#,
                r#""protocol":"extended","label":5,"#,
            ),
        ] {
            let near = written.replacen(from, to, 1);
            assert_ne!(near, written);
            assert_eq!(written_statement_t(near.as_bytes()), None, "{near}");
            assert_same_reading(near.as_bytes());
        }
        // a time before the session is no line, however it is read
        let early = written.replacen(r#""t":12.345678"#, r#""t":-1"#, 1);
        assert_eq!(written_statement_t(early.as_bytes()), Some(-1.0));
        assert!(!assert_same_reading(early.as_bytes()));
        // a `\u` escape is still a statement, read the slow way
        let escaped = written.replacen(r#""SELECT 1""#, r#""SELECT \u0031""#, 1);
        assert!(assert_same_reading(escaped.as_bytes()), "{escaped}");
    }

    /// What a fully read line means as a mark.
    fn mark_of(line: SqlLogLine) -> LineMark {
        match line {
            SqlLogLine::Statement(s) => LineMark::Statement { t: s.t },
            SqlLogLine::Marker(m) => LineMark::Marker(m),
            SqlLogLine::Target(l) => LineMark::Target { t: l.t },
            SqlLogLine::Other { t, .. } => LineMark::Other { t },
        }
    }

    fn assert_same_reading(line: &[u8]) -> bool {
        let whole = SqlLogLine::parse(line).map(mark_of);
        assert_eq!(
            LineMark::parse(line),
            whole,
            "{}",
            String::from_utf8_lossy(line)
        );
        whole.is_some()
    }

    /// The mark reading accepts and refuses exactly the lines the full reading does, with
    /// the same times and markers: thousands of variants of every line type, and every
    /// field of a statement line with every field set dropped and given each JSON type (so
    /// a field added to `StatementLine` and not to its shape fails here).
    #[test]
    fn line_marks_are_read_as_lines_are() {
        let full = serde_json::to_string(&StatementLine {
            duration_ms: Some(0.5),
            error: Some(SqlError {
                message: "m \u{e9}\"".into(),
                sqlstate: "42P01".into(),
            }),
            executions: Some(3),
            param_count: Some(2),
            params: Some(vec![Some("1".into()), None]),
            protocol: "extended".into(),
            redacted: true,
            rows: 7,
            name: Some("s1".into()),
            suspended: Some(true),
            t: 1.5,
            tag: Some("SELECT 7".into()),
            text: "select $1, '\\'".into(),
            kind: StatementType::Statement,
        })
        .unwrap();
        let target = r#"{"backend_pid":42,"reused":false,"t":0.25,"type":"target"}"#;
        let base = [
            full.as_str(),
            target,
            r#"{"duration_ms":3.0,"error":{"message":"x","sqlstate":"42P01"},"params":null,"protocol":"simple","rows":0,"t":2.0,"tag":null,"text":"select \"a\"","type":"statement"}"#,
            r#"{"label":"refused from the client: x","refused":{"from":"client","length":7,"message_type":"Q","sqlstate":"54000"},"t":5.25,"type":"marker"}"#,
            r#"{"label":"locked: idle","t":4.0,"type":"marker"}"#,
            r#"{"t":1,"type":"future","x":[1]}"#,
            r#"{"t":1,"type":"stat\u0065ment","text":"x"}"#,
            r#"{"t":1,"type":"statement","rows":-1}"#,
            r#"{"t":1,"type":"statement","text":"\ud800"}"#,
        ];
        let mut read = 0;
        for_each_variant(&base, 3_000, |v| {
            read += usize::from(assert_same_reading(v))
        });
        assert!(read > 2_000, "too few variants read at all: {read}");

        let values = [
            "null",
            "1",
            "-1",
            "1.5",
            "1e400",
            "true",
            "\"x\"",
            "[]",
            "[\"a\",null]",
            "[1]",
            "{}",
            r#"{"message":"m","sqlstate":"s"}"#,
            r#"{"message":"m"}"#,
        ];
        for line in [full.as_str(), target] {
            let fields: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            assert!(assert_same_reading(line.as_bytes()));
            for key in fields.keys() {
                let mut without = fields.clone();
                without.remove(key);
                assert_same_reading(serde_json::to_string(&without).unwrap().as_bytes());
                let mut refused = false;
                for value in values {
                    let mut with = fields.clone();
                    with.insert(key.clone(), "@value@".into());
                    let text = serde_json::to_string(&with)
                        .unwrap()
                        .replace(r#""@value@""#, value);
                    refused |= !assert_same_reading(text.as_bytes());
                }
                assert!(refused, "no value of {key} makes the line refused");
            }
        }
    }

    #[test]
    fn unknown_lines_are_other_and_malformed_ones_none() {
        assert!(matches!(
            SqlLogLine::parse(br#"{"t":1,"type":"future","x":[1]}"#),
            Some(SqlLogLine::Other { .. })
        ));
        assert!(matches!(
            SqlLogLine::parse(br#"{"t":1,"type":"statement"}"#),
            Some(SqlLogLine::Statement(s)) if s.protocol == "simple" && s.text.is_empty()
        ));
        for bad in [
            &br#"{"t":-1,"type":"statement"}"#[..],
            br#"{"t":1,"type":"statement","text":5}"#,
            br#"{"t":1,"type":"marker","label":[]}"#,
            br#"{"type":"marker"}"#,
            br#"["x",null,1,"marker"]"#,
            b"\x00",
        ] {
            assert_eq!(
                SqlLogLine::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
