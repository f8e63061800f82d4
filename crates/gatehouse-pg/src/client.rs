//! Talking to the PostgreSQL client outside the relay: the connection's reader and writer
//! types, and refusals (FATAL with a SQLSTATE and a message that leaks nothing), bounded so
//! that a client that does not read cannot hold the connection open.

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use gatehouse_pgproto::backend;

use crate::io::{BoxStream, FrameReader};

pub(crate) type ClientReader = FrameReader<ReadHalf<BoxStream>>;
pub(crate) type ClientWriter = WriteHalf<BoxStream>;

/// An error for the operator: FATAL with a SQLSTATE and a message that leaks nothing.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

pub(crate) async fn send(w: &mut ClientWriter, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Sends the refusal and closes, bounded: a client that does not read cannot hold the
/// connection open.
pub(crate) async fn fatal(w: &mut ClientWriter, r: &Refusal) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = send(w, &backend::error_response("FATAL", r.code, &r.message)).await;
        let _ = w.shutdown().await;
    })
    .await;
}
