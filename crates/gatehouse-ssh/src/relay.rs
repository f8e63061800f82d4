//! The per-channel relay between an operator's session channel and the matching channel on
//! the target.
//!
//! Two tasks per channel. The *writer* applies operator events to the target channel in the
//! order they arrived (data, EOF, requests, window changes, signals). The *reader* forwards
//! everything the target sends back to the operator (data, stderr, exit status and signal,
//! EOF, close) and hands request replies to whoever asked.
//!
//! Flow control. russh replenishes an SSH channel's window when a packet *arrives*, not when
//! it is consumed, so the only back-pressure it offers is a session loop that stops while a
//! callback or a channel send waits. Each direction may use that once, not both: the
//! target's session loop waits while the reader waits for the operator's window (target
//! output stops when the operator stops reading — bounded memory), but the operator's
//! session loop never waits on the writer. If it did, a download with requests flowing the
//! other way (SFTP `get`) deadlocks: the operator's loop waits on a full queue, the writer on
//! the target's window, the target's loop on the reader, the reader on the operator's window
//! adjust that only the stuck operator loop can read. Instead the writer's queue is
//! unbounded and counted in bytes per connection ([`ConnectionState::to_target_backlog`]);
//! past [`BACKLOG_HIGH`] the connection's handler shrinks the window it grants the operator
//! to a trickle (`Handler::adjust_window`), so an operator faster than the target is slowed
//! by the SSH protocol itself, and the operator's loop stays free to read window adjusts,
//! replies and disconnects. The trickle still lets a client whose target consumes nothing
//! queue a few bytes per round trip; past [`BACKLOG_HARD`] the handler waits for the writer
//! after all (memory stays bounded; such a connection can only be stuck because its target
//! reads nothing, and an end or a kill still tears it down: `ConnectionState::finish` stops
//! the relays and releases the wait).
//!
//! Every operator action goes through the session gate: [`RelayHandle::forward`] and
//! [`RelayHandle::start`] are the only ways onto the writer's queue, and both ask the gate
//! first; the writer asks again before it touches the target, because the gate may have
//! closed while the event waited in the queue. The channel's recording mode is set by the
//! reader when the target accepts the channel's first start request — before any output of
//! that program can be read — and never changes after.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::{
    Admission, ChannelStart, EndReason, OperatorAction, RecordingMode, SessionState,
};
use gatehouse_recorder::sftp::{SftpTap, Transfer};
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty, Sig, client, server};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::state::ConnectionState;
use gatehouse_session::SessionGate;

mod reader;
mod writer;

use reader::read_from_target;
use writer::write_to_target;

pub(crate) use crate::state::{BACKLOG_HIGH, THROTTLED_WINDOW};
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

#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowSize {
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    pub(crate) pix_width: u32,
    pub(crate) pix_height: u32,
}

/// Something the operator did on a channel, to apply on the target.
#[derive(Debug)]
pub(crate) enum ToTarget {
    Data(Bytes),
    ExtendedData(u32, Bytes),
    Eof,
    Close,
    Env(String, String),
    WindowChange(WindowSize),
    Signal(Sig),
    /// The request boxed: the largest event by far, and rare; the writer's queue allocates
    /// room for 32 events of the largest size when it is made (memory per live session).
    Request(Box<Request>, Reply),
}

impl ToTarget {
    /// Payload bytes, counted in the connection's backlog while queued.
    fn payload_len(&self) -> usize {
        match self {
            ToTarget::Data(d) | ToTarget::ExtendedData(_, d) => d.len(),
            _ => 0,
        }
    }

    fn action(&self) -> Option<OperatorAction> {
        Some(match self {
            ToTarget::Data(_) | ToTarget::ExtendedData(..) => OperatorAction::Input,
            ToTarget::Eof => OperatorAction::Eof,
            ToTarget::Env(..) => OperatorAction::Prepare,
            ToTarget::WindowChange(_) => OperatorAction::WindowChange,
            ToTarget::Signal(_) => OperatorAction::Signal,
            ToTarget::Request(r, _) if matches!(**r, Request::Pty { .. }) => {
                OperatorAction::Prepare
            }
            ToTarget::Request(..) => OperatorAction::Start,
            // closing a channel runs nothing on the target; it always goes through
            ToTarget::Close => return None,
        })
    }
}

/// Who waits for a request's answer, and the recording mode a start request fixes.
#[derive(Debug)]
pub(crate) struct Reply {
    tx: oneshot::Sender<bool>,
    starts: Option<RecordingMode>,
}

type PendingReplies = Arc<Mutex<VecDeque<Reply>>>;

/// What a relay's two tasks and its handle share.
struct Shared {
    gate: Arc<SessionGate>,
    start: Mutex<ChannelStart>,
    /// The transfer log of an sftp channel.
    sftp: Mutex<Option<SftpTap>>,
    /// Held back while the session is locked, applied at the unlock.
    held: Mutex<Held>,
    /// The operator's channel number, which the recording knows pty-or-not by.
    channel: u32,
    /// Nothing left on the target to hang up: it said its program is over (exit status or
    /// signal), either side closed the channel, or the hangup was sent (`writer::hang_up`).
    finished: AtomicBool,
}

#[derive(Default)]
struct Held {
    window: Option<WindowSize>,
    eof: bool,
}

impl Shared {
    fn start(&self) -> ChannelStart {
        self.start
            .lock()
            .map(|s| *s)
            .unwrap_or(ChannelStart::NotStarted)
    }

    fn mode(&self) -> Option<RecordingMode> {
        self.start().mode()
    }
}

/// The handler's end of a relay.
pub(crate) struct RelayHandle {
    /// Events boxed one by one: tokio allocates a queue's first 32 slots when it is made
    /// (1.5 KiB of 48-byte events per channel, nearly all unused while the session idles;
    /// boxed, 256 bytes: memory per live session).
    tx: mpsc::UnboundedSender<Box<ToTarget>>,
    shared: Arc<Shared>,
    state: Arc<ConnectionState>,
}

/// How a start request went.
pub(crate) enum Started {
    /// The target accepted (true) or refused (false) the program.
    Answered(bool),
    /// The gate refused it; it never reached the target.
    Refused(Admission),
}

impl RelayHandle {
    /// Whether the target has ended the channel's program (its exit status or signal came,
    /// or it closed the channel), or a hangup was sent to it.
    pub(crate) fn target_finished(&self) -> bool {
        self.shared.finished.load(Ordering::Relaxed)
    }

    /// What the gate says of `action` on this channel now.
    pub(crate) fn admit(&self, action: OperatorAction) -> Admission {
        self.shared.gate.admit(Some(self.shared.start()), action)
    }

    /// Queues `event` for the writer, counting its payload in the connection's backlog.
    /// Never waits (see the module docs).
    fn enqueue(&self, event: ToTarget) -> bool {
        let len = event.payload_len();
        self.state
            .to_target_backlog
            .fetch_add(len, Ordering::Relaxed);
        if self.tx.send(Box::new(event)).is_err() {
            self.state
                .to_target_backlog
                .fetch_sub(len, Ordering::Relaxed);
            tracing::debug!("relay ended: operator event dropped");
            return false;
        }
        true
    }

    /// Asks the gate, then queues `event` for the target if it may go. Returns the gate's
    /// verdict; events the gate holds back (window size, EOF while locked) are kept and
    /// applied at the unlock. Never waits: it runs inside the operator's session loop.
    pub(crate) fn forward(&self, event: ToTarget) -> Admission {
        let Some(action) = event.action() else {
            self.enqueue(event);
            return Admission::Forward;
        };
        let verdict = self.admit(action);
        match (verdict, event) {
            (Admission::Forward, event) => {
                self.enqueue(event);
            }
            (Admission::HoldUntilUnlocked, ToTarget::WindowChange(size)) => {
                if let Ok(mut h) = self.shared.held.lock() {
                    h.window = Some(size);
                }
            }
            (Admission::HoldUntilUnlocked, ToTarget::Eof) => {
                if let Ok(mut h) = self.shared.held.lock() {
                    h.eof = true;
                }
            }
            (verdict, event) => {
                tracing::debug!(
                    action = action.as_str(),
                    ?verdict,
                    ?event,
                    "operator action not relayed"
                );
            }
        }
        verdict
    }

    /// Sends a pty request (a channel setup request the target answers) and waits for the
    /// target's answer; `false` when refused by the gate or the target.
    pub(crate) async fn prepare(&self, request: Request) -> bool {
        if self.admit(OperatorAction::Prepare) != Admission::Forward {
            return false;
        }
        self.ask(request, None).await
    }

    /// Sends a start request (shell, exec, subsystem) if the gate lets it through and the
    /// channel has not started yet, and waits for the target's answer. The recording mode
    /// `mode` becomes the channel's for good when the target accepts.
    pub(crate) async fn start(&self, request: Request, mode: RecordingMode) -> Started {
        {
            let Ok(mut start) = self.shared.start.lock() else {
                return Started::Answered(false);
            };
            let verdict = self.shared.gate.admit(Some(*start), OperatorAction::Start);
            if verdict != Admission::Forward {
                return Started::Refused(verdict);
            }
            *start = ChannelStart::Starting;
        }
        // The reader moves the channel on when the target answers (a refusal leaves it
        // unstarted). Without an answer in time it stays `Starting`: no input goes through,
        // and a late acceptance still fixes the mode before any output is read.
        Started::Answered(self.ask(request, Some(mode)).await)
    }

    async fn ask(&self, request: Request, starts: Option<RecordingMode>) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self.enqueue(ToTarget::Request(Box::new(request), Reply { tx, starts })) {
            return false;
        }
        matches!(tokio::time::timeout(REPLY_TIMEOUT, rx).await, Ok(Ok(true)))
    }

    /// Hands operator bytes the gate let through to the channel's record: the recording for
    /// terminals and raw subsystems, the transfer log for sftp.
    pub(crate) fn record_input(&self, state: &ConnectionState, bytes: &[u8]) {
        record(&self.shared, state, Side::Operator(bytes));
    }
}

/// Bytes of a channel, and whose they are.
enum Side<'a> {
    Operator(&'a [u8]),
    /// As received: shared with the recorder, not copied.
    Target(&'a Bytes),
}

fn record(shared: &Shared, state: &ConnectionState, side: Side<'_>) {
    match shared.mode() {
        Some(RecordingMode::Terminal | RecordingMode::RawSubsystem) => {
            if let Some(rec) = state.recorder.get() {
                match side {
                    Side::Operator(bytes) => rec.input(bytes),
                    Side::Target(bytes) => rec.output_on(shared.channel, bytes.clone()),
                }
            }
        }
        Some(RecordingMode::Sftp) => {
            let transfers = shared.sftp.lock().ok().and_then(|mut tap| {
                tap.as_mut().map(|t| match side {
                    Side::Operator(bytes) => t.operator_bytes(bytes),
                    Side::Target(bytes) => t.target_bytes(bytes),
                })
            });
            if let Some(t) = transfers {
                state.log_transfers(t);
            }
        }
        // A target writing on a channel whose program it never accepted: still shown to
        // the operator, so still recorded.
        None => {
            if let (Side::Target(bytes), Some(rec)) = (side, state.recorder.get()) {
                rec.output_on(shared.channel, bytes.clone());
            }
        }
    }
}

/// Starts relaying between `operator_channel` (on the operator connection behind
/// `operator`) and `target_channel`, behind `gate`.
pub(crate) fn start(
    target_channel: russh::Channel<client::Msg>,
    operator_channel: ChannelId,
    operator: server::Handle,
    state: Arc<ConnectionState>,
    gate: Arc<SessionGate>,
) -> RelayHandle {
    let (read, write) = target_channel.split();
    // the writer task's, and the connection's end's for the hangup (`RelayTasks::hang_up`)
    let write = Arc::new(write);
    let (tx, rx) = mpsc::unbounded_channel();
    let pending: PendingReplies = Arc::new(Mutex::new(VecDeque::new()));
    let shared = Arc::new(Shared {
        gate,
        start: Mutex::new(ChannelStart::NotStarted),
        sftp: Mutex::new(None),
        held: Mutex::new(Held::default()),
        channel: operator_channel.into(),
        finished: AtomicBool::new(false),
    });
    let span = tracing::Span::current();
    let writer = tokio::spawn(
        write_to_target(
            rx,
            write.clone(),
            pending.clone(),
            shared.clone(),
            state.clone(),
        )
        .instrument(span.clone()),
    );
    let reader = tokio::spawn(
        read_from_target(
            read,
            operator_channel,
            operator,
            state.clone(),
            pending,
            shared.clone(),
        )
        .instrument(span),
    );
    // The connection's end stops both whatever they wait on (a peer that stopped reading).
    state.own_relay_tasks(RelayTasks {
        tasks: [writer.abort_handle(), reader.abort_handle()],
        target: write,
        shared: shared.clone(),
    });
    RelayHandle { tx, shared, state }
}

/// What the connection's end needs of a relay: its tasks to stop, and the target channel
/// to hang up its program on (see `ConnectionState::finish`).
pub(crate) struct RelayTasks {
    tasks: [tokio::task::AbortHandle; 2],
    target: Arc<ChannelWriteHalf<client::Msg>>,
    shared: Arc<Shared>,
}

impl RelayTasks {
    pub(crate) fn abort(&self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }

    /// Hangs up the channel's program if it still runs on the target.
    pub(crate) async fn hang_up(&self) {
        writer::hang_up(&self.shared, &self.target).await;
    }
}

/// The target answered the oldest request still waiting. A start request's acceptance
/// fixes the channel's recording mode here, in the reader, so that no output of the
/// program can be read before it is set.
fn answer(pending: &PendingReplies, shared: &Shared, ok: bool) {
    let Some(reply) = pending.lock().ok().and_then(|mut p| p.pop_front()) else {
        return;
    };
    if let Some(mode) = reply.starts
        && let Ok(mut start) = shared.start.lock()
    {
        let before = *start;
        *start = start.answered(ok, mode);
        if before == ChannelStart::Starting
            && ok
            && mode == RecordingMode::Sftp
            && let Ok(mut tap) = shared.sftp.lock()
        {
            *tap = Some(SftpTap::default());
        }
    }
    let _ = reply.tx.send(ok);
}
