//! Byte streams (plain TCP or TLS, behind one trait object) and a reader that hands out
//! complete protocol messages, never longer than its cap and, during login, never later
//! than the login deadline.

use bytes::BytesMut;
use gatehouse_pgproto::frame::{FrameError, declared_len_within, for_each_frame_within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

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
    #[error("login grace expired")]
    LoginGrace,
}

/// Reads whole messages: every batch it returns is one or more complete messages, so the
/// relay can forward it as is and inject its own messages between batches.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// Longest message accepted (type byte included); checked on the 5-byte header,
    /// before any room is made for the body.
    max: usize,
    /// During login: when the peer must be done (reads fail with `LoginGrace` after it).
    deadline: Option<Instant>,
}

const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max,
            deadline: None,
        }
    }

    /// Reads fail with [`ReadError::LoginGrace`] once `deadline` has passed.
    pub(crate) fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Login is over: no deadline any more, and messages up to `max` bytes.
    pub(crate) fn logged_in(&mut self, max: usize) {
        self.deadline = None;
        self.max = max;
    }

    /// Reads more bytes, at least `want` of room made; false at the end of the stream.
    async fn fill(&mut self, want: usize) -> Result<bool, ReadError> {
        self.buf.reserve(want);
        let read = self.inner.read_buf(&mut self.buf);
        let n = match self.deadline {
            Some(at) => tokio::time::timeout_at(at, read)
                .await
                .map_err(|_| ReadError::LoginGrace)??,
            None => read.await?,
        };
        Ok(n > 0)
    }

    fn closed(&self) -> Result<Option<BytesMut>, ReadError> {
        if self.buf.is_empty() {
            Ok(None)
        } else {
            Err(ReadError::Truncated)
        }
    }

    /// The next batch of complete messages; `None` at a clean end of stream.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<BytesMut>, ReadError> {
        loop {
            let complete = for_each_frame_within(&self.buf, self.max, |_, _| {})?;
            if complete > 0 {
                return Ok(Some(self.buf.split_to(complete)));
            }
            // a long message announces its length (checked against the cap above): make
            // room for all of it at once
            let want = declared_len_within(&self.buf, self.max)?.map_or(READ_CHUNK, |total| {
                total.saturating_sub(self.buf.len()).max(READ_CHUNK)
            });
            if !self.fill(want).await? {
                return self.closed();
            }
        }
    }

    /// The next single message (tag and body), for the login phase.
    pub(crate) async fn next_message(&mut self) -> Result<Option<(u8, BytesMut)>, ReadError> {
        loop {
            if let Some(len) = gatehouse_pgproto::frame_len_within(&self.buf, self.max)? {
                let mut m = self.buf.split_to(len);
                let tag = m[0];
                let body = m.split_off(5);
                return Ok(Some((tag, body)));
            }
            if !self.fill(READ_CHUNK).await? {
                return self.closed().map(|_| None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_pgproto::MAX_LOGIN_MESSAGE;
    use tokio::io::AsyncWriteExt;

    /// A peer declaring a 100 MB message is refused on its header: the reader neither
    /// waits for the body nor makes room for it.
    #[tokio::test]
    async fn an_oversized_message_is_refused_on_its_header() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, MAX_LOGIN_MESSAGE);
        peer.write_all(&[b'p', 0x05, 0xf5, 0xe1, 0x00, b'n'])
            .await
            .unwrap();
        let e = reader.next_message().await.unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::Frame(FrameError::TooLong {
                    tag: 'p',
                    len: 100_000_000,
                    ..
                })
            ),
            "{e}"
        );
        assert!(reader.buf.capacity() < 2 * READ_CHUNK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_runs_into_the_login_deadline() {
        let (_peer, ours) = tokio::io::duplex(1024);
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let mut reader = FrameReader::new(ours, MAX_LOGIN_MESSAGE).with_deadline(deadline);
        let e = reader.next_message().await.unwrap_err();
        assert!(matches!(e, ReadError::LoginGrace), "{e}");
        assert!(Instant::now() >= deadline);
    }
}
