//! Full-text search over what sessions showed and what operators typed.
//!
//! Each recording becomes a *document*: its terminal output as plain text lines (escape
//! sequences removed by `vte`, the parser `vt100` itself uses), the operator's input lines,
//! markers, and for SQL sessions each statement with its parameters; every line keeps the
//! time it happened. Documents are built lazily on the first search and cached twice: in
//! memory for this run and as `<index dir>/<session>.idx` beside nothing else, so the next
//! run reads plain text instead of replaying recordings. A cached document is used only
//! while the recording's size and modification time are unchanged. Recordings are only
//! ever read.
//!
//! Matching is a case-insensitive (ASCII) substring search with `memchr::memmem` over each
//! document's lowered text: no tokenizer surprises for strings like `rm -rf /` or
//! `idle timeout in 10s`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::cast::{Cast, EventKind};
use crate::catalog::{RecordingKind, SessionEntry};
use crate::sqllog::{SqlEntry, SqlLog};

const FORMAT: &str = "gatehouse-review-index 1";
/// Longer output lines are cut into pieces of this many bytes (at a char boundary).
const MAX_LINE: usize = 512;
/// Moments listed per session; the list says when there are more.
pub const HITS_PER_SESSION: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    Output,
    Input,
    Marker,
    Sql,
}

impl HitKind {
    fn code(self) -> char {
        match self {
            HitKind::Output => 'o',
            HitKind::Input => 'i',
            HitKind::Marker => 'm',
            HitKind::Sql => 's',
        }
    }

    fn of_code(c: &str) -> Option<HitKind> {
        Some(match c {
            "o" => HitKind::Output,
            "i" => HitKind::Input,
            "m" => HitKind::Marker,
            "s" => HitKind::Sql,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            HitKind::Output => "output",
            HitKind::Input => "input",
            HitKind::Marker => "marker",
            HitKind::Sql => "sql",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LineMeta {
    at: Duration,
    kind: HitKind,
    /// Offset of the line in `Document::text`.
    start: usize,
}

/// The searchable text of one recording.
#[derive(Debug, Default)]
pub struct Document {
    lines: Vec<LineMeta>,
    /// Lines joined by `\n`.
    text: String,
    /// `text`, ASCII-lowercased (same byte offsets).
    lower: String,
}

impl Document {
    fn push(&mut self, at: Duration, kind: HitKind, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut rest = line;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_LINE);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, after) = rest.split_at(cut);
            self.lines.push(LineMeta {
                at,
                kind,
                start: self.text.len(),
            });
            self.text
                .extend(piece.chars().map(|c| if c == '\n' { ' ' } else { c }));
            self.text.push('\n');
            rest = after;
        }
    }

    fn finish(mut self) -> Document {
        self.lower = self.text.to_ascii_lowercase();
        self
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Every line in order: `(time, kind, text)`.
    pub fn lines(&self) -> impl Iterator<Item = (Duration, HitKind, &str)> {
        self.lines.iter().enumerate().map(|(i, l)| {
            let end = self.lines.get(i + 1).map_or(self.text.len(), |n| n.start);
            (l.at, l.kind, self.text[l.start..end].trim_end_matches('\n'))
        })
    }

    /// Lines containing `needle` (already lowercased): `(time, kind, line)`.
    fn find(&self, needle: &str, limit: usize) -> (Vec<(Duration, HitKind, String)>, usize) {
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let mut hits = vec![];
        let mut total = 0;
        let mut last_line = usize::MAX;
        for pos in finder.find_iter(self.lower.as_bytes()) {
            let line = self
                .lines
                .partition_point(|l| l.start <= pos)
                .saturating_sub(1);
            if line == last_line {
                continue;
            }
            last_line = line;
            total += 1;
            if hits.len() < limit
                && let Some(meta) = self.lines.get(line)
            {
                let end = self.text[meta.start..]
                    .find('\n')
                    .map_or(self.text.len(), |e| meta.start + e);
                hits.push((meta.at, meta.kind, self.text[meta.start..end].to_owned()));
            }
        }
        (hits, total)
    }

    /// Builds the document of a terminal recording.
    pub fn of_cast(cast: &Cast) -> Document {
        let mut doc = Document::default();
        let mut out = TextCollector::default();
        let mut out_parser = vte::Parser::new();
        let mut input = TextCollector::default();
        for e in &cast.events {
            let data = cast.data(e);
            match e.kind {
                EventKind::Output => {
                    out.now = e.at;
                    out_parser.advance(&mut out, cast.shown(e).as_bytes());
                    for (at, l) in out.done.drain(..) {
                        doc.push(at, HitKind::Output, &l);
                    }
                }
                EventKind::Input => {
                    input.now = e.at;
                    input.keys(data);
                    for (at, l) in input.done.drain(..) {
                        doc.push(at, HitKind::Input, &l);
                    }
                }
                EventKind::Marker => doc.push(e.at, HitKind::Marker, data),
                EventKind::Resize { .. } => {}
            }
        }
        for c in [&mut out, &mut input] {
            c.end_line();
        }
        for (at, l) in out.done {
            doc.push(at, HitKind::Output, &l);
        }
        for (at, l) in input.done {
            doc.push(at, HitKind::Input, &l);
        }
        doc.finish()
    }

    /// Builds the document of a SQL statement log.
    pub fn of_sql(log: &SqlLog) -> Document {
        let mut doc = Document::default();
        for e in &log.entries {
            match e {
                SqlEntry::Statement(s) => {
                    let mut line = s.text.clone();
                    if let Some(params) = &s.params {
                        let shown: Vec<&str> = params
                            .iter()
                            .map(|p| p.as_deref().unwrap_or("NULL"))
                            .collect();
                        line.push_str(&format!("  -- params: {}", shown.join(", ")));
                    }
                    if let Some(err) = &s.error {
                        line.push_str(&format!("  -- error {}: {}", err.sqlstate, err.message));
                    }
                    doc.push(s.at, HitKind::Sql, &line);
                }
                SqlEntry::Marker { at, label } => doc.push(*at, HitKind::Marker, label),
            }
        }
        doc.finish()
    }

    fn to_cache(&self, stamp: &str) -> String {
        let mut s = format!("{FORMAT} {stamp}\n");
        for (i, l) in self.lines.iter().enumerate() {
            let end = self.lines.get(i + 1).map_or(self.text.len(), |n| n.start);
            s.push_str(&format!("{} {} ", l.at.as_micros(), l.kind.code()));
            s.push_str(&self.text[l.start..end]);
        }
        s
    }

    fn from_cache(text: &str, stamp: &str) -> Option<Document> {
        let mut lines = text.split_terminator('\n');
        if lines.next()? != format!("{FORMAT} {stamp}") {
            return None;
        }
        let mut doc = Document::default();
        for l in lines {
            let mut parts = l.splitn(3, ' ');
            let at = Duration::from_micros(parts.next()?.parse().ok()?);
            let kind = HitKind::of_code(parts.next()?)?;
            doc.lines.push(LineMeta {
                at,
                kind,
                start: doc.text.len(),
            });
            doc.text.push_str(parts.next()?);
            doc.text.push('\n');
        }
        Some(doc.finish())
    }
}

/// Collects printable text from a byte stream, one line per newline; cursor movements
/// become a space so words drawn apart stay apart.
#[derive(Default)]
struct TextCollector {
    now: Duration,
    line: String,
    line_at: Option<Duration>,
    done: Vec<(Duration, String)>,
}

impl TextCollector {
    fn end_line(&mut self) {
        if let Some(at) = self.line_at.take() {
            self.done.push((at, std::mem::take(&mut self.line)));
        }
    }

    fn separate(&mut self) {
        if !self.line.is_empty() && !self.line.ends_with(' ') {
            self.line.push(' ');
        }
    }
}

impl TextCollector {
    /// Keystrokes: Backspace/DEL take back a character (vte ignores DEL), escape sequences
    /// (arrow keys) and other control keys are dropped, Enter ends the line.
    fn keys(&mut self, data: &str) {
        let mut chars = data.chars();
        while let Some(c) = chars.next() {
            match c {
                '\r' | '\n' => self.end_line(),
                '\u{8}' | '\u{7f}' => {
                    self.line.pop();
                }
                '\u{1b}' => {
                    // ESC [ params final, ESC O x, or ESC x
                    match chars.next() {
                        Some('[') => {
                            for c in chars.by_ref() {
                                if ('\u{40}'..='\u{7e}').contains(&c) {
                                    break;
                                }
                            }
                        }
                        Some('O') => {
                            chars.next();
                        }
                        _ => {}
                    }
                }
                c if c.is_control() => {}
                c => vte::Perform::print(self, c),
            }
        }
    }
}

impl vte::Perform for TextCollector {
    fn print(&mut self, c: char) {
        self.line_at.get_or_insert(self.now);
        self.line.push(c);
        if self.line.len() >= MAX_LINE * 4 {
            self.end_line();
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' | b'\r' if !self.line.is_empty() => self.end_line(),
            b'\t' => self.separate(),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, _: &vte::Params, _: &[u8], _: bool, action: char) {
        if matches!(action, 'H' | 'f' | 'C' | 'G' | 'd' | 'J' | 'K') {
            self.separate();
        }
    }
}

/// One match: a session and a moment in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub session: String,
    pub at: Duration,
    pub kind: HitKind,
    pub line: String,
}

/// Search results, newest session first, moments in order.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub hits: Vec<Hit>,
    /// Matching lines not listed (over [`HITS_PER_SESSION`] in one session).
    pub more: usize,
    pub sessions: usize,
    /// Recordings that could not be read.
    pub errors: Vec<String>,
}

pub struct SearchIndex {
    dir: Option<PathBuf>,
    docs: HashMap<String, (String, Arc<Document>)>,
}

/// `len-mtime_ns` of a file: a recording that changed gets a new document.
fn stamp(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}-{mtime}", meta.len()))
}

impl SearchIndex {
    /// `dir` holds cached documents; `None` keeps them in memory only.
    pub fn new(dir: Option<PathBuf>) -> SearchIndex {
        SearchIndex {
            dir,
            docs: HashMap::new(),
        }
    }

    /// The document of one recording, from memory, the cache directory, or built.
    pub fn document(&mut self, session: &str, path: &Path) -> anyhow::Result<Arc<Document>> {
        let stamp = stamp(path)?;
        if let Some((s, doc)) = self.docs.get(session)
            && *s == stamp
        {
            return Ok(Arc::clone(doc));
        }
        let cache = self.dir.as_ref().map(|d| index_file(d, session));
        let cached = cache
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .and_then(|t| Document::from_cache(&t, &stamp));
        let doc = match cached {
            Some(doc) => doc,
            None => {
                let bytes = std::fs::read(path)?;
                let doc = match RecordingKind::of_path(path) {
                    RecordingKind::Terminal => Document::of_cast(&Cast::parse(&bytes)?),
                    RecordingKind::Sql => Document::of_sql(&SqlLog::parse(&bytes)?),
                };
                if let Some(cache) = &cache {
                    // best effort: a reviewer without write access still searches
                    let _ = write_atomically(cache, &doc.to_cache(&stamp));
                }
                doc
            }
        };
        let doc = Arc::new(doc);
        self.docs
            .insert(session.to_owned(), (stamp, Arc::clone(&doc)));
        Ok(doc)
    }

    /// Searches the recordings of `sessions` (in their order) for `query`.
    pub fn search(&mut self, sessions: &[SessionEntry], query: &str) -> Results {
        let needle = query.trim().to_ascii_lowercase();
        let mut results = Results::default();
        if needle.is_empty() {
            return results;
        }
        for s in sessions {
            let Some(path) = &s.recording else { continue };
            if !path.exists() {
                continue;
            }
            let doc = match self.document(&s.id, path) {
                Ok(d) => d,
                Err(e) => {
                    results.errors.push(format!("{}: {e}", s.id));
                    continue;
                }
            };
            let (hits, total) = doc.find(&needle, HITS_PER_SESSION);
            if total > 0 {
                results.sessions += 1;
                results.more += total - hits.len();
            }
            results
                .hits
                .extend(hits.into_iter().map(|(at, kind, line)| Hit {
                    session: s.id.clone(),
                    at,
                    kind,
                    line,
                }));
        }
        results
    }
}

/// The cached document of `session` in `dir` (retention removes it with the recording).
pub fn index_file(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.idx"))
}

/// Writes the index file 0600 in a 0700 directory: it holds the recording's text (what was
/// typed and shown), so it is as private as the recording.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        gatehouse_recorder::file::create_private_dir(dir)?;
    }
    let tmp = path.with_extension("idx.tmp");
    // a temp file left by a crash is replaced, not reused with whatever mode it had
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = gatehouse_recorder::file::private_file_options().open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
