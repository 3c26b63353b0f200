//! Operator API for the catalogue: add a product and rename it. A product is a name; its
//! price is the slot's, so the same product may sell at different prices on two machines.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, ApiResult, Operator};
use crate::services::Services;

/// The routes, merged into the operator API (the list is `GET /api/v1/products`).
pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/api/v1/products", post(create_product))
        .route("/api/v1/products/{id}", patch(rename_product))
}

/// A product's name, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductName {
    name: String,
}

/// Longest product name, in characters (it becomes part of Alipay's trade subject).
const MAX_NAME_CHARS: usize = 100;

/// The trimmed name, or why it cannot be one.
fn checked_name(p: &ProductName) -> Result<&str, ApiError> {
    let name = p.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("name must be 1 to {MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(name)
}

async fn create_product(
    _: Operator,
    State(svc): State<Arc<Services>>,
    body: Result<Json<ProductName>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(p) = body?;
    let name = checked_name(&p)?;
    let id: i64 = crate::store::query(
        "INSERT INTO products (operator_id, name, created_at) \
         SELECT id, $1, $2 FROM operators ORDER BY id LIMIT 1 RETURNING id",
    )
    .bind(name)
    .bind(svc.now())
    .fetch_optional(&svc.db.pool)
    .await?
    .ok_or_else(|| ApiError(StatusCode::CONFLICT, "no operator is set up".into()))?
    .try_get(0)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name }))))
}

async fn rename_product(
    _: Operator,
    State(svc): State<Arc<Services>>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Json<ProductName>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = path?;
    let Json(p) = body?;
    let name = checked_name(&p)?;
    let renamed = crate::store::query("UPDATE products SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(&svc.db.pool)
        .await?
        .rows_affected();
    if renamed == 0 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("product {id} not found"),
        ));
    }
    Ok(Json(json!({ "id": id, "name": name })))
}
