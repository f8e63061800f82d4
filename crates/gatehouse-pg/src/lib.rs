//! Gatehouse's PostgreSQL broker. Operators connect with a stock `psql` or driver; the front
//! speaks the v3 wire protocol (TLS via rustls, SCRAM-SHA-256 against Gatehouse's own
//! identities), picks the target from the database name, and the back logs in to the target
//! with a credential only Gatehouse holds. After that the relay forwards messages
//! byte-for-byte in both directions, looking only at what enforcement (activity) and the
//! statement log need, and injecting Gatehouse's own notices and errors only between
//! complete messages.
//!
//! It never shows an operator the target's credential, never relays before both logins
//! succeeded, and never opens a session it cannot log.

mod broker;
mod cancel;
mod client;
mod conn;
mod enforce;
mod io;
mod pool;
mod relay;
mod serve;
mod session_run;
mod startup;
mod statement_log;
pub mod tls;
mod upstream;

pub use broker::{PgBroker, PgConfig, PgError};
pub use pool::{DEFAULT_IDLE as DEFAULT_TARGET_POOL_IDLE, PoolConfig};
pub use serve::run;
