//! The alert webhook: pushes each new entry of the attention list to a URL the deployment
//! names, so a person hears of a refused refund or a jammed machine without watching the
//! operator API.
//!
//! A durable job (`alerts`, one row whatever the number of instances) looks at the lists every
//! `alerts.interval_secs`. Entries it has not delivered go out in one POST; once the receiver
//! answers 2xx they are recorded in `alerts_sent`, by list and key. A failed POST is retried
//! with the job queue's back-off, and nothing is recorded, so nothing is lost. A crash between
//! the answer and the record sends those entries again: receivers deduplicate by `key`.
//! Entries that left the lists are forgotten, so the same fault happening again is pushed
//! again.
//!
//! The request: `POST <webhook_url>`, `Content-Type: application/json`,
//! `X-OpenVend-Timestamp: <ms>`, `X-OpenVend-Signature: <hex HMAC-SHA256 of "<ms>.<body>"
//! with the webhook secret>`, body `{"sent_at": ms, "alerts": [{"list", "key", "entry"}]}`;
//! `entry` is the entry as `GET /api/v1/attention` shows it. No redirect is followed.

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

/// Where alerts go, and how they are signed.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    interval_ms: i64,
    http: reqwest::Client,
}

impl Webhook {
    /// The webhook the settings name (they are validated at load), or none.
    pub fn from_settings(settings: &AlertSettings) -> anyhow::Result<Option<Webhook>> {
        let (Some(url), Some(secret)) = (&settings.webhook_url, &settings.webhook_secret) else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("alerts.webhook_url {url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Webhook {
            url,
            secret: secret.clone(),
            interval_ms: i64::try_from(settings.interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            http,
        }))
    }

    /// The signature of `body` sent at `at` (ms).
    pub fn signature(secret: &[u8], at: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        crate::ids::hex(hmac::sign(&key, format!("{at}.{body}").as_bytes()).as_ref())
    }

    async fn post(&self, body: String, at: i64) -> anyhow::Result<()> {
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
            .map_err(|e| anyhow::anyhow!("alert webhook unreachable: {e}"))?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "alert webhook answered {status}; the alerts will be sent again"
        );
        Ok(())
    }
}

/// Queues the sweep, due now, unless it is queued already (another instance, a restart).
pub async fn schedule(db: &Db, now: i64) -> Result<(), crate::store::StoreError> {
    jobs::enqueue(&db.pool, JOB, JOB, "{}", now, now).await?;
    Ok(())
}

/// One sweep: pushes what is new on the lists, forgets what left them, and comes back after
/// the interval. Without a webhook (the setting was removed) the job ends.
pub async fn sweep(svc: &Services) -> anyhow::Result<Next> {
    let Some(hook) = &svc.alerts else {
        return Ok(Next::Done);
    };
    let now = svc.now();
    let lists = crate::attention::lists(&svc.db.pool, now).await?;
    let sent: HashSet<(String, String)> =
        crate::store::query("SELECT list, entry_key FROM alerts_sent")
            .fetch_all(&svc.db.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, crate::store::Error>>()?;
    let mut listed = HashSet::new();
    let mut fresh = Vec::new();
    for list in &lists {
        for entry in &list.entries {
            let id = (list.name.to_owned(), entry.key.clone());
            if !sent.contains(&id) {
                fresh.push((id.clone(), &entry.body));
            }
            listed.insert(id);
        }
    }
    if !fresh.is_empty() {
        let alerts: Vec<_> = fresh
            .iter()
            .map(|((list, key), entry)| json!({ "list": list, "key": key, "entry": entry }))
            .collect();
        let body = json!({ "sent_at": now, "alerts": alerts }).to_string();
        hook.post(body, now).await?;
        tracing::info!(alerts = fresh.len(), "alerts delivered to the webhook");
    }
    let gone: Vec<_> = sent.difference(&listed).collect();
    if !fresh.is_empty() || !gone.is_empty() {
        let mut tx = svc.db.begin().await?;
        for ((list, key), _) in &fresh {
            crate::store::query(
                "INSERT INTO alerts_sent (list, entry_key, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (list, entry_key) DO NOTHING",
            )
            .bind(list)
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (list, key) in gone {
            crate::store::query("DELETE FROM alerts_sent WHERE list = $1 AND entry_key = $2")
                .bind(list)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(Next::At(now.saturating_add(hook.interval_ms)))
}
