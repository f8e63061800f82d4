//! Operator passwords: argon2id PHC strings. Verification is constant-time (argon2's own
//! comparison); a missing user is verified against a dummy hash so that timing does not tell
//! whether a name exists. Alongside, a SCRAM-SHA-256 verifier for the PostgreSQL front
//! (which must run SCRAM, so cannot use the argon2 hash); neither gives back the password.
//! Here rather than in the store, so that the store needs neither argon2 nor the wire
//! protocol: it keeps what it is given.

pub use gatehouse_store::passwords::StoredPassword;

/// Hashes a password both ways for storage.
pub fn store_password(password: &str) -> Result<StoredPassword, String> {
    Ok(StoredPassword {
        hash: hash_password(password)?,
        scram: gatehouse_pgproto::scram::Verifier::generate(password).to_stored(),
    })
}

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes a password for storage.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// `true` when `password` matches the stored PHC string. With no stored hash, burns the same
/// time as a real check and returns `false`.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    match stored {
        Some(hash) => Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok(),
        None => {
            let _ = Argon2::default().verify_password(password.as_bytes(), dummy_hash());
            false
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("gatehouse-dummy-password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong horse", Some(&h)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }

    #[test]
    fn both_forms_are_stored_and_neither_holds_the_password() {
        let p = store_password("correct horse").unwrap();
        assert!(p.scram.starts_with("SCRAM-SHA-256$4096:"), "{}", p.scram);
        assert!(verify_password("correct horse", Some(&p.hash)));
        assert!(!p.scram.contains("correct horse") && !p.hash.contains("correct horse"));
    }
}
