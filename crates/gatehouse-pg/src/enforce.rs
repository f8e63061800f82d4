//! Enforcement wired to the PostgreSQL front: warnings as `NoticeResponse` (WARNING,
//! `[gatehouse] …`), the end as an `ErrorResponse` FATAL with PostgreSQL's own SQLSTATE
//! (57P05 for the idle limit, as `idle_session_timeout`; 57P01 otherwise, as an admin
//! shutdown), then the connection closes. SQL sessions have no terminal to lock, so the
//! guard's lock degrades to a disconnect: the client reconnects and authenticates again.

use gatehouse_core::EndReason;
use gatehouse_session::OperatorIo;
use tokio::sync::{mpsc, watch};

use crate::relay::ClientOut;

/// SQLSTATE of the FATAL error that ends a session for `reason`.
pub(crate) fn end_sqlstate(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::IdleTimeout => "57P05",
        _ => "57P01",
    }
}

pub(crate) struct PgOperator {
    pub(crate) out: mpsc::Sender<Box<ClientOut>>,
    pub(crate) ended: watch::Sender<bool>,
}

impl PgOperator {
    /// Queues `out` for the operator without waiting: the guard must never stall behind a
    /// client that stops reading (its end would come late). The queue holds only the
    /// guard's own few messages, so it is full only when the socket is stuck; the message
    /// is then dropped (warnings and the end are also markers in the statement log).
    fn queue(&self, out: ClientOut) {
        if let Err(e) = self.out.try_send(Box::new(out)) {
            tracing::debug!(error = %e, "operator not reading: Gatehouse message dropped");
        }
    }
}

impl OperatorIo<()> for PgOperator {
    async fn write(&self, _channel: (), _stderr: bool, text: String) {
        let text = text.trim().to_owned();
        if !text.is_empty() {
            self.queue(ClientOut::Notice(text));
        }
    }

    async fn notice(&self, _channel: (), _pty: bool, text: &str) {
        self.queue(ClientOut::Notice(format!("[gatehouse] {text}")));
    }

    async fn end(&self, _channels: Vec<((), bool)>, reason: &EndReason, message: String) {
        self.queue(ClientOut::Fatal {
            code: end_sqlstate(reason),
            message: format!("[gatehouse] {message}"),
        });
        self.ended.send_replace(true);
    }
}
