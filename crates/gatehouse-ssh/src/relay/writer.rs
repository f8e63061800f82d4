//! The writer half of a channel's relay: applies operator events to the target channel in
//! the order they arrived, asking the session gate again before each (see `relay`'s docs).

use super::*;

/// Longest the writer of an ended channel waits to send the target's command its hangup
/// (a target that stopped reading has a full window; the connection is closed anyway).
const HANGUP_WAIT: Duration = Duration::from_millis(200);

/// What the writer does with an event it dequeued, given the gate now.
enum Apply {
    Now,
    Drop,
    Stop,
}

pub(super) async fn write_to_target(
    mut rx: mpsc::UnboundedReceiver<Box<ToTarget>>,
    target: Arc<ChannelWriteHalf<client::Msg>>,
    pending: PendingReplies,
    shared: Arc<Shared>,
    state: Arc<ConnectionState>,
) {
    let mut gate = shared.gate.subscribe();
    // Payload bytes of the event being handled: out of the backlog once written or dropped.
    let done = |len: usize| state.backlog_done(len);
    loop {
        let event = tokio::select! {
            event = rx.recv() => match event {
                Some(e) => *e,
                None => break,
            },
            changed = gate.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *gate.borrow_and_update();
                match now {
                    SessionState::Open => {
                        if apply_held(&shared, &target).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    SessionState::Locked => continue,
                    SessionState::Ending => break,
                }
            }
        };
        let len = event.payload_len();
        // The gate admitted the event when it was queued; it may have closed since.
        let verdict = match (shared.gate.state(), &event) {
            (_, ToTarget::Close) => Apply::Now,
            (SessionState::Open, _) => Apply::Now,
            (SessionState::Ending, _) => Apply::Stop,
            // a request would make its handler wait for the unlock while the handler is
            // what reads the lock prompt's answer: refuse it now
            (SessionState::Locked, ToTarget::Request(..)) => Apply::Drop,
            // typed before the lock: it goes when the operator has unlocked
            (SessionState::Locked, _) => {
                if shared.gate.wait_open().await {
                    Apply::Now
                } else {
                    Apply::Stop
                }
            }
        };
        match verdict {
            Apply::Now => {}
            Apply::Drop => {
                done(len);
                if let ToTarget::Request(_, reply) = event {
                    let _ = reply.tx.send(false);
                }
                continue;
            }
            Apply::Stop => {
                done(len);
                if let ToTarget::Request(_, reply) = event {
                    let _ = reply.tx.send(false);
                }
                break;
            }
        }
        if let ToTarget::Close = event {
            // the operator closed the channel with the program still running
            hang_up(&shared, &target).await;
            let _ = target.close().await;
            // a closed channel takes no more requests, a hangup included
            shared.finished.store(true, Ordering::Relaxed);
            break;
        }
        let applied = apply(event, &target, &pending).await;
        done(len);
        if let Err(e) = applied {
            tracing::debug!(error = %e, "target channel no longer writable");
            break;
        }
    }
    // Whatever stopped the writer (an enforcement end, the operator's connection gone),
    // the session's program on the target ends with it
    hang_up(&shared, &target).await;
    // Nothing queued after the end may reach the target; fail waiting requests at once.
    rx.close();
    while let Ok(event) = rx.try_recv() {
        done(event.payload_len());
        if let ToTarget::Request(_, reply) = *event {
            let _ = reply.tx.send(false);
        }
    }
}

/// Ends the target's program when its session's channel ends before it did, as a
/// terminal's programs get a hangup when the line drops (sshd signals the session's process
/// group). Without it a command run without a pty (`ssh … 'while :; do …; done'`) would
/// outlive its session on the target, unrecorded, until it next wrote to the channel:
/// after an enforcement end, and after an operator's connection dropped. (Only a shell or
/// exec that has not exited: a channel without a program has none, sshd refuses signals
/// for subsystems, and a closed channel takes no more requests. A program that ignores
/// SIGHUP, as under `nohup`, keeps running, as it would on a terminal.)
///
/// Called by the writer when it stops, and by the connection's end after it stopped the
/// relay's tasks (the writer may not get to it: aborted, or not scheduled in time under
/// load); a hangup cut short in the writer is sent again there.
pub(super) async fn hang_up(shared: &Shared, target: &ChannelWriteHalf<client::Msg>) {
    if shared.mode() != Some(RecordingMode::Terminal) || shared.finished.load(Ordering::Relaxed) {
        return;
    }
    let hangup = tokio::time::timeout(HANGUP_WAIT, target.signal(Sig::HUP)).await;
    if matches!(hangup, Ok(Ok(()))) {
        shared.finished.store(true, Ordering::Relaxed);
    } else {
        tracing::debug!("could not send the target's command a hangup");
    }
}

/// Applies what the lock held back: the terminal's last size, then an EOF.
async fn apply_held(
    shared: &Shared,
    target: &ChannelWriteHalf<client::Msg>,
) -> Result<(), russh::Error> {
    let held = shared
        .held
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    if let Some(w) = held.window {
        target
            .window_change(w.cols, w.rows, w.pix_width, w.pix_height)
            .await?;
    }
    if held.eof {
        target.eof().await?;
    }
    Ok(())
}

async fn apply(
    event: ToTarget,
    target: &ChannelWriteHalf<client::Msg>,
    pending: &PendingReplies,
) -> Result<(), russh::Error> {
    match event {
        ToTarget::Data(d) => target.data_bytes(d).await,
        ToTarget::ExtendedData(ext, d) => target.extended_data_bytes(ext, d).await,
        ToTarget::Eof => target.eof().await,
        ToTarget::Close => target.close().await,
        ToTarget::Env(name, value) => target.set_env(false, name, value).await,
        ToTarget::WindowChange(w) => {
            target
                .window_change(w.cols, w.rows, w.pix_width, w.pix_height)
                .await
        }
        ToTarget::Signal(sig) => target.signal(sig).await,
        ToTarget::Request(request, reply) => {
            // Registered before sending: the answer may arrive at once.
            if let Ok(mut p) = pending.lock() {
                p.push_back(reply);
            }
            match *request {
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
    }
}
