//! The two kinds of recording and their file names, in one place: a terminal session's
//! asciicast (`<session>.cast`), a SQL session's statement log (`<session>.sql.jsonl`), each
//! with its hash-chain sidecar (`<file>.chain`).

use std::path::Path;

/// Extension of a terminal recording.
pub const CAST_EXTENSION: &str = "cast";
/// Extension of a PostgreSQL session's statement log.
pub const SQL_LOG_EXTENSION: &str = "sql.jsonl";
/// Appended to a recording's file name for its chain sidecar.
pub const CHAIN_SUFFIX: &str = ".chain";

/// Which kind of recording a session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingKind {
    /// asciicast v2 (`.cast`).
    Terminal,
    /// PostgreSQL statement log (`.sql.jsonl`).
    Sql,
}

impl RecordingKind {
    pub const ALL: [RecordingKind; 2] = [RecordingKind::Terminal, RecordingKind::Sql];

    pub fn extension(self) -> &'static str {
        match self {
            RecordingKind::Terminal => CAST_EXTENSION,
            RecordingKind::Sql => SQL_LOG_EXTENSION,
        }
    }

    /// By the file name: a statement log, or else a terminal recording.
    pub fn of_path(path: &Path) -> RecordingKind {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(n) if Self::split_file_name(n).is_some_and(|(k, _)| k == RecordingKind::Sql) => {
                RecordingKind::Sql
            }
            _ => RecordingKind::Terminal,
        }
    }

    /// `<session>.<extension>`: the kind and the session id; `None` for another name.
    pub fn split_file_name(name: &str) -> Option<(RecordingKind, &str)> {
        // the longer extension first: `x.sql.jsonl` is never `x.sql` + `.jsonl`
        [RecordingKind::Sql, RecordingKind::Terminal]
            .into_iter()
            .find_map(|k| {
                let id = name.strip_suffix(k.extension())?.strip_suffix('.')?;
                Some((k, id))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_say_the_kind_and_the_session() {
        assert_eq!(
            RecordingKind::split_file_name("0190-a.sql.jsonl"),
            Some((RecordingKind::Sql, "0190-a"))
        );
        assert_eq!(
            RecordingKind::split_file_name("0190-a.cast"),
            Some((RecordingKind::Terminal, "0190-a"))
        );
        assert_eq!(RecordingKind::split_file_name("0190-a.cast.chain"), None);
        assert_eq!(RecordingKind::split_file_name("cast"), None);
        assert_eq!(
            RecordingKind::of_path(Path::new("/r/2025/x.sql.jsonl")),
            RecordingKind::Sql
        );
        assert_eq!(
            RecordingKind::of_path(Path::new("/r/2025/x.cast")),
            RecordingKind::Terminal
        );
    }
}
