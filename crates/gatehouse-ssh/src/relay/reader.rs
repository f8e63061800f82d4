//! The reader half of a channel's relay: everything the target sends back to the operator
//! (data, stderr, exit status and signal, EOF held until the exit status, close), request
//! replies to whoever asked, and the channel's recording mode fixed when the target accepts
//! its program (see `relay`'s docs).

use super::*;

pub(super) async fn read_from_target(
    mut target: ChannelReadHalf,
    channel: ChannelId,
    operator: server::Handle,
    state: Arc<ConnectionState>,
    pending: PendingReplies,
    shared: Arc<Shared>,
) {
    // The target's EOF is passed on after its exit status (or at its close): russh answers
    // an operator's CHANNEL_CLOSE at once, so a client that closes as soon as it has seen
    // EOF both ways (Dropbear's dbclient with stdin at EOF) would otherwise never get the
    // exit status that sshd sends after the EOF.
    let mut eof_held = false;
    loop {
        // A recorder more than `MAX_BACKLOG` bytes behind (a disk slower than the target)
        // holds the target's output here, as a lock does: the target stalls once its window
        // fills, and the broker's memory stays bounded.
        if let Some(rec) = state.recorder.get() {
            rec.room().await;
        }
        let Some(msg) = target.wait().await else {
            break;
        };
        // While the session is locked the target's output waits here (and the target
        // stalls once its window fills); after an enforcement end nothing more is relayed.
        if shared.gate.is_closed() && !shared.gate.wait_open().await {
            return;
        }
        let delivered = match msg {
            ChannelMsg::Data { data } => {
                state
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                record(&shared, &state, Side::Target(&data));
                operator.data(channel, data).await.is_ok()
            }
            ChannelMsg::ExtendedData { data, ext } => {
                state
                    .bytes_out
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                record(&shared, &state, Side::Target(&data));
                operator.extended_data(channel, ext, data).await.is_ok()
            }
            ChannelMsg::Eof => {
                eof_held = true;
                true
            }
            ChannelMsg::ExitStatus { exit_status } => {
                shared.finished.store(true, Ordering::Relaxed);
                operator
                    .exit_status_request(channel, exit_status)
                    .await
                    .is_ok()
                    && release_eof(&operator, channel, &mut eof_held).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                shared.finished.store(true, Ordering::Relaxed);
                operator
                    .exit_signal_request(channel, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .is_ok()
                    && release_eof(&operator, channel, &mut eof_held).await
            }
            ChannelMsg::Success => {
                answer(&pending, &shared, true);
                true
            }
            ChannelMsg::Failure => {
                answer(&pending, &shared, false);
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
    shared.finished.store(true, Ordering::Relaxed);
    let last: Option<Vec<Transfer>> = shared
        .sftp
        .lock()
        .ok()
        .and_then(|mut tap| tap.as_mut().map(SftpTap::finish));
    if let Some(t) = last {
        state.log_transfers(t);
    }
    state.set_end_reason(EndReason::TargetClosed);
    release_eof(&operator, channel, &mut eof_held).await;
    let _ = operator.close(channel).await;
    // Fail any request still waiting, so its handler does not wait for the timeout.
    while let Some(reply) = pending.lock().ok().and_then(|mut p| p.pop_front()) {
        let _ = reply.tx.send(false);
    }
}

/// Passes on the target's EOF if it is being held; false if the operator side is gone.
async fn release_eof(operator: &server::Handle, channel: ChannelId, held: &mut bool) -> bool {
    if !std::mem::take(held) {
        return true;
    }
    operator.eof(channel).await.is_ok()
}
