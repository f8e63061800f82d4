//! The SQLite store's files are private (0600): they hold password hashes, sealed target
//! credentials, TOTP secrets and the audit log.
//!
//! SQLite creates a missing database file 0644 (less the umask) and gives its `-wal`, `-shm`
//! and `-journal` files the database file's own mode. So the store creates the empty
//! database file itself, 0600, before SQLite opens it, and narrows files an older version
//! left readable by others.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::StoreError;

const MODE: u32 = 0o600;
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The database file of a `sqlite:` URL, decoded as sqlx decodes it; `None` for an in-memory
/// database.
pub(crate) fn path_of_url(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)?))
}

/// `%XX` sequences decoded; `None` if the result is not UTF-8 (sqlx refuses it too).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn file_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::FileMode {
        path: path.display().to_string(),
        source,
    }
}

/// Before SQLite opens `db`: creates it empty and 0600 if missing (an empty file is an
/// empty database).
pub(crate) fn create_private(db: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(db)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(file_error(db, e)),
    }
}

/// Narrows `db` and its companions to 0600 where they are readable or writable by others.
pub(crate) fn narrow(db: &Path) -> Result<(), StoreError> {
    let mut paths = vec![db.to_path_buf()];
    paths.extend(COMPANIONS.iter().map(|suffix| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    }));
    for path in paths {
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error(&path, e)),
        };
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o7777), "store file was readable by others: narrowed to 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(MODE))
                .map_err(|e| file_error(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_name_their_file() {
        let p = |u: &str| path_of_url(u).map(|p| p.display().to_string());
        assert_eq!(p("sqlite:///srv/g.db").as_deref(), Some("/srv/g.db"));
        assert_eq!(p("sqlite://g.db?mode=rwc").as_deref(), Some("g.db"));
        assert_eq!(p("sqlite:g.db").as_deref(), Some("g.db"));
        assert_eq!(p("sqlite:///a%20b.db").as_deref(), Some("/a b.db"));
        assert_eq!(p("sqlite::memory:"), None);
        assert_eq!(p("sqlite://x.db?mode=memory"), None);
        assert_eq!(p("postgres://u@h/db"), None);
    }
}
