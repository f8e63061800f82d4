//! A transfer log for SFTP sessions (and OpenSSH 9's `scp`, which speaks SFTP): every request
//! that changes the target — files written or read, removed, renamed, linked, copied,
//! attributes changed, directories made or removed — and how many bytes moved, instead of
//! recording the raw bytes.
//!
//! Hand-written because it only *observes* a stream: the SFTP crates implement clients and
//! servers, not a passive tap that must survive any byte sequence. The parser reads
//! length-prefixed packets (draft-ietf-secsh-filexfer-02, version 3, as OpenSSH speaks it,
//! with the extensions of OpenSSH's `PROTOCOL` file), needs only a few fields of a few packet
//! types, and gives up quietly (reporting once) on a stream it cannot follow; it never
//! affects the relay. A request is logged when the operator sends it, whether or not the
//! target then carries it out: the log says what was attempted.

mod wire;

use std::collections::HashMap;

pub use wire::Attrs;
use wire::{Fields, Framer};

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_SYMLINK: u8 = 20;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_EXTENDED: u8 = 200;

/// Extended requests (OpenSSH `PROTOCOL` §4, and `copy-data` from filexfer-extensions-00)
/// that only read or report: not logged. Any other extension name is logged by name, so a
/// request the tap does not understand is never silent.
const READ_ONLY_EXTENSIONS: &[&str] = &[
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "fsync@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "home-directory",
    "users-groups-by-id@openssh.com",
];

/// Writes to handles the target has not yet named are remembered for this many handles at
/// most (a client may pipeline OPEN and WRITE with a handle it guessed).
const MAX_EARLY_HANDLES: usize = 64;

/// One line of the transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// A file was closed: bytes the operator uploaded (written) and downloaded (read).
    File {
        path: String,
        uploaded: u64,
        downloaded: u64,
    },
    Remove(String),
    /// RENAME, or `posix-rename@openssh.com` (which replaces an existing `to`).
    Rename {
        from: String,
        to: String,
        posix: bool,
    },
    Mkdir(String),
    Rmdir(String),
    /// SETSTAT (`path`), FSETSTAT (the open file's path) or `lsetstat@openssh.com` (does not
    /// follow a symlink): chmod, chown, truncate, touch.
    SetStat {
        request: &'static str,
        path: String,
        attrs: Attrs,
    },
    /// `link` now points at `target`.
    Symlink {
        link: String,
        target: String,
    },
    /// `hardlink@openssh.com`: `link` is a new name for `existing`.
    Hardlink {
        existing: String,
        link: String,
    },
    /// `copy-data`: a server-side copy between two open files; `length` 0 means to the end.
    CopyData {
        from: String,
        from_offset: u64,
        length: u64,
        to: String,
        to_offset: u64,
    },
    /// An extended request the tap does not interpret.
    Extended(String),
    /// The stream stopped making sense; nothing more is logged for this channel.
    Unparseable(String),
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transfer::File {
                path,
                uploaded,
                downloaded,
            } => match (uploaded, downloaded) {
                (0, 0) => write!(f, "sftp open {path} (no data)"),
                (u, 0) => write!(f, "sftp upload {path} ({u} bytes)"),
                (0, d) => write!(f, "sftp download {path} ({d} bytes)"),
                (u, d) => write!(f, "sftp upload {path} ({u} bytes) and download ({d} bytes)"),
            },
            Transfer::Remove(p) => write!(f, "sftp remove {p}"),
            Transfer::Rename { from, to, posix } => {
                let verb = if *posix { "posix-rename" } else { "rename" };
                write!(f, "sftp {verb} {from} -> {to}")
            }
            Transfer::Mkdir(p) => write!(f, "sftp mkdir {p}"),
            Transfer::Rmdir(p) => write!(f, "sftp rmdir {p}"),
            Transfer::SetStat {
                request,
                path,
                attrs,
            } => write!(f, "sftp {request} {path} ({attrs})"),
            Transfer::Symlink { link, target } => write!(f, "sftp symlink {link} -> {target}"),
            Transfer::Hardlink { existing, link } => {
                write!(f, "sftp hardlink {link} to {existing}")
            }
            Transfer::CopyData {
                from,
                from_offset,
                length,
                to,
                to_offset,
            } => {
                let length = match length {
                    0 => "to the end".to_owned(),
                    n => format!("{n} bytes"),
                };
                write!(
                    f,
                    "sftp copy-data {from} at {from_offset} -> {to} at {to_offset} ({length})"
                )
            }
            Transfer::Extended(name) => write!(f, "sftp extended request {name} (not interpreted)"),
            Transfer::Unparseable(why) => write!(f, "sftp stream not followed further: {why}"),
        }
    }
}

#[derive(Debug)]
struct OpenFile {
    path: String,
    uploaded: u64,
    downloaded: u64,
}

/// Follows one SFTP channel in both directions.
#[derive(Debug, Default)]
pub struct SftpTap {
    from_operator: Framer,
    from_target: Framer,
    pending_open: HashMap<u32, String>,
    pending_read: HashMap<u32, Vec<u8>>,
    files: HashMap<Vec<u8>, OpenFile>,
    /// Bytes written to handles the target had not named yet.
    early_writes: HashMap<Vec<u8>, u64>,
    failed: bool,
}

impl SftpTap {
    /// Bytes the operator sent; returns log lines completed by them.
    pub fn operator_bytes(&mut self, bytes: &[u8]) -> Vec<Transfer> {
        if self.failed {
            return Vec::new();
        }
        let (packets, error) = self.from_operator.push(bytes);
        let mut log: Vec<Transfer> = packets.iter().filter_map(|p| self.request(p)).collect();
        if let Some(why) = error {
            log.extend(self.fail(why));
        }
        log
    }

    /// Bytes the target sent.
    pub fn target_bytes(&mut self, bytes: &[u8]) -> Vec<Transfer> {
        if self.failed {
            return Vec::new();
        }
        let (packets, error) = self.from_target.push(bytes);
        for p in packets {
            self.response(&p);
        }
        error.map(|why| self.fail(why)).unwrap_or_default()
    }

    /// Files still open when the channel closed.
    pub fn finish(&mut self) -> Vec<Transfer> {
        self.files
            .drain()
            .map(|(_, f)| Transfer::File {
                path: f.path,
                uploaded: f.uploaded,
                downloaded: f.downloaded,
            })
            .collect()
    }

    fn fail(&mut self, why: String) -> Vec<Transfer> {
        self.failed = true;
        vec![Transfer::Unparseable(why)]
    }

    /// The path a handle was opened for, or the handle itself in hex.
    fn handle_path(&self, handle: &[u8]) -> String {
        match self.files.get(handle) {
            Some(file) => file.path.clone(),
            None => {
                let hex: String = handle.iter().map(|b| format!("{b:02x}")).collect();
                format!("handle 0x{hex}")
            }
        }
    }

    fn request(&mut self, packet: &[u8]) -> Option<Transfer> {
        let mut f = Fields(packet);
        let kind = f.u8()?;
        let id = f.u32()?;
        match kind {
            FXP_OPEN => {
                self.pending_open.insert(id, f.string()?);
                None
            }
            FXP_READ => {
                self.pending_read.insert(id, f.bytes()?.to_vec());
                None
            }
            FXP_WRITE => {
                let handle = f.bytes()?;
                let _offset = f.u64()?;
                let written = f.bytes()?.len() as u64;
                if let Some(file) = self.files.get_mut(handle) {
                    file.uploaded += written;
                } else if let Some(early) = self.early_writes.get_mut(handle) {
                    *early += written;
                } else if !self.pending_open.is_empty()
                    && self.early_writes.len() < MAX_EARLY_HANDLES
                {
                    // only while an OPEN awaits its handle can this handle still become a file
                    self.early_writes.insert(handle.to_vec(), written);
                }
                None
            }
            FXP_CLOSE => {
                let handle = f.bytes()?;
                self.files.remove(handle).map(|file| Transfer::File {
                    path: file.path,
                    uploaded: file.uploaded,
                    downloaded: file.downloaded,
                })
            }
            FXP_SETSTAT => Some(Transfer::SetStat {
                request: "setstat",
                path: f.string()?,
                attrs: f.attrs()?,
            }),
            FXP_FSETSTAT => {
                let path = self.handle_path(f.bytes()?);
                Some(Transfer::SetStat {
                    request: "fsetstat",
                    path,
                    attrs: f.attrs()?,
                })
            }
            FXP_REMOVE => Some(Transfer::Remove(f.string()?)),
            FXP_MKDIR => Some(Transfer::Mkdir(f.string()?)),
            FXP_RMDIR => Some(Transfer::Rmdir(f.string()?)),
            FXP_RENAME => Some(Transfer::Rename {
                from: f.string()?,
                to: f.string()?,
                posix: false,
            }),
            // OpenSSH's sftp-server reads SYMLINK's two paths in the reverse of the draft's
            // order (OpenSSH PROTOCOL §4.1): target first, then the link to create.
            FXP_SYMLINK => Some(Transfer::Symlink {
                target: f.string()?,
                link: f.string()?,
            }),
            FXP_EXTENDED => self.extended(f),
            _ => None,
        }
    }

    /// SSH_FXP_EXTENDED: `string name` then the request's own fields.
    fn extended(&mut self, mut f: Fields<'_>) -> Option<Transfer> {
        let name = f.string()?;
        match name.as_str() {
            "posix-rename@openssh.com" => Some(Transfer::Rename {
                from: f.string()?,
                to: f.string()?,
                posix: true,
            }),
            "hardlink@openssh.com" => Some(Transfer::Hardlink {
                existing: f.string()?,
                link: f.string()?,
            }),
            "lsetstat@openssh.com" => Some(Transfer::SetStat {
                request: "lsetstat",
                path: f.string()?,
                attrs: f.attrs()?,
            }),
            "copy-data" => {
                let from = self.handle_path(f.bytes()?);
                let from_offset = f.u64()?;
                let length = f.u64()?;
                let to = self.handle_path(f.bytes()?);
                Some(Transfer::CopyData {
                    from,
                    from_offset,
                    length,
                    to,
                    to_offset: f.u64()?,
                })
            }
            known if READ_ONLY_EXTENSIONS.contains(&known) => None,
            _ => Some(Transfer::Extended(name)),
        }
    }

    fn response(&mut self, packet: &[u8]) -> Option<()> {
        let mut f = Fields(packet);
        let kind = f.u8()?;
        let id = f.u32()?;
        match kind {
            FXP_HANDLE => {
                let handle = f.bytes()?.to_vec();
                if let Some(path) = self.pending_open.remove(&id) {
                    let uploaded = self.early_writes.remove(&handle).unwrap_or(0);
                    self.files.insert(
                        handle,
                        OpenFile {
                            path,
                            uploaded,
                            downloaded: 0,
                        },
                    );
                }
            }
            FXP_DATA => {
                let data = f.bytes()?;
                if let Some(handle) = self.pending_read.remove(&id)
                    && let Some(file) = self.files.get_mut(&handle)
                {
                    file.downloaded += data.len() as u64;
                }
            }
            _ => {
                // STATUS and others: a failed READ (EOF) must not leak its pending entry
                self.pending_read.remove(&id);
                self.pending_open.remove(&id);
            }
        }
        if self.pending_open.is_empty() {
            // no handle is awaited: what was written to unnamed handles went nowhere
            self.early_writes.clear();
        }
        Some(())
    }
}

#[cfg(test)]
mod tests;
