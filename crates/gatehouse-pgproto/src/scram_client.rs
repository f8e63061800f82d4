//! SCRAM-SHA-256 client side (RFC 5802, RFC 7677), for Gatehouse's own logins to targets.
//!
//! Hand-written rather than `postgres-protocol`'s `ScramSha256` for one reason: the salted
//! password (PBKDF2 with the server's iteration count, 4096 by default) is most of the CPU a
//! login to a target costs, and `ScramSha256` recomputes it every time. [`SaltedPasswords`]
//! keeps it per (password, salt, iteration count) in memory, so every login to a target
//! after the first costs a few HMACs, as PgBouncer's do. The cache holds what the broker
//! holds already (it can derive the same value from the credential it decrypts); it is
//! keyed by a digest of the password, so a changed credential never meets a stale entry,
//! and it is bounded. Channel binding is not used (Gatehouse sends `n,,`, like libpq
//! without `channel_binding=require`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::scram::{Keys, ScramError, hmac, normalize, salted_password};

/// A target asking for more iterations than this is refused: it would make each login
/// (the first, and each after a cache eviction) burn seconds of CPU on the broker.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Salts longer than this are refused (PostgreSQL's are 16 bytes).
const MAX_SALT: usize = 1024;
/// Entries kept before the cache starts over.
const CACHE_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    password: [u8; 32],
    salt: Vec<u8>,
    iterations: u32,
}

/// Salted passwords already derived (see the module docs). Shared by every login of a node.
#[derive(Debug, Default)]
pub struct SaltedPasswords {
    entries: Mutex<HashMap<CacheKey, [u8; 32]>>,
}

impl SaltedPasswords {
    fn get(&self, normalized: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = CacheKey {
            password: Sha256::digest(normalized).into(),
            salt: salt.to_vec(),
            iterations,
        };
        if let Some(salted) = self.entries.lock().ok().and_then(|e| e.get(&key).copied()) {
            return salted;
        }
        let salted = salted_password(normalized, salt, iterations);
        if let Ok(mut e) = self.entries.lock() {
            if e.len() >= CACHE_CAPACITY {
                e.clear();
            }
            e.insert(key, salted);
        }
        salted
    }

    /// Salted passwords kept.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A server-first message, checked: the nonce extends ours, the salt is base64 of at most
/// 1 KiB, the iteration count is within [`MAX_ITERATIONS`].
#[derive(Debug)]
pub struct ServerFirst<'a> {
    pub text: &'a str,
    pub nonce: &'a str,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// Reads a server-first message sent in answer to `client_nonce` (no I/O, no key
/// derivation: what the fuzz target exercises).
pub fn parse_server_first<'a>(
    data: &'a [u8],
    client_nonce: &str,
) -> Result<ServerFirst<'a>, ScramError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| ScramError::Malformed("server-first is not UTF-8"))?;
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for attr in text.split(',') {
        match attr.split_at_checked(2) {
            Some(("r=", v)) => nonce = Some(v),
            Some(("s=", v)) => salt = Some(v),
            Some(("i=", v)) => iterations = Some(v),
            Some(("m=", _)) => return Err(ScramError::Malformed("mandatory extension")),
            _ => {}
        }
    }
    let nonce = nonce
        .filter(|n| n.len() > client_nonce.len() && n.starts_with(client_nonce))
        .ok_or(ScramError::Malformed("server nonce"))?;
    let salt = salt
        .and_then(|s| B64.decode(s).ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_SALT)
        .ok_or(ScramError::Malformed("salt"))?;
    let iterations = iterations
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|i| (1..=MAX_ITERATIONS).contains(i))
        .ok_or(ScramError::Malformed("iteration count"))?;
    Ok(ServerFirst {
        text,
        nonce,
        salt,
        iterations,
    })
}

/// One login's exchange, client side: [`ClientExchange::start`] gives the client-first
/// message, [`ClientExchange::server_first`] the client-final one, and
/// [`ClientExchange::server_final`] checks the server's signature (a server that does not
/// know the password cannot pass for the target).
pub struct ClientExchange {
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    /// The ServerKey-signed AuthMessage expected in server-final, once computed.
    expected: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Starts an exchange; returns it and the client-first message.
    pub fn start(password: &[u8]) -> (ClientExchange, String) {
        let mut raw = [0u8; 18];
        rand::fill(&mut raw);
        ClientExchange::with_nonce(password, &B64.encode(raw))
    }

    fn with_nonce(password: &[u8], nonce: &str) -> (ClientExchange, String) {
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        (
            ClientExchange {
                password: normalize(password),
                client_first_bare,
                nonce: nonce.to_owned(),
                expected: None,
            },
            first,
        )
    }

    /// Reads server-first (`r=…,s=…,i=…`) and returns client-final.
    pub fn server_first(
        &mut self,
        data: &[u8],
        cache: &SaltedPasswords,
    ) -> Result<String, ScramError> {
        let ServerFirst {
            text,
            nonce,
            salt,
            iterations,
        } = parse_server_first(data, &self.nonce)?;
        let salted = cache.get(&self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let keys = Keys::from_salted(&salted);
        let signature = hmac(&keys.stored, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected = Some(hmac(&keys.server, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final (`v=<signature>`).
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .expected
            .ok_or(ScramError::Malformed("server-final before server-first"))?;
        let text = std::str::from_utf8(data)
            .map_err(|_| ScramError::Malformed("server-final is not UTF-8"))?;
        if text.starts_with("e=") {
            return Err(ScramError::Malformed("the server refused the proof"));
        }
        let signature = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server signature"))?;
        if bool::from(signature.as_slice().ct_eq(&expected)) {
            Ok(())
        } else {
            Err(ScramError::Malformed("wrong server signature"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{ServerExchange, Verifier};

    /// A full exchange against Gatehouse's own server side; the server's verdict.
    fn login(password: &[u8], verifier: &Verifier, cache: &SaltedPasswords) -> bool {
        let (mut client, first) = ClientExchange::start(password);
        let (server, server_first) = ServerExchange::start(verifier.clone(), first.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let client_final = client
            .server_first(server_first.as_bytes(), cache)
            .unwrap_or_else(|e| panic!("{e}"));
        match server.finish(client_final.as_bytes()) {
            Ok(Some(server_final)) => {
                client
                    .server_final(server_final.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"));
                true
            }
            Ok(None) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn logs_in_and_derives_the_salted_password_once() {
        let cache = SaltedPasswords::default();
        let verifier = Verifier::derive("s3cret", b"0123456789abcdef", 4096);
        assert!(login(b"s3cret", &verifier, &cache));
        assert_eq!(cache.len(), 1);
        // the next logins use the kept value (and still pass the server's check)
        assert!(login(b"s3cret", &verifier, &cache));
        assert_eq!(cache.len(), 1);
        // another password with the same salt is its own entry, never the kept one
        assert!(!login(b"other", &verifier, &cache));
        assert_eq!(cache.len(), 2);
        // a new salt (the target's password was reset) derives again
        let reset = Verifier::derive("s3cret", b"fedcba9876543210", 4096);
        assert!(login(b"s3cret", &reset, &cache));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn rfc7677_example() {
        // RFC 7677 section 3: user "user", password "pencil"
        let (mut c, first) = ClientExchange::with_nonce(b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        // (the RFC's client-first has n=user; PostgreSQL ignores the name and libpq sends
        // it empty, which changes the AuthMessage: check against the server side instead)
        let verifier = Verifier::derive(
            "pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let (server, sf) = ServerExchange::start(verifier, first.as_bytes()).unwrap();
        let cf = c
            .server_first(sf.as_bytes(), &SaltedPasswords::default())
            .unwrap();
        let fin = server.finish(cf.as_bytes()).unwrap().unwrap();
        c.server_final(fin.as_bytes()).unwrap();
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_refused() {
        let cache = SaltedPasswords::default();
        let (mut c, _) = ClientExchange::with_nonce(b"pw", "abc");
        c.server_first(b"r=abcdef,s=c2FsdA==,i=4096", &cache)
            .unwrap();
        assert!(
            c.server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .is_err()
        );
        assert!(c.server_final(b"e=invalid-proof").is_err());
        assert!(c.server_final(b"v=not base64!").is_err());
    }

    #[test]
    fn hostile_server_first_messages_are_errors_not_work() {
        let cache = SaltedPasswords::default();
        for bad in [
            &b"r=xyz,s=c2FsdA==,i=4096"[..],     // nonce not extending ours
            b"r=abc,s=c2FsdA==,i=4096",          // nonce not extended
            b"r=abcdef,s=,i=4096",               // empty salt
            b"r=abcdef,s=!!!,i=4096",            // salt not base64
            b"r=abcdef,s=c2FsdA==,i=0",          // no iterations
            b"r=abcdef,s=c2FsdA==,i=4294967295", // seconds of CPU per login
            b"r=abcdef,s=c2FsdA==,i=-1",
            b"r=abcdef,s=c2FsdA==",              // no count
            b"m=ext,r=abcdef,s=c2FsdA==,i=4096", // mandatory extension
            b"\xff\xfe",
        ] {
            let (mut c, _) = ClientExchange::with_nonce(b"pw", "abc");
            assert!(
                c.server_first(bad, &cache).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(cache.is_empty(), "nothing derived for a refused message");
    }
}
