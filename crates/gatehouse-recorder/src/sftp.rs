//! A transfer log for SFTP sessions (and OpenSSH 9's `scp`, which speaks SFTP): which files
//! were opened, read, written, removed or renamed, and how many bytes moved — instead of
//! recording the raw bytes.
//!
//! Hand-written because it only *observes* a stream: the SFTP crates implement clients and
//! servers, not a passive tap that must survive any byte sequence. The parser reads
//! length-prefixed packets (draft-ietf-secsh-filexfer-02, version 3, as OpenSSH speaks it),
//! needs only a few fields of a few packet types, and gives up quietly (reporting once) on a
//! stream it cannot follow; it never affects the relay.

use std::collections::HashMap;

/// Packets larger than this are not SFTP as OpenSSH speaks it (its limit is 256 KiB).
const MAX_PACKET: usize = 1024 * 1024;

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;

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
    Rename {
        from: String,
        to: String,
    },
    Mkdir(String),
    Rmdir(String),
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
            Transfer::Rename { from, to } => write!(f, "sftp rename {from} -> {to}"),
            Transfer::Mkdir(p) => write!(f, "sftp mkdir {p}"),
            Transfer::Rmdir(p) => write!(f, "sftp rmdir {p}"),
            Transfer::Unparseable(why) => write!(f, "sftp stream not followed further: {why}"),
        }
    }
}

#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Appends bytes and returns the complete packets (type byte onwards).
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(len) = self.buf.get(..4) {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len == 0 || len > MAX_PACKET {
                return Err(format!("packet length {len}"));
            }
            if self.buf.len() < 4 + len {
                break;
            }
            out.push(self.buf[4..4 + len].to_vec());
            self.buf.drain(..4 + len);
        }
        Ok(out)
    }
}

/// Reads SSH wire fields from a packet body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.0 = &self.0[4..];
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let b = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(b)
    }
    fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
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
    failed: bool,
}

impl SftpTap {
    /// Bytes the operator sent; returns log lines completed by them.
    pub fn operator_bytes(&mut self, bytes: &[u8]) -> Vec<Transfer> {
        if self.failed {
            return Vec::new();
        }
        match self.from_operator.push(bytes) {
            Ok(packets) => packets.iter().filter_map(|p| self.request(p)).collect(),
            Err(why) => self.fail(why),
        }
    }

    /// Bytes the target sent.
    pub fn target_bytes(&mut self, bytes: &[u8]) -> Vec<Transfer> {
        if self.failed {
            return Vec::new();
        }
        match self.from_target.push(bytes) {
            Ok(packets) => {
                for p in packets {
                    self.response(&p);
                }
                Vec::new()
            }
            Err(why) => self.fail(why),
        }
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

    fn request(&mut self, packet: &[u8]) -> Option<Transfer> {
        let mut f = Fields(packet);
        let kind = f.u8()?;
        match kind {
            FXP_OPEN => {
                let id = f.u32()?;
                let path = f.string()?;
                self.pending_open.insert(id, path);
                None
            }
            FXP_READ => {
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                self.pending_read.insert(id, handle);
                None
            }
            FXP_WRITE => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                let _offset = f.u64()?;
                let data = f.bytes()?;
                if let Some(file) = self.files.get_mut(handle) {
                    file.uploaded += data.len() as u64;
                }
                None
            }
            FXP_CLOSE => {
                let _id = f.u32()?;
                let handle = f.bytes()?;
                self.files.remove(handle).map(|file| Transfer::File {
                    path: file.path,
                    uploaded: file.uploaded,
                    downloaded: file.downloaded,
                })
            }
            FXP_REMOVE => {
                let _id = f.u32()?;
                Some(Transfer::Remove(f.string()?))
            }
            FXP_MKDIR => {
                let _id = f.u32()?;
                Some(Transfer::Mkdir(f.string()?))
            }
            FXP_RMDIR => {
                let _id = f.u32()?;
                Some(Transfer::Rmdir(f.string()?))
            }
            FXP_RENAME => {
                let _id = f.u32()?;
                let from = f.string()?;
                let to = f.string()?;
                Some(Transfer::Rename { from, to })
            }
            _ => None,
        }
    }

    fn response(&mut self, packet: &[u8]) -> Option<()> {
        let mut f = Fields(packet);
        match f.u8()? {
            FXP_HANDLE => {
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                if let Some(path) = self.pending_open.remove(&id) {
                    self.files.insert(
                        handle,
                        OpenFile {
                            path,
                            uploaded: 0,
                            downloaded: 0,
                        },
                    );
                }
            }
            FXP_DATA => {
                let id = f.u32()?;
                let data = f.bytes()?;
                if let Some(handle) = self.pending_read.remove(&id)
                    && let Some(file) = self.files.get_mut(&handle)
                {
                    file.downloaded += data.len() as u64;
                }
            }
            _ => {
                // STATUS and others: a failed READ (EOF) must not leak its pending entry
                let id = f.u32()?;
                self.pending_read.remove(&id);
                self.pending_open.remove(&id);
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind];
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }
    fn u32b(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
    fn s(v: &[u8]) -> Vec<u8> {
        let mut out = u32b(v.len() as u32);
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn upload_then_download_split_at_every_byte() {
        let mut op = Vec::new();
        let mut tg = Vec::new();
        // upload: open(1) -> handle h1, two writes, close
        op.extend(packet(
            FXP_OPEN,
            &[&u32b(1), &s(b"/tmp/up.bin"), &u32b(0x1a), &u32b(0)],
        ));
        tg.extend(packet(FXP_HANDLE, &[&u32b(1), &s(b"h1")]));
        op.extend(packet(
            FXP_WRITE,
            &[&u32b(2), &s(b"h1"), &[0; 8], &s(&[7; 1000])],
        ));
        op.extend(packet(
            FXP_WRITE,
            &[&u32b(3), &s(b"h1"), &[0; 8], &s(&[7; 24])],
        ));
        op.extend(packet(FXP_CLOSE, &[&u32b(4), &s(b"h1")]));
        let mut tap = SftpTap::default();
        let mut log = Vec::new();
        // the handle reply arrives before the writes are parsed
        log.extend(tap.operator_bytes(&op[..op.len() / 3]));
        for b in &tg {
            log.extend(tap.target_bytes(std::slice::from_ref(b)));
        }
        for b in &op[op.len() / 3..] {
            log.extend(tap.operator_bytes(std::slice::from_ref(b)));
        }
        assert_eq!(
            log,
            [Transfer::File {
                path: "/tmp/up.bin".into(),
                uploaded: 1024,
                downloaded: 0
            }]
        );
        assert_eq!(log[0].to_string(), "sftp upload /tmp/up.bin (1024 bytes)");

        // download: open, read -> data, read -> status EOF, close
        let mut log = Vec::new();
        log.extend(tap.operator_bytes(&packet(
            FXP_OPEN,
            &[&u32b(5), &s(b"/etc/hosts"), &u32b(1), &u32b(0)],
        )));
        tap.target_bytes(&packet(FXP_HANDLE, &[&u32b(5), &s(b"h2")]));
        tap.operator_bytes(&packet(
            FXP_READ,
            &[&u32b(6), &s(b"h2"), &[0; 8], &u32b(32768)],
        ));
        tap.target_bytes(&packet(FXP_DATA, &[&u32b(6), &s(&[1; 300])]));
        tap.operator_bytes(&packet(
            FXP_READ,
            &[&u32b(7), &s(b"h2"), &[0; 8], &u32b(32768)],
        ));
        tap.target_bytes(&packet(101, &[&u32b(7), &u32b(1), &s(b"EOF"), &s(b"")]));
        log.extend(tap.operator_bytes(&packet(FXP_CLOSE, &[&u32b(8), &s(b"h2")])));
        assert_eq!(log[0].to_string(), "sftp download /etc/hosts (300 bytes)");
        assert!(tap.pending_read.is_empty());
    }

    #[test]
    fn other_operations_and_garbage() {
        let mut tap = SftpTap::default();
        let log = tap.operator_bytes(
            &[
                packet(FXP_REMOVE, &[&u32b(1), &s(b"/a")]),
                packet(FXP_RENAME, &[&u32b(2), &s(b"/b"), &s(b"/c")]),
                packet(FXP_MKDIR, &[&u32b(3), &s(b"/d"), &u32b(0)]),
            ]
            .concat(),
        );
        assert_eq!(
            log.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["sftp remove /a", "sftp rename /b -> /c", "sftp mkdir /d"]
        );
        let log = tap.operator_bytes(&[0xff; 16]);
        assert!(matches!(&log[..], [Transfer::Unparseable(_)]));
        assert!(
            tap.operator_bytes(&packet(FXP_REMOVE, &[&u32b(1), &s(b"/x")]))
                .is_empty()
        );
        // truncated fields inside a well-framed packet never panic
        let mut tap = SftpTap::default();
        assert!(
            tap.operator_bytes(&packet(FXP_WRITE, &[&u32b(1)]))
                .is_empty()
        );
        assert!(tap.target_bytes(&packet(FXP_DATA, &[&[1, 2]])).is_empty());
    }
}
