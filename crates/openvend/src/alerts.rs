//! The alert webhook: pushes each new entry of the attention list to a URL the deployment
//! names, so a person hears of a refused refund or a jammed machine without watching the
//! operator API.
//!
//! A durable job (`alerts`, one row whatever the number of instances) looks at the lists every
//! `alerts.interval_secs`. Entries it has not delivered go out in POSTs of at most
//! [`PER_POST`]; each POST answered 2xx is recorded in `alerts_sent`, by list and key. A POST
//! that fails records nothing, so nothing is lost: what it carried goes again at the next
//! look. A crash between the answer and the record sends those entries again: receivers
//! deduplicate by `list` and `key` (a key may
//! move from one list to another: a refund not confirmed that Alipay then refuses). Entries that left the lists are forgotten, so the same fault
//! happening again is pushed again. An instance without a webhook (a deployment part-way
//! through a change of settings) keeps the job and the record without sending. A look sends
//! for at most [`SENDING_BUDGET`], well within the job's lease, and carries on at once after.
//!
//! The request: `POST <webhook_url>`, `Content-Type: application/json`,
//! `X-OpenVend-Timestamp: <ms>`, `X-OpenVend-Signature: <hex HMAC-SHA256 of "<ms>.<body>"
//! with the webhook secret>`, body `{"sent_at": ms, "alerts": [{"list", "key", "entry"}]}`;
//! `entry` is the entry as `GET /api/v1/attention` shows it. No redirect is followed. The URL
//! is never logged (a chat bot's hook carries its token in it).

use std::collections::HashSet;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde_json::json;

use crate::config::{AlertSettings, Secret};
use crate::jobs::Next;
use crate::services::Services;
use crate::store::{Db, jobs};

/// The sweep's job kind, and its dedup key: one sweep is queued at a time.
pub const JOB: &str = "alerts";

/// How long the receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Most alerts in one POST (chat bots limit a message's size).
pub const PER_POST: usize = 50;

/// Most entries of each list one look reads: far more than the operator API shows, so what
/// is pushed does not depend on the view's limit.
const LOOKED_AT: i64 = 10_000;

/// How long one look goes on sending: a third of the job's lease, so no other instance takes
/// the job over while a POST is under way (a POST takes at most [`TIMEOUT`]).
pub const SENDING_BUDGET: Duration = Duration::from_millis(crate::jobs::LEASE_MS as u64 / 3);

/// This instance's alert settings.
#[derive(Debug, Clone)]
pub struct Alerts {
    webhook: Option<Webhook>,
    interval_ms: i64,
}

impl Alerts {
    /// From the settings (they are validated at load).
    pub fn from_settings(settings: &AlertSettings) -> anyhow::Result<Alerts> {
        Ok(Alerts {
            webhook: Webhook::from_settings(settings)?,
            interval_ms: i64::try_from(settings.interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        })
    }

    /// Whether a webhook is named.
    pub fn enabled(&self) -> bool {
        self.webhook.is_some()
    }
}

/// Where alerts go, and how they are signed.
#[derive(Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    fn from_settings(settings: &AlertSettings) -> anyhow::Result<Option<Webhook>> {
        let Some((url, secret)) = settings.webhook() else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url.expose())
            .map_err(|e| anyhow::anyhow!("alerts.webhook_url: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Webhook {
            url,
            secret: secret.clone(),
            http,
        }))
    }

    /// The signature of `body` sent at `at` (ms).
    pub fn signature(secret: &[u8], at: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        crate::ids::hex(hmac::sign(&key, format!("{at}.{body}").as_bytes()).as_ref())
    }

    async fn post(&self, body: String, at: i64) -> Result<(), Refused> {
        let signature = Self::signature(self.secret.expose().as_bytes(), at, &body);
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-OpenVend-Timestamp", at.to_string())
            .header("X-OpenVend-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Refused::Unreachable(crate::error_text::with_causes(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Refused::Status(status))
        }
    }
}

/// Why a POST delivered nothing.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the alert webhook could not be reached: {0}")]
    Unreachable(String),
    #[error("the alert webhook answered {0}")]
    Status(reqwest::StatusCode),
}

impl Refused {
    /// A refusal of these alerts in particular (too large, malformed for the receiver): the
    /// others are still sent. Not one that says the settings are wrong, nor one that asks to
    /// slow down.
    fn of_this_request(&self) -> bool {
        matches!(self, Refused::Status(s) if s.is_client_error() && !matches!(s.as_u16(), 401 | 403 | 408 | 429))
    }
}

/// Queues the sweep, due now, unless it is queued already (another instance, a restart).
pub async fn schedule(db: &Db, now: i64) -> Result<(), crate::store::StoreError> {
    jobs::enqueue(&db.pool, JOB, JOB, "{}", now, now).await?;
    Ok(())
}

/// How a look ended.
enum Look {
    /// Everything new was tried; the next look is after the interval.
    Done,
    /// The sending budget ran out with alerts left: look again at once.
    MoreToSend,
}

/// One sweep of the job: a look, then the next after the interval. The job keeps its pace
/// whatever fails (it is logged and tried again at the next look), rather than the queue's
/// growing back-off.
pub async fn sweep(svc: &Services) -> anyhow::Result<Next> {
    let interval = svc.alerts.interval_ms;
    match look(svc).await {
        Ok(Look::Done) => Ok(Next::At(svc.now().saturating_add(interval))),
        Ok(Look::MoreToSend) => Ok(Next::At(svc.now())),
        Err(e) => {
            tracing::warn!(error = %e, "alert sweep failed; trying again at the next look");
            Ok(Next::At(svc.now().saturating_add(interval)))
        }
    }
}

/// Forgets what left the lists, then pushes what is new on them.
async fn look(svc: &Services) -> anyhow::Result<Look> {
    let lists = crate::attention::lists(&svc.db.pool, svc.now(), LOOKED_AT).await?;
    let sent: HashSet<(String, String)> =
        crate::store::query("SELECT list, entry_key FROM alerts_sent")
            .fetch_all(&svc.db.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, crate::store::Error>>()?;
    let mut listed = HashSet::new();
    // A list read to its limit may have more: what it did not show has not left it.
    let mut complete = HashSet::new();
    let mut fresh = Vec::new();
    for list in &lists {
        if (list.entries.len() as i64) < LOOKED_AT {
            complete.insert(list.name);
        }
        for entry in &list.entries {
            let id = (list.name.to_owned(), entry.key.clone());
            if !sent.contains(&id) {
                fresh.push((id.clone(), &entry.body));
            }
            listed.insert(id);
        }
    }
    let gone: Vec<_> = sent
        .iter()
        .filter(|id| complete.contains(id.0.as_str()) && !listed.contains(*id))
        .collect();
    if !gone.is_empty() {
        let mut tx = svc.db.begin().await?;
        for (list, key) in gone {
            crate::store::query("DELETE FROM alerts_sent WHERE list = $1 AND entry_key = $2")
                .bind(list)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let Some(hook) = &svc.alerts.webhook else {
        return Ok(Look::Done);
    };
    let started = tokio::time::Instant::now();
    for batch in fresh.chunks(PER_POST) {
        if started.elapsed() >= SENDING_BUDGET {
            return Ok(Look::MoreToSend);
        }
        let at = svc.now();
        let alerts: Vec<_> = batch
            .iter()
            .map(|((list, key), entry)| json!({ "list": list, "key": key, "entry": entry }))
            .collect();
        let body = json!({ "sent_at": at, "alerts": alerts }).to_string();
        match hook.post(body, at).await {
            Ok(()) => {}
            Err(refused) if refused.of_this_request() => {
                // Tried again at every look; the alerts after them still go.
                tracing::error!(error = %refused, alerts = batch.len(), "the alert webhook refuses these alerts; they need a person");
                continue;
            }
            Err(refused) => {
                match refused {
                    Refused::Status(_) => tracing::error!(
                        error = %refused,
                        "alerts not delivered; check alerts.webhook_url and alerts.webhook_secret"
                    ),
                    Refused::Unreachable(_) => {
                        tracing::warn!(error = %refused, "alerts not delivered; trying again at the next look")
                    }
                }
                return Ok(Look::Done);
            }
        }
        let mut tx = svc.db.begin().await?;
        for ((list, key), _) in batch {
            crate::store::query(
                "INSERT INTO alerts_sent (list, entry_key, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (list, entry_key) DO NOTHING",
            )
            .bind(list)
            .bind(key)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(alerts = batch.len(), "alerts delivered to the webhook");
    }
    Ok(Look::Done)
}
