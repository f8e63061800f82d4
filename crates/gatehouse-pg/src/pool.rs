//! Gatehouse's logins to PostgreSQL targets, kept open between sessions when `[postgres]
//! target_pool` allows it (off by default): what PgBouncer's session mode does, for
//! operators and jobs that connect once per statement (a CI step per query, `pgbench -C`),
//! where the target's login — a new backend process and its authentication — is most of a
//! connection's cost.
//!
//! A target connection is kept only when nothing of the session can reach the next one:
//! - the operator's client left (Terminate or a closed socket) with the server at rest —
//!   every segment answered, idle (no transaction open), no extended-protocol message
//!   waiting for a Sync (`Tracker::at_rest`) — and no query cancel was forwarded for the
//!   session (a late cancel must not hit the next session's statement);
//! - the server then answers `DISCARD ALL` (closes cursors, drops temporary tables, deallocates
//!   prepared statements, unlistens, releases advisory locks, resets every setting and the
//!   session's role) with its CommandComplete and an idle ReadyForQuery, within
//!   [`RESET_WAIT`]; anything else closes the connection.
//!
//! Connections are kept per pool key: the target's address, login, TLS settings and
//! credential, the database and the startup parameters passed through — a changed
//! credential or address never gets an old login. At most `target_pool` are kept per
//! target, whatever their keys (the longest kept makes room for a newer one). A kept
//! connection is closed (Terminate) after `target_pool_idle`, when it makes room, on
//! shutdown, and when the server said anything while it was idle (a FATAL from
//! `pg_terminate_backend`, an idle-session timeout): it is checked before it is handed out.
//!
//! What `DISCARD ALL` does not reset stays with the connection, as with PgBouncer:
//! connections a session opened from the server (dblink, postgres_fdw), libraries it
//! `LOAD`ed. The documentation of `target_pool` says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use gatehouse_pgproto::frame::for_each_frame;
use gatehouse_pgproto::message::{Backend, ErrorFields};
use gatehouse_store::TargetRecord;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use crate::upstream::{Upstream, message};

/// `[postgres] target_pool` and `target_pool_idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Idle target connections kept per target; 0: none (each session logs in anew).
    pub size: usize,
    /// How long an idle target connection is kept.
    pub idle: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 0,
            idle: DEFAULT_IDLE,
        }
    }
}

/// Default `target_pool_idle`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// Longest the server may take to answer the reset.
const RESET_WAIT: Duration = Duration::from_secs(2);
/// Longest a Terminate to a connection let go may take.
const TERMINATE_WAIT: Duration = Duration::from_secs(1);

/// What a kept connection may be handed to: equal keys, equal logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey([u8; 32]);

impl PoolKey {
    /// The key of a login to `target`'s `database` with the startup parameters `params`
    /// and the credential `password` (hashed: the key holds no secret).
    pub(crate) fn new(
        target: &TargetRecord,
        database: &str,
        params: &[(String, String)],
        password: &[u8],
    ) -> PoolKey {
        let mut h = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(target.name.as_bytes());
        field(target.host.as_bytes());
        field(&target.port.to_le_bytes());
        field(target.username.as_bytes());
        if let gatehouse_core::TargetKind::Postgres { tls, ca, .. } = &target.kind {
            field(tls.as_str().as_bytes());
            field(ca.as_deref().unwrap_or("").as_bytes());
        }
        field(database.as_bytes());
        for (k, v) in params {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        field(password);
        PoolKey(*h.finalize().as_bytes())
    }
}

struct Idle {
    id: u64,
    up: Upstream,
    /// The connection thread whose event loop the connection's socket is registered with:
    /// a session on the same thread is handed it first (no wake-ups across threads).
    thread: ThreadId,
}

#[derive(Default)]
pub(crate) struct TargetPool {
    config: PoolConfig,
    next_id: AtomicU64,
    idle: Mutex<IdleMap>,
    /// Shut down: nothing more is kept.
    closed: AtomicBool,
}

impl TargetPool {
    pub(crate) fn new(config: PoolConfig) -> Arc<TargetPool> {
        Arc::new(TargetPool {
            config,
            ..Default::default()
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.size > 0 && !self.closed.load(Ordering::Relaxed)
    }

    /// A kept connection for `key` that is still open and quiet, if any (the most recently
    /// kept first, on this thread first). Connections found closed are let go.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Upstream> {
        let here = std::thread::current().id();
        loop {
            let mut idle = {
                let Ok(mut map) = self.idle.lock() else {
                    return None;
                };
                let list = map.get(key)?;
                let at = list
                    .iter()
                    .rposition(|i| i.thread == here)
                    .unwrap_or(list.len().checked_sub(1)?);
                remove_at(&mut map, key, at)?
            };
            if quiet(&mut idle.up) {
                return Some(idle.up);
            }
            tracing::info!(
                target = %idle.up.cancel.target,
                backend_pid = idle.up.cancel.pid,
                "a kept target connection was closed or spoke while idle: not reused"
            );
            let up = idle.up;
            tokio::spawn(terminate(up));
        }
    }

    /// Resets `up` (`DISCARD ALL`) and keeps it for `key`, or closes it when the reset
    /// fails or the pool for `key` is full.
    pub(crate) async fn release(self: &Arc<Self>, key: PoolKey, mut up: Upstream) {
        if !self.enabled() {
            return terminate(up).await;
        }
        match tokio::time::timeout(RESET_WAIT, reset(&mut up)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::info!(backend_pid = up.cancel.pid, %why, "target connection not kept: its reset failed");
                return terminate(up).await;
            }
            Err(_) => {
                tracing::info!(
                    backend_pid = up.cancel.pid,
                    "target connection not kept: its reset was not answered in time"
                );
                return terminate(up).await;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let Ok(mut map) = self.idle.lock() else {
                return terminate(up).await;
            };
            if self.closed.load(Ordering::Relaxed) {
                drop(map);
                return terminate(up).await;
            }
            // at most `size` kept per target, whatever the keys: an operator who varies a
            // startup parameter per connection must not make the pool hold ever more of
            // the target's connection slots; the longest kept makes room
            let target = up.cancel.target.clone();
            let evicted = if count_for(&map, &target) >= self.config.size {
                oldest_for(&mut map, &target)
            } else {
                None
            };
            map.entry(key).or_default().push(Idle {
                id,
                up,
                thread: std::thread::current().id(),
            });
            evicted
        };
        if let Some(old) = evicted {
            terminate(old.up).await;
        }
        let pool = Arc::downgrade(self);
        let idle = self.config.idle;
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            expire(pool, key, id).await;
        });
    }

    /// Shutdown: every kept connection is closed, and none is kept from now on.
    pub(crate) async fn close_all(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let all: Vec<Idle> = match self.idle.lock() {
            Ok(mut map) => map.drain().flat_map(|(_, list)| list).collect(),
            Err(_) => return,
        };
        let n = all.len();
        let closing: Vec<_> = all
            .into_iter()
            .map(|i| tokio::spawn(terminate(i.up)))
            .collect();
        for c in closing {
            let _ = c.await;
        }
        if n > 0 {
            tracing::info!(connections = n, "kept target connections closed");
        }
    }
}

type IdleMap = HashMap<PoolKey, Vec<Idle>>;

/// Kept connections to `target` (any key).
fn count_for(map: &IdleMap, target: &str) -> usize {
    map.values()
        .flatten()
        .filter(|i| i.up.cancel.target == target)
        .count()
}

/// Takes out the connection to `target` kept the longest (ids grow with time).
fn oldest_for(map: &mut IdleMap, target: &str) -> Option<Idle> {
    let (key, at) = map
        .iter()
        .flat_map(|(k, list)| list.iter().enumerate().map(move |(at, i)| (k, at, i)))
        .filter(|(_, _, i)| i.up.cancel.target == target)
        .min_by_key(|(_, _, i)| i.id)
        .map(|(k, at, _)| (*k, at))?;
    remove_at(map, &key, at)
}

/// Takes out entry `at` of `key`'s list, and the list once it is empty.
fn remove_at(map: &mut IdleMap, key: &PoolKey, at: usize) -> Option<Idle> {
    let list = map.get_mut(key)?;
    let idle = (at < list.len()).then(|| list.remove(at))?;
    if list.is_empty() {
        map.remove(key);
    }
    Some(idle)
}

async fn expire(pool: Weak<TargetPool>, key: PoolKey, id: u64) {
    let Some(pool) = pool.upgrade() else {
        return;
    };
    let expired = pool.idle.lock().ok().and_then(|mut map| {
        let at = map.get(&key)?.iter().position(|i| i.id == id)?;
        remove_at(&mut map, &key, at)
    });
    if let Some(idle) = expired {
        tracing::debug!(
            backend_pid = idle.up.cancel.pid,
            "kept target connection idle too long: closed"
        );
        terminate(idle.up).await;
    }
}

/// Whether an idle connection is still open and has said nothing (a server says nothing
/// to an idle client unless it is going away, or for a notification: either way the
/// connection is not handed out). One poll of its reader, without waiting.
fn quiet(up: &mut Upstream) -> bool {
    let mut read = std::pin::pin!(up.reader.next_message());
    matches!(
        read.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Pending
    )
}

/// A clean end of a target connection: Terminate, then close.
pub(crate) async fn close<W: tokio::io::AsyncWrite + Unpin>(writer: &mut W) {
    let _ = tokio::time::timeout(TERMINATE_WAIT, async {
        let _ = writer.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = writer.shutdown().await;
    })
    .await;
}

async fn terminate(mut up: Upstream) {
    close(&mut up.writer).await
}

/// `DISCARD ALL` and its answer: CommandComplete then an idle ReadyForQuery (parameter
/// statuses it reports are applied to the greeting the next session gets; notices and
/// notifications are let go).
async fn reset(up: &mut Upstream) -> Result<(), String> {
    let query = message(|b| frontend::query("DISCARD ALL", b)).map_err(|e| e.to_string())?;
    up.writer
        .write_all(&query)
        .await
        .map_err(|e| e.to_string())?;
    up.writer.flush().await.map_err(|e| e.to_string())?;
    let mut completed = false;
    loop {
        let (tag, body) = match up.reader.next_message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the target closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        };
        match tag {
            b'C' => completed = true,
            b'S' => up.greeting = with_parameter(&up.greeting, &body),
            b'N' | b'A' => {}
            b'Z' if completed && body[..] == [b'I'] => return Ok(()),
            b'E' => {
                return Err(match Backend::parse(tag, &body) {
                    Ok(Backend::Error(ErrorFields { code, message, .. })) => {
                        format!("{message} ({code})")
                    }
                    _ => "an error".into(),
                });
            }
            other => return Err(format!("unexpected message {:?}", char::from(other))),
        }
    }
}

/// `greeting` (the login's ParameterStatus and NoticeResponse messages) with the
/// ParameterStatus `status` (a message body: name, value) in place of the one of the same
/// name, or added.
fn with_parameter(greeting: &[u8], status: &[u8]) -> Vec<u8> {
    let name = |body: &[u8]| body.split(|b| *b == 0).next().map(<[u8]>::to_vec);
    let wanted = name(status);
    let frame = |out: &mut Vec<u8>, tag: u8, body: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    };
    let mut out = Vec::with_capacity(greeting.len() + status.len() + 5);
    let mut replaced = false;
    let _ = for_each_frame(greeting, |tag, body| {
        if tag == b'S' && name(body) == wanted {
            if !replaced {
                frame(&mut out, b'S', status);
            }
            replaced = true;
        } else {
            frame(&mut out, tag, body);
        }
    });
    if !replaced {
        frame(&mut out, b'S', status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_pgproto::backend::{notice_response, parameter_status};

    fn status_body(name: &str, value: &str) -> Vec<u8> {
        parameter_status(name, value)[5..].to_vec()
    }

    #[test]
    fn a_reported_parameter_replaces_its_old_value_in_the_greeting() {
        let notice = notice_response("NOTICE", "00000", "welcome");
        let mut greeting = parameter_status("TimeZone", "UTC");
        greeting.extend_from_slice(&notice);
        greeting.extend_from_slice(&parameter_status("application_name", "psql"));
        let changed = with_parameter(&greeting, &status_body("TimeZone", "Europe/Paris"));
        let mut expected = parameter_status("TimeZone", "Europe/Paris");
        expected.extend_from_slice(&notice);
        expected.extend_from_slice(&parameter_status("application_name", "psql"));
        assert_eq!(changed, expected);
        // a parameter not in the greeting is added; a name that is a prefix of another is
        // not mistaken for it
        let added = with_parameter(&greeting, &status_body("Time", "x"));
        let mut expected = greeting.clone();
        expected.extend_from_slice(&parameter_status("Time", "x"));
        assert_eq!(added, expected);
    }

    fn record(host: &str) -> TargetRecord {
        TargetRecord {
            name: "orders".into(),
            environment: "prod".into(),
            host: host.into(),
            port: 5432,
            username: "app".into(),
            kind: gatehouse_core::TargetKind::Postgres {
                database: None,
                tls: gatehouse_core::TlsMode::Disable,
                ca: None,
                kept_logins: true,
            },
        }
    }

    /// A changed address, database, startup parameter or credential never gets a kept
    /// login; fields are delimited (no two splits of one string share a key).
    #[test]
    fn pool_keys_differ_for_every_part_of_a_login() {
        let params = vec![("application_name".to_owned(), "psql".to_owned())];
        let base = PoolKey::new(&record("db1"), "orders", &params, b"secret");
        assert_eq!(
            base,
            PoolKey::new(&record("db1"), "orders", &params, b"secret")
        );
        let other_params = vec![("application_name".to_owned(), "psq".to_owned())];
        for other in [
            PoolKey::new(&record("db2"), "orders", &params, b"secret"),
            PoolKey::new(&record("db1"), "orders2", &params, b"secret"),
            PoolKey::new(&record("db1"), "orders", &other_params, b"secret"),
            PoolKey::new(&record("db1"), "orders", &[], b"secret"),
            PoolKey::new(&record("db1"), "orders", &params, b"secret2"),
            PoolKey::new(&record("db1o"), "rders", &params, b"secret"),
        ] {
            assert_ne!(base, other);
        }
    }
}
