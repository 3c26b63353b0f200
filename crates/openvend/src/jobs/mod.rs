//! The job worker: claims due jobs from the store and runs them, one at a time per worker.
//!
//! Each job kind is an idempotent function of its payload and the store; it answers
//! [`Next::Done`] (the row is deleted) or [`Next::At`] (run again later, e.g. the next poll).
//! An error reschedules with exponential back-off. Several instances on PostgreSQL share the
//! queue safely (`SKIP LOCKED`); a crashed worker's lease expires and another picks the job up.

pub mod device_event;
pub mod dispense;
pub mod payment;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::services::Services;
use crate::store::jobs::{self, Job};

/// What a job wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Finished; delete it.
    Done,
    /// Run again at this time (ms).
    At(i64),
}

/// How long a claimed job is reserved for its worker.
const LEASE_MS: i64 = 60_000;

/// Runs one due job, if any. Returns true when it ran one.
pub async fn run_one(svc: &Services) -> anyhow::Result<bool> {
    let now = svc.now();
    let Some(job) = jobs::claim(&svc.db, now, LEASE_MS).await? else {
        return Ok(false);
    };
    // There may be more due: wake another worker while this one runs (a wake-up that finds
    // nothing costs one query; a burst is worked in parallel).
    svc.jobs_ready.notify_one();
    let span = tracing::info_span!("job", kind = %job.kind, id = job.id, attempt = job.attempts);
    let _guard = span.enter();
    match dispatch(svc, &job).await {
        Ok(Next::Done) => jobs::complete(&svc.db, job.id).await?,
        Ok(Next::At(at)) => jobs::retry_later(&svc.db, job.id, "", at).await?,
        Err(e) => {
            let at = svc.now() + jobs::backoff_ms(job.attempts);
            tracing::warn!(error = %e, "job failed; will retry");
            jobs::retry_later(&svc.db, job.id, &e.to_string(), at).await?;
        }
    }
    Ok(true)
}

async fn dispatch(svc: &Services, job: &Job) -> anyhow::Result<Next> {
    let payload: serde_json::Value = serde_json::from_str(&job.payload)?;
    let id_of = |name: &str| payload.get(name).and_then(serde_json::Value::as_i64);
    match (job.kind.as_str(), id_of("order_id"), id_of("refund_id")) {
        ("resolve_payment", Some(id), _) => payment::resolve(svc, id).await,
        ("refund", _, Some(id)) => crate::pay::refund::run(svc, id).await,
        ("dispense", Some(id), _) => dispense::run(svc, id).await,
        ("device_event", _, _) => {
            let machine_id = id_of("machine_id");
            let msg_id = payload.get("msg_id").and_then(serde_json::Value::as_str);
            match (machine_id, msg_id) {
                (Some(m), Some(msg)) => device_event::run(svc, m, msg).await,
                _ => anyhow::bail!("device_event job without machine_id and msg_id"),
            }
        }
        // A job this version does not know (written by a newer one): leave it for that one,
        // visible to operators.
        (kind, _, _) => {
            tracing::warn!(kind, "no runner for this job kind");
            Ok(Next::At(svc.now() + 60_000))
        }
    }
}

/// Longest a worker sleeps without looking at the queue (jobs written by another instance,
/// or a clock moved by a test, are seen within this).
const MAX_IDLE: Duration = Duration::from_secs(1);

/// Runs jobs until shut down: drains what is due, then sleeps until the next job is due (at
/// most [`MAX_IDLE`]) or until woken because a job was queued or claimed.
pub async fn run_worker(svc: Arc<Services>, shutdown: CancellationToken) {
    loop {
        let idle = match run_one(&svc).await {
            Ok(true) => continue,
            Ok(false) => match jobs::next_run_at(&svc.db).await {
                Ok(Some(at)) => {
                    Duration::from_millis(u64::try_from(at.saturating_sub(svc.now())).unwrap_or(0))
                        .clamp(Duration::from_millis(5), MAX_IDLE)
                }
                Ok(None) => MAX_IDLE,
                Err(e) => {
                    tracing::error!(error = %e, "job queue unavailable");
                    MAX_IDLE
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "job queue unavailable");
                MAX_IDLE
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = svc.jobs_ready.notified() => {},
            _ = tokio::time::sleep(idle) => {},
        }
    }
}
