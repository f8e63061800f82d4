//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, as PostgreSQL runs it: the verifier
//! Gatehouse stores for an operator (never the password) and the three-message exchange.
//!
//! Hand-written because the only server implementation in the PostgreSQL family (`pgwire`)
//! is tied to its own connection framework; the primitives (PBKDF2, HMAC, SHA-256, SASLprep)
//! come from RustCrypto and `stringprep`. Channel binding (`-PLUS`) is not offered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count.
pub const ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("malformed SCRAM verifier")]
    BadVerifier,
}

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail here
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

/// What is stored for an operator: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
/// (PostgreSQL's `pg_authid.rolpassword` format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// The password as SCRAM hashes it: SASLprep'd as libpq applies it when it is UTF-8 that
/// SASLprep accepts, else the raw bytes (as PostgreSQL and libpq do). Both sides.
pub(crate) fn normalize(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(p)) => p.as_bytes().to_vec(),
        _ => password.to_vec(),
    }
}

/// SaltedPassword: PBKDF2-HMAC-SHA-256 of the normalized password (the costly step).
pub(crate) fn salted_password(normalized: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(normalized, salt, iterations, &mut salted);
    salted
}

/// The keys RFC 5802 derives from a salted password.
pub(crate) struct Keys {
    pub(crate) client: [u8; 32],
    pub(crate) stored: [u8; 32],
    pub(crate) server: [u8; 32],
}

impl Keys {
    pub(crate) fn from_salted(salted: &[u8; 32]) -> Keys {
        let client = hmac(salted, b"Client Key");
        Keys {
            client,
            stored: Sha256::digest(client).into(),
            server: hmac(salted, b"Server Key"),
        }
    }
}

impl Verifier {
    pub fn generate(password: &str) -> Verifier {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        Verifier::derive(password, &salt, ITERATIONS)
    }

    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(&normalize(password.as_bytes()), salt, iterations);
        let keys = Keys::from_salted(&salted);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys.stored,
            server_key: keys.server,
        }
    }

    /// A verifier no password matches, with a salt derived from `user` and `secret`, so
    /// that an unknown operator goes through the same exchange as a known one.
    pub fn mock(user: &str, secret: &[u8]) -> Verifier {
        let salt = hmac(secret, user.as_bytes());
        let mut keys = [0u8; 64];
        rand::fill(&mut keys);
        let mut v = Verifier {
            iterations: ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        v.stored_key.copy_from_slice(&keys[..32]);
        v.server_key.copy_from_slice(&keys[32..]);
        v
    }

    pub fn to_stored(&self) -> String {
        format!(
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    pub fn parse(s: &str) -> Result<Verifier, ScramError> {
        let bad = || ScramError::BadVerifier;
        let rest = s
            .strip_prefix(MECHANISM)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |k: &str| -> Result<[u8; 32], ScramError> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        Ok(Verifier {
            iterations: iter.parse().ok().filter(|i| *i > 0).ok_or_else(bad)?,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// The body of a SASLInitialResponse: the mechanism chosen and its data.
pub fn parse_initial_response(body: &[u8]) -> Result<(String, &[u8]), ScramError> {
    let bad = ScramError::Malformed("SASLInitialResponse");
    let end = body.iter().position(|b| *b == 0).ok_or(bad.clone())?;
    let mechanism = String::from_utf8_lossy(&body[..end]).into_owned();
    let rest = &body[end + 1..];
    if rest.len() < 4 {
        return Err(bad);
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(bad);
    }
    Ok((mechanism, data))
}

/// One exchange in progress, after the server-first message was sent.
#[derive(Debug)]
pub struct ServerExchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Reads the client-first message and returns the exchange and the server-first message.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first is not UTF-8"))?;
        let (cbind, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("client-first"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 header")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("client-first"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("authzid"));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .ok_or(ScramError::Malformed("client nonce"))?;
        let mut raw = [0u8; 18];
        rand::fill(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let gs2_header = format!("{cbind},{authzid},");
        Ok((
            ServerExchange {
                verifier,
                gs2_header,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final message. `Ok(Some(server_final))` when the proof is right,
    /// `Ok(None)` when it is wrong (a wrong password), `Err` for a malformed message.
    pub fn finish(self, client_final: &[u8]) -> Result<Option<String>, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        if channel != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err(ScramError::Malformed("channel binding data"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce"));
        }
        let proof = B64
            .decode(proof)
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or(ScramError::Malformed("client proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !bool::from(stored.ct_eq(&self.verifier.stored_key)) {
            return Ok(None);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(Some(format!("v={}", B64.encode(server_signature))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side of RFC 7677's example, computed independently.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iters: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iters, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_verifier() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::derive("pencil", &salt, 4096);
        let stored = v.to_stored();
        assert_eq!(Verifier::parse(&stored), Ok(v.clone()));
        // the RFC's server signature for its exchange proves the keys are right
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let ex = ServerExchange {
            verifier: v,
            gs2_header: "n,,".into(),
            client_first_bare: bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            ex.finish(fin.as_bytes()),
            Ok(Some(
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned()
            ))
        );
    }

    #[test]
    fn exchange_accepts_the_password_and_refuses_others() {
        let v = Verifier::generate("s3cret pass");
        let bare = "n=,r=abcdefghijkl";
        for (password, ok) in [("s3cret pass", true), ("wrong", false)] {
            let (ex, server_first) =
                ServerExchange::start(v.clone(), format!("n,,{bare}").as_bytes()).unwrap();
            let fin = client_final(password, bare, &server_first);
            assert_eq!(ex.finish(fin.as_bytes()).unwrap().is_some(), ok);
        }
        let mock = Verifier::mock("nobody", b"node secret");
        assert_eq!(mock.salt, Verifier::mock("nobody", b"node secret").salt);
        let (ex, sf) = ServerExchange::start(mock, format!("n,,{bare}").as_bytes()).unwrap();
        assert_eq!(ex.finish(client_final("", bare, &sf).as_bytes()), Ok(None));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let v = Verifier::generate("x");
        assert!(ServerExchange::start(v.clone(), b"p=tls-server-end-point,,n=,r=a").is_err());
        assert!(ServerExchange::start(v.clone(), b"n,,n=").is_err());
        assert!(ServerExchange::start(v.clone(), b"\xff").is_err());
        let (ex, _) = ServerExchange::start(v, b"n,,n=,r=abc").unwrap();
        assert!(ex.finish(b"c=biws,r=wrongnonce,p=AAAA").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$x:y$z").is_err());
        assert!(parse_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09abc").is_err());
        assert_eq!(
            parse_initial_response(b"SCRAM-SHA-256\0\0\0\0\x03abc"),
            Ok(("SCRAM-SHA-256".into(), &b"abc"[..]))
        );
    }
}
