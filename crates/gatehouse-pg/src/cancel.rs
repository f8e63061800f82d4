//! Query cancellation. Each operator connection gets a BackendKeyData of Gatehouse's own
//! (the target's key never leaves the broker); a CancelRequest carrying it is forwarded to
//! the target with the target's key, on a new connection, as libpq does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::upstream::{CancelTarget, open_transport};

/// A BackendKeyData as the operator's client holds it: process id and secret key.
type ClientKey = (i32, Vec<u8>);

#[derive(Default)]
pub(crate) struct CancelMap {
    keys: Mutex<HashMap<ClientKey, Arc<CancelTarget>>>,
}

impl CancelMap {
    /// A fresh key for a session whose target is reached as `target`.
    pub(crate) fn register(&self, target: CancelTarget) -> (i32, Vec<u8>) {
        let target = Arc::new(target);
        loop {
            let pid = (rand::random::<u32>() >> 1) as i32;
            let key = rand::random::<[u8; 4]>().to_vec();
            if let Ok(mut keys) = self.keys.lock() {
                let slot = keys.entry((pid, key.clone()));
                if let std::collections::hash_map::Entry::Vacant(v) = slot {
                    v.insert(target);
                    return (pid, key);
                }
            } else {
                return (pid, key);
            }
        }
    }

    pub(crate) fn remove(&self, pid: i32, key: &[u8]) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&(pid, key.to_vec()));
        }
    }

    /// Forwards a CancelRequest; unknown keys are ignored (as PostgreSQL does: the client
    /// never learns whether a key was valid).
    pub(crate) async fn forward(&self, pid: i32, key: &[u8]) {
        let target = self
            .keys
            .lock()
            .ok()
            .and_then(|k| k.get(&(pid, key.to_vec())).cloned());
        let Some(t) = target else {
            tracing::info!(pid, "cancel request with an unknown key ignored");
            return;
        };
        let send = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
            let mut stream = open_transport(tcp, &t.host, t.tls.clone())
                .await
                .map_err(std::io::Error::other)?;
            let mut msg = Vec::with_capacity(12 + t.key.len());
            msg.extend_from_slice(&((12 + t.key.len()) as i32).to_be_bytes());
            msg.extend_from_slice(&gatehouse_pgproto::message::CANCEL_REQUEST.to_be_bytes());
            msg.extend_from_slice(&t.pid.to_be_bytes());
            msg.extend_from_slice(&t.key);
            stream.write_all(&msg).await?;
            stream.flush().await?;
            let _ = stream.shutdown().await;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), send).await {
            Ok(Ok(())) => {
                tracing::info!(target = %t.target, "query cancel forwarded to the target")
            }
            Ok(Err(e)) => {
                tracing::warn!(target = %t.target, error = %e, "cannot forward a query cancel")
            }
            Err(_) => tracing::warn!(target = %t.target, "forwarding a query cancel timed out"),
        }
    }
}
