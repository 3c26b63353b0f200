//! Operator API for the fleet itself: add a machine (with its slots), read the credentials a
//! machine is provisioned with, give it a new secret, take it out of service and back, and
//! clear a fault once someone has fixed the machine.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, ApiResult, MachineCode, Operator};
use crate::device::protocol::is_valid_id;
use crate::services::Services;

/// The routes, merged into the operator API.
pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/api/v1/machines", post(create_machine))
        .route("/api/v1/machines/{code}/credentials", get(credentials))
        .route("/api/v1/machines/{code}/clear-fault", post(clear_fault))
        .route("/api/v1/machines/{code}", patch(update_machine))
        .route("/api/v1/machines/{code}/secret", post(rotate_secret))
}

/// What an operator may change on a machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineChange {
    enabled: bool,
}

/// Takes a machine out of service (`enabled: false`) or back. A disabled machine starts
/// nothing (its buy requests are refused, the H5 page sells nothing on it) and is handed no
/// command but `cancel`. Its codes still awaiting payment are closed now (their resolvers run
/// at once: a payment that beats the close is served as any). What it reports still counts,
/// so a vend under way settles as it happened; a dispense not yet handed over expires and its
/// order is refunded, as for a machine that never came back. Repeating a change changes
/// nothing.
async fn update_machine(
    _: Operator,
    State(svc): State<Arc<Services>>,
    MachineCode(code): MachineCode,
    body: Result<Json<MachineChange>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(change) = body?;
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    // Only a real change is recorded: the first disable keeps its time.
    let update = if change.enabled {
        crate::store::query(
            "UPDATE machines SET disabled_at = NULL WHERE code = $1 AND disabled_at IS NOT NULL",
        )
        .bind(&code)
    } else {
        crate::store::query(
            "UPDATE machines SET disabled_at = $2 WHERE code = $1 AND disabled_at IS NULL",
        )
        .bind(&code)
        .bind(now)
    };
    if update.execute(&mut *tx).await?.rows_affected() == 0 {
        crate::store::query("SELECT 1 FROM machines WHERE code = $1")
            .bind(&code)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "machine not found".into()))?;
        return Ok(Json(json!({ "code": code, "enabled": change.enabled })));
    }
    let (action, closing) = if change.enabled {
        ("machine_enabled", Vec::new())
    } else {
        (
            "machine_disabled",
            give_up_open_codes(&mut tx, &code, now).await?,
        )
    };
    let subject = format!("machine:{code}");
    crate::store::audit::record(&mut *tx, now, "operator-api", action, &subject, "").await?;
    tx.commit().await?;
    for key in closing {
        svc.run_soon(key);
    }
    svc.device.forget_machine(&code);
    tracing::info!(machine = %code, enabled = change.enabled, "machine service changed by the operator");
    Ok(Json(json!({ "code": code, "enabled": change.enabled })))
}

/// Out of service, no code of the machine should stay payable: the buyer's time of each order
/// still awaiting payment ends now and its resolver is due at once (it closes the trade and
/// clears the screen). Answers the resolvers' keys, to run once committed.
async fn give_up_open_codes(
    tx: &mut crate::store::Tx,
    code: &str,
    now: i64,
) -> ApiResult<Vec<String>> {
    let open = crate::store::query(
        "UPDATE orders SET expires_at = $1 WHERE machine_id = (SELECT id FROM machines WHERE code = $2) \
         AND state = 'awaiting_payment' AND expires_at > $1 RETURNING id",
    )
    .bind(now)
    .bind(code)
    .fetch_all(&mut **tx)
    .await?;
    let mut keys = Vec::with_capacity(open.len());
    for row in open {
        let order_id = row.try_get(0)?;
        crate::store::watches::resolve_now(&mut **tx, order_id, now).await?;
        keys.push(crate::store::orders::resolve_key(order_id));
    }
    Ok(keys)
}

/// Gives a machine a new secret and answers it, once. The old one stops working at once on
/// this instance (its broker connection is closed) and within
/// [`MACHINE_CACHE_TTL`](crate::device::ledger::MACHINE_CACHE_TTL) on others. Commands
/// signed with the old secret and not yet executed are refused by the machine; they expire,
/// and what they were for is refunded.
async fn rotate_secret(
    _: Operator,
    State(svc): State<Arc<Services>>,
    MachineCode(code): MachineCode,
) -> ApiResult<Json<Value>> {
    let secret = crate::ids::random_hex(32);
    let update = crate::store::query("UPDATE machines SET secret = $2 WHERE code = $1")
        .bind(&code)
        .bind(&secret);
    change_recorded(&svc, &code, update, "secret_rotated").await?;
    svc.device.forget_machine(&code);
    svc.device.close_connection(&code);
    tracing::info!(machine = %code, "machine secret replaced by the operator");
    Ok(Json(json!({
        "code": code,
        "secret": secret,
        "device": endpoints(&svc),
    })))
}

/// A machine to add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMachine {
    code: String,
    kind: String,
    terminal_id: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    slots: Vec<NewSlot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSlot {
    code: String,
    product_id: i64,
    price_fen: i64,
    capacity: i64,
    stock: i64,
}

fn unprocessable(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, why.into())
}

/// What a slot may be priced at, in fen: a sale must cost something (Alipay takes no
/// 0.00 trade), and at most 1,000,000 yuan.
pub(crate) const SLOT_PRICE_FEN: std::ops::RangeInclusive<i64> = 1..=100_000_000;

/// The most units a slot may hold.
pub(crate) const SLOT_CAPACITY_MAX: i64 = 1000;

fn check(m: &NewMachine) -> ApiResult<()> {
    if !is_valid_id(&m.code) {
        return Err(unprocessable(
            "code: 1-64 characters of A-Z a-z 0-9 _ - . :",
        ));
    }
    if !matches!(m.kind.as_str(), "vending" | "face" | "cabinet") {
        return Err(unprocessable("kind: vending, face or cabinet"));
    }
    // Alipay's terminal_id: letters, digits, `_` and `-`, at most 32.
    if m.terminal_id.is_empty()
        || m.terminal_id.len() > 32
        || !m
            .terminal_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(unprocessable("terminal_id: 1-32 letters, digits, _ or -"));
    }
    if let Some(site) = &m.site
        && (site.chars().count() > 200 || site.chars().any(char::is_control))
    {
        return Err(unprocessable(
            "site: at most 200 characters, without control characters",
        ));
    }
    if m.slots.len() > 256 {
        return Err(unprocessable("at most 256 slots"));
    }
    for s in &m.slots {
        if !is_valid_id(&s.code) {
            return Err(unprocessable(format!("slot {:?}: bad code", s.code)));
        }
        if !SLOT_PRICE_FEN.contains(&s.price_fen) {
            return Err(unprocessable(format!(
                "slot {}: price_fen {}..={}",
                s.code,
                SLOT_PRICE_FEN.start(),
                SLOT_PRICE_FEN.end()
            )));
        }
        if !(0..=SLOT_CAPACITY_MAX).contains(&s.capacity) || !(0..=s.capacity).contains(&s.stock) {
            return Err(unprocessable(format!(
                "slot {}: need 0 <= stock <= capacity <= {SLOT_CAPACITY_MAX}",
                s.code
            )));
        }
    }
    Ok(())
}

async fn create_machine(
    _: Operator,
    State(svc): State<Arc<Services>>,
    body: Result<Json<NewMachine>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(m) = body?;
    check(&m)?;
    let now = svc.now();
    let secret = crate::ids::random_hex(32);
    let mut tx = svc.db.begin().await?;
    let operator: i64 = crate::store::query("SELECT id FROM operators ORDER BY id LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, "no operator is set up".into()))?
        .try_get(0)?;
    let inserted = crate::store::query(
        "INSERT INTO machines (operator_id, code, kind, terminal_id, site, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(operator)
    .bind(&m.code)
    .bind(&m.kind)
    .bind(&m.terminal_id)
    .bind(&m.site)
    .bind(&secret)
    .bind(now)
    .fetch_one(&mut *tx)
    .await;
    let machine_id: i64 = match inserted {
        Ok(row) => row.try_get(0)?,
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "a machine with this code or terminal_id exists".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    for s in &m.slots {
        let product =
            crate::store::query("SELECT id FROM products WHERE id = $1 AND operator_id = $2")
                .bind(s.product_id)
                .bind(operator)
                .fetch_optional(&mut *tx)
                .await?;
        if product.is_none() {
            return Err(unprocessable(format!(
                "slot {}: product {} not found",
                s.code, s.product_id
            )));
        }
        crate::store::query("INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(machine_id)
            .bind(&s.code)
            .bind(s.product_id)
            .bind(s.price_fen)
            .bind(s.capacity)
            .bind(s.stock)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    ApiError(StatusCode::CONFLICT, format!("slot {} is listed twice", s.code))
                } else {
                    e.into()
                }
            })?;
    }
    crate::store::audit::record(
        &mut *tx,
        now,
        "operator-api",
        "machine_created",
        &format!("machine:{}", m.code),
        &format!(
            "{} terminal {} with {} slot(s)",
            m.kind,
            m.terminal_id,
            m.slots.len()
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "code": m.code, "secret": secret, "device": endpoints(&svc) })),
    ))
}

fn endpoints(svc: &Services) -> Value {
    json!({
        "mqtt_url": svc.mqtt_url,
        "command_topic": crate::device::mqtt::cmd_topic("{code}"),
        "event_topic": crate::device::mqtt::evt_topic("{code}"),
        "http_events": crate::device::http::EVENTS_PATH,
        "http_commands": crate::device::http::COMMANDS_PATH,
    })
}

/// What a machine is provisioned with: its secret and where to connect.
async fn credentials(
    _: Operator,
    State(svc): State<Arc<Services>>,
    MachineCode(code): MachineCode,
) -> ApiResult<Json<Value>> {
    let machine = svc
        .device
        .machine(&code)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "machine not found".into()))?;
    let secret = String::from_utf8_lossy(machine.secret()).into_owned();
    // Whoever reads a secret can act as the machine: the read is on the record.
    crate::store::audit::record(
        &svc.db.pool,
        svc.now(),
        "operator-api",
        "credentials_read",
        &format!("machine:{}", machine.code),
        "",
    )
    .await?;
    Ok(Json(json!({
        "code": machine.code,
        "secret": secret,
        "device": endpoints(&svc),
        "h5_url": format!("{}/m/{}", svc.public_url, machine.code),
    })))
}

async fn clear_fault(
    _: Operator,
    State(svc): State<Arc<Services>>,
    MachineCode(code): MachineCode,
) -> ApiResult<Json<Value>> {
    let update =
        crate::store::query("UPDATE machines SET fault = NULL WHERE code = $1").bind(&code);
    change_recorded(&svc, &code, update, "fault_cleared").await?;
    tracing::info!(machine = %code, "fault cleared by the operator");
    Ok(Json(json!({ "code": code, "fault": null })))
}

/// Runs `update`, a change to the machine `code`, with its audit row in one transaction;
/// 404 when no machine has that code.
async fn change_recorded(
    svc: &Services,
    code: &str,
    update: crate::store::sql::Query<'_>,
    action: &str,
) -> ApiResult<()> {
    let mut tx = svc.db.begin().await?;
    if update.execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(ApiError(StatusCode::NOT_FOUND, "machine not found".into()));
    }
    let subject = format!("machine:{code}");
    crate::store::audit::record(&mut *tx, svc.now(), "operator-api", action, &subject, "").await?;
    tx.commit().await?;
    Ok(())
}
