//! SFTP wire pieces the tap reads: the packet framer, SSH field readers, and file attributes
//! (draft-ietf-secsh-filexfer-02 §5, `ATTRS` of protocol version 3).

/// Packets larger than this are not SFTP as OpenSSH speaks it (its limit is 256 KiB).
const MAX_PACKET: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Appends bytes and returns the complete packets (type byte onwards), and why the
    /// stream stopped making sense if it did. The packets completed before a bad length are
    /// still returned: an operation followed by garbage in the same write is still logged.
    pub(super) fn push(&mut self, bytes: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut error = None;
        while let Some(len) = self.buf.get(start..start + 4) {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len == 0 || len > MAX_PACKET {
                error = Some(format!("packet length {len}"));
                break;
            }
            let Some(packet) = self.buf.get(start + 4..start + 4 + len) else {
                break;
            };
            out.push(packet.to_vec());
            start += 4 + len;
        }
        // one drain per push, not one per packet: a write full of small packets is linear
        self.buf.drain(..start);
        (out, error)
    }
}

/// Reads SSH wire fields from a packet body; `None` when the packet is cut short.
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl<'a> Fields<'a> {
    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.0 = &self.0[4..];
        Some(v)
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let b = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(b)
    }
    pub(super) fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    /// `ATTRS`: the fields present are those whose flag bit is set, in this order.
    pub(super) fn attrs(&mut self) -> Option<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.owner = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = self.u32()?;
            for _ in 0..count {
                a.extended.push(self.string()?);
                let _value = self.bytes()?;
            }
        }
        Some(a)
    }
}

pub(super) const ATTR_SIZE: u32 = 0x0000_0001;
pub(super) const ATTR_UIDGID: u32 = 0x0000_0002;
pub(super) const ATTR_PERMISSIONS: u32 = 0x0000_0004;
pub(super) const ATTR_ACMODTIME: u32 = 0x0000_0008;
pub(super) const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The attributes a SETSTAT, FSETSTAT or `lsetstat@openssh.com` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// A new size: the file is truncated or extended.
    pub size: Option<u64>,
    /// `(uid, gid)`: chown/chgrp.
    pub owner: Option<(u32, u32)>,
    /// chmod (type bits included if the client sent them).
    pub permissions: Option<u32>,
    /// `(atime, mtime)` in Unix seconds.
    pub times: Option<(u32, u32)>,
    /// Names of extended attributes set.
    pub extended: Vec<String>,
}

impl std::fmt::Display for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(mode) = self.permissions {
            parts.push(format!("mode {:04o}", mode & 0o7777));
        }
        if let Some((uid, gid)) = self.owner {
            parts.push(format!("uid {uid} gid {gid}"));
        }
        if let Some(size) = self.size {
            parts.push(format!("size {size}"));
        }
        if let Some((atime, mtime)) = self.times {
            parts.push(format!("atime {atime} mtime {mtime}"));
        }
        if !self.extended.is_empty() {
            parts.push(format!("extended {}", self.extended.join(",")));
        }
        if parts.is_empty() {
            f.write_str("no attributes")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}
