//! Enforcement wired to SSH: the guard's `OperatorIo` on a russh server handle (its
//! observer is the shared `gatehouse_session::SessionObserver`, markers into the recording).

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::EndReason;
use gatehouse_session::OperatorIo;
use russh::ChannelId;
use russh::server;

/// Longest an ended session waits for the client to close the channels Gatehouse closed
/// (so that it prints the end line) before the disconnect.
const END_LINGER: Duration = Duration::from_millis(300);

/// How long an ended session gets to part politely (end notice, channel close, disconnect)
/// before Gatehouse drops the connection: an end or a kill completes within a second even
/// when the client stopped reading.
const POLITE_END: Duration = Duration::from_millis(700);

/// Longest the guard waits to hand the operator a message. A client that stops reading
/// fills the channel's window and would otherwise stall the guard, and with it the end of
/// the session; past this the message is dropped (it is also a marker in the recording).
const WRITE_WAIT: Duration = Duration::from_millis(500);

/// Runs `op` for at most [`WRITE_WAIT`]; false if it did not finish.
async fn bounded<T>(what: &str, op: impl std::future::Future<Output = T>) -> bool {
    let done = tokio::time::timeout(WRITE_WAIT, op).await.is_ok();
    if !done {
        tracing::debug!(what, "operator not reading: Gatehouse message dropped");
    }
    done
}

pub(crate) struct SshOperator {
    pub(crate) handle: server::Handle,
    /// Drops the connection when the polite disconnect cannot get through.
    pub(crate) sever: Arc<tokio::sync::Notify>,
    /// The connection's open session channels (see `ConnectionState::open_channels`).
    pub(crate) open_channels: tokio::sync::watch::Receiver<usize>,
}

impl OperatorIo<ChannelId> for SshOperator {
    async fn write(&self, channel: ChannelId, stderr: bool, text: String) {
        if stderr {
            bounded(
                "notice",
                self.handle.extended_data(channel, 1, text.into_bytes()),
            )
            .await;
        } else {
            bounded("notice", self.handle.data(channel, text.into_bytes())).await;
        }
    }

    async fn end(&self, channels: Vec<(ChannelId, bool)>, _reason: &EndReason, message: String) {
        let polite = async {
            for &(channel, pty) in &channels {
                self.notice(channel, pty, &message).await;
            }
            // OpenSSH exits at a disconnect without writing output it still buffers, which
            // would lose the end line: close the channels first and let the client print
            // and close its side (at most END_LINGER: a client may never answer).
            for &(channel, _) in &channels {
                bounded("eof", self.handle.eof(channel)).await;
                bounded("close", self.handle.close(channel)).await;
            }
            if !channels.is_empty() {
                let mut open = self.open_channels.clone();
                let _ = tokio::time::timeout(END_LINGER, open.wait_for(|n| *n == 0)).await;
            }
            self.handle
                .disconnect(russh::Disconnect::ByApplication, message, "en".into())
                .await
                .is_ok()
        };
        let parted = matches!(tokio::time::timeout(POLITE_END, polite).await, Ok(true));
        if !parted {
            tracing::warn!("client not reading: dropping the connection to end the session");
            self.sever.notify_one();
        }
    }
}
