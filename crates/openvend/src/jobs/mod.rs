//! The job dispatcher: runs due jobs from the store, several at a time.
//!
//! Each job kind is an idempotent function of its payload and the store; it answers
//! [`Next::Done`] (the row is deleted), [`Next::Completed`] (its own last transaction deleted it)
//! or [`Next::At`] (run again later, e.g. the next poll).
//! An error reschedules with exponential back-off, counted from the job's last `Next::At`.
//! Several instances on PostgreSQL share the queue safely (`SKIP LOCKED`); a crashed worker's
//! lease expires and another picks the job up.
//!
//! Jobs reach a worker two ways. A job queued by this process is *hinted* by its dedup key
//! once its transaction commits ([`JobHints`]): the dispatcher claims that one row and runs it
//! at once, so the hot path of a sale never scans the queue. A job queued already claimed
//! (`store::jobs::enqueue_claimed`, the device events) is hinted as it is and run without a
//! claim; if its hint is dropped its lease is given back. Everything else (jobs due later,
//! jobs of other instances, hints lost to a full channel or a crash) is found by a sweep that
//! claims due jobs in batches when the next one is due, at least once a second.
//!
//! An order's waits (the payment poll, the dispense watch) are not job rows until they come:
//! the order row holds when ([`watches`]), and the sweep queues the job of each order whose
//! watch has come before it claims.

pub mod device_event;
pub mod dispense;
pub mod payment;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::services::Services;
use crate::store::jobs::{self, Job};
use crate::store::watches;

/// What a job wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Finished; delete it.
    Done,
    /// Finished, and already deleted in the job's own last transaction.
    Completed,
    /// Run again at this time (ms).
    At(i64),
}

/// How long a claimed job is reserved for its worker.
pub const LEASE_MS: i64 = 60_000;

/// Runs a claimed job and records what it wants next.
async fn run_claimed(svc: &Services, job: Job) {
    let span = tracing::info_span!("job", kind = %job.kind, id = job.id, attempt = job.attempts);
    async {
        let recorded = match dispatch(svc, &job).await {
            Ok(Next::Done) => jobs::complete(&svc.db, &job).await,
            Ok(Next::Completed) => Ok(()),
            Ok(Next::At(at)) => {
                let recorded = jobs::poll_later(&svc.db, &job, at).await;
                wake_if_soon(svc, at);
                recorded
            }
            Err(e) => {
                let at = svc.now() + jobs::backoff_ms(job.attempts);
                tracing::warn!(error = %e, "job failed; will retry");
                let recorded = jobs::retry_later(&svc.db, &job, &e.to_string(), at).await;
                wake_if_soon(svc, at);
                recorded
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the job is run again: jobs are idempotent.
            tracing::error!(error = %e, "could not record a job's outcome");
        }
    }
    .instrument(span)
    .await
}

/// A job rescheduled to run within the sweep's longest idle period could wait for the sweep
/// after it; a sweep now sees it and sleeps until it is due instead.
fn wake_if_soon(svc: &Services, at: i64) {
    let idle_ms = i64::try_from(MAX_IDLE.as_millis()).unwrap_or(i64::MAX);
    if at.saturating_sub(svc.now()) < idle_ms {
        svc.jobs_ready.notify_one();
    }
}

async fn dispatch(svc: &Services, job: &Job) -> anyhow::Result<Next> {
    let payload: serde_json::Value = serde_json::from_str(&job.payload)?;
    let id_of = |name: &str| payload.get(name).and_then(serde_json::Value::as_i64);
    match (job.kind.as_str(), id_of("order_id"), id_of("refund_id")) {
        ("resolve_payment", Some(id), _) => payment::resolve(svc, id).await,
        ("refund", _, Some(id)) => crate::pay::refund::run(svc, id).await,
        ("dispense", Some(id), _) => dispense::run(svc, id).await,
        (crate::pay::sale::PRECREATE_JOB, _, _) => {
            let p: crate::pay::sale::PrecreateJob = serde_json::from_value(payload)?;
            crate::pay::sale::run_precreate(svc, job, &p).await
        }
        ("device_event", _, _) => {
            let text = |name: &str| payload.get(name).and_then(serde_json::Value::as_str);
            let machine_id = id_of("machine_id");
            match (machine_id, text("msg_id")) {
                (Some(m), Some(msg)) => {
                    let carried = match (text("machine"), text("kind"), text("body")) {
                        (Some(machine), Some(kind), Some(body)) => Some(device_event::Stored {
                            machine,
                            kind,
                            body,
                        }),
                        // Queued by an earlier version: the job reads the event back.
                        _ => None,
                    };
                    device_event::run(svc, m, msg, carried).await
                }
                _ => anyhow::bail!("device_event job without machine_id and msg_id"),
            }
        }
        (crate::alerts::JOB, _, _) => crate::alerts::sweep(svc).await,
        // A job this version does not know (written by a newer one): leave it for that one,
        // its reason recorded for operators. A failure, not a poll, so its count of attempts
        // (which a newer runner may read to tell a re-run) is kept.
        (kind, _, _) => anyhow::bail!("no runner for job kind {kind} in this version"),
    }
}

/// Longest the dispatcher goes without sweeping the queue (jobs written by another
/// instance, or a clock moved by a test, are seen within this).
const MAX_IDLE: Duration = Duration::from_secs(1);

/// Most order watches turned into jobs at one sweep ([`watches::queue_due`]); more wait for
/// the next sweep, which comes at once while jobs are due.
const WATCHES_PER_SWEEP: usize = 500;

/// Shortest pause between sweeps, in ms: a queue with many jobs due at different times is
/// swept in rounds instead of once per job.
const MIN_SWEEP_GAP_MS: i64 = 20;

/// A job to run now: by dedup key, or already claimed.
#[derive(Debug)]
enum Hint {
    Key(String),
    Claimed(Job),
}

/// The in-process queue of jobs just committed.
#[derive(Debug)]
pub struct JobHints {
    tx: tokio::sync::mpsc::Sender<Hint>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Hint>>>,
}

impl JobHints {
    /// Hints beyond this many waiting are dropped; the sweep finds their jobs.
    const CAPACITY: usize = 4096;

    /// An empty queue.
    pub fn new() -> JobHints {
        let (tx, rx) = tokio::sync::mpsc::channel(Self::CAPACITY);
        JobHints {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Asks for the job with this dedup key to run now. Call it after the transaction that
    /// queued the job has committed. Returns false when the hint was dropped (the sweep will
    /// still run the job).
    pub fn run_soon(&self, dedup_key: String) -> bool {
        self.tx.try_send(Hint::Key(dedup_key)).is_ok()
    }

    /// Asks for a job this process has claimed to run now; hands it back when the hint was
    /// dropped (the caller releases its lease).
    pub fn run_claimed(&self, job: Job) -> Result<(), Job> {
        let back = job.clone();
        self.tx.try_send(Hint::Claimed(job)).map_err(|_| back)
    }

    fn take_receiver(&self) -> Option<tokio::sync::mpsc::Receiver<Hint>> {
        self.rx.lock().ok().and_then(|mut rx| rx.take())
    }
}

impl Default for JobHints {
    fn default() -> Self {
        JobHints::new()
    }
}

/// Runs jobs until shut down, at most `workers` at once: hinted jobs as they come, due jobs
/// at each sweep. On shutdown it waits for the jobs in progress to finish.
pub async fn run_dispatcher(svc: Arc<Services>, workers: usize, shutdown: CancellationToken) {
    let Some(mut hints) = svc.job_hints.take_receiver() else {
        tracing::error!("a second job dispatcher was started; only the first runs jobs");
        return;
    };
    let workers = workers.max(1);
    let permits = Arc::new(Semaphore::new(workers));
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(hint) = hints.recv() => {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match hint {
                        Hint::Claimed(job) => run_claimed(&svc, job).await,
                        Hint::Key(key) => match jobs::claim_key(&svc.db, &key, svc.now(), LEASE_MS).await {
                            Ok(Some(job)) => run_claimed(&svc, job).await,
                            // Taken by a sweep or another instance, or not due: nothing to do here.
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, job = %key, "could not claim a hinted job; the sweep will"),
                        },
                    }
                });
                continue;
            }
            _ = svc.jobs_ready.notified() => {}
            _ = tokio::time::sleep_until(next_sweep) => {}
        }
        next_sweep = sweep(&svc, &permits).await;
    }
    // Let the jobs in progress record their outcome.
    let all = u32::try_from(workers).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Claims as many due jobs as there are free workers and starts them; answers when to sweep
/// next.
async fn sweep(svc: &Arc<Services>, permits: &Arc<Semaphore>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let soon = now + Duration::from_millis(MIN_SWEEP_GAP_MS as u64);
    let free = permits.available_permits();
    if free == 0 {
        return soon;
    }
    // Orders whose wait has come get their job first, to be claimed with the rest.
    let watches_queued = match watches::queue_due(&svc.db, svc.now(), WATCHES_PER_SWEEP).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "could not queue the jobs of orders whose watch has come");
            false
        }
    };
    let claimed = match jobs::claim_due(&svc.db, svc.now(), LEASE_MS, free).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!(error = %e, "job queue unavailable");
            return now + MAX_IDLE;
        }
    };
    let full = claimed.len() == free;
    for job in claimed {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Only this task takes permits between the count and here; cannot happen.
            break;
        };
        let svc = svc.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_claimed(&svc, job).await;
        });
    }
    if full {
        // More may be due: look again as soon as workers free up.
        return soon;
    }
    // A watch that could not be queued is not waited for: it would wake the sweep at once,
    // again and again; the next sweep (at the latest the longest idle away) tries again.
    let watch = if watches_queued {
        watches::next_due(&svc.db).await
    } else {
        Ok(None)
    };
    let next = match (jobs::next_run_at(&svc.db).await, watch) {
        (Ok(job), Ok(watch)) => Ok(job.into_iter().chain(watch).min()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match next {
        Ok(Some(at)) => {
            let wait = u64::try_from(at.saturating_sub(svc.now())).unwrap_or(0);
            now + Duration::from_millis(wait)
                .clamp(Duration::from_millis(MIN_SWEEP_GAP_MS as u64), MAX_IDLE)
        }
        Ok(None) => now + MAX_IDLE,
        Err(e) => {
            tracing::error!(error = %e, "job queue unavailable");
            now + MAX_IDLE
        }
    }
}
