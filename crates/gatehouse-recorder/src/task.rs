//! The recorder task: one per recorded session. Sources (relay, handler, guard) send
//! timestamped events without waiting; the task appends them in arrival order and flushes
//! every 100 ms (and whenever 64 KiB are buffered). A write failure is reported once
//! through `on_failure`, so the session can be ended: Gatehouse never continues a session
//! it cannot record.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::file::{RecordError, RecordingFile, Sealed};
use crate::format::{Code, Utf8Assembler, event_line};

/// True only in a benchmark build (feature `bench-unrecorded`): output and input events
/// are dropped at the source, so the relay does no recording work. The header, markers
/// and the seal still happen, so the session's bookkeeping is unchanged.
pub const UNRECORDED: bool = cfg!(feature = "bench-unrecorded");

/// Longest time an event waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

enum RecEvent {
    Output(Instant, Vec<u8>),
    Input(Instant, Vec<u8>),
    Resize(Instant, u32, u32),
    Marker(Instant, String),
    Line(String),
    Seal(oneshot::Sender<Result<Sealed, RecordError>>),
}

/// Where sources send events; cheap to clone.
#[derive(Clone, Debug)]
pub struct RecorderHandle {
    tx: mpsc::UnboundedSender<RecEvent>,
}

impl RecorderHandle {
    pub fn output(&self, bytes: &[u8]) {
        if UNRECORDED {
            return;
        }
        let _ = self
            .tx
            .send(RecEvent::Output(Instant::now(), bytes.to_vec()));
    }

    pub fn input(&self, bytes: &[u8]) {
        if UNRECORDED {
            return;
        }
        let _ = self
            .tx
            .send(RecEvent::Input(Instant::now(), bytes.to_vec()));
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        let _ = self.tx.send(RecEvent::Resize(Instant::now(), cols, rows));
    }

    pub fn marker(&self, label: impl Into<String>) {
        let _ = self.tx.send(RecEvent::Marker(Instant::now(), label.into()));
    }

    /// Appends a line formatted by the caller (line-oriented logs such as the SQL
    /// statement log, which carry their own times).
    pub fn line(&self, line: String) {
        let _ = self.tx.send(RecEvent::Line(line));
    }

    /// Writes everything queued, syncs and closes the recording.
    pub async fn seal(&self) -> Option<Result<Sealed, RecordError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(RecEvent::Seal(tx)).ok()?;
        rx.await.ok()
    }
}

/// Starts recording into `file`; event times are relative to `opened`.
pub fn spawn_recorder(
    file: RecordingFile,
    opened: Instant,
    on_failure: impl FnOnce(String) + Send + 'static,
) -> RecorderHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(file, opened, rx, on_failure));
    RecorderHandle { tx }
}

async fn run(
    file: RecordingFile,
    opened: Instant,
    mut rx: mpsc::UnboundedReceiver<RecEvent>,
    on_failure: impl FnOnce(String) + Send + 'static,
) {
    let mut file = Some(file);
    let mut on_failure = Some(on_failure);
    let mut output = Utf8Assembler::default();
    let mut input = Utf8Assembler::default();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fail = |file: &mut Option<RecordingFile>, e: RecordError| {
        tracing::error!(error = %e, "recording failed");
        *file = None;
        if let Some(f) = on_failure.take() {
            f(e.to_string());
        }
    };
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = tick.tick() => {
                if let Some(f) = file.as_mut()
                    && f.buffered() > 0
                    && let Err(e) = f.flush()
                {
                    fail(&mut file, e);
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        let line = match event {
            RecEvent::Output(at, bytes) => {
                let text = output.push(&bytes);
                (!text.is_empty()).then(|| event_line(at - opened, Code::Output, &text))
            }
            RecEvent::Input(at, bytes) => {
                let text = input.push(&bytes);
                (!text.is_empty()).then(|| event_line(at - opened, Code::Input, &text))
            }
            RecEvent::Resize(at, cols, rows) => Some(event_line(
                at - opened,
                Code::Resize,
                &format!("{cols}x{rows}"),
            )),
            RecEvent::Marker(at, label) => Some(event_line(at - opened, Code::Marker, &label)),
            RecEvent::Line(line) => Some(line),
            RecEvent::Seal(reply) => {
                let sealed = match file.take() {
                    Some(f) => f.seal(),
                    None => Err(RecordError::Write {
                        path: "(failed earlier)".into(),
                        source: std::io::Error::other("recording already failed"),
                    }),
                };
                let _ = reply.send(sealed);
                break;
            }
        };
        if let (Some(f), Some(line)) = (file.as_mut(), line)
            && let Err(e) = f.append(&line)
        {
            fail(&mut file, e);
        }
    }
    // dropped without a seal (connection task gone): still flush what we have
    if let Some(mut f) = file
        && let Err(e) = f.flush()
    {
        tracing::error!(error = %e, "recording failed at close");
    }
}
