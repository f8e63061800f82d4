//! Byte streams (plain TCP or TLS, behind one trait object) and a reader that hands out
//! complete protocol messages, never longer than its cap and, during login, never later
//! than the login deadline.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use gatehouse_pgproto::frame::{FrameError, declared_len_within, for_each_frame_within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
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
    /// Room made for the next read: starts small, doubles while reads fill it, up to
    /// [`READ_CHUNK`], and halves while they use less than a quarter of it; a buffer left
    /// much larger than that is let go once it is empty. While the reads stay small and
    /// nothing is half-received, the reader waits holding no buffer at all (see
    /// [`SCRATCH`]): an idle session's two readers hold nothing (memory per live session).
    chunk: usize,
    /// The last batch given out was this reader's whole buffer (see `recycle`).
    gave_whole: bool,
}

thread_local! {
    /// Where a reader with nothing buffered reads into, during one poll only: a waiting
    /// reader then holds no room of its own (1 KiB per reader, two per session), and what
    /// arrives is copied into a buffer of its exact size. One per runtime thread.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; FIRST_CHUNK].into_boxed_slice());
}

thread_local! {
    /// Small buffers of batches already relayed (see [`FrameReader::recycle`]), for the
    /// next small read on this thread: a round trip's two reads then allocate nothing, and
    /// an idle reader still holds no buffer of its own.
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept in [`SPARE`] per thread, and the largest kept.
const SPARE_BUFFERS: usize = 16;
const SPARE_CAPACITY: usize = 4 * FIRST_CHUNK;

/// Largest read: a busy relay reads (and forwards) up to this much at once.
const READ_CHUNK: usize = 64 * 1024;
/// First read's room, and the least a read gets.
const FIRST_CHUNK: usize = 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(FIRST_CHUNK),
            max,
            deadline: None,
            chunk: FIRST_CHUNK,
            gave_whole: false,
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
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.chunk.max(want) {
            // a burst is over: give its room back rather than keep it while idle
            self.buf = BytesMut::new();
        }
        // small reads and nothing half-received: wait with no room of our own
        let scratch = self.buf.is_empty() && self.chunk == FIRST_CHUNK && want <= FIRST_CHUNK;
        let room = if scratch {
            self.buf = BytesMut::new();
            want
        } else {
            self.buf.reserve(want);
            self.buf.capacity() - self.buf.len()
        };
        let (inner, buf) = (&mut self.inner, &mut self.buf);
        let read = async move {
            if !scratch {
                return inner.read_buf(buf).await;
            }
            std::future::poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|s| {
                    let mut into = ReadBuf::new(&mut s[..room]);
                    match Pin::new(&mut *inner).poll_read(cx, &mut into) {
                        Poll::Ready(Ok(())) => {
                            if buf.capacity() == 0 && !into.filled().is_empty() {
                                // (a spare's contents were cleared when it was recycled)
                                if let Some(spare) = SPARE.with_borrow_mut(Vec::pop) {
                                    *buf = spare;
                                }
                            }
                            buf.extend_from_slice(into.filled());
                            Poll::Ready(Ok(into.filled().len()))
                        }
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
            })
            .await
        };
        let n = match self.deadline {
            Some(at) => tokio::time::timeout_at(at, read)
                .await
                .map_err(|_| ReadError::LoginGrace)??,
            None => read.await?,
        };
        if n >= room {
            // the read filled all the room there was: more is coming, read more at once
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        } else if n < room / 4 {
            self.chunk = (self.chunk / 2).max(FIRST_CHUNK);
        }
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
            if complete > 0 && complete == self.buf.len() && self.chunk == FIRST_CHUNK {
                // small reads (a round trip's), all of it whole messages: the buffer was
                // made for this read and goes with the batch, not split off (a split shares
                // the buffer, which allocates the share's header; a busy reader's buffer is
                // shared and kept instead)
                self.gave_whole = true;
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            if complete > 0 {
                self.gave_whole = false;
                return Ok(Some(self.buf.split_to(complete)));
            }
            // a long message announces its length (checked against the cap above): make
            // room for all of it at once
            let chunk = self.chunk;
            let want = declared_len_within(&self.buf, self.max)?.map_or(chunk, |total| {
                total.saturating_sub(self.buf.len()).max(chunk)
            });
            if !self.fill(want).await? {
                return self.closed();
            }
        }
    }

    /// The last batch this reader gave out, relayed: its buffer, if it was a small read's
    /// own (not split off a busy reader's shared buffer), is kept (per thread, a few) for a
    /// later small read instead of being freed.
    pub(crate) fn recycle(&mut self, batch: BytesMut) {
        let mut batch = batch;
        if !std::mem::take(&mut self.gave_whole)
            || batch.capacity() > SPARE_CAPACITY
            || batch.capacity() == 0
        {
            return;
        }
        batch.clear();
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_BUFFERS {
                spare.push(batch);
            }
        });
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
            if !self.fill(self.chunk).await? {
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

    /// A round trip's small read is handed out as the batch whole, and its buffer, once
    /// recycled, takes the next small read: no allocation per read. A batch split off a
    /// buffer still holding the start of the next message is not kept.
    #[tokio::test]
    async fn small_batches_buffers_are_reused_split_ones_are_not() {
        SPARE.with_borrow_mut(Vec::clear);
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut reader = FrameReader::new(ours, 1 << 20);
        let sync = [b'S', 0, 0, 0, 4];
        peer.write_all(&sync).await.unwrap();
        let first = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(&first[..], sync);
        let at = first.as_ptr();
        reader.recycle(first);
        assert_eq!(SPARE.with_borrow(Vec::len), 1);
        peer.write_all(&sync).await.unwrap();
        let second = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(second.as_ptr(), at, "the spare buffer was not reused");
        assert_eq!(SPARE.with_borrow(Vec::len), 0);
        reader.recycle(second);
        // a whole message and the start of the next: the batch is split off
        peer.write_all(&[b'S', 0, 0, 0, 4, b'Q', 0, 0])
            .await
            .unwrap();
        let split = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(&split[..], sync);
        let spares = SPARE.with_borrow(Vec::len);
        reader.recycle(split);
        assert_eq!(
            SPARE.with_borrow(Vec::len),
            spares,
            "a shared buffer was kept"
        );
        peer.write_all(&[0, 6, b'x', 0]).await.unwrap();
        let rest = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(&rest[..], [b'Q', 0, 0, 0, 6, b'x', 0]);
    }

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

    /// A reader waiting for its peer, with nothing half-received, holds no buffer; what
    /// arrives then is read whole, in order, and a half-received message is kept.
    #[tokio::test]
    async fn a_waiting_reader_holds_no_buffer() {
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(ours, 1 << 20);
        let q = [b'Q', 0, 0, 0, 9, b's', b'e', b'l', b'1', 0];
        for _ in 0..3 {
            peer.write_all(&q).await.unwrap();
            assert_eq!(&reader.next_batch().await.unwrap().unwrap()[..], &q);
            // nothing more: the read waits, and holds nothing while it does
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(20), reader.next_batch())
                    .await;
            assert!(waited.is_err(), "a batch out of nothing");
            assert_eq!(reader.buf.capacity(), 0, "a waiting reader kept a buffer");
        }
        // half a message: kept (in a buffer of its own) until the rest comes
        peer.write_all(&q[..4]).await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next_batch()).await;
        assert!(waited.is_err());
        assert_eq!(&reader.buf[..], &q[..4]);
        peer.write_all(&q[4..]).await.unwrap();
        peer.write_all(&q).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 * q.len() {
            got.extend_from_slice(&reader.next_batch().await.unwrap().unwrap());
        }
        assert_eq!(got, [q, q].concat());
        drop(peer);
        assert!(reader.next_batch().await.unwrap().is_none(), "a clean end");
    }

    /// An idle session's reader holds a few KiB; a busy one reads up to 64 KiB at once.
    #[tokio::test]
    async fn the_read_room_starts_small_and_grows_with_the_traffic() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(ours, 1 << 20);
        // one small message: the room stays small
        peer.write_all(&[b'Q', 0, 0, 0, 9, b's', b'e', b'l', b'1', 0])
            .await
            .unwrap();
        let b = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(b.len(), 10);
        assert!(
            reader.buf.capacity() <= FIRST_CHUNK,
            "{}",
            reader.buf.capacity()
        );
        // a flood of 1 KiB messages: reads fill their room, which doubles up to the cap
        let mut msg = vec![b'd', 0, 0, 4, 4];
        msg.resize(1029, b'x');
        for _ in 0..512 {
            peer.write_all(&msg).await.unwrap();
        }
        let mut got = 0;
        let (mut largest, mut room) = (0, 0);
        while got < 512 * msg.len() {
            let b = reader.next_batch().await.unwrap().unwrap();
            largest = largest.max(b.len());
            room = room.max(reader.chunk);
            got += b.len();
        }
        assert_eq!(room, READ_CHUNK);
        assert!(largest > 32 * 1024, "largest batch {largest}");
        // quiet again: small messages, one at a time; the room shrinks back and the large
        // buffer is let go
        for _ in 0..12 {
            peer.write_all(&[b'Q', 0, 0, 0, 9, b's', b'e', b'l', b'1', 0])
                .await
                .unwrap();
            let b = reader.next_batch().await.unwrap().unwrap();
            assert_eq!(b.len(), 10);
        }
        assert_eq!(reader.chunk, FIRST_CHUNK);
        assert!(
            reader.buf.capacity() <= 4 * FIRST_CHUNK,
            "{}",
            reader.buf.capacity()
        );
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
