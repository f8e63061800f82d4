//! Gatehouse's store: operators and their credentials, environments, targets (with their
//! encrypted credentials and pinned host keys), grants, the session registry, the audit
//! log, policy history and node heartbeats.
//!
//! One set of queries runs on embedded SQLite (the zero-setup default) and on PostgreSQL (for
//! several broker nodes) through sqlx's `Any` driver; the schema differs only in column types
//! and lives in `migrations/sqlite` and `migrations/postgres`, applied on open. Every column
//! is a plain integer, text or bytes so that both backends decode the same way.

mod audit;
mod audit_writer;
mod detective;
mod directory;
mod nodes;
mod notify;
pub mod passwords;
mod policies;
mod recording_writer;
mod recordings;
pub mod secrets;
mod sessions;
mod sqlite_file;
mod targets;
mod totp;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use thiserror::Error;

pub use audit::{AUDIT_ATTEMPTS, AuditEvent, AuditFilter, AuditRecord};
pub use audit_writer::AUDIT_QUEUE;
pub use detective::{CheckedSession, DetectiveLock};
pub use directory::{GrantRecord, OperatorRecord};
pub use nodes::{Closer, LostSession, NodeInfo, NodeRecord};
pub use notify::{CHANNEL as CHANGE_CHANNEL, ChangeFeed};
pub use policies::{Actor, KillRequest, StoredPolicy};
pub use recordings::{RecordingCheckpoint, RecordingRecord, RecordingState};
pub use secrets::{MasterKey, SecretError};
pub use sessions::{GuardState, NewSession, SessionRecord};
pub use targets::{NewTarget, TargetRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store url '{0}' is not supported: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("cannot open store at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot make store file {path} private: {source}")]
    FileMode {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    /// A bug, not a state of the store: one task asked for the node's SQLite write turn
    /// while it held it (see [`WriteTurns::take`]).
    #[error(
        "a store write asked for the node's write turn while its own task held it: \
         nested or joined SQLite writes of one task must run one after the other"
    )]
    TurnTakenTwice,
}

impl StoreError {
    /// The store did not answer in time or is unreachable (as opposed to a missing or
    /// invalid record): callers tell the user the store is busy or down, never that what
    /// they asked for is misconfigured.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Query(e) => {
                matches!(
                    e,
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::WorkerCrashed
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    // PostgreSQL query_canceled (statement_timeout), SQLite BUSY/LOCKED
                    .is_some_and(|c| matches!(c.as_ref(), "57014" | "5" | "6" | "517"))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Page cache per pooled SQLite connection, in KiB (`PRAGMA cache_size`).
pub const SQLITE_CACHE_KIB: u32 = 512;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Pool size when `[store] max_connections` is not set: SQLite serialises writes
    /// anyway (a few connections let reads go on beside a write); PostgreSQL serves many.
    pub fn default_max_connections(self) -> u32 {
        match self {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        }
    }

    pub fn of_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// Removes a password from a URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

/// How long the store may take. A hung or saturated database must never hang the broker:
/// every statement is bounded by the database itself (PostgreSQL `statement_timeout`,
/// SQLite `busy_timeout` for lock waits), acquiring a connection is bounded by the pool, and
/// an audit write, retries included, is bounded as a whole by a tokio deadline (which also
/// covers a PostgreSQL server that stopped answering on the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest one statement may run (or wait for a lock).
    pub statement: Duration,
    /// Longest an audit write may take, all attempts included.
    pub audit: Duration,
    /// Longest a caller waits for a pooled connection. A burst of logins queues here for
    /// its turn rather than failing (a store that stays saturated this long is reported
    /// as unavailable, see [`StoreError::is_unavailable`]).
    pub acquire: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            statement: Duration::from_secs(5),
            audit: Duration::from_secs(10),
            acquire: Duration::from_secs(30),
        }
    }
}

/// How the store's connection pool is set up (`[store]` in gatehouse.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOptions {
    pub timeouts: Timeouts,
    /// Pooled connections; `None`: [`Backend::default_max_connections`].
    pub max_connections: Option<u32>,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where the store is (the change listener opens its own connection).
    url: Arc<str>,
    master_key: MasterKey,
    timeouts: Timeouts,
    /// Audit events that could not be written (see [`Store::audit`]).
    audit_failures: Arc<AtomicU64>,
    /// [`Store::audit_later`]'s queue to the node's audit writer.
    audit_queue: Arc<audit_writer::AuditQueue>,
    /// Live recordings' registrations and checkpoints, for the node's recording writer.
    recording_queue: Arc<recording_writer::RecordingQueue>,
    /// SQLite: the node's writes take turns here (see [`Store::write_turn`]).
    write_turns: WriteTurns,
}

/// A turn to write (SQLite), held until the write is committed (dropped); holds nothing
/// on PostgreSQL.
pub(crate) struct WriteTurn<'a> {
    held: Option<(tokio::sync::SemaphorePermit<'a>, &'a TurnHolder)>,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        // the holder is forgotten before the permit goes back (fields drop after this)
        if let Some((_, holder)) = &self.held {
            *holder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }
}

/// The task that holds the turn, when a task does.
type TurnHolder = std::sync::Mutex<Option<tokio::task::Id>>;

/// Where the node's writers take turns (see [`Store::write_turn`]); shared by the store's
/// handles and its audit writer.
#[derive(Clone)]
pub(crate) struct WriteTurns {
    /// One permit on SQLite; `None` on PostgreSQL (no turns).
    turns: Option<Arc<tokio::sync::Semaphore>>,
    holder: Arc<TurnHolder>,
    /// Longest a writer waits for its turn (the pool's acquire timeout).
    acquire: Duration,
}

impl WriteTurns {
    fn new(sqlite: bool, acquire: Duration) -> WriteTurns {
        WriteTurns {
            turns: sqlite.then(|| Arc::new(tokio::sync::Semaphore::new(1))),
            holder: Arc::default(),
            acquire,
        }
    }

    /// Waits for the turn. A task that holds it already is refused at once: its second
    /// write (nested in the first, or beside it in a `join!`) would otherwise wait for its
    /// own first one until the acquire timeout, and a nested one would never get it.
    pub(crate) async fn take(&self) -> Result<WriteTurn<'_>> {
        let Some(turns) = &self.turns else {
            return Ok(WriteTurn { held: None });
        };
        let me = tokio::task::try_id();
        let holder = || {
            self.holder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if me.is_some() && *holder() == me {
            return Err(StoreError::TurnTakenTwice);
        }
        match tokio::time::timeout(self.acquire, turns.acquire()).await {
            Ok(Ok(permit)) => {
                *holder() = me;
                Ok(WriteTurn {
                    held: Some((permit, &self.holder)),
                })
            }
            Ok(Err(_closed)) => Err(StoreError::Query(sqlx::Error::PoolClosed)),
            Err(_elapsed) => Err(StoreError::Query(sqlx::Error::PoolTimedOut)),
        }
    }
}

/// Pool options without sqlx's maintenance task (the reaper of idle and old connections).
/// In sqlx 0.9.0 that task can spin a runtime thread at 100 % for good: `release` makes a
/// connection acquirable before it counts it idle, a concurrent acquire then takes the
/// count below zero (it wraps to `usize::MAX`), and the reaper's `for _ in 0..num_idle()`
/// loop, which never awaits once the queue is empty, runs ~10^19 times. Seen here: a
/// `gatehouse sessions list` hung on exit at 100 % CPU (its migration pool closing).
/// Upstream: launchbadge/sqlx#3645, fixed by #4289 (not in a release we use). The task
/// runs only when an idle timeout or a maximum lifetime is set, so neither is: the pool
/// holds at most `max_connections` connections for the process's life, and a broken one
/// is found by sqlx's test on acquire.
fn no_reaper(options: AnyPoolOptions) -> AnyPoolOptions {
    options.idle_timeout(None).max_lifetime(None)
}

impl Store {
    /// Connects (creating an SQLite file when missing) and applies pending migrations, with
    /// the default [`Timeouts`].
    pub async fn open(url: &str, master_key: MasterKey) -> Result<Store> {
        Store::open_with(url, master_key, Timeouts::default()).await
    }

    pub async fn open_with(url: &str, master_key: MasterKey, timeouts: Timeouts) -> Result<Store> {
        let options = StoreOptions {
            timeouts,
            max_connections: None,
        };
        Store::open_with_options(url, master_key, options).await
    }

    pub async fn open_with_options(
        url: &str,
        master_key: MasterKey,
        options: StoreOptions,
    ) -> Result<Store> {
        let timeouts = options.timeouts;
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let connect_url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let db_file = sqlite_file::path_of_url(url);
        if let Some(db) = &db_file {
            sqlite_file::create_private(db)?;
            sqlite_file::narrow(db)?;
        }
        let open_err = |source| StoreError::Open {
            url: redact_url(url),
            source,
        };
        // Migrations run on their own connection, without the statement timeout: a
        // migration over a large table may rightly take longer than a query.
        let migrator = no_reaper(AnyPoolOptions::new())
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&connect_url)
            .await
            .map_err(open_err)?;
        match backend {
            Backend::Sqlite => {
                // WAL lets the admin CLI write while a broker reads.
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&migrator)
                    .await?;
                if let Some(db) = &db_file {
                    // -wal and -shm now exist; they take the database file's mode
                    sqlite_file::narrow(db)?;
                }
                sqlx::migrate!("../../migrations/sqlite")
                    .run(&migrator)
                    .await?;
            }
            Backend::Postgres => {
                sqlx::migrate!("../../migrations/postgres")
                    .run(&migrator)
                    .await?;
            }
        }
        migrator.close().await;
        let millis = timeouts.statement.as_millis().max(1);
        let pool = no_reaper(AnyPoolOptions::new())
            .max_connections(
                options
                    .max_connections
                    .unwrap_or(backend.default_max_connections())
                    .max(1),
            )
            .acquire_timeout(timeouts.acquire)
            // sqlx pings a pooled connection before each use by default. SQLite's
            // "connection" is a worker thread of this process on a local file: the ping is
            // one more hand-off to that thread and back per statement (half of the store's
            // thread switches on a login, ~17 statements each), and finds nothing a statement
            // would not find itself. PostgreSQL's is a socket that a restart or a network
            // break can leave dead while it sits idle: pinged, a dead one is replaced before
            // a login's statement meets it.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    let settings: &[String] = match backend {
                        // WAL with synchronous=NORMAL: a commit is durable against a crash
                        // of Gatehouse (not of the machine's power) without an fsync per
                        // commit — the fsync per login is what made a login storm queue.
                        // The page cache: SQLite's default is 2 MiB per connection,
                        // which a store this size fills as sessions are added (its hot
                        // pages, the small tables and the B-trees' right edges, take a few
                        // hundred KiB); what it misses, the OS page cache serves. 512 KiB
                        // each bounds the pool at 4 MiB by default (memory per live
                        // session: the full 2 MiB caches were ~7 KiB of each of 2,000).
                        Backend::Sqlite => &[
                            format!("PRAGMA busy_timeout = {millis}"),
                            "PRAGMA synchronous = NORMAL".to_owned(),
                            format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}"),
                        ],
                        Backend::Postgres => &[format!("SET statement_timeout = {millis}")],
                    };
                    for set in settings {
                        sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(open_err)?;
        Ok(Store {
            pool,
            backend,
            url: Arc::from(connect_url.as_str()),
            master_key,
            timeouts,
            audit_failures: Arc::new(AtomicU64::new(0)),
            audit_queue: Arc::default(),
            recording_queue: Arc::default(),
            write_turns: WriteTurns::new(backend == Backend::Sqlite, timeouts.acquire),
        })
    }

    /// Waits for this node's turn to write to SQLite; taken before a write statement or a
    /// writing transaction begins and held until it is committed.
    ///
    /// SQLite lets one connection write at a time. Without turns, two of the pool's
    /// connections writing at once (one login's session row, another session's end, the
    /// audit writer's batch) meet SQLite's lock, and the one that loses sleeps in SQLite's
    /// busy handler: 1, 2, 5, 10, 15… ms, whatever the lock's holder needs. Under `pgbench
    /// -C` through the broker that was ~150 such sleeps a second, milliseconds added to
    /// each login. Taking turns here, in order, the next writer starts as soon as the last
    /// one commits. The wait is bounded like a pooled connection's (`acquire`): a store
    /// that stays saturated is reported as unavailable. Writers in other processes (the
    /// admin CLI) still meet the lock and `busy_timeout`. PostgreSQL: no turns (row
    /// locks; writers go on side by side). A turn is not re-entrant: a task asking for it
    /// while holding it gets [`StoreError::TurnTakenTwice`] at once.
    pub(crate) async fn write_turn(&self) -> Result<WriteTurn<'_>> {
        self.write_turns.take().await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the store answers a query now (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Wall-clock time for records, in Unix milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns an insert's constraint violation into the store's own error: a duplicate is
/// `AlreadyExists { kind, name }`, a missing referenced row is `NotFound` of `parent`.
fn insert_error(
    e: sqlx::Error,
    kind: &'static str,
    name: &str,
    parent: Option<(&'static str, &str)>,
) -> StoreError {
    match (&e, parent) {
        (sqlx::Error::Database(db), _) if db.is_unique_violation() => StoreError::AlreadyExists {
            kind,
            name: name.to_owned(),
        },
        (sqlx::Error::Database(db), Some((parent_kind, parent_name)))
            if db.is_foreign_key_violation() =>
        {
            StoreError::NotFound {
                kind: parent_kind,
                name: parent_name.to_owned(),
            }
        }
        _ => e.into(),
    }
}

impl Store {
    /// The one row `sql` (with `$1` bound to `key`) selects, or `NotFound { kind, key }`.
    async fn row_by_key(
        &self,
        sql: String,
        key: &str,
        kind: &'static str,
    ) -> Result<sqlx::any::AnyRow> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind,
                name: key.to_owned(),
            })
    }
}

/// `NotFound { kind, name }` when an update or delete touched no row.
/// The first column of every row, as strings (ids, names).
/// Ids bound per statement in an `IN (…)` list: a bounded statement for any number of ids.
const IDS_PER_STATEMENT: usize = 500;

/// `$first, $first+1, …`: `count` numbered parameters, for an `IN (…)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_column(rows: &[sqlx::any::AnyRow]) -> Result<Vec<String>> {
    use sqlx::Row;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}

fn expect_row(done: sqlx::any::AnyQueryResult, kind: &'static str, name: &str) -> Result<()> {
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// A task that asks for the write turn while it holds it is told so at once instead of
    /// waiting for itself until the acquire timeout (30 s here); other tasks wait for the
    /// turn as before, and the task may take it again once it let it go.
    #[tokio::test]
    async fn a_task_holding_the_write_turn_is_refused_a_second_one_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let timeouts = Timeouts {
            acquire: Duration::from_secs(30),
            ..Timeouts::default()
        };
        let store = Store::open_with(&url, MasterKey::generate(), timeouts)
            .await
            .unwrap();
        // outside a task (the CLI's `block_on`): no holder to compare with, turns as before
        let turn = store.write_turn().await.unwrap();
        drop(turn);
        let inner = store.clone();
        tokio::spawn(async move {
            let turn = inner.write_turn().await.unwrap();
            let asked = std::time::Instant::now();
            // nested: a write made while this task's own write holds the turn
            let again = inner.add_environment("nested").await;
            assert!(
                matches!(again, Err(StoreError::TurnTakenTwice)),
                "{again:?}"
            );
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            // another task waits for the turn, and gets it once it is let go
            let other = inner.clone();
            let waiting = tokio::spawn(async move { other.add_environment("later").await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                !waiting.is_finished(),
                "another task wrote during this one's turn"
            );
            drop(turn);
            waiting.await.unwrap().unwrap();
            // this task's turn is over: it writes again
            inner.add_environment("again").await.unwrap();
        })
        .await
        .unwrap();
        assert!(store.environment_policy("nested").await.is_err());
        store.environment_policy("later").await.unwrap();
        store.environment_policy("again").await.unwrap();
    }

    #[test]
    fn urls_are_classified_and_redacted() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(matches!(
            Backend::of_url("mysql://u:secret@h/db"),
            Err(StoreError::UnsupportedUrl(u)) if !u.contains("secret")
        ));
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    /// Every pooled SQLite connection runs in WAL mode with `synchronous = NORMAL` and a
    /// bounded page cache (all of them: the pool opens more under load).
    #[tokio::test]
    async fn sqlite_connections_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::open(&url, MasterKey::generate()).await.unwrap();
        // no sqlx maintenance task, which can spin forever (see `no_reaper`)
        let options = store.pool.options();
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), None);
        // no ping before each statement (a hand-off to the connection's thread and back)
        assert!(!options.get_test_before_acquire());
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool.acquire().await.unwrap();
            let pragma = async |conn: &mut sqlx::pool::PoolConnection<sqlx::Any>, name: &str| {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                match row.try_get::<i64, _>(0) {
                    Ok(n) => n.to_string(),
                    Err(_) => row.try_get::<String, _>(0).unwrap(),
                }
            };
            assert_eq!(pragma(&mut conn, "journal_mode").await, "wal");
            assert_eq!(pragma(&mut conn, "synchronous").await, "1"); // NORMAL
            assert_eq!(
                pragma(&mut conn, "cache_size").await,
                format!("-{SQLITE_CACHE_KIB}")
            );
            held.push(conn);
        }
        drop(held);
        store.close().await;
    }
}
