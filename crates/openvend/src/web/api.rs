//! The operator API: a bearer-token JSON API over machines, slots, products, orders (with
//! their timeline) and manual refunds. The admin console is built on it. Its OpenAPI
//! document is served at `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::machines::{SLOT_CAPACITY_MAX, SLOT_PRICE_FEN};
use crate::domain::fen::Fen;
use crate::pay::refund::{self, RefundError};
use crate::services::Services;
use crate::store::get_int;
use crate::store::orders;

/// The API routes.
pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/machines", get(list_machines))
        .route("/api/v1/machines/{code}/slots", get(list_slots))
        .route("/api/v1/machines/{code}/slots/{slot}", patch(update_slot))
        .route("/api/v1/products", get(list_products))
        .route("/api/v1/orders", get(list_orders))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/refunds", post(create_refund))
        .merge(super::machines::router())
        .merge(super::products::router())
        .merge(super::attention::router())
}

/// An API error: a status and a reason, as `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        tracing::error!(error = %e, "store error in the operator API");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error in the operator API");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text())
    }
}

/// A query string that does not parse (`limit=abc`, an unknown parameter): 400 with the
/// reason, in the API's JSON error shape.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

/// A path segment that does not parse (`/orders/abc`): 400 with the reason, as JSON.
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

/// An error the caller cannot act on: logged with its cause, answered without it.
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "error in the operator API");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// A machine code from the path. A path that does not decode is a 400 in the API's JSON; a
/// code no machine can have (control characters, a NUL, more than 64 characters) is a 404
/// before anything reads the store, which on PostgreSQL would refuse a NUL with a 500.
#[derive(Debug)]
pub struct MachineCode(pub String);

impl FromRequestParts<Arc<Services>> for MachineCode {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        svc: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let Path(code) = Path::<String>::from_request_parts(parts, svc).await?;
        if !crate::device::protocol::is_valid_id(&code) {
            return Err(not_found("machine"));
        }
        Ok(MachineCode(code))
    }
}

/// A machine's slot from the path (`/machines/{code}/slots/{slot}`), checked as
/// [`MachineCode`] is.
#[derive(Debug)]
struct SlotPath {
    machine: String,
    slot: String,
}

impl FromRequestParts<Arc<Services>> for SlotPath {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        svc: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let Path((machine, slot)) =
            Path::<(String, String)>::from_request_parts(parts, svc).await?;
        if !crate::device::protocol::is_valid_id(&machine) {
            return Err(not_found("machine"));
        }
        if !crate::device::protocol::is_valid_id(&slot) {
            return Err(not_found("slot"));
        }
        Ok(SlotPath { machine, slot })
    }
}

/// The caller presented the operator token.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<Arc<Services>> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        svc: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = svc.api_token.expose();
        let ok = !expected.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                presented.as_bytes(),
                expected.as_bytes(),
            )
            .is_ok();
        if !ok {
            tracing::debug!("operator API: missing or wrong token");
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer <token>` is required".into(),
            ));
        }
        Ok(Operator)
    }
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn list_machines(_: Operator, State(svc): State<Arc<Services>>) -> ApiResult<Json<Value>> {
    let rows = crate::store::query(
        "SELECT code, kind, terminal_id, site, last_heartbeat_at, fault, disabled_at FROM machines ORDER BY code",
    )
    .fetch_all(&svc.db.pool)
    .await?;
    // Online = a heartbeat within the offline window, on the server clock.
    let window = svc.sale_terms.offline_after_ms;
    let now = svc.now();
    let machines = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "code": r.try_get::<String, _>("code")?, "kind": r.try_get::<String, _>("kind")?,
                "terminal_id": r.try_get::<String, _>("terminal_id")?, "site": r.try_get::<Option<String>, _>("site")?,
                "online": r.try_get::<Option<i64>, _>("last_heartbeat_at")?.is_some_and(|at| now.saturating_sub(at) <= window),
                "last_heartbeat_at": r.try_get::<Option<i64>, _>("last_heartbeat_at")?,
                "fault": r.try_get::<Option<String>, _>("fault")?,
                "enabled": r.try_get::<Option<i64>, _>("disabled_at")?.is_none(),
                "h5_url": format!("{}/m/{}", svc.public_url, r.try_get::<String, _>("code")?),
            }))
        })
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    Ok(Json(json!({ "machines": machines })))
}

async fn machine_id(svc: &Services, code: &str) -> ApiResult<i64> {
    let row = crate::store::query("SELECT id FROM machines WHERE code = $1")
        .bind(code)
        .fetch_optional(&svc.db.pool)
        .await?;
    row.map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| not_found("machine"))
}

async fn list_slots(
    _: Operator,
    State(svc): State<Arc<Services>>,
    MachineCode(code): MachineCode,
) -> ApiResult<Json<Value>> {
    let id = machine_id(&svc, &code).await?;
    let rows = crate::store::query(
        "SELECT s.code, s.product_id, p.name, s.price_fen, s.capacity, s.stock, s.reserved, CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled \
         FROM slots s LEFT JOIN products p ON p.id = s.product_id WHERE s.machine_id = $1 ORDER BY s.code",
    )
    .bind(id)
    .fetch_all(&svc.db.pool)
    .await?;
    let slots = rows
        .iter()
        .map(slot_json)
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    Ok(Json(json!({ "machine": code, "slots": slots })))
}

fn slot_json(r: &crate::store::Row) -> Result<Value, crate::store::Error> {
    Ok(json!({
        "code": r.try_get::<String, _>("code")?, "product_id": r.try_get::<Option<i64>, _>("product_id")?,
        "product": r.try_get::<Option<String>, _>("name")?, "price_fen": r.try_get::<i64, _>("price_fen")?,
        "capacity": get_int(r, "capacity")?, "stock": get_int(r, "stock")?, "reserved": get_int(r, "reserved")?,
        "enabled": get_int(r, "enabled")? != 0,
    }))
}

/// Fields an operator may change on a slot. Anything else (reserved stock, …) is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotUpdate {
    price_fen: Option<i64>,
    stock: Option<i64>,
    capacity: Option<i64>,
    enabled: Option<bool>,
    product_id: Option<i64>,
}

async fn update_slot(
    _: Operator,
    State(svc): State<Arc<Services>>,
    SlotPath {
        machine: code,
        slot,
    }: SlotPath,
    body: Result<Json<SlotUpdate>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(u) = body?;
    let id = machine_id(&svc, &code).await?;
    // The same bounds as a machine's slots when it is added: a sale of 0 fen cannot be paid.
    if u.price_fen.is_some_and(|p| !SLOT_PRICE_FEN.contains(&p)) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "price_fen must be between {} and {}",
                SLOT_PRICE_FEN.start(),
                SLOT_PRICE_FEN.end()
            ),
        ));
    }
    if u.stock
        .is_some_and(|s| !(0..=SLOT_CAPACITY_MAX).contains(&s))
        || u.capacity
            .is_some_and(|c| !(0..=SLOT_CAPACITY_MAX).contains(&c))
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("stock and capacity must be between 0 and {SLOT_CAPACITY_MAX}"),
        ));
    }
    let mut tx = svc.db.begin().await?;
    // Locked until commit on PostgreSQL: a sale or a vend result that moves the stock
    // meanwhile waits, instead of this write putting back the stock it read.
    let current = crate::store::query(
        "SELECT capacity, stock, reserved FROM slots WHERE machine_id = $1 AND code = $2 FOR UPDATE",
    )
    .on_sqlite("SELECT capacity, stock, reserved FROM slots WHERE machine_id = $1 AND code = $2")
    .bind(id)
    .bind(&slot)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| not_found("slot"))?;
    let capacity = u.capacity.unwrap_or(get_int(&current, "capacity")?);
    let stock = u.stock.unwrap_or(get_int(&current, "stock")?);
    let reserved = get_int(&current, "reserved")?;
    if stock > capacity {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("stock {stock} exceeds capacity {capacity}"),
        ));
    }
    if stock < reserved {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "{reserved} item(s) are reserved by orders in flight; stock cannot go below that"
            ),
        ));
    }
    if let Some(p) = u.product_id {
        let exists = crate::store::query("SELECT 1 FROM products WHERE id = $1")
            .bind(p)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("product {p} does not exist"),
            ));
        }
    }
    crate::store::query(
        "UPDATE slots SET price_fen = COALESCE($1, price_fen), stock = $2, capacity = $3, enabled = COALESCE($4, enabled), product_id = COALESCE($5, product_id) \
         WHERE machine_id = $6 AND code = $7",
    )
    .bind(u.price_fen)
    .bind(stock)
    .bind(capacity)
    .bind(u.enabled)
    .bind(u.product_id)
    .bind(id)
    .bind(&slot)
    .execute(&mut *tx)
    .await?;
    crate::store::audit::record(
        &mut *tx,
        svc.now(),
        "operator-api",
        "slot_updated",
        &format!("slot:{code}/{slot}"),
        &format!(
            "price={:?} stock={stock} capacity={capacity} enabled={:?}",
            u.price_fen, u.enabled
        ),
    )
    .await?;
    tx.commit().await?;
    list_slots(Operator, State(svc), MachineCode(code)).await
}

async fn list_products(_: Operator, State(svc): State<Arc<Services>>) -> ApiResult<Json<Value>> {
    let rows = crate::store::query("SELECT id, name FROM products ORDER BY id")
        .fetch_all(&svc.db.pool)
        .await?;
    let products = rows
        .iter()
        .map(|r| Ok(json!({ "id": r.try_get::<i64, _>(0)?, "name": r.try_get::<String, _>(1)? })))
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    Ok(Json(json!({ "products": products })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFilter {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_orders(
    _: Operator,
    State(svc): State<Arc<Services>>,
    query: Result<Query<OrderFilter>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(f) = query?;
    if let Some(s) = &f.state
        && crate::domain::order::OrderState::parse(s).is_none()
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown state {s:?}"),
        ));
    }
    let limit = f.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("limit must be between 1 and 500, not {limit}"),
        ));
    }
    let base = "SELECT o.id, o.out_trade_no, m.code, o.channel, o.state, o.total_fen, o.refunded_fen, o.trade_no, o.created_at \
                FROM orders o JOIN machines m ON m.id = o.machine_id";
    let rows = match f.state {
        Some(state) => {
            crate::store::query(&format!(
                "{base} WHERE o.state = $1 ORDER BY o.id DESC LIMIT $2"
            ))
            .bind(state)
            .bind(limit)
            .fetch_all(&svc.db.pool)
            .await?
        }
        None => {
            crate::store::query(&format!("{base} ORDER BY o.id DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(&svc.db.pool)
                .await?
        }
    };
    let list = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>(0)?, "out_trade_no": r.try_get::<String, _>(1)?, "machine": r.try_get::<String, _>(2)?,
                "channel": r.try_get::<String, _>(3)?, "state": r.try_get::<String, _>(4)?, "total_fen": r.try_get::<i64, _>(5)?,
                "refunded_fen": r.try_get::<i64, _>(6)?, "trade_no": r.try_get::<Option<String>, _>(7)?, "created_at": r.try_get::<i64, _>(8)?,
            }))
        })
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    Ok(Json(json!({ "orders": list })))
}

async fn get_order(
    _: Operator,
    State(svc): State<Arc<Services>>,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = path?;
    let order = orders::by_id(&svc.db, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found("order"))?;
    let lines = crate::store::query("SELECT line_no, slot_code, product_id, qty, unit_price_fen FROM order_lines WHERE order_id = $1 ORDER BY line_no")
        .bind(id)
        .fetch_all(&svc.db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(json!({ "line": get_int(r, "line_no")?, "slot": r.try_get::<String, _>("slot_code")?, "product_id": r.try_get::<i64, _>("product_id")?,
                "qty": get_int(r, "qty")?, "unit_price_fen": r.try_get::<i64, _>("unit_price_fen")? }))
        })
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    let refunds = crate::store::query("SELECT out_request_no, amount_fen, state, reason FROM refunds WHERE order_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&svc.db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(json!({ "out_request_no": r.try_get::<String, _>(0)?, "amount_fen": r.try_get::<i64, _>(1)?, "state": r.try_get::<String, _>(2)?, "reason": r.try_get::<String, _>(3)? }))
        })
        .collect::<Result<Vec<_>, crate::store::Error>>()?;
    let timeline: Vec<Value> = orders::timeline(&svc.db, id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(at, source, kind, detail)| json!({ "at": at, "source": source, "kind": kind, "detail": detail }))
        .collect();
    Ok(Json(json!({
        "id": order.id, "out_trade_no": order.out_trade_no, "state": order.state.as_str(), "total_fen": order.total.0,
        "refunded_fen": order.refunded.0, "trade_no": order.trade_no, "lines": lines, "refunds": refunds, "timeline": timeline,
    })))
}

/// A manual refund. The idempotency key makes a retried request (double click, network
/// retry) refund once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRefund {
    amount_fen: i64,
    reason: String,
    idempotency_key: String,
}

async fn create_refund(
    _: Operator,
    State(svc): State<Arc<Services>>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Json<NewRefund>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Path(id) = path?;
    let Json(r) = body?;
    let key_chars = r.idempotency_key.chars().count();
    if key_chars == 0 || key_chars > 64 || r.idempotency_key.chars().any(char::is_control) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key must be 1 to 64 characters, without control characters".into(),
        ));
    }
    // Control characters (a NUL above all, which PostgreSQL refuses in text) would reach the
    // timeline and Alipay's refund_reason.
    if r.reason.trim().is_empty()
        || r.reason.chars().count() > 200
        || r.reason.chars().any(char::is_control)
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason must be 1 to 200 characters, without control characters".into(),
        ));
    }
    // A stable refund number from the key: the same key always maps to the same Alipay refund.
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{id}:{}", r.idempotency_key).as_bytes(),
    );
    let hex: String = digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out_request_no = format!("RF{id}M{hex}");
    match refund::request(
        &svc,
        id,
        &out_request_no,
        Fen(r.amount_fen),
        r.reason.trim(),
        "operator-api",
    )
    .await
    {
        Ok(rec) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::to_value(rec).unwrap_or(Value::Null)),
        )),
        Err(e) => {
            let status = match &e {
                RefundError::NotFound => StatusCode::NOT_FOUND,
                RefundError::NotPositive | RefundError::TooMuch { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                RefundError::NotPaid(_) | RefundError::KeyReused(_) => StatusCode::CONFLICT,
                RefundError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError(status, e.to_string()))
        }
    }
}
