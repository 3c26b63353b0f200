//! Persistence on SQLite or PostgreSQL, chosen once from the URL.
//!
//! One code path serves both (sqlx's `Any` driver, `$n` placeholders, which both accept);
//! where the engines differ (identity columns, `FOR UPDATE SKIP LOCKED`), [`Backend`] says
//! which SQL to use. Migrations are embedded per backend and applied in order, each in a
//! transaction, with a PostgreSQL advisory lock so several instances can start together.

pub mod jobs;
mod migrations;
pub mod orders;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Executor as _};

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
    /// The engine refused.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// The connection pool and its backend.
#[derive(Debug, Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The engine.
    pub backend: Backend,
}

impl Backend {
    /// The backend of a URL, or an error that names the URL.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::UnknownScheme(url.to_owned())),
        }
    }
}

impl Db {
    /// Opens the database at `url`. A SQLite file must exist unless the URL says `mode=rwc`
    /// or `create` is set (the embedded default data folder), so a typo never creates an
    /// empty database silently.
    pub async fn connect(url: &str, create: bool) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
            let path = rest.split('?').next().unwrap_or("");
            let wants_create = url.contains("mode=rwc");
            if path != ":memory:" && !path.is_empty() && !wants_create {
                let p = PathBuf::from(path);
                if !p.exists() {
                    if !create {
                        return Err(StoreError::MissingFile(p));
                    }
                    url.push_str(if url.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    });
                }
            }
        }
        let options =
            AnyConnectOptions::from_str(&url)?.log_statements(tracing::log::LevelFilter::Trace);
        // SQLite has one writer at a time. With several connections, writers that collide
        // sleep in SQLite's busy handler (1, 2, 5 … 100 ms steps), which ruins latency under
        // load; one connection queues them in the pool instead, in order and without sleeping.
        // Transactions are short and never wait on the network.
        let max = if backend == Backend::Sqlite { 1 } else { 16 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // A ping before every acquire doubles the round trips of short statements (on
            // SQLite each is a hop to the connection's thread); a broken connection surfaces
            // as an error on use instead, which every caller already handles.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it is a property of the file.
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        Ok(Db { pool, backend })
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first would fail outright
    /// (`SQLITE_BUSY_SNAPSHOT`, which `busy_timeout` does not wait out) if another connection
    /// wrote in between; taking the lock up front makes concurrent writers wait their turn.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
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
pub fn get_int(row: &sqlx::any::AnyRow, column: &str) -> Result<i64, sqlx::Error> {
    use sqlx::Row as _;
    row.try_get::<i64, _>(column)
        .or_else(|_| row.try_get::<i32, _>(column).map(i64::from))
}
