//! Checking a recording against its chain sidecar and, once sealed, against the digest the
//! store holds; a recording still being written or cut short by a crash against its last
//! checkpoint in the store (which an unkeyed chain alone cannot prove: whoever rewrites the
//! file can rewrite its sidecar).

use std::path::Path;

use crate::file::chain_path;
use crate::format::Chain;

/// What the store says a sealed recording must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub events: u64,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Complete and untouched.
    Ok { events: u64 },
    /// The broker died while recording: intact up to its last complete event.
    Truncated { events: u64 },
    /// Changed after it was written; `event` is the first line that does not check out
    /// (0 is the header).
    Tampered { event: u64, why: String },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Ok { events } => write!(f, "ok ({events} events)"),
            Verdict::Truncated { events } => {
                write!(f, "truncated (interrupted) after {events} events")
            }
            Verdict::Tampered { event, why } => write!(f, "TAMPERED at event {event}: {why}"),
        }
    }
}

/// Verifies `cast`. With `expected` (a sealed recording) the file must be complete and
/// hash to it; without (an interrupted one) a clean prefix is `Truncated`.
pub fn verify(cast: &Path, expected: Option<&Expected>) -> std::io::Result<Verdict> {
    check(cast, expected, None)
}

/// Verifies an unsealed `cast` (live or interrupted) whose first `checkpoint.events` events
/// must hash to `checkpoint.digest`; a clean file reaching at least that far is `Truncated`.
pub fn verify_to_checkpoint(cast: &Path, checkpoint: &Expected) -> std::io::Result<Verdict> {
    check(cast, None, Some(checkpoint))
}

fn check(
    cast: &Path,
    expected: Option<&Expected>,
    checkpoint: Option<&Expected>,
) -> std::io::Result<Verdict> {
    let mut text = std::fs::read(cast)?;
    let sidecar = std::fs::read_to_string(chain_path(cast)).unwrap_or_default();
    let digests: Vec<&str> = sidecar
        .lines()
        .map(|l| l.split_once(' ').map_or("", |(_, d)| d))
        .collect();
    // where each complete line starts and ends (its newline excluded)
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', &text) {
        lines.push((start, newline));
        start = newline + 1;
    }
    // a final piece without newline is an event cut short by a crash
    let partial = start < text.len();
    let tampered = |event: usize, why: &str| {
        Ok(Verdict::Tampered {
            event: event as u64,
            why: why.to_owned(),
        })
    };
    let Some(&(start, end)) = lines.first() else {
        return tampered(0, "no header");
    };
    let Ok(header) = std::str::from_utf8(&text[start..end]) else {
        return tampered(0, "header is not UTF-8");
    };
    // the chain's version is the one whose first digest the sidecar holds (`Chain`)
    let Some(mut chain) = digests.first().and_then(|d0| Chain::matching(header, d0)) else {
        return tampered(0, "header does not match its digest");
    };
    let off_checkpoint = |chain: &Chain| {
        checkpoint.is_some_and(|c| c.events == chain.events() && !chain.hex_is(&c.digest))
    };
    const CHECKPOINT_DIFFERS: &str =
        "digest at the last checkpoint differs from the one in the store";
    if off_checkpoint(&chain) {
        return tampered(0, CHECKPOINT_DIFFERS);
    }
    for (i, &(start, end)) in lines.iter().enumerate().skip(1) {
        // the bytes as read: a line the writer wrote is UTF-8, and one that is not must
        // not hash as the text it would be shown as (U+FFFD written, 0xFF read); hashed
        // where it lies, with the digest before it in one pass (`push_at`: the end of the
        // line before, already hashed, lends its place and gets it back)
        chain.push_at(&mut text[..end], start);
        match digests.get(i) {
            Some(d) if chain.hex_is(d) => {}
            Some(_) => return tampered(i, "line does not match its digest"),
            None => return tampered(i, "line was added after recording"),
        }
        if off_checkpoint(&chain) {
            return tampered(i, CHECKPOINT_DIFFERS);
        }
    }
    let events = chain.events();
    if let Some(c) = checkpoint
        && events < c.events
    {
        return tampered(lines.len(), "lines were removed before the last checkpoint");
    }
    match expected {
        Some(exp) => {
            if partial {
                return tampered(lines.len(), "incomplete last line in a sealed recording");
            }
            if digests.len() > lines.len() || events < exp.events {
                return tampered(lines.len(), "lines were removed from the end");
            }
            if events != exp.events || chain.hex() != exp.digest {
                return tampered(
                    lines.len(),
                    "final digest differs from the one in the store",
                );
            }
            Ok(Verdict::Ok { events })
        }
        None => Ok(Verdict::Truncated { events }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::file::RecordingFile;
    use crate::format::{ChainVersion, Code, event_line};

    fn record(dir: &Path, events: usize, tag: &str) -> (std::path::PathBuf, Expected) {
        let header = crate::file::tests::header();
        let mut f = RecordingFile::create(dir, "s1", SystemTime::now(), &header).unwrap();
        for i in 0..events {
            f.append(&event_line(
                Duration::from_millis(i as u64),
                Code::Output,
                &format!("{tag} {i}\r\n"),
            ))
            .unwrap();
        }
        let sealed = f.seal().unwrap();
        (
            sealed.path,
            Expected {
                events: sealed.events,
                digest: sealed.digest,
            },
        )
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn untouched_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (path, exp) = record(dir.path(), 5, "line");
        assert_eq!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Ok { events: 5 }
        );
        assert_eq!(
            verify(&path, None).unwrap(),
            Verdict::Truncated { events: 5 }
        );
    }

    #[test]
    fn flipped_byte_deleted_line_and_appended_line_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (path, exp) = record(dir.path(), 5, "line");
        let pristine = std::fs::read(&path).unwrap();

        edit(&path, |l| l[3] = l[3].replace("line 2", "line X"));
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 3, .. }
        ));

        std::fs::write(&path, &pristine).unwrap();
        edit(&path, |l| {
            l.remove(2);
        });
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 2, .. }
        ));

        std::fs::write(&path, &pristine).unwrap();
        edit(&path, |l| l.push(r#"[9.0, "o", "forged"]"#.into()));
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 6, .. }
        ));

        std::fs::write(&path, &pristine).unwrap();
        edit(&path, |l| {
            l.pop();
        });
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 5, .. }
        ));

        // header edited
        std::fs::write(&path, &pristine).unwrap();
        edit(&path, |l| l[0] = l[0].replace("80", "81"));
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 0, .. }
        ));
    }

    /// A recorded U+FFFD (what the writer puts for bytes that were not UTF-8) swapped for
    /// an invalid byte reads back as the same text, but not as the same bytes: caught.
    #[test]
    fn a_replacement_character_swapped_for_an_invalid_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (path, exp) = record(dir.path(), 3, "x\u{fffd}y");
        let pristine = std::fs::read(&path).unwrap();
        let fffd = "\u{fffd}".as_bytes();
        let at = pristine
            .windows(3)
            .rposition(|w| w == fffd)
            .expect("a replacement character");
        let mut forged = pristine.clone();
        forged.splice(at..at + 3, [0xff]);
        assert_eq!(
            String::from_utf8_lossy(&forged),
            String::from_utf8_lossy(&pristine)
        );
        std::fs::write(&path, &forged).unwrap();
        assert!(matches!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered { event: 3, .. }
        ));
    }

    #[test]
    fn rewriting_file_and_sidecar_together_is_caught_by_the_stored_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (path, exp) = record(dir.path(), 3, "real");
        let other = tempfile::tempdir().unwrap();
        let (forged, _) = record(other.path(), 3, "forged");
        // the forger replaces the recording and recomputes its sidecar consistently
        std::fs::copy(&forged, &path).unwrap();
        std::fs::copy(chain_path(&forged), chain_path(&path)).unwrap();
        assert_eq!(
            verify(&path, Some(&exp)).unwrap(),
            Verdict::Tampered {
                event: 4,
                why: "final digest differs from the one in the store".into()
            }
        );
    }

    #[test]
    fn an_unsealed_recording_is_verified_to_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = record(dir.path(), 6, "real");
        // the checkpoint the store took at event 4
        let text = std::fs::read_to_string(&path).unwrap();
        let mut chain = Chain::new(text.lines().next().unwrap());
        for l in text.lines().skip(1).take(4) {
            chain.push(l);
        }
        let at4 = Expected {
            events: 4,
            digest: chain.hex(),
        };
        assert_eq!(
            verify_to_checkpoint(&path, &at4).unwrap(),
            Verdict::Truncated { events: 6 }
        );
        // the file and its sidecar rewritten consistently: the chain alone is fooled...
        let other = tempfile::tempdir().unwrap();
        let (forged, _) = record(other.path(), 6, "forged");
        std::fs::copy(&forged, &path).unwrap();
        std::fs::copy(chain_path(&forged), chain_path(&path)).unwrap();
        assert_eq!(
            verify(&path, None).unwrap(),
            Verdict::Truncated { events: 6 }
        );
        // ...the checkpoint is not
        assert!(matches!(
            verify_to_checkpoint(&path, &at4).unwrap(),
            Verdict::Tampered { event: 4, .. }
        ));
        // the real recording cut back to before the checkpoint (file and sidecar): detected
        let (short, _) = record(other.path().join("s").as_path(), 3, "real");
        std::fs::copy(&short, &path).unwrap();
        std::fs::copy(chain_path(&short), chain_path(&path)).unwrap();
        assert!(matches!(
            verify_to_checkpoint(&path, &at4).unwrap(),
            Verdict::Tampered { event: 4, .. }
        ));
    }

    /// Rewrites `path`'s sidecar under `version`'s chain (as a broker of that version wrote
    /// it): what the store would hold for it.
    fn rechain(path: &Path, version: ChainVersion) -> Expected {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let mut chain = Chain::with_version(version, lines.next().unwrap());
        let mut sidecar = format!("0 {}\n", chain.hex());
        for (i, line) in lines.enumerate() {
            chain.push(line);
            sidecar += &format!("{} {}\n", i + 1, chain.hex());
        }
        std::fs::write(chain_path(path), sidecar).unwrap();
        Expected {
            events: chain.events(),
            digest: chain.hex(),
        }
    }

    #[test]
    fn new_recordings_are_chained_with_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let (path, exp) = record(dir.path(), 3, "line");
        let written = std::fs::read_to_string(chain_path(&path)).unwrap();
        // the sidecar the writer made is exactly the v2 chain over the file
        assert_eq!(rechain(&path, ChainVersion::V2Blake3), exp);
        assert_eq!(std::fs::read_to_string(chain_path(&path)).unwrap(), written);
        assert_ne!(rechain(&path, ChainVersion::V1Sha256).digest, exp.digest);
    }

    /// Recordings made before v2 (SHA-256) still verify, and their tampering is still
    /// caught; switching a recording to the other version (file and sidecar rewritten
    /// consistently) does not get past the digest the store holds.
    #[test]
    fn a_v1_recording_still_verifies_and_a_switched_version_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (path, v2) = record(dir.path(), 5, "line");
        let v1 = rechain(&path, ChainVersion::V1Sha256);
        assert_eq!(v1.events, 5);
        assert_eq!(verify(&path, Some(&v1)).unwrap(), Verdict::Ok { events: 5 });
        assert_eq!(
            verify_to_checkpoint(
                &path,
                &Expected {
                    events: 5,
                    digest: v1.digest.clone()
                }
            )
            .unwrap(),
            Verdict::Truncated { events: 5 }
        );
        // a v2 recording whose sidecar was rewritten as v1: the store's v2 digest differs
        assert_eq!(
            verify(&path, Some(&v2)).unwrap(),
            Verdict::Tampered {
                event: 6,
                why: "final digest differs from the one in the store".into()
            }
        );
        // a v1 recording edited: caught at the line
        let pristine = std::fs::read(&path).unwrap();
        edit(&path, |l| l[2] = l[2].replace("line 1", "line X"));
        assert!(matches!(
            verify(&path, Some(&v1)).unwrap(),
            Verdict::Tampered { event: 2, .. }
        ));
        // and its header: neither version's first digest matches
        std::fs::write(&path, &pristine).unwrap();
        edit(&path, |l| l[0] = l[0].replace("80", "81"));
        assert_eq!(
            verify(&path, Some(&v1)).unwrap(),
            Verdict::Tampered {
                event: 0,
                why: "header does not match its digest".into()
            }
        );
    }

    #[test]
    fn a_crash_mid_line_is_truncated_not_tampered() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = record(dir.path(), 4, "line");
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"[5.0, \"o\", \"cut sho");
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            verify(&path, None).unwrap(),
            Verdict::Truncated { events: 4 }
        );
    }
}
