//! The durable job queue: typed rows with a dedup key, a due time and a lease.
//!
//! A worker claims one due job by setting its lease in a single statement; on PostgreSQL the
//! candidate row is picked `FOR UPDATE SKIP LOCKED`, so several instances share the queue
//! without blocking one another. A job is deleted when done or rescheduled with back-off when
//! it fails; a worker that dies leaves a lease that simply expires. Jobs must be idempotent:
//! one may run again after a crash between its effect and its deletion.

use super::{Backend, Db, StoreError};

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Row id: tells this job from a later one under the same key (on SQLite a random
    /// number, see migration 13).
    pub id: i64,
    /// What to do (e.g. `resolve_payment`).
    pub kind: String,
    /// Unique key; a second enqueue with the same key is ignored.
    pub dedup_key: String,
    /// JSON arguments.
    pub payload: String,
    /// Runs since the job last asked to run again ([`poll_later`]), this one included:
    /// what its back-off after a failure counts.
    pub attempts: i64,
}

/// Adds a job unless one with the same dedup key exists. Returns true if added.
pub async fn enqueue<E>(
    executor: E,
    kind: &str,
    dedup_key: &str,
    payload: &str,
    run_at: i64,
    now: i64,
) -> Result<bool, StoreError>
where
    E: crate::store::Executor,
{
    let done = insert_job(kind, dedup_key, payload, run_at, now)
        .execute(executor)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// [`enqueue`] for a caller that does not need to know whether the job was new: in a
/// PostgreSQL transaction it goes out with the next statement (see
/// [`Query::defer`](crate::store::sql::Query::defer)).
pub async fn enqueue_deferred<E>(
    executor: E,
    kind: &str,
    dedup_key: &str,
    payload: &str,
    run_at: i64,
    now: i64,
) -> Result<(), StoreError>
where
    E: crate::store::Executor,
{
    insert_job(kind, dedup_key, payload, run_at, now)
        .defer(executor)
        .await?;
    Ok(())
}

fn insert_job<'q>(
    kind: &'q str,
    dedup_key: &'q str,
    payload: &'q str,
    run_at: i64,
    now: i64,
) -> crate::store::sql::Query<'static> {
    crate::store::query(
        "INSERT INTO jobs (kind, dedup_key, payload, attempts, run_at, created_at) VALUES ($1, $2, $3, 0, $4, $5) \
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(kind)
    .bind(dedup_key)
    .bind(payload)
    .bind(run_at)
    .bind(now)
}

/// Queues a job already claimed for `lease_ms` by the caller, which runs it at once in this
/// process: one statement instead of an insert and a claim. For a new key only: one taken
/// already fails the statement, and with it the caller's transaction. In a transaction the
/// job is read back after its commit ([`Claimed::job`]), the statement going out with the
/// commit. If the caller cannot run it after all, [`release`] it.
pub async fn enqueue_claimed<E>(
    executor: E,
    kind: &str,
    dedup_key: &str,
    payload: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Claimed, StoreError>
where
    E: crate::store::Executor,
{
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO jobs (kind, dedup_key, payload, attempts, run_at, locked_until, created_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $4) RETURNING {JOB_COLUMNS}"
        )
    });
    let later = crate::store::query(&SQL)
        .bind(kind)
        .bind(dedup_key)
        .bind(payload)
        .bind(now)
        .bind(now + lease_ms)
        .fetch_later(executor)
        .await?;
    Ok(Claimed(later))
}

/// A job [`enqueue_claimed`] queued, readable once the statement ran (after the commit of
/// the transaction it was queued in).
#[derive(Debug)]
pub struct Claimed(crate::store::Later);

impl Claimed {
    /// The job, claimed by this process.
    pub fn job(self) -> Result<Option<Job>, StoreError> {
        Ok(self.0.first()?.as_ref().map(job_from_row).transpose()?)
    }

    /// [`Claimed::job`] after its transaction committed: the job to run now, if any. An error
    /// is logged: the job's row is stored, and runs from the queue when its lease ends.
    pub fn committed(self) -> Option<Job> {
        match self.job() {
            Ok(Some(job)) => Some(job),
            Ok(None) => {
                tracing::error!(
                    "a job queued claimed was not read back; it runs when its lease ends"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read a job queued claimed; it runs when its lease ends");
                None
            }
        }
    }
}

/// Gives up the lease of a job this process claimed but will not run now: the next sweep
/// runs it (matched like [`complete`]).
pub async fn release(db: &Db, job: &Job) -> Result<(), StoreError> {
    crate::store::query(
        "UPDATE jobs SET locked_until = NULL, attempts = attempts - 1 WHERE id = $1 AND dedup_key = $2",
    )
    .bind(job.id)
    .bind(&job.dedup_key)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Makes the job under `dedup_key` due now, queueing it if there is none (e.g. a buyer's page
/// asks for an order's payment to be checked at once). A job being run keeps its lease and
/// the next run it asks for. True when a job was queued or made due.
pub async fn enqueue_or_run_now<E>(
    executor: E,
    kind: &str,
    dedup_key: &str,
    payload: &str,
    now: i64,
) -> Result<bool, StoreError>
where
    E: crate::store::Executor,
{
    let done = crate::store::query(
        "INSERT INTO jobs (kind, dedup_key, payload, attempts, run_at, created_at) VALUES ($1, $2, $3, 0, $4, $4) \
         ON CONFLICT (dedup_key) DO UPDATE SET run_at = excluded.run_at \
         WHERE jobs.run_at > excluded.run_at AND (jobs.locked_until IS NULL OR jobs.locked_until < excluded.run_at)",
    )
    .bind(kind)
    .bind(dedup_key)
    .bind(payload)
    .bind(now)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims one due job for `lease_ms`, or `None` when nothing is due.
pub async fn claim(db: &Db, now: i64, lease_ms: i64) -> Result<Option<Job>, StoreError> {
    Ok(claim_due(db, now, lease_ms, 1).await?.pop())
}

/// Claims up to `limit` due jobs for `lease_ms`, oldest due first, in one statement.
pub async fn claim_due(
    db: &Db,
    now: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    // Picked by key: on SQLite the key is the table's own (see migration 13).
    let pick = match db.backend {
        Backend::Postgres => {
            "SELECT dedup_key FROM jobs WHERE run_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
             ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        }
        // One writer at a time: the UPDATE with its sub-select is atomic.
        Backend::Sqlite => {
            "SELECT dedup_key FROM jobs WHERE run_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
             ORDER BY run_at, id LIMIT $3"
        }
    };
    let sql = format!(
        "UPDATE jobs SET locked_until = $1, attempts = attempts + 1 WHERE dedup_key IN ({pick}) \
         RETURNING {JOB_COLUMNS}, run_at"
    );
    let rows = crate::store::query(&sql)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&db.pool)
        .await?;
    let mut jobs = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(5)?, job_from_row(r)?)))
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    // RETURNING does not promise an order: oldest due first, as picked.
    jobs.sort_by_key(|(run_at, j)| (*run_at, j.id));
    Ok(jobs.into_iter().map(|(_, j)| j).collect())
}

/// Claims the job with this dedup key if it is due and nobody holds it: the in-process
/// shortcut for a job just queued, so it runs at once without a sweep of the queue. Another
/// worker or instance that got there first wins; then this answers `None`.
pub async fn claim_key(
    db: &Db,
    dedup_key: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET locked_until = $1, attempts = attempts + 1 \
         WHERE dedup_key = $3 AND run_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
         RETURNING {JOB_COLUMNS}"
    );
    let row = crate::store::query(&sql)
        .bind(now + lease_ms)
        .bind(now)
        .bind(dedup_key)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.as_ref().map(job_from_row).transpose()?)
}

/// Drops a waiting job that has nothing left to do (e.g. the payment poll of an order a
/// notification just marked paid), in the caller's transaction. A run in progress finds its
/// row gone, which changes nothing: every job checks the state it acts on.
pub async fn cancel<E>(executor: E, dedup_key: &str) -> Result<(), StoreError>
where
    E: crate::store::Executor,
{
    crate::store::query("DELETE FROM jobs WHERE dedup_key = $1")
        .bind(dedup_key)
        .defer(executor)
        .await?;
    Ok(())
}

const JOB_COLUMNS: &str = "id, kind, dedup_key, payload, attempts";

fn job_from_row(r: &crate::store::Row) -> Result<Job, crate::store::Error> {
    Ok(Job {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        dedup_key: r.try_get(2)?,
        payload: r.try_get(3)?,
        attempts: r
            .try_get::<i64, _>(4)
            .or_else(|_| r.try_get::<i32, _>(4).map(i64::from))?,
    })
}

/// Removes a finished job. Matched by id *and* dedup key: a job may have deleted its own row
/// (the payment poll ends in the transaction that records the payment), and a new job may
/// have been queued under the same key since: the id tells them apart.
pub async fn complete(db: &Db, job: &Job) -> Result<(), StoreError> {
    complete_in(&db.pool, job).await
}

/// [`complete`] in the caller's transaction: a job whose last effect is a transaction ends
/// with it, one commit instead of two.
pub async fn complete_in<E: crate::store::Executor>(conn: E, job: &Job) -> Result<(), StoreError> {
    crate::store::query("DELETE FROM jobs WHERE id = $1 AND dedup_key = $2")
        .bind(job.id)
        .bind(&job.dedup_key)
        .defer(conn)
        .await?;
    Ok(())
}

/// Releases a failed job to run again at `run_at`, recording why it failed (matched like
/// [`complete`]).
pub async fn retry_later(db: &Db, job: &Job, error: &str, run_at: i64) -> Result<(), StoreError> {
    crate::store::query(
        "UPDATE jobs SET locked_until = NULL, run_at = $2, last_error = $3 WHERE id = $1 AND dedup_key = $4",
    )
    .bind(job.id)
    .bind(run_at)
    .bind(error)
    .bind(&job.dedup_key)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Releases a job that asked to run again at `run_at` (the next poll): that is no failure,
/// so its count of attempts starts again. A job that polled many times and then failed once
/// waits a second, not the back-off's cap.
pub async fn poll_later(db: &Db, job: &Job, run_at: i64) -> Result<(), StoreError> {
    crate::store::query(
        "UPDATE jobs SET locked_until = NULL, run_at = $2, last_error = '', attempts = 0 \
         WHERE id = $1 AND dedup_key = $3",
    )
    .bind(job.id)
    .bind(run_at)
    .bind(&job.dedup_key)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Exponential back-off for attempt `n` (1-based): 1 s, 2 s, 4 s … capped at 10 minutes.
pub fn backoff_ms(attempt: i64) -> i64 {
    let exp = attempt.clamp(1, 20) - 1;
    (1_000i64 << exp).min(600_000)
}

/// Jobs waiting (due or not).
pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let row = crate::store::query("SELECT COUNT(*) FROM jobs")
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get(0)?)
}

/// When the next job becomes due (unleased jobs only), if any.
pub async fn next_run_at(db: &Db) -> Result<Option<i64>, StoreError> {
    let row = crate::store::query("SELECT MIN(CASE WHEN locked_until IS NULL OR locked_until < run_at THEN run_at ELSE locked_until END) AS at FROM jobs")
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("at")?)
}
