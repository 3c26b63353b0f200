//! The HTTP fallback for machines that cannot speak MQTT. The server mounts [`routes`].
//!
//! - `POST /device/v1/events`: the body is a signed event envelope, exactly as on MQTT.
//! - `GET /device/v1/commands?wait=N`: long-poll (N ≤ 25 s) for the machine's pending
//!   commands, returned as the same signed envelopes as on MQTT.
//!
//! Every request carries `X-Machine` (machine code), `X-Timestamp` (Unix ms), `X-Nonce`
//! (1–64 id characters, never reused) and `X-Signature` = base64 HMAC-SHA256 with the
//! machine secret over `METHOD\nPATH\nTS\nNONCE\nsha256hex(body)` (path without query).
//! The request is checked before anything else: clock ±300 s, signature, then the nonce,
//! which is stored (`device_nonces`) so a replay within the window is refused with 409. A
//! timestamp outside the window is refused with 401 and the server's clock (`server_ts`), so
//! the machine can resync and retry.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ledger::{DeviceChannel, MachineAuth};
use super::protocol::{MAX_MESSAGE_BYTES, Rejection, check_clock, is_valid_id};
use super::signing;

/// Path of the event endpoint.
pub const EVENTS_PATH: &str = "/device/v1/events";
/// Path of the command long-poll endpoint.
pub const COMMANDS_PATH: &str = "/device/v1/commands";
/// Longest long-poll.
pub const MAX_WAIT_S: u64 = 25;

/// The device routes, to be merged into the server's router.
pub fn routes(channel: DeviceChannel) -> Router {
    Router::new()
        .route(EVENTS_PATH, post(post_event))
        .route(COMMANDS_PATH, get(get_commands))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(channel)
}

/// Why a device HTTP request was refused; the body is `{"error": reason}`.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A missing or malformed header.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown machine or bad signature.
    #[error("{0}")]
    Unauthorized(String),
    /// A timestamp outside ±300 s; the body also carries `server_ts` so the machine can set
    /// its clock and retry.
    #[error("{reason}")]
    ClockSkew {
        /// What was wrong.
        reason: String,
        /// The server clock, Unix ms.
        server_ts: i64,
    },
    /// A machine its operator disabled (correctly signed, so it may be told).
    #[error("{0}")]
    Forbidden(String),
    /// A nonce seen before, or an ack/result the ledger refuses.
    #[error("{0}")]
    Conflict(String),
    /// The envelope or its body is malformed.
    #[error("{0}")]
    Unprocessable(String),
    /// Over 16 KiB.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed; retry.
    #[error("server unavailable; retry later")]
    Unavailable,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized(_) | HttpError::ClockSkew { .. } => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let HttpError::ClockSkew { server_ts, .. } = &self {
            body["server_ts"] = (*server_ts).into();
        }
        (status, Json(body)).into_response()
    }
}

impl From<Rejection> for HttpError {
    fn from(r: Rejection) -> Self {
        let reason = r.to_string();
        match r {
            Rejection::TooLarge(_) => HttpError::TooLarge(reason),
            Rejection::Malformed(_) | Rejection::UnknownKind(_) | Rejection::BadBody(_) => {
                HttpError::Unprocessable(reason)
            }
            Rejection::UnknownMachine
            | Rejection::WrongMachine { .. }
            | Rejection::Stale { .. }
            | Rejection::BadSignature => HttpError::Unauthorized(reason),
            Rejection::Disabled => HttpError::Forbidden(reason),
            Rejection::Duplicate | Rejection::Refused(_) => HttpError::Conflict(reason),
            Rejection::Unavailable => HttpError::Unavailable,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, HttpError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HttpError::BadRequest(format!("missing or non-ASCII header {name}")))
}

/// Checks the request signature and consumes the nonce; returns the machine.
async fn authenticate(
    channel: &DeviceChannel,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<MachineAuth, HttpError> {
    let machine = header(headers, "x-machine")?;
    let ts: i64 = header(headers, "x-timestamp")?
        .parse()
        .map_err(|_| HttpError::BadRequest("X-Timestamp: Unix milliseconds".into()))?;
    let nonce = header(headers, "x-nonce")?;
    let sig = header(headers, "x-signature")?;
    if !is_valid_id(nonce) {
        return Err(HttpError::BadRequest(
            "X-Nonce: 1 to 64 characters of A-Z a-z 0-9 _ - . :".into(),
        ));
    }
    let now = channel.now_ms();
    check_clock(ts, now).map_err(|r| skewed(&r, now))?;
    let m = channel
        .machine(machine)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "machine lookup failed");
            HttpError::Unavailable
        })?
        .ok_or(Rejection::UnknownMachine)?;
    let signed = signing::http_string(method.as_str(), path, ts, nonce, body);
    if !signing::verify(m.secret(), signed.as_bytes(), sig) {
        return Err(Rejection::BadSignature.into());
    }
    let db = channel.db();
    let store_err = |e: crate::store::Error| {
        tracing::error!(error = %e, "nonce store failed");
        HttpError::Unavailable
    };
    // Nonces older than twice the clock window can no longer be replayed (the timestamp
    // check refuses them), so they are dropped.
    crate::store::query("DELETE FROM device_nonces WHERE machine_id = $1 AND seen_at < $2")
        .bind(m.id)
        .bind(now - 2 * super::protocol::MAX_SKEW_MS)
        .execute(&db.pool)
        .await
        .map_err(store_err)?;
    let inserted = crate::store::query(
        "INSERT INTO device_nonces (machine_id, nonce, seen_at) VALUES ($1, $2, $3)",
    )
    .bind(m.id)
    .bind(nonce)
    .bind(now)
    .execute(&db.pool)
    .await;
    match inserted {
        Ok(_) => Ok(m),
        Err(e) if e.is_unique_violation() => {
            tracing::warn!(machine = %m.code, "replayed HTTP nonce refused");
            Err(HttpError::Conflict("nonce already used".into()))
        }
        Err(e) => Err(store_err(e)),
    }
}

/// `POST /device/v1/events`.
#[tracing::instrument(skip_all)]
async fn post_event(
    State(channel): State<DeviceChannel>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let m = authenticate(&channel, &Method::POST, EVENTS_PATH, &headers, &body).await?;
    // Every answer carries the server clock: a machine more than a few seconds off sets its
    // clock (it measures command age by it).
    match channel.receive(&m.code, &body).await {
        Ok(_) => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "status": "accepted", "server_ts": channel.now_ms() })),
        )
            .into_response()),
        // A retry of something already stored: tell the machine it may stop retrying.
        Err(Rejection::Duplicate) => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "status": "duplicate", "server_ts": channel.now_ms() })),
        )
            .into_response()),
        Err(r @ Rejection::Stale { .. }) => Err(skewed(&r, channel.now_ms())),
        Err(r) => Err(r.into()),
    }
}

fn skewed(r: &Rejection, server_ts: i64) -> HttpError {
    HttpError::ClockSkew {
        reason: format!("{r}; set your clock to server_ts and retry"),
        server_ts,
    }
}

/// Query of the long-poll.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    /// Seconds to wait for a command, at most 25.
    wait: Option<u64>,
}

/// `GET /device/v1/commands?wait=N`.
#[tracing::instrument(skip_all)]
async fn get_commands(
    State(channel): State<DeviceChannel>,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    // (A disabled machine polls as any other: it is handed only `cancel`s.)
    let m = authenticate(&channel, &Method::GET, COMMANDS_PATH, &headers, b"").await?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_S));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so a command recorded in between wakes us.
        let signal = channel.new_command(&m.code);
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pending = channel.pending_for(&m.code).await.map_err(|e| {
            tracing::error!(error = %e, "pending commands lookup failed");
            HttpError::Unavailable
        })?;
        if !pending.is_empty() {
            for c in &pending {
                channel.note_sent(c, Some(m.id));
            }
            let list: Vec<&str> = pending.iter().map(|c| c.payload.as_str()).collect();
            let body = format!("{{\"commands\":[{}]}}", list.join(","));
            return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {
                return Ok(([(header::CONTENT_TYPE, "application/json")], "{\"commands\":[]}").into_response());
            }
        }
    }
}
