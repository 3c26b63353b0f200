//! Operator API: what needs a person. The server never guesses about money or goods; what it
//! cannot settle itself is listed here, and logged at `error` when it happens:
//! - orders in `dispute` (the machine acknowledged a dispense and never said what came out);
//! - refunds Alipay refused (`failed`);
//! - orders not final a day after they were made (reliability's "no stuck states");
//! - machines that reported a fault (they sell nothing until it is cleared);
//! - units a machine could not say came out (power lost mid-vend; reliability F14) in the
//!   last week: the buyer was refunded, and someone checks the machine's stock;
//! - dispenses a machine reported after the server had given up on them (`late_vends`) in the
//!   last week, where units came out: the buyer was refunded, or the order was settled
//!   otherwise, yet the goods are gone; `stock_corrected` below the units means a slot's count
//!   is still too high.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::api::{ApiResult, Operator};
use crate::services::Services;
use crate::store::get_int;

/// An order still open this long after it was made needs a person.
pub const STUCK_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// How far back the lists of units of unknown outcome and of late vends go.
pub const INDETERMINATE_WITHIN_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Most rows of each list (the oldest first: they have waited longest).
const LIMIT: i64 = 200;

/// The route, merged into the operator API.
pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/api/v1/attention", get(attention))
}

async fn attention(_: Operator, State(svc): State<Arc<Services>>) -> ApiResult<Json<Value>> {
    let pool = &svc.db.pool;
    let disputes = list(
        crate::store::query(
            "SELECT o.id, o.out_trade_no, m.code AS machine, o.total_fen, o.updated_at \
             FROM orders o JOIN machines m ON m.id = o.machine_id \
             WHERE o.state = 'dispute' ORDER BY o.updated_at LIMIT $1",
        )
        .bind(LIMIT),
        pool,
        |r| {
            Ok(json!({
                "order_id": r.try_get::<i64, _>("id")?, "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                "machine": r.try_get::<String, _>("machine")?, "total_fen": r.try_get::<i64, _>("total_fen")?,
                "since": r.try_get::<i64, _>("updated_at")?,
            }))
        },
    )
    .await?;
    let failed_refunds = list(
        crate::store::query(
            "SELECT r.id, r.order_id, o.out_trade_no, r.out_request_no, r.amount_fen, r.reason, r.updated_at \
             FROM refunds r JOIN orders o ON o.id = r.order_id \
             WHERE r.state = 'failed' ORDER BY r.updated_at LIMIT $1",
        )
        .bind(LIMIT),
        pool,
        |r| {
            Ok(json!({
                "refund_id": r.try_get::<i64, _>("id")?, "order_id": r.try_get::<i64, _>("order_id")?,
                "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                "out_request_no": r.try_get::<String, _>("out_request_no")?,
                "amount_fen": r.try_get::<i64, _>("amount_fen")?, "reason": r.try_get::<String, _>("reason")?,
                "since": r.try_get::<i64, _>("updated_at")?,
            }))
        },
    )
    .await?;
    let stuck_orders = list(
        crate::store::query(
            "SELECT o.id, o.out_trade_no, m.code AS machine, o.state, o.created_at \
             FROM orders o JOIN machines m ON m.id = o.machine_id \
             WHERE o.state NOT IN ('completed', 'refunded', 'closed', 'dispute') AND o.created_at < $1 \
             ORDER BY o.created_at LIMIT $2",
        )
        .bind(svc.now().saturating_sub(STUCK_AFTER_MS))
        .bind(LIMIT),
        pool,
        |r| {
            Ok(json!({
                "order_id": r.try_get::<i64, _>("id")?, "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                "machine": r.try_get::<String, _>("machine")?, "state": r.try_get::<String, _>("state")?,
                "created_at": r.try_get::<i64, _>("created_at")?,
            }))
        },
    )
    .await?;
    let faulty_machines = list(
        crate::store::query(
            "SELECT code, fault FROM machines WHERE fault IS NOT NULL ORDER BY code LIMIT $1",
        )
        .bind(LIMIT),
        pool,
        |r| Ok(json!({ "code": r.try_get::<String, _>("code")?, "fault": r.try_get::<String, _>("fault")? })),
    )
    .await?;
    let indeterminate_vends = list(
        crate::store::query(
            "SELECT o.out_trade_no, m.code AS machine, l.slot_code, v.at \
             FROM vend_results v JOIN orders o ON o.id = v.order_id \
             JOIN machines m ON m.id = o.machine_id \
             JOIN order_lines l ON l.order_id = v.order_id AND l.line_no = v.line_no \
             WHERE v.state = 'indeterminate' AND v.at >= $1 ORDER BY v.at LIMIT $2",
        )
        .bind(svc.now().saturating_sub(INDETERMINATE_WITHIN_MS))
        .bind(LIMIT),
        pool,
        |r| {
            Ok(json!({
                "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                "machine": r.try_get::<String, _>("machine")?, "slot": r.try_get::<String, _>("slot_code")?,
                "at": r.try_get::<i64, _>("at")?,
            }))
        },
    )
    .await?;
    let vended_after_expiry = list(
        crate::store::query(
            "SELECT o.out_trade_no, m.code AS machine, o.state, lv.command_id, lv.dispensed, \
             lv.indeterminate, lv.stock_corrected, lv.reported_at \
             FROM late_vends lv JOIN orders o ON o.id = lv.order_id \
             JOIN machines m ON m.id = lv.machine_id \
             WHERE lv.reported_at >= $1 AND lv.dispensed + lv.indeterminate > 0 \
             ORDER BY lv.reported_at LIMIT $2",
        )
        .bind(svc.now().saturating_sub(INDETERMINATE_WITHIN_MS))
        .bind(LIMIT),
        pool,
        |r| {
            Ok(json!({
                "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                "machine": r.try_get::<String, _>("machine")?,
                "order_state": r.try_get::<String, _>("state")?,
                "command_id": r.try_get::<String, _>("command_id")?,
                "dispensed": get_int(r, "dispensed")?,
                "indeterminate": get_int(r, "indeterminate")?,
                "stock_corrected": get_int(r, "stock_corrected")?,
                "at": r.try_get::<i64, _>("reported_at")?,
            }))
        },
    )
    .await?;
    let count = disputes.len()
        + failed_refunds.len()
        + stuck_orders.len()
        + faulty_machines.len()
        + indeterminate_vends.len()
        + vended_after_expiry.len();
    Ok(Json(json!({
        "count": count,
        "disputes": disputes,
        "failed_refunds": failed_refunds,
        "stuck_orders": stuck_orders,
        "faulty_machines": faulty_machines,
        "indeterminate_vends": indeterminate_vends,
        "vended_after_expiry": vended_after_expiry,
    })))
}

/// The rows of one list, each as its JSON object.
async fn list(
    query: crate::store::sql::Query<'_>,
    pool: &crate::store::Pool,
    to_json: impl Fn(&crate::store::Row) -> Result<Value, crate::store::Error>,
) -> Result<Vec<Value>, crate::store::Error> {
    query.fetch_all(pool).await?.iter().map(to_json).collect()
}
