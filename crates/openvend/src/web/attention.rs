//! Operator API: what needs a person (`crate::attention` makes the lists).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use super::api::{ApiResult, Operator};
use crate::services::Services;

/// The route, merged into the operator API.
pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/api/v1/attention", get(attention))
}

/// `{"count": n, "<list>": [entry, …], …}`.
async fn attention(_: Operator, State(svc): State<Arc<Services>>) -> ApiResult<Json<Value>> {
    let lists = crate::attention::lists(&svc.db.pool, svc.now(), crate::attention::SHOWN).await?;
    let count: usize = lists.iter().map(|l| l.entries.len()).sum();
    let mut view = Map::new();
    view.insert("count".into(), count.into());
    for list in lists {
        let bodies = list.entries.into_iter().map(|e| e.body).collect();
        view.insert(list.name.into(), Value::Array(bodies));
    }
    Ok(Json(Value::Object(view)))
}
