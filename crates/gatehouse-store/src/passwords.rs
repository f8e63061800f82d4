//! What is stored for an operator's password: an argon2id PHC string and a SCRAM-SHA-256
//! verifier (the PostgreSQL front must run SCRAM, so cannot use the argon2 hash); neither
//! gives back the password. Hashing and checking are `gatehouse_session::passwords`' job:
//! the store only keeps what it is given.

/// What is stored for a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPassword {
    /// argon2id PHC string (SSH password auth, lock-prompt reauthentication).
    pub hash: String,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format (PostgreSQL front).
    pub scram: String,
}
