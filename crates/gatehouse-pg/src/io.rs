//! Byte streams (plain TCP or TLS, behind one trait object) and a reader that hands out
//! complete protocol messages.

use bytes::BytesMut;
use gatehouse_pgproto::frame::{FrameError, for_each_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) type BoxStream = Box<dyn Stream>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// Reads whole messages: every batch it returns is one or more complete messages, so the
/// relay can forward it as is and inject its own messages between batches.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next batch of complete messages; `None` at a clean end of stream.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<BytesMut>, ReadError> {
        loop {
            let complete = for_each_frame(&self.buf, |_, _| {})?;
            if complete > 0 {
                return Ok(Some(self.buf.split_to(complete)));
            }
            // a long message announces its length: make room for all of it at once
            let want = match gatehouse_pgproto::frame_len(&self.buf) {
                Ok(None) if self.buf.len() >= 5 => {
                    let len =
                        u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    (len as usize + 1)
                        .saturating_sub(self.buf.len())
                        .max(READ_CHUNK)
                }
                _ => READ_CHUNK,
            };
            self.buf.reserve(want);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// The next single message (tag and body), for the login phase.
    pub(crate) async fn next_message(&mut self) -> Result<Option<(u8, BytesMut)>, ReadError> {
        loop {
            if let Some(len) = gatehouse_pgproto::frame_len(&self.buf)? {
                let mut m = self.buf.split_to(len);
                let tag = m[0];
                let body = m.split_off(5);
                return Ok(Some((tag, body)));
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}
