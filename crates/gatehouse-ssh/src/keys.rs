//! SSH key handling shared by the broker and the admin CLI: the broker's host key, public
//! key lines and fingerprints, target identities.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a valid OpenSSH key: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what} is protected by a passphrase; Gatehouse needs an unencrypted key")]
    Encrypted { what: String },
}

/// Loads the broker's host key, generating an ed25519 key (mode 0600) when the file does
/// not exist yet. The `.pub` companion is written too, for pinning in `known_hosts`.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let shown = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => parse_private_key(&text, &shown),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(|e| KeyError::Invalid {
                    what: "generated host key".into(),
                    detail: e.to_string(),
                })?;
            key.set_comment("gatehouse host key");
            write_private_key(path, &key)?;
            let pub_path = path.with_file_name(format!(
                "{}.pub",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("host_key")
            ));
            fs::write(&pub_path, public_key_line(key.public_key()) + "\n").map_err(|source| {
                KeyError::Write {
                    path: pub_path.display().to_string(),
                    source,
                }
            })?;
            Ok(key)
        }
        Err(source) => Err(KeyError::Read {
            path: shown,
            source,
        }),
    }
}

/// Writes a private key in OpenSSH format, readable by its owner only.
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Invalid {
            what: shown.clone(),
            detail: e.to_string(),
        })?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyError::Write {
            path: shown.clone(),
            source,
        })?;
    f.write_all(text.as_bytes())
        .map_err(|source| KeyError::Write {
            path: shown,
            source,
        })
}

/// Parses an unencrypted OpenSSH private key; `what` names it in errors.
pub fn parse_private_key(text: &str, what: &str) -> Result<PrivateKey, KeyError> {
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Invalid {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(KeyError::Encrypted {
            what: what.to_owned(),
        });
    }
    Ok(key)
}

/// Parses a public key line: `ssh-ed25519 AAAA… [comment]`, or a `known_hosts` line whose
/// first field is a host pattern.
pub fn parse_public_key_line(text: &str, what: &str) -> Result<PublicKey, KeyError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    if let Ok(k) = PublicKey::from_openssh(line) {
        return Ok(k);
    }
    // known_hosts form: "host[,host…] algo base64 [comment]"
    let rest = line.split_once(char::is_whitespace).map(|(_, r)| r.trim());
    match rest.map(PublicKey::from_openssh) {
        Some(Ok(k)) => Ok(k),
        _ => Err(KeyError::Invalid {
            what: what.to_owned(),
            detail: "expected a line like 'ssh-ed25519 AAAA…'".into(),
        }),
    }
}

/// `algorithm base64`, without a comment: the canonical form Gatehouse stores and compares.
pub fn public_key_line(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `SHA256:…`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_ed25519");
        let k1 = load_or_generate_host_key(&path).unwrap();
        let k2 = load_or_generate_host_key(&path).unwrap();
        assert_eq!(k1.public_key(), k2.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let pub_line = fs::read_to_string(dir.path().join("host_ed25519.pub")).unwrap();
        assert_eq!(pub_line.trim(), public_key_line(k1.public_key()));
    }

    #[test]
    fn public_key_lines_parse_in_both_forms() {
        let key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        let line = public_key_line(key.public_key());
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(!line.ends_with(' '));
        let with_comment = format!("{line} someone@host");
        let known_hosts = format!("[127.0.0.1]:2222 {line}");
        for l in [&line, &with_comment, &known_hosts] {
            let parsed = parse_public_key_line(l, "key").unwrap();
            assert_eq!(fingerprint(&parsed), fingerprint(key.public_key()));
        }
        let err = parse_public_key_line("ssh-ed25519 notbase64", "--host-key").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--host-key is not a valid OpenSSH key"),
            "{err}"
        );
    }

    #[test]
    fn garbage_private_key_is_a_clear_error() {
        let err = parse_private_key("hello", "id_ed25519").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("id_ed25519 is not a valid OpenSSH key")
        );
    }
}
