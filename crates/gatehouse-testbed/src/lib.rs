//! Real servers for the demo, the tests and the benchmarks: an OpenSSH `sshd`, a PostgreSQL
//! cluster and a PgBouncer in front of it, each started on a free loopback port in its own
//! temp dir and stopped when dropped.
//!
//! A missing program is an error naming the Debian package that provides it; nothing is
//! skipped silently.

pub mod bench_summary;
mod pgbouncer;
mod postgres;
mod process;
mod sshd;

pub use pgbouncer::Pgbouncer;
pub use postgres::{PgOptions, Postgres};
pub use process::{TestbedError, current_user_name, find_program, free_port, require_program};
pub use sshd::{Sshd, UNPRIVILEGED_USER, require_unprivileged_user};
