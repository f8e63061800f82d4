//! Query cancellation. Each operator connection gets a BackendKeyData with the target's
//! real process id (clients compare it with `pg_backend_pid()` and with the pid of a
//! NotificationResponse, e.g. to ignore their own notifications) and a secret key of
//! Gatehouse's own, random (the target's key never leaves the broker). A CancelRequest
//! carrying that (pid, key) pair is forwarded to the right target with the target's key,
//! on a new connection, as libpq does; any other pair is ignored.

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
    keys: Mutex<HashMap<ClientKey, Entry>>,
}

struct Entry {
    target: Arc<CancelTarget>,
    /// A cancel was forwarded for the session (its target connection is not reused: the
    /// cancel may reach the server after the session, during another's statement).
    forwarded: bool,
}

impl CancelMap {
    /// The BackendKeyData for a session whose target is reached as `target`: the target's
    /// pid and a fresh random key (4 bytes: Gatehouse speaks protocol 3.0 to clients), unique
    /// among live sessions (two targets may give the same pid).
    pub(crate) fn register(&self, target: CancelTarget) -> (i32, Vec<u8>) {
        let pid = target.pid;
        let target = Arc::new(target);
        loop {
            let key = rand::random::<[u8; 4]>().to_vec();
            if key == target.key {
                continue;
            }
            if let Ok(mut keys) = self.keys.lock() {
                let slot = keys.entry((pid, key.clone()));
                if let std::collections::hash_map::Entry::Vacant(v) = slot {
                    v.insert(Entry {
                        target,
                        forwarded: false,
                    });
                    return (pid, key);
                }
            } else {
                return (pid, key);
            }
        }
    }

    /// Takes the session's entry out (the session is over): its target, to cancel what
    /// may still run there, and whether a cancel was forwarded for it.
    pub(crate) fn remove(&self, pid: i32, key: &[u8]) -> Option<(Arc<CancelTarget>, bool)> {
        self.keys
            .lock()
            .ok()
            .and_then(|mut keys| keys.remove(&(pid, key.to_vec())))
            .map(|e| (e.target, e.forwarded))
    }

    /// Forwards a CancelRequest; unknown keys are ignored (as PostgreSQL does: the client
    /// never learns whether a key was valid).
    pub(crate) async fn forward(&self, pid: i32, key: &[u8]) {
        let target = self.keys.lock().ok().and_then(|mut k| {
            let e = k.get_mut(&(pid, key.to_vec()))?;
            e.forwarded = true;
            Some(e.target.clone())
        });
        let Some(t) = target else {
            tracing::info!(pid, "cancel request with an unknown key ignored");
            return;
        };
        send_cancel(&t, Duration::from_secs(10)).await;
    }
}

/// Sends the target a CancelRequest for its session `t`, on a new connection as libpq does,
/// giving up after `limit`.
pub(crate) async fn send_cancel(t: &CancelTarget, limit: Duration) {
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
    match tokio::time::timeout(limit, send).await {
        Ok(Ok(())) => {
            tracing::info!(target = %t.target, "query cancel forwarded to the target")
        }
        Ok(Err(e)) => {
            tracing::warn!(target = %t.target, error = %e, "cannot forward a query cancel")
        }
        Err(_) => tracing::warn!(target = %t.target, "forwarding a query cancel timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: i32, key: &[u8]) -> CancelTarget {
        CancelTarget {
            target: "orders".into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            pid,
            key: key.to_vec(),
        }
    }

    fn lookup(map: &CancelMap, pid: i32, key: &[u8]) -> Option<Arc<CancelTarget>> {
        let keys = map.keys.lock().unwrap();
        keys.get(&(pid, key.to_vec())).map(|e| e.target.clone())
    }

    #[test]
    fn clients_get_the_real_pid_and_a_key_of_gatehouses_own() {
        let map = CancelMap::default();
        let (pid, key) = map.register(target(4242, &[1, 2, 3, 4]));
        assert_eq!(pid, 4242);
        assert_eq!(key.len(), 4);
        assert_ne!(key, vec![1, 2, 3, 4]);
        // two targets with the same pid: two keys, each mapped to its own target
        let (pid2, key2) = map.register(target(4242, &[9, 9, 9, 9]));
        assert_eq!(pid2, 4242);
        assert_ne!(key, key2);
        assert_eq!(lookup(&map, pid, &key).unwrap().key, vec![1, 2, 3, 4]);
        assert_eq!(lookup(&map, pid2, &key2).unwrap().key, vec![9, 9, 9, 9]);
        // the target's own key, or a wrong one, maps to nothing
        assert!(lookup(&map, 4242, &[1, 2, 3, 4]).is_none());
        map.remove(pid, &key);
        assert!(lookup(&map, pid, &key).is_none());
        assert!(lookup(&map, pid2, &key2).is_some());
    }
}
