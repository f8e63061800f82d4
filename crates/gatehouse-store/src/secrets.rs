//! Secrets at rest: target credentials are sealed with XChaCha20-Poly1305 under a node
//! master key kept in a file outside the database (mode 0600), so a copied database alone
//! reveals no credential. The row's identity is bound in as associated data, so a sealed
//! credential cannot be moved to another target.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use thiserror::Error;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read master key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create master key {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("master key {path} is malformed: expected 64 hex characters")]
    Malformed { path: String },
    #[error("master key {path} is readable by other users (mode {mode:o}); run chmod 600 on it")]
    TooOpen { path: String, mode: u32 },
    #[error("a stored secret could not be decrypted: wrong master key or tampered data")]
    Decrypt,
}

/// The key that seals secrets at rest.
#[derive(Clone)]
pub struct MasterKey(Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Loads the key from `path`, generating it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, SecretError> {
        let shown = path.display().to_string();
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path)
                    .map_err(|source| SecretError::Read {
                        path: shown.clone(),
                        source,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(SecretError::TooOpen {
                        path: shown,
                        mode: mode & 0o777,
                    });
                }
                Self::from_hex(text.trim()).ok_or(SecretError::Malformed { path: shown })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate();
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| SecretError::Create {
                        path: shown.clone(),
                        source,
                    })?;
                writeln!(f, "{}", key.to_hex()).map_err(|source| SecretError::Create {
                    path: shown,
                    source,
                })?;
                Ok(key)
            }
            Err(source) => Err(SecretError::Read {
                path: shown,
                source,
            }),
        }
    }

    pub fn generate() -> MasterKey {
        MasterKey(Key::generate())
    }

    fn from_hex(text: &str) -> Option<MasterKey> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(MasterKey(Key::from(bytes)))
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plain`; `context` (e.g. `target:web1`) must be given again to open it.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.0);
        let nonce = XNonce::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default(); // encryption only fails for messages over 256 GiB
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// HMAC-SHA256 of `data` under a key derived from the master key for `context`, hex.
    pub fn mac(&self, context: &str, data: &[u8]) -> String {
        use hmac::{KeyInit as _, Mac};
        let mut derive = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        derive.update(context.as_bytes());
        let subkey = derive.finalize().into_bytes();
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&subkey)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        let (&version, rest) = sealed.split_first().ok_or(SecretError::Decrypt)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(SecretError::Decrypt);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretError::Decrypt)?;
        XChaCha20Poly1305::new(&self.0)
            .decrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let k = MasterKey::generate();
        let sealed = k.seal("target:web1", b"-----BEGIN OPENSSH PRIVATE KEY-----");
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"));
        assert_eq!(
            k.open("target:web1", &sealed).unwrap(),
            b"-----BEGIN OPENSSH PRIVATE KEY-----"
        );
        assert!(matches!(
            k.open("target:web2", &sealed),
            Err(SecretError::Decrypt)
        ));
        assert!(matches!(
            MasterKey::generate().open("target:web1", &sealed),
            Err(SecretError::Decrypt)
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            k.open("target:web1", &flipped),
            Err(SecretError::Decrypt)
        ));
        assert!(matches!(k.open("x", &[]), Err(SecretError::Decrypt)));
    }

    #[test]
    fn macs_depend_on_key_context_and_data() {
        let k = MasterKey::generate();
        let m = k.mac("recording:a", b"3:abc");
        assert_eq!(m.len(), 64);
        assert_eq!(m, k.mac("recording:a", b"3:abc"));
        assert_ne!(m, k.mac("recording:b", b"3:abc"));
        assert_ne!(m, k.mac("recording:a", b"3:abd"));
        assert_ne!(m, MasterKey::generate().mac("recording:a", b"3:abc"));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = MasterKey::load_or_create(&path).unwrap();
        let sealed = k1.seal("c", b"x");
        assert_eq!(k2.open("c", &sealed).unwrap(), b"x");
    }

    #[test]
    fn key_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        fs::write(&path, "zz\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = MasterKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
