//! PostgreSQL through tokio-postgres: a small pool of connections, each with its own cache of
//! prepared statements, and transactions that pipeline.
//!
//! Why pipelined: a statement's round trip costs the server a socket write and a wake-up,
//! which on a local database cost more than the statement itself. So a transaction's `BEGIN`
//! goes out with its first statement, and a statement whose result the caller does not need
//! ([`Query::defer`](super::sql::Query::defer)), or needs only later
//! ([`Query::fetch_later`](super::sql::Query::fetch_later)), waits and goes out with the next
//! statement or with the `COMMIT`, all in one write. Its error, if any, is reported there: the
//! transaction fails as a whole either way.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::{BoxFuture, FutureExt as _, MaybeDone, maybe_done};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::error::{Error, ErrorKind};
use super::pg_connect::{self, Target};
use super::pg_socket::{OneSync, Pipeline};
use super::sql::{Done, Kind, Later, Mode, Output, Query, Row, Value, trace};

/// Prepared statements a connection keeps; past this the cache starts again, so statements
/// built at run time cannot grow it without bound.
const STATEMENT_CACHE: usize = 512;

/// A pool of connections to one database.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    // Boxed: a connection moves between this list and its borrower without being copied,
    // and keeps a transaction (`Conn::Postgres`) as small as SQLite's.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<PgConn>>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// Writes whose statements shared one `Sync` ([`PgPool::shared_sync_writes`]).
    coalesced: Arc<AtomicU64>,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("size", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// One connection and the statements prepared on it.
struct PgConn {
    client: Client,
    /// Tells the connection's socket that a write is a transaction's statements.
    pipeline: Arc<Pipeline>,
    /// By SQL text, then by parameter kinds: a hit is found without building a key.
    statements: HashMap<String, Vec<(Vec<Kind>, Prepared)>>,
}

/// A prepared statement and its column names, shared by every row it returns.
#[derive(Clone)]
struct Prepared {
    statement: Statement,
    columns: Arc<[String]>,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke (and, if a
/// statement outside a transaction was cancelled on it, once that statement was answered).
struct Pooled {
    conn: Option<Box<PgConn>>,
    pool: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
    /// A statement outside a transaction is under way: dropped now (its caller cancelled), the
    /// connection may still hold it unsent, and the next borrower's write would carry it. Its
    /// `Sync` would then be one of those a transaction's write shares (`pg_socket` counts them,
    /// but with `worker_threads` > 1 the leftover and part of the next write could add up to
    /// the count announced), and the leftover would run inside that transaction.
    running: bool,
}

impl Pooled {
    fn give_back(pool: &Inner, conn: Box<PgConn>) {
        if !conn.client.is_closed()
            && let Ok(mut idle) = pool.idle.lock()
        {
            idle.push(conn);
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.running {
            Pooled::give_back(&self.pool, conn);
            return;
        }
        // An empty query is answered after whatever was still queued: then the connection is
        // clean. Its permit is held until then. Without a runtime the connection is closed.
        if let (Ok(runtime), Some(permit)) =
            (tokio::runtime::Handle::try_current(), self.permit.take())
        {
            let pool = Arc::clone(&self.pool);
            runtime.spawn(async move {
                if conn.client.batch_execute("").await.is_ok() {
                    Pooled::give_back(&pool, conn);
                }
                drop(permit);
            });
        }
    }
}

impl PgPool {
    /// A pool of up to `size` connections to `url`. One connection is opened now, so a wrong
    /// URL, password or database stops start-up instead of the first request.
    pub async fn connect(
        url: &str,
        size: usize,
        acquire_timeout: Duration,
    ) -> Result<PgPool, Error> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Connection(format!("database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(acquire_timeout);
        }
        let pool = PgPool {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size)),
                acquire_timeout,
                coalesced: Arc::default(),
            }),
        };
        let first = pool.acquire().await?;
        drop(first);
        Ok(pool)
    }

    async fn acquire(&self) -> Result<Pooled, Error> {
        let permit = tokio::time::timeout(
            self.inner.acquire_timeout,
            Arc::clone(&self.inner.permits).acquire_owned(),
        )
        .await
        .map_err(|_| Error::PoolTimedOut)?
        .map_err(|_| Error::PoolClosed)?;
        let reused = loop {
            let next = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
            match next {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.open().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: Arc::clone(&self.inner),
            permit: Some(permit),
            running: false,
        })
    }

    /// Opens a connection to the first configured host that takes it (and, with
    /// `target_session_attrs=read-write`, accepts writes), over the store's own socket
    /// ([`OneSync`]). Unlike tokio-postgres's `connect`, a host whose first address takes the
    /// TCP connection but fails the start-up is left for the next host, not its next address.
    async fn open(&self) -> Result<Box<PgConn>, Error> {
        let config = &self.inner.config;
        let mut last = Error::Connection("no host to connect to".into());
        for target in pg_connect::targets(config).map_err(Error::Connection)? {
            match open_at(config, &target, &self.inner.coalesced).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(?target, error = %e, "PostgreSQL host not taken");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// How many of the transactions' writes so far went out with one `Sync` for all their
    /// statements (`pg_socket`): seen by tests, which cannot see the wire.
    pub fn shared_sync_writes(&self) -> u64 {
        self.inner.coalesced.load(Ordering::Relaxed)
    }

    /// Runs one statement outside a transaction.
    pub async fn run(&self, query: Query<'_>, mode: Mode) -> Result<Output, Error> {
        let mut pooled = self.acquire().await?;
        pooled.running = true;
        let conn = pooled.conn.as_mut().ok_or(Error::PoolClosed)?;
        let mut results = run_pipeline(
            conn,
            &mut Vec::new(),
            &mut false,
            Some((query, mode)),
            Outside,
        )
        .await;
        pooled.running = false;
        results.pop().unwrap_or(Err(Error::PoolClosed))
    }

    /// Runs several statements without parameters (a migration), outside a transaction.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), Error> {
        let pooled = self.acquire().await?;
        let conn = pooled.conn.as_ref().ok_or(Error::PoolClosed)?;
        trace(sql);
        conn.client.batch_execute(sql).await.map_err(pg_error)
    }

    /// Starts a transaction. Nothing is sent yet: `BEGIN` goes out with the first statement.
    pub async fn begin(&self) -> Result<PgTx, Error> {
        Ok(PgTx {
            pooled: Some(self.acquire().await?),
            pending: vec![Step::control("BEGIN")],
            sent: false,
        })
    }
}

/// Whether a pipeline's statements run in a transaction, where they may share one `Sync`
/// (`pg_socket`); outside one each must keep its own (each commits on its own).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Within {
    Transaction,
    Outside,
}
use Within::{Outside, Transaction};

/// Opens a connection at one of the configured hosts.
async fn open_at(
    config: &tokio_postgres::Config,
    target: &Target,
    coalesced: &Arc<AtomicU64>,
) -> Result<Box<PgConn>, Error> {
    let socket = pg_connect::connect(config, target)
        .await
        .map_err(|e| Error::Connection(format!("connecting to PostgreSQL at {target}: {e}")))?;
    let pipeline = Arc::new(Pipeline::counting(Arc::clone(coalesced)));
    let (client, connection) = config
        .connect_raw(OneSync::new(socket, Arc::clone(&pipeline)), NoTls)
        .await
        .map_err(pg_error)?;
    // Start-up is over: from here on the socket may let a transaction's statements share a
    // `Sync`.
    pipeline.activate();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    if config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadWrite {
        let rows = client
            .simple_query("SHOW transaction_read_only")
            .await
            .map_err(pg_error)?;
        let read_only = rows.iter().any(|message| {
            matches!(message, tokio_postgres::SimpleQueryMessage::Row(row)
                if matches!(row.try_get(0), Ok(Some("on"))))
        });
        if read_only {
            return Err(Error::Connection(
                "the server is read-only (target_session_attrs=read-write)".into(),
            ));
        }
    }
    Ok(Box::new(PgConn {
        client,
        pipeline,
        statements: HashMap::new(),
    }))
}

/// Something waiting to be sent on a transaction's connection.
enum Step {
    /// Statements without parameters, by the simple protocol (a migration).
    Simple(String),
    /// A statement whose result nobody waits for now; its rows go to `answer`, if any.
    Deferred {
        sql: String,
        args: Vec<Value>,
        answer: Option<(Mode, tokio::sync::oneshot::Sender<Result<Output, Error>>)>,
    },
}

impl Step {
    /// `BEGIN` or `COMMIT`, by the extended protocol like the statements, so that a
    /// transaction's write can share one `Sync` from its first statement to its last.
    fn control(sql: &str) -> Step {
        Step::Deferred {
            sql: sql.to_owned(),
            args: Vec::new(),
            answer: None,
        }
    }
}

/// An open transaction on one connection.
pub struct PgTx {
    pooled: Option<Pooled>,
    /// Sent with the next statement or the `COMMIT`, in order.
    pending: Vec<Step>,
    /// Whether anything (so `BEGIN`) has gone out: only then is there something to roll back.
    sent: bool,
}

impl fmt::Debug for PgTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTx")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl PgTx {
    /// The connection, the queue and whether anything went out, borrowed apart.
    fn parts(&mut self) -> Result<(&mut PgConn, &mut Vec<Step>, &mut bool), Error> {
        let conn = self
            .pooled
            .as_mut()
            .and_then(|p| p.conn.as_deref_mut())
            .ok_or(Error::PoolClosed)?;
        Ok((conn, &mut self.pending, &mut self.sent))
    }

    /// Whether nothing is queued but, before anything went out, the `BEGIN`.
    fn only_begin_queued(&self) -> bool {
        self.pending.len() <= usize::from(!self.sent)
    }

    /// Queues a statement whose result the caller does not need.
    pub fn defer(&mut self, query: Query<'_>) {
        let (sql, args) = query.into_parts();
        self.pending.push(Step::Deferred {
            sql: sql.to_owned(),
            args,
            answer: None,
        });
    }

    /// Queues a statement whose result the caller reads after the next round trip.
    pub fn later(&mut self, query: Query<'_>, mode: Mode) -> Later {
        let (sql, args) = query.into_parts();
        let (later, answer) = Later::waiting();
        self.pending.push(Step::Deferred {
            sql: sql.to_owned(),
            args,
            answer: Some((mode, answer)),
        });
        later
    }

    /// Queues a write that must change `rows` rows. The database checks the count
    /// (`openvend_expect_rows`, migration 18) and raises SQLSTATE `OV001` otherwise, which
    /// fails the transaction at whichever later statement or `COMMIT` sends it.
    pub fn expect_rows(&mut self, query: Query<'_>, rows: u64) -> Result<(), Error> {
        let (sql, mut args) = query.into_parts();
        let n = args.len();
        let checked = format!(
            "WITH changed AS ({sql} RETURNING 1) \
             SELECT openvend_expect_rows(count(*), ${}, ${}) FROM changed",
            n + 1,
            n + 2
        );
        let rows = i64::try_from(rows).map_err(|_| Error::Protocol(format!("{rows} rows")))?;
        args.push(Value::Int(rows));
        args.push(Value::Text(sql.to_owned()));
        self.pending.push(Step::Deferred {
            sql: checked,
            args,
            answer: None,
        });
        Ok(())
    }

    /// Runs a statement, after everything queued, in one write.
    pub async fn run(&mut self, query: Query<'_>, mode: Mode) -> Result<Output, Error> {
        let (conn, pending, sent) = self.parts()?;
        first_error_or_last(
            run_pipeline(conn, pending, sent, Some((query, mode)), Transaction).await,
        )
    }

    /// Sends what is queued, in one write, and waits for it.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.only_begin_queued() {
            return Ok(()); // nothing queued but perhaps the `BEGIN`, which can wait
        }
        let (conn, pending, sent) = self.parts()?;
        first_error_or_last(run_pipeline(conn, pending, sent, None, Transaction).await).map(|_| ())
    }

    /// Runs several statements without parameters inside the transaction.
    pub async fn execute_batch(&mut self, sql: &str) -> Result<(), Error> {
        self.pending.push(Step::Simple(sql.to_owned()));
        let (conn, pending, sent) = self.parts()?;
        first_error_or_last(run_pipeline(conn, pending, sent, None, Transaction).await).map(|_| ())
    }

    /// Sends what is queued and `COMMIT` in one write. If a queued statement failed, its
    /// error is returned and nothing was committed.
    pub async fn commit(mut self) -> Result<(), Error> {
        if !self.sent && self.only_begin_queued() {
            return Ok(()); // only the `BEGIN` that never went out: nothing to do
        }
        self.pending.push(Step::control("COMMIT"));
        let (conn, pending, sent) = self.parts()?;
        let results = run_pipeline(conn, pending, sent, None, Transaction).await;
        match results.last() {
            // The COMMIT answered: the transaction ended.
            Some(Ok(_)) => self.sent = false,
            // A statement before it failed, so PostgreSQL skipped the COMMIT (`pg_socket`)
            // and the transaction stays open and failed: ended here rather than by the drop.
            // Any other failure (the COMMIT's own, which ends the transaction; a connection
            // that broke) is left to the drop, as before.
            Some(Err(Error::Database {
                code: Some(code), ..
            })) if code.as_str() == SqlState::IN_FAILED_SQL_TRANSACTION.code() => {
                trace("ROLLBACK");
                if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                    self.sent = false;
                }
            }
            _ => {}
        }
        first_error_or_last(results).map(|_| ())
    }

    /// Undoes the transaction.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.pending.clear();
        if self.sent {
            let (conn, _, _) = self.parts()?;
            trace("ROLLBACK");
            conn.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg_error)?;
            self.sent = false;
        }
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        if !self.sent {
            return; // nothing went out; the connection is clean
        }
        // Dropped inside the transaction (an error, a cancelled task): roll back before the
        // connection serves anyone else. Without a runtime the connection is closed instead.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let rolled_back = match pooled.conn.as_ref() {
                        Some(conn) => conn.client.batch_execute("ROLLBACK").await.is_ok(),
                        None => false,
                    };
                    if !rolled_back {
                        drop(pooled.conn.take()); // closed, not handed out again
                    }
                });
            }
            Err(_) => drop(pooled.conn.take()),
        }
    }
}

/// The first error among a pipeline's results (the cause; later statements of a failed
/// transaction only fail because of it), or the last result.
fn first_error_or_last(results: Vec<Result<Output, Error>>) -> Result<Output, Error> {
    let mut last = Ok(Output::Done(Done { rows_affected: 0 }));
    for result in results {
        match result {
            Err(e) => return Err(e),
            ok => last = ok,
        }
    }
    last
}

fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Int => Type::INT8,
        Kind::Real => Type::FLOAT8,
        Kind::Text => Type::TEXT,
        Kind::Blob => Type::BYTEA,
        Kind::Bool => Type::BOOL,
    }
}

/// The statement for `sql` with parameters of these kinds, prepared once per connection.
async fn statement(conn: &mut PgConn, sql: &str, args: &[Value]) -> Result<Prepared, Error> {
    let same_kinds = |kinds: &[Kind]| kinds.iter().copied().eq(args.iter().map(Value::kind));
    if let Some((_, prepared)) = conn
        .statements
        .get(sql)
        .and_then(|variants| variants.iter().find(|(kinds, _)| same_kinds(kinds)))
    {
        return Ok(prepared.clone());
    }
    let kinds: Vec<Kind> = args.iter().map(Value::kind).collect();
    let types: Vec<Type> = kinds.iter().copied().map(pg_type).collect();
    let statement = conn
        .client
        .prepare_typed(sql, &types)
        .await
        .map_err(pg_error)?;
    let columns = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let prepared = Prepared { statement, columns };
    if conn.statements.len() >= STATEMENT_CACHE {
        conn.statements.clear();
    }
    conn.statements
        .entry(sql.to_owned())
        .or_default()
        .push((kinds, prepared.clone()));
    Ok(prepared)
}

/// Sends `pending` and then `last` on one connection, all before waiting for any answer,
/// and returns every result in order. `pending` is emptied, and `sent` set, only once every
/// statement is prepared: a statement that cannot be prepared leaves the queue (and a `BEGIN`
/// still in it) as it was.
async fn run_pipeline(
    conn: &mut PgConn,
    pending: &mut Vec<Step>,
    sent: &mut bool,
    last: Option<(Query<'_>, Mode)>,
    within: Within,
) -> Vec<Result<Output, Error>> {
    // Prepare what this connection has not seen yet (once per statement and connection).
    let mut steps_prepared = Vec::with_capacity(pending.len() + 1);
    for step in pending.iter() {
        steps_prepared.push(match step {
            Step::Simple(_) => None,
            Step::Deferred { sql, args, .. } => match statement(conn, sql, args).await {
                Ok(s) => Some(s),
                Err(e) => return vec![Err(e)],
            },
        });
    }
    let last_statement = match &last {
        Some((query, _)) => match statement(conn, query.sql(), query.args()).await {
            Ok(s) => Some(s),
            Err(e) => return vec![Err(e)],
        },
        None => None,
    };
    let pending = std::mem::take(pending);
    *sent = true;
    let client = &conn.client;
    let mut calls: Vec<BoxFuture<'_, Result<Output, Error>>> =
        Vec::with_capacity(steps_prepared.len() + 1);
    for (step, prepared) in pending.iter().zip(&steps_prepared) {
        calls.push(match (step, prepared) {
            (Step::Deferred { sql, args, answer }, Some(prepared)) => {
                trace(sql);
                match answer {
                    None | Some((Mode::Execute, _)) => {
                        execute(client, &prepared.statement, args).boxed()
                    }
                    Some((mode, _)) => fetch(client, prepared, args, *mode).boxed(),
                }
            }
            (Step::Deferred { .. }, None) => {
                async { Err(Error::Protocol("deferred statement not prepared".into())) }.boxed()
            }
            (Step::Simple(sql), _) => {
                trace(sql);
                async move {
                    client.batch_execute(sql).await.map_err(pg_error)?;
                    Ok(Output::Done(Done { rows_affected: 0 }))
                }
                .boxed()
            }
        });
    }
    if let (Some((query, mode)), Some(prepared)) = (&last, &last_statement) {
        trace(query.sql());
        calls.push(match mode {
            Mode::Execute => execute(client, &prepared.statement, query.args()).boxed(),
            Mode::Optional | Mode::All => fetch(client, prepared, query.args(), *mode).boxed(),
        });
    }
    tracing::trace!(target: "openvend::sql", "-- one round trip: {} statement(s)", calls.len());
    // In a transaction the statements of one write need no `Sync` but the last: the socket
    // drops the others, so PostgreSQL answers the write at once instead of piece by piece.
    let coalesce = within == Transaction && calls.len() > 1;
    if coalesce {
        conn.pipeline.coalesce_next_write(calls.len());
    }
    let mut results = in_order(calls).await;
    if coalesce {
        // Spent by the write; cleared in case nothing was written (every call failed first).
        conn.pipeline.no_coalescing();
    }
    // Rows read later go to their readers; the pipeline keeps only whether each succeeded.
    for (step, result) in pending.into_iter().zip(results.iter_mut()) {
        if let Step::Deferred {
            answer: Some((_, answer)),
            ..
        } = step
        {
            let kept = match result {
                Ok(_) => Ok(Output::Done(Done { rows_affected: 0 })),
                Err(e) => Err(e.clone()),
            };
            let _ = answer.send(std::mem::replace(result, kept));
        }
    }
    results
}

/// Waits for every call, polling them in order each time. A call queues its message when it is
/// first polled, so the messages go out in this order (`join_all` promises no order), and the
/// connection task writes them out together.
async fn in_order(calls: Vec<BoxFuture<'_, Result<Output, Error>>>) -> Vec<Result<Output, Error>> {
    let mut calls: Vec<MaybeDone<_>> = calls.into_iter().map(maybe_done).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for call in calls.iter_mut() {
            done &= std::pin::Pin::new(call).poll(cx).is_ready();
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    calls
        .iter_mut()
        .map(|call| {
            std::pin::Pin::new(call)
                .take_output()
                .unwrap_or(Err(Error::PoolClosed))
        })
        .collect()
}

async fn execute(client: &Client, statement: &Statement, args: &[Value]) -> Result<Output, Error> {
    let rows_affected = client
        .execute_raw(statement, args.iter())
        .await
        .map_err(pg_error)?;
    Ok(Output::Done(Done { rows_affected }))
}

async fn fetch(
    client: &Client,
    prepared: &Prepared,
    args: &[Value],
    mode: Mode,
) -> Result<Output, Error> {
    let rows = client
        .query_raw(&prepared.statement, args.iter())
        .await
        .map_err(pg_error)?;
    futures_util::pin_mut!(rows);
    let mut out = Vec::new();
    // Read to the end even when one row is wanted, so the statement completes.
    while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
        .await
        .map_err(pg_error)?
    {
        if mode == Mode::All || out.is_empty() {
            out.push(from_postgres(&row, &prepared.columns)?);
        }
    }
    Ok(Output::Rows(out))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null(_) => Ok(IsNull::Yes),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Real(r) => r.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
        }
    }

    /// Each statement is prepared with its parameters' own types ([`pg_type`]), so a value
    /// always meets the type it was prepared for.
    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn from_postgres(row: &tokio_postgres::Row, columns: &Arc<[String]>) -> Result<Row, Error> {
    // Column `i` as `T`, NULL as `None`.
    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        row: &'r tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, Error> {
        row.try_get(i).map_err(|e| Error::Decode {
            column: row.columns()[i].name().to_owned(),
            reason: e.to_string(),
        })
    }
    let mut values = Vec::with_capacity(columns.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            get::<i64>(row, i)?.map_or(Value::Null(Kind::Int), Value::Int)
        } else if *ty == Type::INT4 {
            get::<i32>(row, i)?.map_or(Value::Null(Kind::Int), |v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            get::<i16>(row, i)?.map_or(Value::Null(Kind::Int), |v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            get::<bool>(row, i)?.map_or(Value::Null(Kind::Bool), Value::Bool)
        } else if *ty == Type::FLOAT8 {
            get::<f64>(row, i)?.map_or(Value::Null(Kind::Real), Value::Real)
        } else if *ty == Type::FLOAT4 {
            get::<f32>(row, i)?.map_or(Value::Null(Kind::Real), |v| Value::Real(v.into()))
        } else if *ty == Type::BYTEA {
            get::<Vec<u8>>(row, i)?.map_or(Value::Null(Kind::Blob), Value::Blob)
        } else if *ty == Type::VOID {
            Value::Null(Kind::Text)
        } else if [
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::UNKNOWN,
        ]
        .contains(ty)
        {
            get::<String>(row, i)?.map_or(Value::Null(Kind::Text), Value::Text)
        } else {
            return Err(Error::Decode {
                column: column.name().to_owned(),
                reason: format!(
                    "PostgreSQL type {ty} is not read by OpenVend; cast it in the query"
                ),
            });
        };
        values.push(value);
    }
    Ok(Row::new(Arc::clone(columns), values))
}

/// The SQLSTATE `openvend_expect_rows` raises (migration 18).
const ROWS_NOT_AS_EXPECTED: &str = "OV001";

/// A tokio-postgres error as a store error, with the constraint kind from its SQLSTATE.
fn pg_error(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // tokio-postgres says "error connecting to server"; the cause (refused, timed out,
        // reset) is in its source.
        return Error::Connection(crate::error_text::with_causes(&e));
    };
    let code = db.code();
    let kind = if *code == SqlState::UNIQUE_VIOLATION {
        ErrorKind::UniqueViolation
    } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
        ErrorKind::ForeignKeyViolation
    } else if *code == SqlState::NOT_NULL_VIOLATION {
        ErrorKind::NotNullViolation
    } else if *code == SqlState::CHECK_VIOLATION {
        ErrorKind::CheckViolation
    } else if code.code() == ROWS_NOT_AS_EXPECTED {
        ErrorKind::RowsNotAsExpected
    } else {
        ErrorKind::Other
    };
    Error::Database {
        kind,
        message: db.message().to_owned(),
        code: Some(code.code().to_owned()),
    }
}
