//! Message framing: a tagged message is a type byte, a big-endian `i32` length that counts
//! itself but not the type byte, and the body; startup packets have no type byte.

use thiserror::Error;

/// Longest message accepted, as PostgreSQL's own limit on a single message (1 GiB).
pub const MAX_MESSAGE: usize = 1 << 30;

/// Longest startup packet accepted (PostgreSQL allows 10,000 bytes).
pub const MAX_STARTUP: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
}

fn be_i32(b: &[u8]) -> i64 {
    i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Total length (type byte included) of the tagged message at the start of `buf`, once all
/// of it is there; `Ok(None)` while more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = be_i32(&buf[1..5]);
    if len < 4 || len as usize > MAX_MESSAGE {
        return Err(FrameError::BadLength {
            tag: char::from(buf[0]),
            len,
        });
    }
    let total = len as usize + 1;
    Ok((buf.len() >= total).then_some(total))
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
pub fn for_each_frame(buf: &[u8], mut each: impl FnMut(u8, &[u8])) -> Result<usize, FrameError> {
    let mut at = 0;
    while let Some(len) = frame_len(&buf[at..])? {
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
}
