//! The back: a russh client connection from Gatehouse to the target, authenticated with the
//! target's stored key and accepted only if the target presents its pinned host key (or, for
//! a trust-on-first-use target with no key yet, after pinning the first key seen).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::EndReason;
use gatehouse_core::TargetKind;
use gatehouse_store::{AuditEvent, TargetRecord};
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use serde_json::json;

use crate::broker::Broker;
use crate::keys::{fingerprint, parse_private_key, parse_public_key_line, public_key_line};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the target could not be reached; each maps to an end reason and an operator message.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    HostKeyMismatch {
        expected: String,
        presented: String,
    },
    Unreachable(String),
    CredentialRefused,
    Misconfigured(String),
    /// Gatehouse's store did not answer in time (busy or down): the target is fine.
    StoreUnavailable(String),
    /// The node had no descriptor left for the target's socket: the target is fine.
    OutOfFiles,
}

impl UpstreamError {
    /// A store error met while connecting: busy or down is not a misconfiguration.
    fn from_store(e: gatehouse_store::StoreError) -> UpstreamError {
        if e.is_unavailable() {
            UpstreamError::StoreUnavailable(e.to_string())
        } else {
            UpstreamError::Misconfigured(e.to_string())
        }
    }

    /// The target's connection or handshake failed with `e`: unreachable, unless this node
    /// had no descriptor for the socket (the target is fine then).
    fn connecting(e: &russh::Error) -> UpstreamError {
        match e {
            russh::Error::IO(io) if gatehouse_session::open_files::is_out_of_files(io) => {
                UpstreamError::OutOfFiles
            }
            e => UpstreamError::Unreachable(describe(e)),
        }
    }

    pub(crate) fn end_reason(&self) -> EndReason {
        match self {
            UpstreamError::HostKeyMismatch { .. } => EndReason::HostKeyMismatch,
            UpstreamError::Unreachable(_) | UpstreamError::CredentialRefused => {
                EndReason::TargetUnreachable
            }
            UpstreamError::Misconfigured(m) => EndReason::Error(m.clone()),
            UpstreamError::StoreUnavailable(m) => {
                EndReason::Error(format!("store unavailable: {m}"))
            }
            UpstreamError::OutOfFiles => EndReason::Error("out of open files".into()),
        }
    }

    /// What the operator sees; never the credential, never the expected key.
    pub(crate) fn operator_message(&self, target: &str) -> String {
        match self {
            UpstreamError::HostKeyMismatch { .. } => format!(
                "target '{target}' presented a host key that does not match its pinned key; \
                 connection refused (possible man-in-the-middle). The event is in the audit log."
            ),
            UpstreamError::Unreachable(why) => format!("cannot reach target '{target}': {why}"),
            UpstreamError::CredentialRefused => {
                format!("target '{target}' refused Gatehouse's credential; ask a Gatehouse admin")
            }
            UpstreamError::Misconfigured(_) => {
                format!("target '{target}' is misconfigured in Gatehouse; ask a Gatehouse admin")
            }
            UpstreamError::StoreUnavailable(_) => crate::auth::STORE_BUSY.to_owned(),
            UpstreamError::OutOfFiles => gatehouse_session::open_files::OUT_OF_FILES.to_owned(),
        }
    }
}

pub(crate) struct UpstreamHandler {
    pinned: Option<PublicKey>,
    trust_on_first_use: bool,
    presented: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for UpstreamHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // Host certificates are not trusted by pinning; the pinned key is what counts.
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let accept = match &self.pinned {
            Some(pinned) => pinned.key_data() == key.key_data(),
            None => self.trust_on_first_use,
        };
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(key);
        }
        Ok(accept)
    }
}

pub(crate) struct Upstream {
    handle: client::Handle<UpstreamHandler>,
}

impl Upstream {
    pub(crate) async fn open_session_channel(
        &self,
    ) -> Result<russh::Channel<client::Msg>, russh::Error> {
        self.handle.channel_open_session().await
    }

    /// Says goodbye to the target, for at most half a second (its session loop may still be
    /// waiting on a relay that was just stopped).
    pub(crate) async fn disconnect(&self) {
        let bye = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), bye).await;
    }
}

/// Connects and authenticates to `target`.
pub(crate) async fn connect(
    broker: &Broker,
    target: &TargetRecord,
    session_id: &str,
    operator: &str,
) -> Result<Upstream, UpstreamError> {
    let store = broker.store();
    let TargetKind::Ssh { host_key, tofu } = &target.kind else {
        return Err(UpstreamError::Misconfigured("not an SSH target".into()));
    };
    let pinned = match host_key {
        Some(line) => Some(
            parse_public_key_line(line, "pinned host key")
                .map_err(|e| UpstreamError::Misconfigured(e.to_string()))?,
        ),
        None if *tofu => None,
        None => {
            return Err(UpstreamError::Misconfigured(
                "no pinned host key and trust-on-first-use is off".into(),
            ));
        }
    };
    let credential = store
        .target_credential(&target.name)
        .await
        .map_err(UpstreamError::from_store)?;
    let identity = parse_private_key(
        &String::from_utf8_lossy(&credential),
        &format!("identity of target '{}'", target.name),
    )
    .map_err(|e| UpstreamError::Misconfigured(e.to_string()))?;
    drop(credential);

    let presented = Arc::new(Mutex::new(None));
    let handler = UpstreamHandler {
        pinned: pinned.clone(),
        trust_on_first_use: *tofu,
        presented: presented.clone(),
    };
    let addr = (target.host.as_str(), target.port);
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client::connect(broker.upstream_config.clone(), addr, handler),
    )
    .await;
    let presented_key = presented.lock().ok().and_then(|p| p.clone());
    let mut handle = match connected {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if let (Some(expected), Some(got)) = (&pinned, &presented_key)
                && expected.key_data() != got.key_data()
            {
                let err = UpstreamError::HostKeyMismatch {
                    expected: fingerprint(expected),
                    presented: fingerprint(got),
                };
                audit_mismatch(broker, target, session_id, operator, &err).await;
                return Err(err);
            }
            return Err(UpstreamError::connecting(&e));
        }
        Err(_) => {
            return Err(UpstreamError::Unreachable(format!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };

    if pinned.is_none()
        && let Some(key) = &presented_key
    {
        pin_first_key(broker, target, key, session_id, operator).await?;
    }

    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| UpstreamError::Unreachable(describe(&e)))?
        .flatten();
    let auth = handle
        .authenticate_publickey(
            target.username.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(identity), hash),
        )
        .await
        .map_err(|e| UpstreamError::Unreachable(describe(&e)))?;
    if !auth.success() {
        let _ = store
            .audit(&AuditEvent {
                kind: "target_auth_failed",
                operator: Some(operator),
                session_id: Some(session_id),
                source: None,
                detail: json!({"target": target.name, "username": target.username}),
            })
            .await;
        return Err(UpstreamError::CredentialRefused);
    }
    Ok(Upstream { handle })
}

async fn pin_first_key(
    broker: &Broker,
    target: &TargetRecord,
    key: &PublicKey,
    session_id: &str,
    operator: &str,
) -> Result<(), UpstreamError> {
    let store = broker.store();
    let line = public_key_line(key);
    let pinned_now = store
        .pin_host_key(&target.name, &line)
        .await
        .map_err(UpstreamError::from_store)?;
    if pinned_now {
        let _ = store
            .audit(&AuditEvent {
                kind: "host_key_pinned",
                operator: Some(operator),
                session_id: Some(session_id),
                source: None,
                detail: json!({
                    "target": target.name,
                    "fingerprint": fingerprint(key),
                    "how": "trust-on-first-use",
                }),
            })
            .await;
        return Ok(());
    }
    // Another session pinned a key first: this one must match it.
    let stored = store
        .target(&target.name)
        .await
        .ok()
        .flatten()
        .and_then(|t| match t.kind {
            TargetKind::Ssh { host_key, .. } => host_key,
            TargetKind::Postgres { .. } => None,
        })
        .and_then(|l| parse_public_key_line(&l, "pinned host key").ok());
    match stored {
        Some(s) if s.key_data() == key.key_data() => Ok(()),
        Some(s) => {
            let err = UpstreamError::HostKeyMismatch {
                expected: fingerprint(&s),
                presented: fingerprint(key),
            };
            audit_mismatch(broker, target, session_id, operator, &err).await;
            Err(err)
        }
        None => Err(UpstreamError::Misconfigured(
            "host key pinning failed".into(),
        )),
    }
}

async fn audit_mismatch(
    broker: &Broker,
    target: &TargetRecord,
    session_id: &str,
    operator: &str,
    err: &UpstreamError,
) {
    if let UpstreamError::HostKeyMismatch {
        expected,
        presented,
    } = err
    {
        tracing::warn!(target_name = %target.name, %expected, %presented, "target host key mismatch");
        let _ = broker
            .store()
            .audit(&AuditEvent {
                kind: "host_key_mismatch",
                operator: Some(operator),
                session_id: Some(session_id),
                source: None,
                detail: json!({
                    "target": target.name,
                    "expected": expected,
                    "presented": presented,
                }),
            })
            .await;
    }
}

fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        russh::Error::Disconnect => "the target closed the connection".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::UpstreamError;

    #[test]
    fn out_of_descriptors_is_not_blamed_on_the_target() {
        let io = |code| russh::Error::IO(std::io::Error::from_raw_os_error(code));
        let emfile = UpstreamError::connecting(&io(24));
        assert!(matches!(emfile, UpstreamError::OutOfFiles), "{emfile:?}");
        let m = emfile.operator_message("web1");
        assert!(
            m.contains("no open files left")
                && m.contains("nothing was run")
                && !m.contains("web1"),
            "{m}"
        );
        assert_ne!(
            emfile.end_reason(),
            gatehouse_core::EndReason::TargetUnreachable
        );
        // a refused connection is the target's
        let refused = UpstreamError::connecting(&io(111));
        assert!(
            matches!(refused, UpstreamError::Unreachable(_)),
            "{refused:?}"
        );
        assert_eq!(
            refused.end_reason(),
            gatehouse_core::EndReason::TargetUnreachable
        );
    }

    /// russh's client makes four tokio queues per connection to a target and its server
    /// two per operator connection, and tokio allocates 32 messages' room in each when it
    /// is made: with russh's release messages (client 552 bytes, server 136) that was
    /// 70 + 8.5 KiB per session. The patched copy in `vendor/russh` boxes the large fields
    /// (and now each message in those queues, so a first block is 32 pointers; a message
    /// sent is then one allocation of its size); this fails if the field patch is dropped
    /// or a new large field appears.
    #[test]
    fn russh_internal_messages_stay_small() {
        let client = std::mem::size_of::<russh::client::Msg>();
        let server = std::mem::size_of::<russh::server::Msg>();
        assert!(
            client <= 96,
            "russh::client::Msg is {client} bytes (see vendor/README.md)"
        );
        assert!(
            server <= 96,
            "russh::server::Msg is {server} bytes (see vendor/README.md)"
        );
    }
}
