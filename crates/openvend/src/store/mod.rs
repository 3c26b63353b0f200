//! Persistence on SQLite or PostgreSQL, chosen once from the URL.
//!
//! One code path serves both ([`sql`]: `$n` placeholders on both engines, SQLite run in the
//! calling task, PostgreSQL pipelined through `postgres`);
//! where the engines differ (identity columns, `FOR UPDATE SKIP LOCKED`), [`Backend`] says
//! which SQL to use. Migrations are embedded per backend and applied in order, each in a
//! transaction, with a PostgreSQL advisory lock so several instances can start together.

pub mod audit;
mod error;
pub mod jobs;
mod migrations;
pub mod orders;
mod pg_connect;
mod pg_socket;
mod postgres;
pub mod sql;
pub mod watches;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{Error, ErrorKind};
pub use sql::{Conn, Executor, Later, Pool, Query, Row, Tx, query};

/// Connections a PostgreSQL pool opens at most.
const PG_POOL_SIZE: usize = 16;

/// Which engine a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path` — one instance, one worker.
    Sqlite,
    /// `postgres://…` — any number of instances.
    Postgres,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's scheme is neither sqlite nor postgres.
    #[error("database URL {0:?}: unknown scheme (use sqlite://PATH or postgres://…)")]
    UnknownScheme(String),
    /// A SQLite file that does not exist, named without asking to create it.
    #[error("database file {0} does not exist (append ?mode=rwc to the URL to create it)")]
    MissingFile(PathBuf),
    /// The database was migrated by a newer version, whose data this one would misread
    /// (e.g. an order's wait kept where this version does not look).
    #[error(
        "the database has schema version {found}, written by a newer OpenVend; this build knows up to {known}: run that version or a newer one"
    )]
    NewerSchema {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this build has.
        known: i64,
    },
    /// The engine refused.
    #[error(transparent)]
    Store(#[from] Error),
}

/// The connections and their backend.
#[derive(Debug, Clone)]
pub struct Db {
    /// Where statements run: `store::query(..).execute(&db.pool)`.
    pub pool: Pool,
    /// The engine.
    pub backend: Backend,
}

impl Backend {
    /// The backend of a URL, or an error that names the URL.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::UnknownScheme(url.to_owned())),
        }
    }
}

/// Set on SQLite's connection when it opens. WAL lets a reader in another process (a backup,
/// `sqlite3` at the shell) run beside the writer; `synchronous = NORMAL` in WAL mode loses no
/// committed transaction on a crash of the process, only possibly the last ones on power loss.
const SQLITE_SETUP: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
     PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";

impl Db {
    /// Opens the database at `url`. A SQLite file must exist unless the URL says `mode=rwc`
    /// or `create` is set (the embedded default data folder), so a typo never creates an
    /// empty database silently.
    pub async fn connect(url: &str, create: bool) -> Result<Db, StoreError> {
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                let rest = url.split_once(':').map(|(_, r)| r).unwrap_or("");
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
                let wants_create = params.split('&').any(|p| p == "mode=rwc");
                if path.is_empty() {
                    return Err(StoreError::UnknownScheme(url.to_owned()));
                }
                let memory = path == ":memory:";
                if !memory && !wants_create && !create && !PathBuf::from(path).exists() {
                    return Err(StoreError::MissingFile(PathBuf::from(path)));
                }
                sql::open_sqlite(path, memory || wants_create || create, SQLITE_SETUP)?
            }
            // No ping before each use: it would double the round trips of short statements;
            // a broken connection surfaces as an error on use, which every caller handles,
            // and is not handed out again.
            Backend::Postgres => Pool::Postgres(
                postgres::PgPool::connect(url, PG_POOL_SIZE, Duration::from_secs(10)).await?,
            ),
        };
        Ok(Db { pool, backend })
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so another process writing the same file (a restarted server
    /// beside a dying one, a maintenance script) makes it wait its turn instead of failing
    /// half-way with `SQLITE_BUSY_SNAPSHOT`.
    pub async fn begin(&self) -> Result<Tx, Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::run(self).await
    }
}

/// Reads an integer column whatever its width: SQLite hands back 64-bit integers, PostgreSQL
/// `INTEGER` columns are 32-bit.
pub fn get_int(row: &Row, column: &str) -> Result<i64, Error> {
    row.try_get::<i64, _>(column)
        .or_else(|_| row.try_get::<i32, _>(column).map(i64::from))
}
