//! The one error type of the store, whichever engine answered.

/// What kind of constraint a database error broke, where callers act on it (a duplicate key
/// is "already there", not a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A unique index or primary key.
    UniqueViolation,
    /// A foreign key.
    ForeignKeyViolation,
    /// A `NOT NULL` column.
    NotNullViolation,
    /// A `CHECK` constraint.
    CheckViolation,
    /// A statement sent with [`Query::expect_rows`](super::Query::expect_rows) changed
    /// another number of rows than expected: what it guarded moved on concurrently.
    RowsNotAsExpected,
    /// Anything else the engine refused.
    Other,
}

/// Why a statement, a transaction or a connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `fetch_one` found no row.
    #[error("no rows returned by a query that expected one")]
    RowNotFound,
    /// The engine refused a statement.
    #[error("database error: {message}")]
    Database {
        /// The constraint kind, if any.
        kind: ErrorKind,
        /// The engine's message.
        message: String,
        /// The engine's code (SQLSTATE on PostgreSQL, the extended code on SQLite).
        code: Option<String>,
    },
    /// A column that is missing or holds another type than asked for.
    #[error("column {column}: {reason}")]
    Decode {
        /// The column's name or index.
        column: String,
        /// What was wrong.
        reason: String,
    },
    /// A statement OpenVend built wrongly (a parameter without a value, a value it cannot
    /// encode): a bug, reported rather than run.
    #[error("{0}")]
    Protocol(String),
    /// No connection came free in time.
    #[error("timed out waiting for a database connection")]
    PoolTimedOut,
    /// The transaction was already committed or rolled back.
    #[error("the transaction is closed")]
    PoolClosed,
    /// The connection to the database failed or broke.
    #[error("database connection: {0}")]
    Connection(String),
}

impl Error {
    /// Whether a statement sent with [`Query::expect_rows`](super::Query::expect_rows)
    /// changed another number of rows than expected.
    pub fn is_rows_not_as_expected(&self) -> bool {
        matches!(
            self,
            Error::Database {
                kind: ErrorKind::RowsNotAsExpected,
                ..
            }
        )
    }

    /// Whether a unique index or primary key refused the statement.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Error::Database {
                kind: ErrorKind::UniqueViolation,
                ..
            }
        )
    }
}
