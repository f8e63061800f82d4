//! Message framing: a tagged message is a type byte, a big-endian `i32` length that counts
//! itself but not the type byte, and the body; startup packets have no type byte.
//!
//! Every length is checked against a cap before anything is allocated for it: the caller
//! picks the cap for the phase ([`MAX_LOGIN_MESSAGE`] before authentication,
//! [`MAX_SESSION_MESSAGE`] after).

use thiserror::Error;

/// Longest message the protocol allows, as PostgreSQL's own limit on a single message
/// (1 GiB). Gatehouse itself uses the smaller caps below.
pub const MAX_MESSAGE: usize = 1 << 30;

/// Longest message accepted before the operator has authenticated: PostgreSQL's own limit
/// for authentication messages (`PG_MAX_AUTH_TOKEN_LENGTH`, 65,535 bytes), rounded up.
pub const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// Longest message relayed after login, in either direction (64 MiB). The relay buffers
/// whole messages, so this bounds a session's memory; it is far above what clients send
/// (COPY data comes in chunks, statements and parameters are rarely over a few MiB) and
/// what a result row needs. A longer message ends the session with a FATAL error.
pub const MAX_SESSION_MESSAGE: usize = 64 << 20;

/// Longest startup packet accepted (PostgreSQL allows 10,000 bytes).
pub const MAX_STARTUP: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message type {tag:?} of {len} bytes is longer than the {max} bytes allowed")]
    TooLong { tag: char, len: i64, max: usize },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
}

impl FrameError {
    /// The message's type byte and declared length, for the refusal's log line.
    pub fn declared(&self) -> Option<(char, i64)> {
        match self {
            FrameError::BadLength { tag, len } | FrameError::TooLong { tag, len, .. } => {
                Some((*tag, *len))
            }
            FrameError::BadStartupLength(_) => None,
        }
    }
}

fn be_i32(b: &[u8]) -> i64 {
    i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Total length (type byte included) of the tagged message at the start of `buf`, once all
/// of it is there; `Ok(None)` while more bytes are needed. Lengths over [`MAX_MESSAGE`] are
/// errors.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    frame_len_within(buf, MAX_MESSAGE)
}

/// Like [`frame_len`], with messages longer than `max` bytes (type byte included) refused
/// as soon as their header is there.
pub fn frame_len_within(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    Ok(declared_len_within(buf, max)?.filter(|total| buf.len() >= *total))
}

/// The total length the message at the start of `buf` declares (type byte included), once
/// its header is there, checked against `max`.
pub fn declared_len_within(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = char::from(buf[0]);
    let len = be_i32(&buf[1..5]);
    if len < 4 {
        return Err(FrameError::BadLength { tag, len });
    }
    // counted in i64: `len + 1` cannot overflow
    if len + 1 > max as i64 {
        return Err(FrameError::TooLong { tag, len, max });
    }
    Ok(Some(len as usize + 1))
}

/// Length of the startup packet at the start of `buf`, once complete.
pub fn startup_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be_i32(&buf[..4]);
    if !(8..=MAX_STARTUP as i64).contains(&len) {
        return Err(FrameError::BadStartupLength(len));
    }
    let len = len as usize;
    Ok((buf.len() >= len).then_some(len))
}

/// Splits `buf` into complete messages: returns the length of the prefix made of whole
/// messages, calling `each(tag, body)` for every one.
pub fn for_each_frame<'a>(
    buf: &'a [u8],
    each: impl FnMut(u8, &'a [u8]),
) -> Result<usize, FrameError> {
    for_each_frame_within(buf, MAX_MESSAGE, each)
}

/// Like [`for_each_frame`], with messages longer than `max` bytes refused.
pub fn for_each_frame_within<'a>(
    buf: &'a [u8],
    max: usize,
    mut each: impl FnMut(u8, &'a [u8]),
) -> Result<usize, FrameError> {
    let mut at = 0;
    while let Some(len) = frame_len_within(&buf[at..], max)? {
        each(buf[at], &buf[at + 5..at + len]);
        at += len;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_need_all_their_bytes() {
        let msg = [b'Q', 0, 0, 0, 8, b's', b'e', b'l', 0];
        assert_eq!(frame_len(&msg[..4]), Ok(None));
        assert_eq!(frame_len(&msg[..8]), Ok(None));
        assert_eq!(frame_len(&msg), Ok(Some(9)));
        let mut two = msg.to_vec();
        two.extend_from_slice(&msg[..6]);
        let mut seen = vec![];
        assert_eq!(for_each_frame(&two, |t, b| seen.push((t, b.len()))), Ok(9));
        assert_eq!(seen, vec![(b'Q', 4)]);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        assert!(frame_len(&[b'Q', 0, 0, 0, 3]).is_err());
        assert!(frame_len(&[b'Q', 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(frame_len(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(startup_len(&[0, 0, 0, 4]).is_err());
        assert!(startup_len(&[0, 1, 0, 0]).is_err());
        assert_eq!(startup_len(&[0, 0, 0, 8, 4, 210, 22]), Ok(None));
    }

    /// An oversized message is refused from its 5-byte header alone, before its body (or
    /// any buffer for it) exists.
    #[test]
    fn oversized_frames_are_refused_from_their_header() {
        let hundred_mb = 100_000_000_i32.to_be_bytes();
        let header = [
            b'p',
            hundred_mb[0],
            hundred_mb[1],
            hundred_mb[2],
            hundred_mb[3],
        ];
        assert_eq!(
            frame_len_within(&header, MAX_LOGIN_MESSAGE),
            Err(FrameError::TooLong {
                tag: 'p',
                len: 100_000_000,
                max: MAX_LOGIN_MESSAGE
            })
        );
        assert_eq!(
            frame_len_within(&header, MAX_LOGIN_MESSAGE)
                .unwrap_err()
                .declared(),
            Some(('p', 100_000_000))
        );
        assert!(frame_len_within(&header, MAX_SESSION_MESSAGE).is_err());
        // the cap counts the type byte: exactly `max` bytes in all is accepted
        let len = (MAX_LOGIN_MESSAGE - 1) as i32;
        let mut at_cap = vec![b'p'];
        at_cap.extend_from_slice(&len.to_be_bytes());
        assert_eq!(frame_len_within(&at_cap, MAX_LOGIN_MESSAGE), Ok(None));
        at_cap.resize(MAX_LOGIN_MESSAGE, 0);
        assert_eq!(
            frame_len_within(&at_cap, MAX_LOGIN_MESSAGE),
            Ok(Some(MAX_LOGIN_MESSAGE))
        );
        let over = (MAX_LOGIN_MESSAGE as i32).to_be_bytes();
        assert!(
            frame_len_within(
                &[b'p', over[0], over[1], over[2], over[3]],
                MAX_LOGIN_MESSAGE
            )
            .is_err()
        );
        let mut seen = 0;
        assert!(for_each_frame_within(&header, MAX_SESSION_MESSAGE, |_, _| seen += 1).is_err());
        assert_eq!(seen, 0);
    }
}
