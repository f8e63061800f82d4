//! The PostgreSQL front's accept loop, shared with the SSH front through
//! `gatehouse_session::serve_front` (shutdown ends sessions through the node's registry).

use std::future::Future;
use std::sync::Arc;

use gatehouse_core::Protocol;
use gatehouse_session::serve_front;
use tokio::net::TcpListener;

use crate::broker::{PgBroker, PgError};

/// Serves PostgreSQL on `listener` until `shutdown` resolves (each connection on one of the
/// configured connection threads, if any), then ends live sessions (end
/// reason `shutdown`, FATAL 57P01 to the client) and waits for their logs to be sealed, at
/// most `shutdown_grace`; then closes the target connections kept between sessions.
pub async fn run(
    listener: TcpListener,
    broker: Arc<PgBroker>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PgError> {
    let front = &broker.config.front;
    serve_front(
        &listener,
        &broker.live,
        Protocol::Postgres,
        front,
        shutdown,
        |socket, peer, slot| {
            let broker = broker.clone();
            let threads = broker.config.threads.clone();
            let serve = move |socket| crate::conn::serve(broker, socket, peer, slot);
            async move {
                match threads {
                    Some(threads) => threads.run(socket, serve).await,
                    // boxed: inline, the connection's future would make every accept-loop
                    // task that size, threads or not (memory per live session)
                    None => Box::pin(serve(socket)).await,
                }
            }
        },
    )
    .await
    .map_err(PgError::Accept)?;
    // the sessions are over: so are the target connections kept for the next ones
    broker.pool.close_all().await;
    Ok(())
}
