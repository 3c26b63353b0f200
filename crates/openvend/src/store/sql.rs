//! The one way the rest of OpenVend runs SQL, on either engine.
//!
//! `query(sql).bind(..).fetch_one(executor)` returns [`Row`]s of plain [`Value`]s.
//! PostgreSQL goes through [`super::postgres`]'s pool, pipelined. SQLite runs in the calling
//! task, on the one connection the process keeps: a statement takes microseconds, while
//! handing it to a connection thread and back would cost two thread wake-ups per statement,
//! more than the statements themselves. A transaction holds its connection until it commits
//! or is dropped (rolled back); nothing awaits the network inside one.
//!
//! [`Query::defer`] runs a write whose result the caller does not need: at once on SQLite,
//! with the next statement or the `COMMIT` on PostgreSQL (one write instead of a round trip).
//! [`Query::fetch_later`] and [`Query::execute_later`] do the same for a statement whose rows
//! or count of changed rows the caller reads after that next statement or commit ([`Later`]).
//!
//! Both engines report [`Error`], with the constraint kind mapped.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::error::{Error, ErrorKind};
use super::postgres::{PgPool, PgTx};

/// How long a caller waits for the SQLite connection before giving up, like a pool's
/// acquire timeout.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The declared kind of a value, kept for NULLs so PostgreSQL gets a typed parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 64-bit integer.
    Int,
    /// Double.
    Real,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Blob,
    /// Boolean (an integer 0/1 on SQLite).
    Bool,
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL of a kind.
    Null(Kind),
    /// Integer.
    Int(i64),
    /// Double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// Boolean.
    Bool(bool),
}

impl Value {
    /// The kind of the value (a NULL keeps its declared one).
    pub(super) fn kind(&self) -> Kind {
        match self {
            Value::Null(kind) => *kind,
            Value::Int(_) => Kind::Int,
            Value::Real(_) => Kind::Real,
            Value::Text(_) => Kind::Text,
            Value::Blob(_) => Kind::Blob,
            Value::Bool(_) => Kind::Bool,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::Null(_) => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
            Value::Bool(_) => "a boolean",
        }
    }
}

/// A Rust value that can be bound as a parameter.
pub trait Encode {
    /// The kind a NULL of this type has.
    const KIND: Kind;
    /// The value.
    fn encode(self) -> Value;
}

macro_rules! encode_int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            const KIND: Kind = Kind::Int;
            fn encode(self) -> Value {
                Value::Int(i64::from(self))
            }
        }
    )*};
}
encode_int!(i64, i32, i16, u32, u16, u8);

impl Encode for bool {
    const KIND: Kind = Kind::Bool;
    fn encode(self) -> Value {
        Value::Bool(self)
    }
}
impl Encode for f64 {
    const KIND: Kind = Kind::Real;
    fn encode(self) -> Value {
        Value::Real(self)
    }
}
impl Encode for String {
    const KIND: Kind = Kind::Text;
    fn encode(self) -> Value {
        Value::Text(self)
    }
}
impl Encode for &str {
    const KIND: Kind = Kind::Text;
    fn encode(self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl Encode for &String {
    const KIND: Kind = Kind::Text;
    fn encode(self) -> Value {
        Value::Text(self.clone())
    }
}
impl Encode for Vec<u8> {
    const KIND: Kind = Kind::Blob;
    fn encode(self) -> Value {
        Value::Blob(self)
    }
}
impl Encode for &[u8] {
    const KIND: Kind = Kind::Blob;
    fn encode(self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl<T: Encode> Encode for Option<T> {
    const KIND: Kind = T::KIND;
    fn encode(self) -> Value {
        match self {
            Some(v) => v.encode(),
            None => Value::Null(T::KIND),
        }
    }
}
impl<T: Encode + Clone> Encode for &Option<T> {
    const KIND: Kind = T::KIND;
    fn encode(self) -> Value {
        self.clone().encode()
    }
}

/// A Rust value a column can be read as.
pub trait Decode: Sized {
    /// The value, or why the column cannot be read as this type.
    fn decode(value: &Value) -> Result<Self, String>;
}

fn mismatch<T>(want: &str, got: &Value) -> Result<T, String> {
    Err(format!("expected {want}, found {}", got.describe()))
}

impl Decode for i64 {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => mismatch("an integer", other),
        }
    }
}
impl Decode for i32 {
    fn decode(value: &Value) -> Result<Self, String> {
        let wide = i64::decode(value)?;
        i32::try_from(wide).map_err(|_| format!("{wide} does not fit a 32-bit integer"))
    }
}
impl Decode for bool {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Int(i) => Ok(*i != 0),
            other => mismatch("a boolean", other),
        }
    }
}
impl Decode for f64 {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Real(r) => Ok(*r),
            // Exact for the integer ranges a column of ours holds.
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Ok(*i as f64),
            other => mismatch("a real", other),
        }
    }
}
impl Decode for String {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => mismatch("text", other),
        }
    }
}
impl Decode for Vec<u8> {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            other => mismatch("bytes", other),
        }
    }
}
impl<T: Decode> Decode for Option<T> {
    fn decode(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null(_) => Ok(None),
            other => T::decode(other).map(Some),
        }
    }
}

/// A result row: column names and values.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

/// A column by position or by name.
pub trait ColumnIndex: fmt::Debug {
    /// Its position in `row`.
    fn position(&self, row: &Row) -> Result<usize, Error>;
}

impl ColumnIndex for usize {
    fn position(&self, row: &Row) -> Result<usize, Error> {
        if *self < row.values.len() {
            Ok(*self)
        } else {
            Err(Error::Decode {
                column: self.to_string(),
                reason: format!("no such column (the row has {})", row.values.len()),
            })
        }
    }
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row) -> Result<usize, Error> {
        row.columns
            .iter()
            .position(|c| c == self)
            .ok_or_else(|| Error::Decode {
                column: (*self).to_owned(),
                reason: "no such column".into(),
            })
    }
}

impl Row {
    /// A row of `values` under `columns`.
    pub(super) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    /// The column read as `T`, or an error naming the column.
    pub fn try_get<T: Decode, I: ColumnIndex>(&self, index: I) -> Result<T, Error> {
        let at = index.position(self)?;
        T::decode(&self.values[at]).map_err(|why| Error::Decode {
            column: format!("{index:?}"),
            reason: why,
        })
    }

    /// The column read as `T`.
    ///
    /// # Panics
    /// When the column is missing or has another type: for tests and fixed queries only.
    pub fn get<T: Decode, I: ColumnIndex>(&self, index: I) -> T {
        match self.try_get(index) {
            Ok(v) => v,
            Err(e) => panic!("reading a column: {e}"),
        }
    }
}

/// What a statement did.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub(super) rows_affected: u64,
}

impl Done {
    /// Rows inserted, updated or deleted.
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// A statement and its parameters (`$1`, `$2` … on both engines).
#[derive(Debug, Clone)]
pub struct Query<'q> {
    sql: &'q str,
    /// The statement SQLite runs instead, where its schema differs.
    sqlite_sql: Option<&'q str>,
    args: Vec<Value>,
}

/// A statement to run.
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        sqlite_sql: None,
        args: Vec::new(),
    }
}

/// The executor's plumbing: public so [`Executor`] can name it, unreachable from outside.
mod plumbing {
    /// What the caller wants back.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mode {
        /// The number of rows changed.
        Execute,
        /// The first row.
        Optional,
        /// All rows.
        All,
    }

    /// What a statement gave.
    #[derive(Debug)]
    pub enum Output {
        /// The number of rows changed.
        Done(super::Done),
        /// Rows.
        Rows(Vec<super::Row>),
    }
}
pub(super) use plumbing::{Mode, Output};

impl<'q> Query<'q> {
    /// The statement's text.
    pub(super) fn sql(&self) -> &'q str {
        self.sql
    }

    /// The bound values, in order.
    pub(super) fn args(&self) -> &[Value] {
        &self.args
    }

    /// The text and the values.
    pub(super) fn into_parts(self) -> (&'q str, Vec<Value>) {
        (self.sql, self.args)
    }

    /// Runs a write whose result the caller does not need. In a PostgreSQL transaction it
    /// goes out with the transaction's next statement or its `COMMIT`, saving a round trip;
    /// anywhere else it runs at once. An error (on PostgreSQL, reported by that later
    /// statement or the commit) fails the transaction all the same, so use it only for
    /// writes whose failure should.
    pub async fn defer<E: Executor>(self, executor: E) -> Result<(), Error> {
        executor.defer(self).await
    }

    /// Runs a statement whose rows the caller needs only after the transaction's next
    /// statement or its commit: in a PostgreSQL transaction it goes out with that statement,
    /// saving a round trip; anywhere else it runs at once. Read the rows from the [`Later`]
    /// once that statement ran. An error fails the transaction, as with [`Query::defer`].
    pub async fn fetch_later<E: Executor>(self, executor: E) -> Result<Later, Error> {
        executor.later(self, Mode::All).await
    }

    /// [`Query::fetch_later`] for a write whose count of rows changed the caller reads later
    /// ([`Later::rows_affected`]).
    pub async fn execute_later<E: Executor>(self, executor: E) -> Result<Later, Error> {
        executor.later(self, Mode::Execute).await
    }

    /// Runs a write that must change exactly `rows` rows, or else fail its transaction with
    /// [`ErrorKind::RowsNotAsExpected`](super::ErrorKind::RowsNotAsExpected) — a state
    /// transition whose guard (`WHERE state = …`) may have been overtaken. In a PostgreSQL
    /// transaction the check runs in the database (the statement wrapped so that a count
    /// other than `rows` raises an error), so the write needs no answer and goes out with the
    /// transaction's next statement or its `COMMIT`, which the error then turns into a
    /// rollback: a transaction whose last check is this saves a round trip. Anywhere else it
    /// runs at once and the error is returned here (outside a transaction the write is then
    /// already committed: use it in one). The statement must be an `INSERT`, `UPDATE` or
    /// `DELETE` without a `RETURNING` clause.
    pub async fn expect_rows<E: Executor>(self, executor: E, rows: u64) -> Result<(), Error> {
        executor.expect_rows(self, rows).await
    }

    /// The statement to run on SQLite instead, with the same parameters: for a table whose
    /// SQLite schema differs (see the SQLite migrations).
    #[must_use]
    pub fn on_sqlite(mut self, sql: &'q str) -> Self {
        self.sqlite_sql = Some(sql);
        self
    }

    /// Binds the next parameter.
    #[must_use]
    pub fn bind<T: Encode>(mut self, value: T) -> Self {
        self.args.push(value.encode());
        self
    }

    /// Runs the statement for its effect.
    pub async fn execute<E: Executor>(self, executor: E) -> Result<Done, Error> {
        match executor.run(self, Mode::Execute).await? {
            Output::Done(done) => Ok(done),
            Output::Rows(_) => Ok(Done { rows_affected: 0 }),
        }
    }

    /// The first row; `RowNotFound` when there is none.
    pub async fn fetch_one<E: Executor>(self, executor: E) -> Result<Row, Error> {
        self.fetch_optional(executor)
            .await?
            .ok_or(Error::RowNotFound)
    }

    /// The first row, if any.
    pub async fn fetch_optional<E: Executor>(self, executor: E) -> Result<Option<Row>, Error> {
        match executor.run(self, Mode::Optional).await? {
            Output::Rows(rows) => Ok(rows.into_iter().next()),
            Output::Done(_) => Ok(None),
        }
    }

    /// Every row.
    pub async fn fetch_all<E: Executor>(self, executor: E) -> Result<Vec<Row>, Error> {
        match executor.run(self, Mode::All).await? {
            Output::Rows(rows) => Ok(rows),
            Output::Done(_) => Ok(Vec::new()),
        }
    }
}

/// Something a statement runs on: the pool, or a transaction's connection.
pub trait Executor: Send {
    /// Runs `query`.
    fn run(
        self,
        query: Query<'_>,
        mode: Mode,
    ) -> impl Future<Output = Result<Output, Error>> + Send;

    /// Runs `query` for its effect, now or (in a PostgreSQL transaction) with the next
    /// statement: see [`Query::defer`].
    fn defer(self, query: Query<'_>) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sized,
    {
        async move { self.run(query, Mode::Execute).await.map(|_| ()) }
    }

    /// Runs a write that must change `rows` rows: see [`Query::expect_rows`].
    fn expect_rows(
        self,
        query: Query<'_>,
        rows: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let sql = query.sql();
            checked_rows(sql, self.run(query, Mode::Execute).await?, rows)
        }
    }

    /// Runs `query` for its rows, now or (in a PostgreSQL transaction) with the next
    /// statement: see [`Query::fetch_later`].
    fn later(
        self,
        query: Query<'_>,
        mode: Mode,
    ) -> impl Future<Output = Result<Later, Error>> + Send
    where
        Self: Sized,
    {
        async move { self.run(query, mode).await.map(Later::ready) }
    }
}

/// What [`Query::expect_rows`] answers for a statement run at once.
fn checked_rows(sql: &str, output: Output, expected: u64) -> Result<(), Error> {
    match output {
        Output::Done(done) if done.rows_affected == expected => Ok(()),
        Output::Done(done) => Err(Error::Database {
            kind: super::ErrorKind::RowsNotAsExpected,
            message: format!(
                "{} row(s) changed where {expected} expected: {sql}",
                done.rows_affected
            ),
            code: None,
        }),
        Output::Rows(_) => Err(Error::Protocol(format!(
            "expect_rows on a statement that returns rows: {sql}"
        ))),
    }
}

/// The result of a statement sent with a later one ([`Query::fetch_later`],
/// [`Query::execute_later`]).
#[derive(Debug)]
#[must_use = "a statement queued for its result is read after it ran"]
pub struct Later(LaterState);

#[derive(Debug)]
enum LaterState {
    /// It ran at once.
    Ready(Result<Output, Error>),
    /// It goes out with the transaction's next round trip, which answers here.
    Waiting(tokio::sync::oneshot::Receiver<Result<Output, Error>>),
}

impl Later {
    fn ready(output: Output) -> Later {
        Later(LaterState::Ready(Ok(output)))
    }

    /// A result the next round trip of a PostgreSQL transaction sends to `answer`.
    pub(super) fn waiting() -> (Later, tokio::sync::oneshot::Sender<Result<Output, Error>>) {
        let (answer, waiting) = tokio::sync::oneshot::channel();
        (Later(LaterState::Waiting(waiting)), answer)
    }

    /// Every row. An error if the statement failed, or has not gone out yet (a bug: read
    /// only after the transaction's next statement or its commit).
    pub fn rows(self) -> Result<Vec<Row>, Error> {
        match self.output()? {
            Output::Rows(rows) => Ok(rows),
            Output::Done(_) => Ok(Vec::new()),
        }
    }

    fn output(self) -> Result<Output, Error> {
        match self.0 {
            LaterState::Ready(output) => output,
            LaterState::Waiting(mut waiting) => waiting.try_recv().map_err(|e| match e {
                tokio::sync::oneshot::error::TryRecvError::Empty => {
                    Error::Protocol("a statement's result was read before it was sent".into())
                }
                // Its transaction ended, or its round trip failed, without it.
                tokio::sync::oneshot::error::TryRecvError::Closed => {
                    Error::Protocol("a statement's result was read, but it never ran".into())
                }
            })?,
        }
    }

    /// The first row, if any.
    pub fn first(self) -> Result<Option<Row>, Error> {
        Ok(self.rows()?.into_iter().next())
    }

    /// The rows a write queued with [`Query::execute_later`] changed.
    pub fn rows_affected(self) -> Result<u64, Error> {
        match self.output()? {
            Output::Done(done) => Ok(done.rows_affected),
            Output::Rows(rows) => Ok(rows.len() as u64),
        }
    }
}

/// The database connections: SQLite's one connection, or a PostgreSQL pool.
#[derive(Clone)]
pub enum Pool {
    /// The process's SQLite connection.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    /// A PostgreSQL pool.
    Postgres(PgPool),
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::Sqlite(_) => f.write_str("Pool::Sqlite"),
            Pool::Postgres(p) => f.debug_tuple("Pool::Postgres").field(p).finish(),
        }
    }
}

impl Pool {
    /// On PostgreSQL, how many transaction writes went out with one `Sync` for all their
    /// statements (see `store::pg_socket`); 0 on SQLite, which has no wire. For tests.
    #[doc(hidden)]
    pub fn shared_sync_writes(&self) -> u64 {
        match self {
            Pool::Sqlite(_) => 0,
            Pool::Postgres(p) => p.shared_sync_writes(),
        }
    }

    /// The SQLite connection, waiting for the transaction that holds it.
    async fn sqlite(
        conn: &Arc<Mutex<rusqlite::Connection>>,
    ) -> Result<OwnedMutexGuard<rusqlite::Connection>, Error> {
        tokio::time::timeout(SQLITE_ACQUIRE_TIMEOUT, conn.clone().lock_owned())
            .await
            .map_err(|_| Error::PoolTimedOut)
    }

    /// Starts a transaction with `begin` (`BEGIN IMMEDIATE` takes SQLite's write lock up
    /// front; PostgreSQL always uses its own `BEGIN`, sent with the first statement).
    pub async fn begin_with(&self, begin: &str) -> Result<Tx, Error> {
        let conn = match self {
            Pool::Sqlite(conn) => {
                let guard = Pool::sqlite(conn).await?;
                trace(begin);
                control(&guard, begin).map_err(sqlite_error)?;
                Conn::Sqlite(guard)
            }
            Pool::Postgres(pool) => Conn::Postgres(pool.begin().await?),
        };
        Ok(Tx { conn })
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, Error> {
        self.begin_with("BEGIN").await
    }

    /// Runs several statements (no parameters, no rows), e.g. a migration, outside a
    /// transaction.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        match self {
            Pool::Sqlite(conn) => {
                let guard = Pool::sqlite(conn).await?;
                trace(sql);
                guard.execute_batch(sql).map_err(sqlite_error)
            }
            Pool::Postgres(pool) => pool.execute_batch(sql).await,
        }
    }
}

/// A transaction's connection.
pub enum Conn {
    /// The SQLite connection, inside `BEGIN`.
    Sqlite(OwnedMutexGuard<rusqlite::Connection>),
    /// A PostgreSQL transaction.
    Postgres(PgTx),
    /// Committed or rolled back.
    Closed,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Postgres(_) => "Conn::Postgres",
            Conn::Closed => "Conn::Closed",
        })
    }
}

impl Conn {
    /// Whether this is a PostgreSQL transaction (where one statement can do what takes
    /// SQLite several: a data-modifying `WITH`).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }

    /// Runs several statements (no parameters, no rows) inside the transaction.
    pub async fn execute_batch(&mut self, sql: &str) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => {
                trace(sql);
                still_open(conn)?.execute_batch(sql).map_err(sqlite_error)
            }
            Conn::Postgres(tx) => tx.execute_batch(sql).await,
            Conn::Closed => Err(Error::PoolClosed),
        }
    }
}

/// An open transaction: statements run on it through `&mut *tx`; dropped without
/// [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub struct Tx {
    conn: Conn,
}

impl Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Conn {
    /// Sends what a PostgreSQL transaction has queued ([`Query::defer`],
    /// [`Query::fetch_later`]) in one write and waits for it: every [`Later`] queued so far can
    /// then be read. An error of a queued statement is returned here. Nothing to send on
    /// SQLite, which ran each statement at once.
    pub async fn flush(&mut self) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => still_open(conn).map(|_| ()),
            Conn::Postgres(tx) => tx.flush().await,
            Conn::Closed => Err(Error::PoolClosed),
        }
    }
}

impl Tx {
    /// Makes the transaction's writes durable and visible.
    pub async fn commit(mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.conn, Conn::Closed) {
            Conn::Sqlite(conn) => {
                still_open(&conn)?;
                trace("COMMIT");
                if let Err(e) = control(&conn, "COMMIT") {
                    // A failed COMMIT may leave the transaction open; never hand the
                    // connection on inside it.
                    let _ = control(&conn, "ROLLBACK");
                    return Err(sqlite_error(e));
                }
                Ok(())
            }
            Conn::Postgres(tx) => tx.commit().await,
            Conn::Closed => Err(Error::PoolClosed),
        }
    }

    /// Undoes the transaction's writes.
    pub async fn rollback(mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.conn, Conn::Closed) {
            // A transaction SQLite already rolled back has nothing left to undo.
            Conn::Sqlite(conn) if conn.is_autocommit() => Ok(()),
            Conn::Sqlite(conn) => control(&conn, "ROLLBACK").map_err(sqlite_error),
            Conn::Postgres(tx) => tx.rollback().await,
            Conn::Closed => Ok(()),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Conn::Sqlite(conn) = &self.conn {
            // Dropped without commit (an error, a cancelled task): undo before the next
            // caller gets the connection. A transaction SQLite already ended makes this a
            // harmless error.
            if !conn.is_autocommit() {
                let _ = control(conn, "ROLLBACK");
            }
        }
        // PostgreSQL: `PgTx` rolls back when dropped.
    }
}

impl Executor for &Pool {
    async fn run(self, query: Query<'_>, mode: Mode) -> Result<Output, Error> {
        match self {
            Pool::Sqlite(conn) => {
                let guard = Pool::sqlite(conn).await?;
                run_sqlite(&guard, &query, mode)
            }
            Pool::Postgres(pool) => pool.run(query, mode).await,
        }
    }
}

impl Executor for &mut Conn {
    async fn run(self, query: Query<'_>, mode: Mode) -> Result<Output, Error> {
        match self {
            Conn::Sqlite(conn) => run_sqlite(still_open(conn)?, &query, mode),
            Conn::Postgres(tx) => tx.run(query, mode).await,
            Conn::Closed => Err(Error::PoolClosed),
        }
    }

    async fn defer(self, query: Query<'_>) -> Result<(), Error> {
        match self {
            Conn::Postgres(tx) => {
                tx.defer(query);
                Ok(())
            }
            other => other.run(query, Mode::Execute).await.map(|_| ()),
        }
    }

    async fn later(self, query: Query<'_>, mode: Mode) -> Result<Later, Error> {
        match self {
            Conn::Postgres(tx) => Ok(tx.later(query, mode)),
            other => other.run(query, mode).await.map(Later::ready),
        }
    }

    async fn expect_rows(self, query: Query<'_>, rows: u64) -> Result<(), Error> {
        match self {
            Conn::Postgres(tx) => tx.expect_rows(query, rows),
            other => {
                let sql = query.sql();
                checked_rows(sql, other.run(query, Mode::Execute).await?, rows)
            }
        }
    }
}

impl Executor for &mut Tx {
    async fn run(self, query: Query<'_>, mode: Mode) -> Result<Output, Error> {
        (&mut self.conn).run(query, mode).await
    }

    async fn defer(self, query: Query<'_>) -> Result<(), Error> {
        (&mut self.conn).defer(query).await
    }

    async fn later(self, query: Query<'_>, mode: Mode) -> Result<Later, Error> {
        (&mut self.conn).later(query, mode).await
    }

    async fn expect_rows(self, query: Query<'_>, rows: u64) -> Result<(), Error> {
        (&mut self.conn).expect_rows(query, rows).await
    }
}

pub(super) fn trace(sql: &str) {
    tracing::trace!(target: "openvend::sql", "{sql}");
}

// ---- SQLite -------------------------------------------------------------------------------

/// Opens the SQLite database at `path` (`:memory:` for a private in-memory one).
pub fn open_sqlite(path: &str, create: bool, setup: &str) -> Result<Pool, Error> {
    use rusqlite::OpenFlags;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    // Through the VFS that writes a commit's WAL frames with one `pwrite`, not two a frame.
    let vfs = sqlite_wal_batch::register().map_err(|code| {
        sqlite_error(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    })?;
    let conn =
        rusqlite::Connection::open_with_flags_and_vfs(path, flags, vfs).map_err(sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.execute_batch(setup).map_err(sqlite_error)?;
    Ok(Pool::Sqlite(Arc::new(Mutex::new(conn))))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null(_) => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        }))
    }
}

fn from_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null(Kind::Text),
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Which argument a parameter takes: `$N` and `?N` name their argument (as on PostgreSQL,
/// whatever order they appear in); a bare `?` takes the next.
fn argument_for(name: Option<&str>, position: usize) -> Result<usize, Error> {
    match name {
        None => Ok(position),
        Some(n) => n
            .strip_prefix('$')
            .or_else(|| n.strip_prefix('?'))
            .and_then(|digits| digits.parse::<usize>().ok())
            .filter(|&i| i >= 1)
            .ok_or_else(|| Error::Protocol(format!("SQL parameter {n}: use $1, $2 …"))),
    }
}

/// Runs a transaction-control statement (`BEGIN …`, `COMMIT`, `ROLLBACK`) from the statement
/// cache: `execute_batch` would parse it again at each of a sale's ten or so.
fn control(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_sqlite(conn: &rusqlite::Connection, query: &Query<'_>, mode: Mode) -> Result<Output, Error> {
    let sql = query.sqlite_sql.unwrap_or(query.sql);
    trace(sql);
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
    for position in 1..=stmt.parameter_count() {
        let argument = argument_for(stmt.parameter_name(position), position)?;
        let value = query.args.get(argument - 1).ok_or_else(|| {
            Error::Protocol(format!(
                "SQL parameter ${argument} has no value ({} bound): {}",
                query.args.len(),
                sql
            ))
        })?;
        stmt.raw_bind_parameter(position, value)
            .map_err(sqlite_error)?;
    }
    let columns: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    // Stepped to the end even when one row is wanted, so the statement's effects are complete.
    while let Some(row) = cursor.next().map_err(sqlite_error)? {
        if mode == Mode::All || (mode != Mode::Execute && rows.is_empty()) {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(from_sqlite(row.get_ref(i).map_err(sqlite_error)?));
            }
            rows.push(Row {
                columns: Arc::clone(&columns),
                values,
            });
        }
    }
    drop(cursor);
    if mode == Mode::Execute {
        let rows_affected = if stmt.readonly() { 0 } else { conn.changes() };
        return Ok(Output::Done(Done { rows_affected }));
    }
    Ok(Output::Rows(rows))
}

/// The connection of a SQLite transaction that is still open. Some errors (a full disk, an
/// I/O error, `INSERT OR ROLLBACK`) make SQLite roll the whole transaction back; a statement
/// run after that would run on its own and commit at once, while the transaction's `commit`
/// fails. Refused instead, as PostgreSQL refuses the statements of an aborted transaction.
fn still_open(conn: &rusqlite::Connection) -> Result<&rusqlite::Connection, Error> {
    if conn.is_autocommit() {
        return Err(Error::Database {
            kind: ErrorKind::Other,
            message: "the transaction was rolled back after an earlier error; \
                      its later statements are refused"
                .into(),
            code: None,
        });
    }
    Ok(conn)
}

/// A SQLite error as a store error; its extended code gives the constraint kind.
fn sqlite_error(e: rusqlite::Error) -> Error {
    use rusqlite::ffi;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    };
    let kind = match code {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
            ErrorKind::UniqueViolation
        }
        Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
        Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
        Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
        _ => ErrorKind::Other,
    };
    Error::Database {
        kind,
        message: e.to_string(),
        code: code.map(|c| c.to_string()),
    }
}
