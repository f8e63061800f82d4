//! The recorder task: one per recorded session. Sources (relay, handler, guard) send
//! timestamped events without waiting; the task appends them in arrival order and flushes
//! them at most 100 ms after the first of them arrived (and whenever 64 KiB are buffered).
//! A recorder with nothing to write sleeps: no tick wakes an idle session's task. A write failure is reported once
//! through `on_failure`, so the session can be ended: Gatehouse never continues a session
//! it cannot record. Every [`CHECKPOINT_INTERVAL`] (when something was written) the task
//! publishes a [`Checkpoint`] of what is on disk, for the store to keep under the node's
//! key: a recording cut short by a crash is then verified up to it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::file::{RecordError, RecordingFile, Sealed};
use crate::format::{Code, MODE_NO_PTY, MODE_PTY, Utf8Assembler};

/// True only in a benchmark build (feature `bench-unrecorded`): output and input events
/// are dropped at the source, so the relay does no recording work. The header, markers
/// and the seal still happen, so the session's bookkeeping is unchanged.
pub const UNRECORDED: bool = cfg!(feature = "bench-unrecorded");

/// Longest time an event waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Longest time between two checkpoints of a recording that is being written to (the store
/// promises at most 10 s; half of it leaves room for a slow store write).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The first `events` events of the recording are on disk and hash to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub events: u64,
    pub digest: String,
}

enum RecEvent {
    /// Output, from the channel numbered so if the source knows it.
    Output(Instant, Option<u32>, Bytes),
    /// A channel's program started, with a pty or without.
    Channel(u32, bool),
    Input(Instant, Bytes),
    Resize(Instant, u32, u32),
    Marker(Instant, String),
    /// Lines queued by [`RecorderHandle::line`] passed 64 KiB: write them now.
    Lines,
    /// The first line was queued by [`RecorderHandle::line`] into an empty queue: write
    /// it (and what follows it) within [`FLUSH_INTERVAL`].
    LinesQueued,
    Seal(oneshot::Sender<Result<Sealed, RecordError>>),
    /// Where checkpoints go from now on (see [`RecorderHandle::on_checkpoint`]).
    Checkpoints(CheckpointSink),
}

/// Where a recorder sends its checkpoints: called on the recorder's task, so it must not
/// block (it queues).
pub type CheckpointSink = Box<dyn FnMut(Checkpoint) + Send>;

/// A line the recorder formats itself when it writes the queue
/// ([`RecorderHandle::deferred_line`]): the source's task only queues what the line says,
/// and the formatting (with the hashing and the write) happens on the recorder's.
pub trait DeferredLine: Send {
    /// About how many bytes the line takes (counted against the queue's 64 KiB).
    fn len_hint(&self) -> usize;
    /// Writes the line at the end of `out`: UTF-8, no newline.
    fn write_line(&self, out: &mut Vec<u8>);
}

/// A queued line: formatted by its source, or by the recorder (with its size hint, asked
/// once).
enum QueuedLine {
    Text(String),
    Deferred(usize, Box<dyn DeferredLine>),
}

/// Lines waiting for the recorder's next flush (see [`RecorderHandle::line`]).
#[derive(Default)]
struct QueuedLines {
    lines: Vec<QueuedLine>,
    bytes: usize,
}

impl std::fmt::Debug for QueuedLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedLines")
            .field("lines", &self.lines.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

type SharedLines = Arc<Mutex<QueuedLines>>;

/// Most output and input bytes sent to the recorder and not yet taken by its task
/// buffer before [`RecorderHandle::room`] makes the relay wait: a disk slower than the
/// target then stalls the target (its SSH window fills), not the broker's memory.
pub const MAX_BACKLOG: usize = 8 * 1024 * 1024;

/// The bytes between the sources and the recorder task.
#[derive(Debug, Default)]
struct Backlog {
    bytes: AtomicUsize,
    /// The recorder is gone: nobody will take the backlog, nobody should wait for it.
    closed: AtomicBool,
    drained: Notify,
}

impl Backlog {
    fn add(&self, len: usize) {
        self.bytes.fetch_add(len, Ordering::AcqRel);
    }

    /// `len` bytes were taken off the queue (to be appended to the file's buffer at once).
    fn taken(&self, len: usize) {
        let before = self.bytes.fetch_sub(len, Ordering::AcqRel);
        if before > MAX_BACKLOG && before - len <= MAX_BACKLOG {
            self.drained.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

/// Where sources send events; cheap to clone.
#[derive(Clone, Debug)]
pub struct RecorderHandle {
    /// Events boxed one by one: tokio allocates a queue's first 32 slots when it is made,
    /// 1.8 KiB of 56-byte events per session, nearly all of it unused while the session
    /// idles; boxed, 256 bytes (memory per live session).
    tx: mpsc::UnboundedSender<Box<RecEvent>>,
    lines: SharedLines,
    backlog: Arc<Backlog>,
}

impl RecorderHandle {
    fn queue(&self, event: RecEvent) -> Result<(), ()> {
        self.tx.send(Box::new(event)).map_err(|_| ())
    }

    pub fn output(&self, bytes: &[u8]) {
        self.send_output(None, Bytes::copy_from_slice(bytes));
    }

    /// Output of SSH channel `channel` (see [`RecorderHandle::channel_started`]), shared
    /// with the relay that passes the same bytes on (no copy).
    pub fn output_on(&self, channel: u32, bytes: Bytes) {
        self.send_output(Some(channel), bytes);
    }

    fn send_output(&self, channel: Option<u32>, bytes: Bytes) {
        if UNRECORDED {
            return;
        }
        self.backlog.add(bytes.len());
        let _ = self.queue(RecEvent::Output(Instant::now(), channel, bytes));
    }

    /// Returns once at most [`MAX_BACKLOG`] bytes wait for the recorder (at once, nearly
    /// always). A relay awaits it before reading more output from the target; sources that
    /// must not wait (input, from the SSH handler) only add to the backlog.
    pub async fn room(&self) {
        loop {
            // created before the check: a `notify_waiters` after it is not missed
            let drained = self.backlog.drained.notified();
            if self.backlog.bytes.load(Ordering::Acquire) <= MAX_BACKLOG
                || self.backlog.closed.load(Ordering::Acquire)
            {
                return;
            }
            drained.await;
        }
    }

    /// Channel `channel` started its program with a pty or without. The first call must be
    /// for the channel the header's [`PTY_KEY`](crate::PTY_KEY) describes; when output
    /// switches between channels of different modes a [`Code::TerminalMode`] event says so.
    pub fn channel_started(&self, channel: u32, pty: bool) {
        let _ = self.queue(RecEvent::Channel(channel, pty));
    }

    pub fn input(&self, bytes: &[u8]) {
        if UNRECORDED {
            return;
        }
        self.backlog.add(bytes.len());
        let _ = self.queue(RecEvent::Input(
            Instant::now(),
            Bytes::copy_from_slice(bytes),
        ));
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        let _ = self.queue(RecEvent::Resize(Instant::now(), cols, rows));
    }

    pub fn marker(&self, label: impl Into<String>) {
        let _ = self.queue(RecEvent::Marker(Instant::now(), label.into()));
    }

    /// Appends a line formatted by the caller (line-oriented logs such as the SQL
    /// statement log, which carry their own times). Only the first line into an empty
    /// queue wakes the recorder, which then writes the queue [`FLUSH_INTERVAL`] later (or
    /// as soon as 64 KiB are queued): a statement per round trip would otherwise cost a
    /// task wake-up per round trip. Lines keep their order among themselves; a log
    /// written with `line` should use nothing else.
    pub fn line(&self, line: String) {
        let len = line.len();
        self.queue_line(len, QueuedLine::Text(line));
    }

    /// Appends a line the recorder formats when it writes the queue (see
    /// [`DeferredLine`]), as [`RecorderHandle::line`] does with a formatted one; the two
    /// keep their order among themselves.
    pub fn deferred_line(&self, line: Box<dyn DeferredLine>) {
        let len = line.len_hint();
        self.queue_line(len, QueuedLine::Deferred(len, line));
    }

    fn queue_line(&self, len: usize, line: QueuedLine) {
        let Ok(mut q) = self.lines.lock() else { return };
        let before = q.bytes;
        q.bytes += len + 1;
        q.lines.push(line);
        if before == 0 {
            let _ = self.queue(RecEvent::LinesQueued);
        }
        if before < crate::file::LINES_QUEUE && q.bytes >= crate::file::LINES_QUEUE {
            let _ = self.queue(RecEvent::Lines);
        }
    }

    /// Sends the recording's checkpoints to `sink` from now on (one due before is sent at
    /// once); the sink is dropped when the recorder ends. A sink rather than a channel the
    /// caller waits on: a task per live recording waiting for its checkpoints cost ~1.2 KiB
    /// per session (memory per live session).
    pub fn on_checkpoint(&self, sink: impl FnMut(Checkpoint) + Send + 'static) {
        let _ = self.queue(RecEvent::Checkpoints(Box::new(sink)));
    }

    /// Writes everything queued, syncs and closes the recording.
    pub async fn seal(&self) -> Option<Result<Sealed, RecordError>> {
        let (tx, rx) = oneshot::channel();
        self.queue(RecEvent::Seal(tx)).ok()?;
        rx.await.ok()
    }
}

/// Starts recording into `file`, on the caller's runtime; event times are relative to
/// `opened`.
pub fn spawn_recorder(
    file: RecordingFile,
    opened: Instant,
    on_failure: impl FnOnce(String) + Send + 'static,
) -> RecorderHandle {
    spawn_recorder_on(&tokio::runtime::Handle::current(), file, opened, on_failure)
}

/// [`spawn_recorder`] with the recorder's task on `runtime`: a source on a runtime that
/// should spend its time relaying (a connection thread) has its recording formatted,
/// hashed and written elsewhere.
pub fn spawn_recorder_on(
    runtime: &tokio::runtime::Handle,
    file: RecordingFile,
    opened: Instant,
    on_failure: impl FnOnce(String) + Send + 'static,
) -> RecorderHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let lines = SharedLines::default();
    let backlog = Arc::new(Backlog::default());
    let sinks = Sinks {
        on_failure,
        backlog: backlog.clone(),
    };
    runtime.spawn(run(file, opened, rx, lines.clone(), sinks));
    RecorderHandle { tx, lines, backlog }
}

/// Where the task reports: a write failure (once) and the bytes it took.
struct Sinks<F> {
    on_failure: F,
    backlog: Arc<Backlog>,
}

/// Where the task's checkpoints go: to the sink once it is given, the latest one kept
/// until then.
#[derive(Default)]
struct Checkpoints {
    sink: Option<CheckpointSink>,
    unsent: Option<Checkpoint>,
}

impl Checkpoints {
    fn publish(&mut self, cp: Checkpoint) {
        match &mut self.sink {
            Some(sink) => sink(cp),
            None => self.unsent = Some(cp),
        }
    }

    fn to(&mut self, mut sink: CheckpointSink) {
        if let Some(cp) = self.unsent.take() {
            sink(cp);
        }
        self.sink = Some(sink);
    }
}

/// Publishes a checkpoint of what `file` has on disk when one is due and new events were
/// written since the last one. Call right after a flush. Returns when the next one is due
/// (events on disk that no checkpoint covers yet), if any.
fn checkpoint_if_due(
    file: &RecordingFile,
    last: &mut (Instant, u64),
    checkpoints: &mut Checkpoints,
) -> Option<Instant> {
    let (events, digest) = file.progress();
    if events <= last.1 {
        return None;
    }
    let due = last.0 + CHECKPOINT_INTERVAL;
    if Instant::now() < due {
        return Some(due);
    }
    *last = (Instant::now(), events);
    checkpoints.publish(Checkpoint { events, digest });
    None
}

#[cfg(test)]
thread_local! {
    /// Times a recorder task on this thread woke (tests run their recorder on their own
    /// current-thread runtime).
    static WAKES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

async fn run(
    file: RecordingFile,
    opened: Instant,
    mut rx: mpsc::UnboundedReceiver<Box<RecEvent>>,
    lines: SharedLines,
    sinks: Sinks<impl FnOnce(String) + Send + 'static>,
) {
    let mut file = Some(file);
    let mut on_failure = Some(sinks.on_failure);
    let mut last_checkpoint = (Instant::now(), 0u64);
    let mut checkpoints = Checkpoints::default();
    let mut output = Utf8Assembler::default();
    // pty or not per channel, and the mode the reader is in (the header's until a `t`)
    let mut channel_pty = std::collections::HashMap::<u32, bool>::new();
    let mut mode: Option<bool> = None;
    let mut input = Utf8Assembler::default();
    // the text of the event at hand, kept across events for their allocations
    let (mut output_text, mut input_text) = (String::new(), String::new());
    // the next flush (events or lines waiting) or checkpoint; unarmed while idle, so an
    // idle session's recorder is never woken by a timer
    let tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(tick);
    // armed: `tick` is a deadline to wait for; for_flush: it is the flush's
    let (mut armed, mut for_flush) = (false, false);
    let mut fail = |file: &mut Option<RecordingFile>, e: RecordError| {
        tracing::error!(error = %e, "recording failed");
        *file = None;
        if let Some(f) = on_failure.take() {
            f(e.to_string());
        }
    };
    // queued lines go in before anything that arrives after them, and before a flush
    let write_lines = |file: &mut Option<RecordingFile>| {
        let queued = match lines.lock() {
            Ok(mut q) => std::mem::take(&mut *q).lines,
            Err(_) => return None,
        };
        let f = file.as_mut()?;
        for line in &queued {
            let written = match line {
                QueuedLine::Text(text) => f.append(text),
                QueuedLine::Deferred(len, d) => f.append_with(*len, |out| d.write_line(out)),
            };
            if let Err(e) = written {
                return Some(e);
            }
        }
        None
    };
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = &mut tick, if armed => {
                #[cfg(test)]
                WAKES.with(|w| w.set(w.get() + 1));
                (armed, for_flush) = (false, false);
                if let Some(e) = write_lines(&mut file) {
                    fail(&mut file, e);
                }
                if let Some(f) = file.as_mut()
                    && f.buffered() > 0
                    && let Err(e) = f.flush()
                {
                    fail(&mut file, e);
                }
                if let Some(f) = &file
                    && let Some(due) =
                        checkpoint_if_due(f, &mut last_checkpoint, &mut checkpoints)
                {
                    tick.as_mut().reset(due);
                    armed = true;
                }
                continue;
            }
        };
        if let Some(RecEvent::Checkpoints(_)) = event.as_deref() {
            // not an event of the recording: nothing to write, no flush to arm
            if let Some(RecEvent::Checkpoints(sink)) = event.map(|e| *e) {
                checkpoints.to(sink);
            }
            continue;
        }
        #[cfg(test)]
        WAKES.with(|w| w.set(w.get() + 1));
        // whatever the event, what it leaves buffered is written within FLUSH_INTERVAL (a
        // checkpoint the last flush armed gives way: the flush publishes it or re-arms it)
        if !for_flush {
            tick.as_mut().reset(Instant::now() + FLUSH_INTERVAL);
            (armed, for_flush) = (true, true);
        }
        if matches!(event.as_deref(), Some(RecEvent::LinesQueued)) {
            // the queue is left alone until the flush: lines that follow it within
            // FLUSH_INTERVAL wake nobody
            continue;
        }
        if let Some(e) = write_lines(&mut file) {
            fail(&mut file, e);
        }
        let Some(event) = event else { break };
        // the event's line: its time, code and data (made in the file's buffer)
        let label: String;
        // the event's bytes, kept here while its text borrows them
        let payload: Bytes;
        let event = match *event {
            RecEvent::Output(at, channel, bytes) => {
                sinks.backlog.taken(bytes.len());
                payload = bytes;
                let text = output.text(&payload, &mut output_text);
                let pty = channel.and_then(|c| channel_pty.get(&c).copied());
                if let Some(pty) = pty
                    && mode != Some(pty)
                    && !text.is_empty()
                {
                    mode = Some(pty);
                    let label = if pty { MODE_PTY } else { MODE_NO_PTY };
                    if let Some(f) = file.as_mut()
                        && let Err(e) = f.append_event(at - opened, Code::TerminalMode, label)
                    {
                        fail(&mut file, e);
                    }
                }
                (!text.is_empty()).then_some((at, Code::Output, text))
            }
            RecEvent::Channel(channel, pty) => {
                channel_pty.insert(channel, pty);
                mode.get_or_insert(pty);
                None
            }
            RecEvent::Input(at, bytes) => {
                sinks.backlog.taken(bytes.len());
                payload = bytes;
                let text = input.text(&payload, &mut input_text);
                (!text.is_empty()).then_some((at, Code::Input, text))
            }
            RecEvent::Resize(at, cols, rows) => {
                label = format!("{cols}x{rows}");
                Some((at, Code::Resize, label.as_str()))
            }
            RecEvent::Marker(at, marker) => {
                label = marker;
                Some((at, Code::Marker, label.as_str()))
            }
            RecEvent::Lines | RecEvent::LinesQueued | RecEvent::Checkpoints(_) => None,
            RecEvent::Seal(reply) => {
                let sealed = match file.take() {
                    // the seal syncs two files to disk (milliseconds, more on a busy disk):
                    // off the runtime's workers, where it would delay every timer, the
                    // guards' included
                    Some(f) => tokio::task::spawn_blocking(move || f.seal())
                        .await
                        .unwrap_or_else(|e| {
                            Err(RecordError::Write {
                                path: "(seal)".into(),
                                source: std::io::Error::other(e.to_string()),
                            })
                        }),
                    None => Err(RecordError::Write {
                        path: "(failed earlier)".into(),
                        source: std::io::Error::other("recording already failed"),
                    }),
                };
                let _ = reply.send(sealed);
                break;
            }
        };
        if let (Some(f), Some((at, code, data))) = (file.as_mut(), event)
            && let Err(e) = f.append_event(at - opened, code, data)
        {
            fail(&mut file, e);
        }
    }
    sinks.backlog.close();
    // dropped without a seal (connection task gone): still flush what we have
    if let Some(mut f) = file
        && let Err(e) = f.flush()
    {
        tracing::error!(error = %e, "recording failed at close");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// A recorder writing into `name` (under a temporary directory, kept while the test
    /// holds it) with `header`.
    fn recorder(
        name: &str,
        header: &str,
    ) -> (tempfile::TempDir, std::path::PathBuf, RecorderHandle) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let file = RecordingFile::create_at(path.clone(), header).unwrap();
        let h = spawn_recorder(file, Instant::now(), |_| {});
        (dir, path, h)
    }

    /// The checkpoints `h` sends, the latest one in a watch channel that closes when the
    /// recorder ends (it drops its sink).
    fn checkpoints(h: &RecorderHandle) -> tokio::sync::watch::Receiver<Option<Checkpoint>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        h.on_checkpoint(move |cp| {
            tx.send_replace(Some(cp));
        });
        rx
    }

    /// Whether `f` is ready at its first poll (polled in place, nothing else runs).
    async fn ready_at_once(f: impl std::future::Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_ready())).await
    }

    // current-thread runtime: the recorder task runs only when the test waits
    #[tokio::test]
    async fn a_relay_waits_while_the_recorder_is_more_than_its_backlog_behind() {
        let (_dir, path, h) = recorder("a.cast", r#"{"version":2}"#);
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let chunks = MAX_BACKLOG / chunk.len();
        for _ in 0..chunks {
            h.output_on(0, chunk.clone());
        }
        assert!(ready_at_once(h.room()).await, "must not wait at the limit");
        h.output_on(0, chunk.clone());
        assert!(!ready_at_once(h.room()).await, "must wait past the limit");
        // the recorder takes the backlog: the relay may read on, and nothing was lost
        tokio::time::timeout(Duration::from_secs(10), h.room())
            .await
            .expect("room once the recorder took the backlog");
        h.seal().await.unwrap().unwrap();
        let cast = on_disk(&path);
        assert_eq!(
            cast.bytes().filter(|b| *b == b'x').count(),
            (chunks + 1) << 20
        );
        // a recorder that is gone is waited for by nobody (a session past its seal)
        for _ in 0..=chunks {
            h.output_on(0, chunk.clone());
        }
        assert!(
            ready_at_once(h.room()).await,
            "must not wait for a recorder that is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_of_what_is_on_disk_is_published_every_interval() {
        let (_dir, path, h) = recorder("log.jsonl", r#"{"header":1}"#);
        let mut cps = checkpoints(&h);
        h.marker("one");
        h.marker("two");
        tokio::time::sleep(CHECKPOINT_INTERVAL - Duration::from_millis(200)).await;
        assert_eq!(*cps.borrow(), None, "checkpoint before its interval");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let cp = cps.borrow_and_update().clone().unwrap();
        assert_eq!(cp.events, 2);
        // the checkpoint is what the file on disk hashes to at that event
        let v = crate::verify::verify_to_checkpoint(
            &path,
            &crate::Expected {
                events: cp.events,
                digest: cp.digest.clone(),
            },
        )
        .unwrap();
        assert_eq!(v, crate::Verdict::Truncated { events: 2 });
        // nothing new: no new checkpoint; something new: one within the interval
        tokio::time::sleep(CHECKPOINT_INTERVAL * 2).await;
        assert!(!cps.has_changed().unwrap());
        h.marker("three");
        tokio::time::sleep(CHECKPOINT_INTERVAL + FLUSH_INTERVAL).await;
        assert_eq!(cps.borrow_and_update().as_ref().unwrap().events, 3);
        h.seal().await.unwrap().unwrap();
        // the recorder is gone: the receiver learns it (the store writer stops)
        assert!(cps.changed().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_due_before_the_sink_is_given_goes_to_it() {
        let (_dir, _path, h) = recorder("late.jsonl", r#"{"header":1}"#);
        h.marker("one");
        tokio::time::sleep(CHECKPOINT_INTERVAL + FLUSH_INTERVAL).await;
        let mut cps = checkpoints(&h);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(cps.borrow_and_update().as_ref().unwrap().events, 1);
        // and the next ones follow it
        h.marker("two");
        tokio::time::sleep(CHECKPOINT_INTERVAL + FLUSH_INTERVAL).await;
        assert_eq!(cps.borrow_and_update().as_ref().unwrap().events, 2);
        h.seal().await.unwrap().unwrap();
        assert!(
            cps.changed().await.is_err(),
            "the sink outlived the recorder"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_recorder_is_never_woken() {
        let (_dir, path, h) = recorder("s.cast", r#"{"version":2}"#);
        let mut cps = checkpoints(&h);
        h.output(b"$ ");
        h.marker("m");
        // two events, their flush, the checkpoint of what it wrote: four wake-ups
        tokio::time::sleep(CHECKPOINT_INTERVAL + FLUSH_INTERVAL).await;
        assert_eq!(cps.borrow_and_update().as_ref().unwrap().events, 2);
        assert!(on_disk(&path).contains("$ "));
        assert_eq!(WAKES.with(|w| w.get()), 4);
        // an hour of idling: not once (a 100 ms tick would be 36,000 times)
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(WAKES.with(|w| w.get()), 4, "an idle recorder was woken");
        // and awake for what comes next: written within FLUSH_INTERVAL, checkpointed
        h.output(b"ls\r\n");
        tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(1)).await;
        assert!(on_disk(&path).contains("ls"), "not flushed in time");
        assert_eq!(cps.borrow_and_update().as_ref().unwrap().events, 3);
        assert_eq!(WAKES.with(|w| w.get()), 6);
        h.seal().await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn lines_are_written_within_the_flush_interval_at_64_kib_or_at_the_seal() {
        let (_dir, path, h) = recorder("log.jsonl", r#"{"header":1}"#);
        h.line(r#"{"n":1}"#.into());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !on_disk(&path).contains(r#"{"n":1}"#),
            "written before its flush"
        );
        tokio::time::sleep(FLUSH_INTERVAL).await;
        assert!(
            on_disk(&path).contains(r#"{"n":1}"#),
            "not written by the flush"
        );

        // a full buffer's worth queued: written without waiting, up to
        // the file's last page boundary; the rest, less than a page, with the next flush
        let big = format!(r#"{{"big":"{}"}}"#, "x".repeat(crate::file::BUFFER));
        let before = on_disk(&path).len();
        h.line(big.clone());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let now = on_disk(&path).len();
        assert!(
            now >= before + big.len() - 4096 && now.is_multiple_of(4096),
            "a full queue waited for the flush: {before} -> {now} bytes"
        );
        tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(1)).await;
        assert!(
            on_disk(&path).contains(&big),
            "the rest waited past the flush"
        );

        // the seal writes what is queued, in order
        h.line(r#"{"n":2}"#.into());
        h.line(r#"{"n":3}"#.into());
        let sealed = h.seal().await.unwrap().unwrap();
        assert_eq!(sealed.events, 4);
        let text = on_disk(&path);
        let n2 = text.find(r#"{"n":2}"#).unwrap();
        assert!(text[n2..].contains(r#"{"n":3}"#), "{text}");
        let expected = crate::Expected {
            events: sealed.events,
            digest: sealed.digest,
        };
        let v = crate::verify(&path, Some(&expected)).unwrap();
        assert_eq!(v, crate::Verdict::Ok { events: 4 });
    }

    /// A line the recorder formats itself: written by the recorder's task, on the runtime
    /// it was started on (not the source's thread), in order with formatted lines, and
    /// chained.
    #[test]
    fn deferred_lines_are_formatted_on_the_recorder_s_runtime_in_order() {
        struct Counted {
            n: u32,
            len: usize,
            on: std::sync::Arc<Mutex<Vec<String>>>,
        }
        impl DeferredLine for Counted {
            fn len_hint(&self) -> usize {
                self.len
            }
            fn write_line(&self, out: &mut Vec<u8>) {
                let thread = std::thread::current().name().unwrap_or("?").to_owned();
                self.on.lock().unwrap().push(thread);
                let pad = "x".repeat(self.len.saturating_sub(32));
                out.extend_from_slice(
                    format!(r#"{{"deferred":{},"pad":"{pad}"}}"#, self.n).as_bytes(),
                );
            }
        }
        let recorders = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("recorders")
            .enable_all()
            .build()
            .unwrap();
        let source = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let on = std::sync::Arc::new(Mutex::new(Vec::new()));
        let file = RecordingFile::create_at(path.clone(), r#"{"header":1}"#).unwrap();
        let deferred = |n, len| {
            Box::new(Counted {
                n,
                len,
                on: on.clone(),
            })
        };
        let sealed = source.block_on(async {
            let h = spawn_recorder_on(recorders.handle(), file, Instant::now(), |_| {});
            h.line(r#"{"n":1}"#.into());
            h.deferred_line(deferred(2, 10));
            h.line(r#"{"n":3}"#.into());
            // one longer than the file's buffer (written through a full buffer)
            h.deferred_line(deferred(4, crate::file::BUFFER + 64));
            h.seal().await.unwrap().unwrap()
        });
        let text = on_disk(&path);
        let lines: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| &l[..l.len().min(16)])
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"n":1}"#,
                r#"{"deferred":2,"p"#,
                r#"{"n":3}"#,
                r#"{"deferred":4,"p"#
            ]
        );
        assert_eq!(*on.lock().unwrap(), ["recorders", "recorders"]);
        let expected = crate::Expected {
            events: sealed.events,
            digest: sealed.digest,
        };
        let v = crate::verify(&path, Some(&expected)).unwrap();
        assert_eq!(v, crate::Verdict::Ok { events: 4 });
    }

    #[tokio::test(start_paused = true)]
    async fn output_switching_between_pty_and_no_pty_channels_is_marked() {
        let (_dir, path, h) = recorder("s.cast", r#"{"version":2}"#);
        h.channel_started(0, true);
        h.output_on(0, Bytes::from_static(b"$ "));
        h.channel_started(1, false);
        h.output_on(1, Bytes::from_static(b"a\nb\n"));
        h.output_on(1, Bytes::from_static(b"c\n"));
        h.output_on(0, Bytes::from_static(b"$ "));
        h.output(b"unknown source keeps the mode");
        h.seal().await.unwrap().unwrap();
        let codes: Vec<String> = on_disk(&path)
            .lines()
            .skip(1)
            .map(|l| {
                let v: (f64, String, String) = serde_json::from_str(l).unwrap();
                format!("{} {}", v.1, v.2)
            })
            .collect();
        assert_eq!(
            codes,
            [
                "o $ ",
                "t no-pty",
                "o a\nb\n",
                "o c\n",
                "t pty",
                "o $ ",
                "o unknown source keeps the mode"
            ]
        );
    }
}
