//! The relay after both logins: operator → target and target → operator, message-framed,
//! forwarding each batch of whole messages byte-for-byte. The operator side notes activity
//! (messages that do work) and statements; the target side finishes statements for the log.
//! One writer task owns the operator's socket, so Gatehouse's own notices and errors land
//! between complete messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::message::is_activity;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{Backend, Frontend, backend};
use gatehouse_session::{ActivityClock, LockState};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::io::FrameReader;
use crate::statement_log::StatementLog;

/// What goes to the operator's socket.
pub(crate) enum ClientOut {
    /// Whole backend messages from the target.
    Data(BytesMut),
    /// A Gatehouse warning (NoticeResponse, severity WARNING).
    Notice(String),
    /// A Gatehouse FATAL error; the connection closes after it.
    Fatal { code: &'static str, message: String },
}

/// How one direction of the relay stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The operator sent Terminate or closed the connection.
    ClientClosed,
    TargetClosed,
    /// The guard ended the session.
    Ended,
    ClientError(String),
    TargetError(String),
}

pub(crate) async fn client_writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<ClientOut>,
    bytes_out: Arc<AtomicU64>,
) {
    while let Some(out) = rx.recv().await {
        let result = match out {
            ClientOut::Data(b) => {
                bytes_out.fetch_add(b.len() as u64, Ordering::Relaxed);
                w.write_all(&b).await
            }
            ClientOut::Notice(text) => {
                w.write_all(&backend::notice_response("WARNING", "01000", &text))
                    .await
            }
            ClientOut::Fatal { code, message } => {
                let _ = w
                    .write_all(&backend::error_response("FATAL", code, &message))
                    .await;
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return;
            }
        };
        if result.is_err() {
            return;
        }
        // batch writes while more is queued; flush (TLS records) when caught up
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
}

pub(crate) struct ClientSide<R> {
    pub(crate) reader: FrameReader<R>,
    pub(crate) clock: Arc<ActivityClock>,
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    pub(crate) lock: Arc<LockState>,
    pub(crate) opened: Instant,
    pub(crate) bytes_in: Arc<AtomicU64>,
}

pub(crate) async fn client_to_target<R, W>(mut c: ClientSide<R>, mut target: W) -> Stop
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let batch = match c.reader.next_batch().await {
            Ok(Some(b)) => b,
            Ok(None) => return Stop::ClientClosed,
            Err(e) => return Stop::ClientError(e.to_string()),
        };
        let now = c.opened.elapsed();
        let (mut active, mut terminate) = (false, false);
        if let Ok(mut t) = c.tracker.lock() {
            let _ = for_each_frame(&batch, |tag, body| {
                active |= is_activity(tag);
                terminate |= tag == b'X';
                if let Ok(m) = Frontend::parse(tag, body) {
                    t.frontend(&m, now);
                }
            });
        }
        if active {
            c.clock.touch();
        }
        if c.lock.is_closed() {
            return Stop::Ended;
        }
        c.bytes_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = async {
            target.write_all(&batch).await?;
            target.flush().await
        }
        .await
        {
            return Stop::TargetError(e.to_string());
        }
        if terminate {
            return Stop::ClientClosed;
        }
    }
}

pub(crate) async fn target_to_client<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    out: mpsc::Sender<ClientOut>,
    tracker: Arc<Mutex<Tracker>>,
    log: StatementLog,
    opened: Instant,
) -> Stop {
    loop {
        let batch = match reader.next_batch().await {
            Ok(Some(b)) => b,
            Ok(None) => return Stop::TargetClosed,
            Err(e) => return Stop::TargetError(e.to_string()),
        };
        let now = opened.elapsed();
        let mut finished = Vec::new();
        if let Ok(mut t) = tracker.lock() {
            let _ = for_each_frame(&batch, |tag, body| {
                if matches!(tag, b'C' | b'E' | b'Z' | b'I' | b's' | b'1' | b't')
                    && let Ok(m) = Backend::parse(tag, body)
                {
                    finished.extend(t.backend(&m, now));
                }
            });
        }
        for s in &finished {
            log.statement(s);
        }
        if out.send(ClientOut::Data(batch)).await.is_err() {
            return Stop::ClientClosed;
        }
    }
}
