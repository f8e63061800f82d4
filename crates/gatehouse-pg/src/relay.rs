//! The relay after both logins: operator → target and target → operator, message-framed,
//! forwarding each batch of whole messages byte-for-byte (all but the operator's Terminate:
//! Gatehouse ends, or resets and keeps, its target connection itself). The operator side notes activity
//! (messages that do work) and statements; the target side finishes statements for the log.
//! The target-to-operator direction owns the operator's socket and also writes the guard's
//! notices and FATAL error, so Gatehouse's own messages land between complete messages.
//!
//! Nothing reaches the target unlogged: a batch from the operator is forwarded only when
//! every message in it was parsed for the statement log (a message that cannot be parsed,
//! or is longer than `MAX_SESSION_MESSAGE`, is refused: the session ends with FATAL
//! 08P01 and the log says what was refused), and only while the session gate is open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::message::is_activity;
use gatehouse_pgproto::tracker::Tracker;
use gatehouse_pgproto::{Backend, FrameError, Frontend, backend};
use gatehouse_session::{ActivityClock, SessionGate};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::io::{FrameReader, ReadError};
use crate::statement_log::StatementLog;

/// What the guard sends to the operator, between whole messages from the target.
pub(crate) enum ClientOut {
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
    /// The operator sent a message Gatehouse does not forward (see [`Refused`]).
    Refused(Refused),
    ClientError(String),
    TargetError(String),
}

/// A message that was not forwarded because Gatehouse could not read it for the log (or
/// it was longer than allowed): its type byte and declared length, and why.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) tag: char,
    /// The message's length as declared (type byte not counted, as on the wire).
    pub(crate) len: i64,
    pub(crate) why: String,
    /// The FATAL error's SQLSTATE: 54000 (program limit exceeded) for a message over the
    /// size limit, else 08P01 (protocol violation, as PostgreSQL's own refusals).
    pub(crate) sqlstate: &'static str,
}

impl Refused {
    fn frame(e: &FrameError) -> Refused {
        let (tag, len) = e.declared().unwrap_or(('?', -1));
        Refused {
            tag,
            len,
            why: e.to_string(),
            sqlstate: match e {
                FrameError::TooLong { .. } => "54000",
                _ => "08P01",
            },
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message type {:?}, length {}: {}",
            self.tag, self.len, self.why
        )
    }
}

pub(crate) struct ClientSide<R> {
    pub(crate) reader: FrameReader<R>,
    pub(crate) clock: Arc<ActivityClock>,
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    pub(crate) lock: Arc<SessionGate>,
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
            Err(ReadError::Frame(e)) => return Stop::Refused(Refused::frame(&e)),
            Err(e) => return Stop::ClientError(e.to_string()),
        };
        // ended (or locked): what the operator sends now is neither forwarded nor logged
        // as a statement
        if c.lock.is_closed() {
            return Stop::Ended;
        }
        let now = c.opened.elapsed();
        // parsed in full before anything is tracked or forwarded: a batch is forwarded
        // only if every message in it is in the statement log's view (a round trip's
        // batch, Bind/Execute/Sync or a Query, is held without an allocation)
        let mut messages = smallvec::SmallVec::<[(u8, Frontend<'_>); 4]>::new();
        let mut refused = None;
        // the bytes before the operator's Terminate, if any: Gatehouse ends its target
        // connection itself (a Terminate of its own, or a reset when the connection is
        // kept for another session), and nothing after a Terminate is a message
        let mut forwarded = 0;
        let mut terminate = false;
        let _ = for_each_frame(&batch, |tag, body| {
            if refused.is_some() || terminate {
                return;
            }
            terminate = tag == b'X';
            if !terminate {
                forwarded += body.len() + 5;
            }
            match Frontend::parse(tag, body) {
                Ok(m) => messages.push((tag, m)),
                Err(e) => {
                    refused = Some(Refused {
                        tag: char::from(tag),
                        len: body.len() as i64 + 4,
                        why: e.to_string(),
                        sqlstate: "08P01",
                    })
                }
            }
        });
        if let Some(r) = refused {
            return Stop::Refused(r);
        }
        let mut active = false;
        {
            let Ok(mut t) = c.tracker.lock() else {
                return Stop::ClientError("the statement tracker failed".into());
            };
            for (tag, m) in &messages {
                active |= is_activity(*tag);
                t.frontend(m, now);
            }
        }
        drop(messages);
        if active {
            c.clock.touch();
        }
        c.bytes_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if forwarded > 0
            && let Err(e) = async {
                target.write_all(&batch[..forwarded]).await?;
                target.flush().await
            }
            .await
        {
            return Stop::TargetError(e.to_string());
        }
        if terminate {
            return Stop::ClientClosed;
        }
        c.reader.recycle(batch);
    }
}

/// The operator's side of the socket, owned by the target-to-operator direction: the
/// target's messages and the guard's notices are written by one task, with no hand-off
/// per message (a task hop per round trip costs more than the relaying itself).
pub(crate) struct ClientOutput<W> {
    pub(crate) writer: W,
    /// (Boxed: the queue allocates room for 32 messages when it is made.)
    pub(crate) guard: mpsc::Receiver<Box<ClientOut>>,
    pub(crate) bytes_out: Arc<AtomicU64>,
}

pub(crate) async fn target_to_client<R, W>(
    reader: &mut FrameReader<R>,
    client: ClientOutput<W>,
    tracker: Arc<Mutex<Tracker>>,
    log: StatementLog,
    opened: Instant,
) -> Stop
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ClientOutput {
        writer: mut w,
        mut guard,
        bytes_out,
    } = client;
    let mut guard_open = true;
    loop {
        // both arms are cancel-safe: `next_batch` keeps partial reads in its buffer
        let batch = tokio::select! {
            biased;
            out = guard.recv(), if guard_open => {
                let result = match out.map(|out| *out) {
                    None => {
                        guard_open = false;
                        continue;
                    }
                    Some(ClientOut::Notice(text)) => {
                        w.write_all(&backend::notice_response("WARNING", "01000", &text))
                            .await
                    }
                    Some(ClientOut::Fatal { code, message }) => {
                        let _ = w
                            .write_all(&backend::error_response("FATAL", code, &message))
                            .await;
                        let _ = w.flush().await;
                        let _ = w.shutdown().await;
                        return Stop::Ended;
                    }
                };
                if result.is_err() || w.flush().await.is_err() {
                    return Stop::ClientClosed;
                }
                continue;
            }
            batch = reader.next_batch() => match batch {
                Ok(Some(b)) => b,
                Ok(None) => return Stop::TargetClosed,
                Err(ReadError::Frame(e)) => {
                    // e.g. a result row over the size limit: the operator is told, the
                    // log says what was not relayed
                    let r = Refused::frame(&e);
                    log.refused("target", &r);
                    let text = format!("[gatehouse] a message from the target was not relayed ({r}); the session is ended");
                    let _ = w.write_all(&backend::error_response("FATAL", r.sqlstate, &text)).await;
                    let _ = w.flush().await;
                    let _ = w.shutdown().await;
                    return Stop::TargetError(r.to_string());
                }
                Err(e) => return Stop::TargetError(e.to_string()),
            },
        };
        let now = opened.elapsed();
        // the statements the batch finishes (the tracker's own queue, moved: one vector per
        // statement finished, none kept while the session idles)
        let mut finished = Vec::new();
        if let Ok(mut t) = tracker.lock() {
            let _ = for_each_frame(&batch, |tag, body| {
                // (DataRows only counted: Backend::parse does not decode them)
                if matches!(tag, b'C' | b'E' | b'Z' | b'I' | b's' | b'1' | b't' | b'D')
                    && let Ok(m) = Backend::parse(tag, body)
                {
                    t.backend_into(&m, now, &mut finished);
                }
            });
        }
        for s in finished {
            log.statement(s);
        }
        bytes_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // flush: TLS buffers records until asked
        if w.write_all(&batch).await.is_err() || w.flush().await.is_err() {
            return Stop::ClientClosed;
        }
        reader.recycle(batch);
    }
}
