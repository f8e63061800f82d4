//! Operator authentication on the SSH front: public keys and passwords checked against the
//! store through the node's login gate (failed-login limits, bounded argon2), then the
//! shared admission (`gatehouse_session::admit`): access decision, session row, audits.

use std::net::SocketAddr;

use gatehouse_core::{EndReason, LoginName, LoginNameError, Protocol};
use gatehouse_session::{Access, Busy, FailedLogin, Login};
use russh::server::{Auth, PublicKeyOffer, VerifiedPublicKey};

use crate::broker::Broker;
use crate::connection::{Connection, Target};
use crate::keys::fingerprint;

/// What an operator is told when the store could not register the session in time.
pub(crate) const STORE_BUSY: &str = "Gatehouse is too busy to open the session now (its store did not \
                          answer in time); nothing was run. Try again in a moment.";

/// Splits the SSH user name into operator and (optional) target.
pub(crate) fn split_user(user: &str) -> Option<(String, Option<String>)> {
    match LoginName::parse(user) {
        Ok(l) => Some((l.operator, Some(l.target))),
        Err(LoginNameError::MissingTarget(_)) => gatehouse_core::validate_name("operator", user)
            .ok()
            .map(|()| (user.to_owned(), None)),
        Err(_) => None,
    }
}

/// Logs, audits and counts toward the source's lockout one failed login.
pub(crate) async fn record_auth_failure(
    broker: &Broker,
    peer: SocketAddr,
    user: &str,
    method: &str,
) {
    let operator = split_user(user).map(|(o, _)| o);
    let failure = FailedLogin {
        peer,
        user,
        operator: operator.as_deref(),
        method,
        protocol: "ssh",
        // a key nobody authorized is not a guess at a secret
        guessed_secret: method == "password",
    };
    broker
        .config
        .front
        .login
        .failed(broker.store(), failure)
        .await;
}

impl Connection {
    /// `Err(reject)` while the login gate refuses the source (or, with `account`, that
    /// account's password logins).
    fn check_rate_limit(&self, account: Option<&str>) -> Result<(), Auth> {
        (self.broker.config.front.login)
            .check(self.state.peer, account)
            .map_err(|_| Auth::reject())
    }

    async fn auth_failed(&self, user: &str, method: &str) -> Auth {
        self.state.update(|i| i.failures_recorded += 1);
        record_auth_failure(&self.broker, self.state.peer, user, method).await;
        Auth::reject()
    }

    /// A key offered before its signature: accepted only if the operator holds it (a key
    /// nobody holds is counted once per connection at its end, not per key).
    pub(crate) async fn offered_key(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Auth {
        if let Err(reject) = self.check_rate_limit(None) {
            return reject;
        }
        let Some((operator, _)) = split_user(user) else {
            return Auth::reject();
        };
        let known = self
            .broker
            .store()
            .operator_has_key(&operator, &fingerprint(offer.public_key))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "store unavailable during login");
                false
            });
        if !known {
            let user = user.to_owned();
            self.state.update(|i| {
                i.keys_rejected += 1;
                i.last_user = Some(user);
            });
        }
        if known { Auth::Accept } else { Auth::reject() }
    }

    pub(crate) async fn signed_key(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Auth {
        if let Err(reject) = self.check_rate_limit(None) {
            return reject;
        }
        let parsed = split_user(user);
        let known = match &parsed {
            Some((operator, _)) => self
                .broker
                .store()
                .operator_has_key(operator, &fingerprint(key.public_key))
                .await
                .unwrap_or(false),
            None => false,
        };
        match parsed {
            Some((operator, target)) if known => {
                self.auth_succeeded_as(operator, target, "publickey").await
            }
            _ => self.auth_failed(user, "publickey").await,
        }
    }

    pub(crate) async fn password(&mut self, user: &str, password: &str) -> Auth {
        let parsed = split_user(user);
        if let Err(reject) = self.check_rate_limit(parsed.as_ref().map(|(o, _)| o.as_str())) {
            return reject;
        }
        let stored = match &parsed {
            Some((operator, _)) => match self.broker.store().operator(operator).await {
                Ok(o) => o.and_then(|o| o.password_hash),
                Err(e) => {
                    tracing::error!(error = %e, "store unavailable during login");
                    return Auth::reject();
                }
            },
            None => None,
        };
        let ok = (self.broker.config.front.login)
            .verify_password(password.to_owned(), stored)
            .await;
        match parsed {
            Some((operator, target)) if ok => {
                self.auth_succeeded_as(operator, target, "password").await
            }
            _ => self.auth_failed(user, "password").await,
        }
    }

    /// Authentication succeeded: decide access and register the session.
    async fn auth_succeeded_as(
        &mut self,
        operator: String,
        target: Option<String>,
        method: &str,
    ) -> Auth {
        (self.broker.config.front.login).succeeded(self.state.peer.ip(), &operator);
        self.state.update(|i| i.authenticated = true);
        // a room under the node's session limit for as long as the connection lives: past
        // the limit, refused at once (nothing waits for hours)
        if self.room.is_none() {
            match self
                .broker
                .config
                .front
                .sessions
                .admit(&mut self.login_slot)
            {
                Ok(room) => {
                    self.room = Some(room);
                    self.state.update(|i| i.admitted = true);
                }
                Err(full) => {
                    return self.refused_busy(&operator, target.as_deref(), method, &full.into());
                }
            }
        }
        // in line with the node's other starting sessions: a storm is served, not refused
        let starting = match self.broker.config.front.starting.enter().await {
            Ok(slot) => slot,
            Err(busy) => {
                return self.refused_busy(&operator, target.as_deref(), method, &busy.into());
            }
        };
        let registered = self.register(&operator, target.as_deref(), method).await;
        drop(starting);
        match registered {
            Ok(()) => Auth::Accept,
            // Busy or down, not wrong: let the client in far enough to read why (its
            // channels are refused with the message; nothing reaches a target).
            Err(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "store unavailable during login; session refused");
                self.state
                    .set_end_reason(EndReason::Error(format!("store unavailable: {e}")));
                self.target = Target::Denied(STORE_BUSY.to_owned());
                Auth::Accept
            }
            Err(e) => {
                tracing::error!(error = %e, "store failed during login; refusing");
                self.state
                    .set_end_reason(EndReason::Error(format!("store failed: {e}")));
                Auth::reject()
            }
        }
    }

    /// This connection's login as the shared lifecycle sees it.
    fn login<'a>(
        &'a self,
        operator: &'a str,
        target: Option<&'a str>,
        method: &'a str,
    ) -> Login<'a> {
        Login {
            protocol: Protocol::Ssh,
            node: &self.broker.config.front.node,
            node_id: &self.broker.config.front.node_id,
            peer: self.state.peer,
            operator,
            target,
            method,
            start_detail: serde_json::Map::new(),
        }
    }

    /// The node was too busy for this login (see [`Busy`]): on record, and the client is let
    /// in far enough to read why, as for a busy store.
    fn refused_busy(
        &mut self,
        operator: &str,
        target: Option<&str>,
        method: &str,
        busy: &Busy,
    ) -> Auth {
        let login = self.login(operator, target, method);
        gatehouse_session::refused_busy(self.broker.store(), &login, busy);
        self.busy_refused(busy);
        Auth::Accept
    }

    /// The node was too busy to start the session: nothing reaches the target, and every
    /// channel is refused with the reason. Returns what the operator is told.
    pub(crate) fn busy_refused(&mut self, busy: &Busy) -> String {
        self.state
            .set_end_reason(EndReason::Error(busy.end_reason()));
        let message = busy.operator_message();
        self.target = Target::Denied(message.clone());
        message
    }

    /// The shared admission, then what only SSH needs: the subsystems the environment
    /// allows besides sftp.
    async fn register(
        &mut self,
        operator: &str,
        target: Option<&str>,
        method: &str,
    ) -> Result<(), gatehouse_store::StoreError> {
        let store = self.broker.store().clone();
        let admission =
            gatehouse_session::admit(&store, &self.login(operator, target, method)).await?;
        if let Some(session) = &admission.session {
            let span = &self.state.span;
            span.record("session_id", session.id.as_str());
            span.record("operator", operator);
            span.record("target", session.target.as_str());
            if let Some(env) = &session.environment {
                span.record("environment", env.as_str());
            }
            let session = session.clone();
            self.state.update(|i| i.session = Some(session));
        }
        self.session = admission.session;
        if let Access::Allowed(a) = &admission.access {
            self.subsystems = store.allowed_subsystems(&a.target.environment).await?;
        }
        self.target = match admission.access {
            Access::Allowed(a) => {
                tracing::info!("session started");
                Target::Allowed(a)
            }
            Access::Denied { message, .. } => {
                self.state.set_end_reason(EndReason::AccessDenied);
                Target::Denied(message)
            }
        };
        Ok(())
    }
}
