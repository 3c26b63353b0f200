//! What request handlers and jobs share: the store, the Alipay client, the facts about
//! OpenVend's Alipay app and the device channel. Built once by `App::build`, passed around as `Arc<Services>`.

use alipay::{Client, PublicKey};

use crate::store::Db;

/// Shared services.
#[derive(Debug)]
pub struct Services {
    /// The store.
    pub db: Db,
    /// The Alipay client.
    pub alipay: Client,
    /// Alipay's public key, for notifications.
    pub alipay_key: PublicKey,
    /// OpenVend's Alipay app id (notifications must name it).
    pub app_id: String,
    /// The operator API's bearer token.
    pub api_token: crate::config::Secret,
    /// The timings sales are opened with (payment window, resolver's polls, offline window);
    /// the device channel holds the same.
    pub sale_terms: crate::pay::checkout::SaleTerms,
    /// The clock every business time is read from (shared with the device channel).
    pub clock: std::sync::Arc<Clock>,
    /// Asks the job dispatcher to sweep the queue now (a job was made due, or the clock moved).
    pub jobs_ready: tokio::sync::Notify,
    /// Jobs this process just queued, to run at once.
    pub job_hints: crate::jobs::JobHints,
    /// Commands to machines and their acknowledgements.
    pub device: crate::device::DeviceChannel,
    /// Device timings.
    pub device_settings: crate::config::DeviceSettings,
    /// The MQTT broker machines connect to, as `mqtt://host:port`.
    pub mqtt_url: String,
    /// The public base URL (machines' H5 links).
    pub public_url: String,
    /// Where what needs a person is pushed, when the deployment names a webhook.
    pub alerts: crate::alerts::Alerts,
}

impl Services {
    /// Now on the service clock, in ms since the epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Runs a job this process queued already claimed (`jobs::enqueue_claimed`) now; call it
    /// once its transaction has committed. If the hint cannot be taken, the job's lease is
    /// given back and the queue swept.
    pub fn run_claimed(self: &std::sync::Arc<Self>, job: crate::store::jobs::Job) {
        if let Err(job) = self.job_hints.run_claimed(job) {
            let svc = self.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::store::jobs::release(&svc.db, &job).await {
                    tracing::warn!(error = %e, job = %job.dedup_key, "could not release a job; its lease will expire");
                }
                svc.jobs_ready.notify_one();
            });
        }
    }

    /// Runs the job with this dedup key now; call it once the transaction that queued (or
    /// made due) the job has committed. If the hint cannot be taken, the queue is swept.
    pub fn run_soon(&self, dedup_key: String) {
        if !self.job_hints.run_soon(dedup_key) {
            self.jobs_ready.notify_one();
        }
    }
}

/// System time plus an offset tests can move forward, so timeouts run without waiting.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl Clock {
    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.offset_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl crate::device::Clock for Clock {
    fn now_ms(&self) -> i64 {
        Clock::now_ms(self)
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
