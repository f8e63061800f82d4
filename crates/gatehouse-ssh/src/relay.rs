//! The per-channel relay between an operator's session channel and the matching channel on
//! the target.
//!
//! Two tasks per channel. The *writer* applies operator events to the target channel in the
//! order they arrived (data, EOF, requests, window changes, signals), fed by a bounded queue
//! so that the operator's connection loop never waits on the target's window. The *reader*
//! forwards everything the target sends back to the operator (data, stderr, exit status and
//! signal, EOF, close) and hands request replies to whoever asked. Keeping the two apart
//! means a target that is both reading and writing heavily (rsync, `cat`) cannot deadlock
//! against the operator.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::EndReason;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty, Sig, client, server};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::connection::ConnectionState;
use gatehouse_session::LockState;

/// Operator events queued per channel: at most this many (each ≤ one SSH packet, 32 KiB).
const QUEUE_DEPTH: usize = 256;
/// How long an operator waits for the target to answer a channel request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A channel request that the target answers with success or failure.
#[derive(Debug)]
pub(crate) enum Request {
    Pty {
        term: String,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: Vec<(Pty, u32)>,
    },
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

/// Something the operator did on a channel, to apply on the target.
#[derive(Debug)]
pub(crate) enum ToTarget {
    Data(Bytes),
    ExtendedData(u32, Bytes),
    Eof,
    Close,
    Env(String, String),
    WindowChange {
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
    },
    Signal(Sig),
    Request(Request, oneshot::Sender<bool>),
}

type PendingReplies = Arc<Mutex<VecDeque<oneshot::Sender<bool>>>>;

/// The handler's end of a relay.
pub(crate) struct RelayHandle {
    tx: mpsc::Sender<ToTarget>,
    /// Set once a shell or exec runs on the channel: its output goes to the recording.
    pub(crate) recorded: Arc<AtomicBool>,
    /// Set when the channel runs the sftp subsystem: its transfers are logged.
    pub(crate) sftp: SharedTap,
}

pub(crate) type SharedTap = Arc<Mutex<Option<gatehouse_recorder::sftp::SftpTap>>>;

impl RelayHandle {
    /// Queues an event; `false` when the relay has ended.
    pub(crate) async fn send(&self, event: ToTarget) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Sends a request and waits for the target's answer.
    pub(crate) async fn request(&self, request: Request) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self.send(ToTarget::Request(request, tx)).await {
            return false;
        }
        matches!(tokio::time::timeout(REPLY_TIMEOUT, rx).await, Ok(Ok(true)))
    }
}

/// Starts relaying between `operator_channel` (on the operator connection behind
/// `operator`) and `target_channel`.
pub(crate) fn start(
    target_channel: russh::Channel<client::Msg>,
    operator_channel: ChannelId,
    operator: server::Handle,
    state: Arc<ConnectionState>,
    lock: Option<Arc<LockState>>,
) -> RelayHandle {
    let (read, write) = target_channel.split();
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let pending: PendingReplies = Arc::new(Mutex::new(VecDeque::new()));
    let recorded = Arc::new(AtomicBool::new(false));
    let sftp: SharedTap = Arc::new(Mutex::new(None));
    let span = tracing::Span::current();
    tokio::spawn(write_to_target(rx, write, pending.clone()).instrument(span.clone()));
    tokio::spawn(
        read_from_target(
            read,
            operator_channel,
            operator,
            state,
            pending,
            lock,
            (recorded.clone(), sftp.clone()),
        )
        .instrument(span),
    );
    RelayHandle { tx, recorded, sftp }
}

async fn write_to_target(
    mut rx: mpsc::Receiver<ToTarget>,
    target: ChannelWriteHalf<client::Msg>,
    pending: PendingReplies,
) {
    while let Some(event) = rx.recv().await {
        let sent = match event {
            ToTarget::Data(d) => target.data_bytes(d).await,
            ToTarget::ExtendedData(ext, d) => target.extended_data_bytes(ext, d).await,
            ToTarget::Eof => target.eof().await,
            ToTarget::Close => {
                let _ = target.close().await;
                break;
            }
            ToTarget::Env(name, value) => target.set_env(false, name, value).await,
            ToTarget::WindowChange {
                cols,
                rows,
                pix_width,
                pix_height,
            } => {
                target
                    .window_change(cols, rows, pix_width, pix_height)
                    .await
            }
            ToTarget::Signal(sig) => target.signal(sig).await,
            ToTarget::Request(request, reply) => {
                // Registered before sending: the answer may arrive at once.
                if let Ok(mut p) = pending.lock() {
                    p.push_back(reply);
                }
                match request {
                    Request::Pty {
                        term,
                        cols,
                        rows,
                        pix_width,
                        pix_height,
                        modes,
                    } => {
                        target
                            .request_pty(true, &term, cols, rows, pix_width, pix_height, &modes)
                            .await
                    }
                    Request::Shell => target.request_shell(true).await,
                    Request::Exec(command) => target.exec(true, command).await,
                    Request::Subsystem(name) => target.request_subsystem(true, name).await,
                }
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "target channel no longer writable");
            break;
        }
    }
}

async fn read_from_target(
    mut target: ChannelReadHalf,
    channel: ChannelId,
    operator: server::Handle,
    state: Arc<ConnectionState>,
    pending: PendingReplies,
    lock: Option<Arc<LockState>>,
    (recorded, sftp): (Arc<AtomicBool>, SharedTap),
) {
    let record = |data: &[u8]| {
        if recorded.load(Ordering::Relaxed)
            && let Some(rec) = state.recorder.get()
        {
            rec.output(data);
        }
        if let Ok(mut tap) = sftp.lock()
            && let Some(tap) = tap.as_mut()
        {
            state.log_transfers(tap.target_bytes(data));
        }
    };
    let answer = |ok: bool| {
        if let Some(reply) = pending.lock().ok().and_then(|mut p| p.pop_front()) {
            let _ = reply.send(ok);
        }
    };
    while let Some(msg) = target.wait().await {
        // While the session is locked the target's output waits here (and the target
        // stalls once its window fills); after an enforcement end nothing more is relayed.
        if let Some(lock) = &lock
            && lock.is_closed()
            && !lock.wait_open().await
        {
            return;
        }
        let delivered = match msg {
            ChannelMsg::Data { data } => {
                state
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                record(&data);
                operator.data(channel, data).await.is_ok()
            }
            ChannelMsg::ExtendedData { data, ext } => {
                state
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                record(&data);
                operator.extended_data(channel, ext, data).await.is_ok()
            }
            ChannelMsg::Eof => operator.eof(channel).await.is_ok(),
            ChannelMsg::ExitStatus { exit_status } => operator
                .exit_status_request(channel, exit_status)
                .await
                .is_ok(),
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => operator
                .exit_signal_request(channel, signal_name, core_dumped, error_message, lang_tag)
                .await
                .is_ok(),
            ChannelMsg::Success => {
                answer(true);
                true
            }
            ChannelMsg::Failure => {
                answer(false);
                true
            }
            ChannelMsg::Close => break,
            _ => true,
        };
        if !delivered {
            // The operator side is gone; nothing left to relay to.
            return;
        }
    }
    // The target closed the channel (or the whole connection).
    if let Ok(mut tap) = sftp.lock()
        && let Some(tap) = tap.as_mut()
    {
        state.log_transfers(tap.finish());
    }
    state.set_end_reason(EndReason::TargetClosed);
    let _ = operator.close(channel).await;
    // Fail any request still waiting, so its handler does not wait for the timeout.
    while let Some(reply) = pending.lock().ok().and_then(|mut p| p.pop_front()) {
        let _ = reply.send(false);
    }
}
