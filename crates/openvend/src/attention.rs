//! What needs a person. The server never guesses about money or goods; what it
//! cannot settle itself is listed here (the operator API's `/api/v1/attention`, and the alert
//! webhook pushes each new entry), and logged at `error` when it happens (what is listed for
//! being open too long, orders and refunds a day old, is only listed):
//! - orders in `dispute` (the machine acknowledged a dispense and never said what came out);
//! - refunds Alipay refused (`failed`);
//! - refunds still open a day after they were written: Alipay has not confirmed them, or
//!   never answered (they are still sent again, less and less often, but their order is
//!   final and listed nowhere else; the money may not have reached the buyer);
//! - orders not final a day after they were made (reliability's "no stuck states");
//! - machines that reported a fault (they sell nothing until it is cleared);
//! - units a machine could not say came out (power lost mid-vend; reliability F14) in the
//!   last week: the buyer was refunded, and someone checks the machine's stock;
//! - dispenses a machine reported after the server had given up on them (`late_vends`) in the
//!   last week, where units came out: the buyer was refunded, or the order was settled
//!   otherwise, yet the goods are gone; `stock_corrected` below the units means a slot's count
//!   is still too high.

use serde_json::{Value, json};

use crate::store::{Pool, Row, get_int};

/// An order still open this long after it was made needs a person.
pub const STUCK_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// How far back the lists of units of unknown outcome and of late vends go.
pub const INDETERMINATE_WITHIN_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Most rows of each list the operator API shows (the oldest first: they have waited longest).
pub const SHOWN: i64 = 200;

/// One thing that needs a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Names the thing within its list, the same at every look while it lasts: the alert
    /// webhook pushes each key once.
    pub key: String,
    /// What the operator API shows.
    pub body: Value,
}

/// One list of the attention view.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    /// The list's name in the operator API (`failed_refunds`, …).
    pub name: &'static str,
    /// Its entries, oldest first.
    pub entries: Vec<Entry>,
}

/// Every list as of `now` (ms), each of at most `limit` entries.
pub async fn lists(pool: &Pool, now: i64, limit: i64) -> Result<Vec<List>, crate::store::Error> {
    let disputes = list(
        "disputes",
        crate::store::query(
            "SELECT o.id, o.out_trade_no, m.code AS machine, o.total_fen, o.updated_at \
             FROM orders o JOIN machines m ON m.id = o.machine_id \
             WHERE o.state = 'dispute' ORDER BY o.updated_at LIMIT $1",
        )
        .bind(limit),
        pool,
        |r| {
            let id = r.try_get::<i64, _>("id")?;
            Ok(Entry {
                key: format!("order:{id}"),
                body: json!({
                    "order_id": id, "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                    "machine": r.try_get::<String, _>("machine")?, "total_fen": r.try_get::<i64, _>("total_fen")?,
                    "since": r.try_get::<i64, _>("updated_at")?,
                }),
            })
        },
    )
    .await?;
    let failed_refunds = list(
        "failed_refunds",
        crate::store::query(
            "SELECT r.id, r.order_id, o.out_trade_no, r.out_request_no, r.amount_fen, r.reason, r.updated_at \
             FROM refunds r JOIN orders o ON o.id = r.order_id \
             WHERE r.state = 'failed' ORDER BY r.updated_at LIMIT $1",
        )
        .bind(limit),
        pool,
        |r| {
            refund_entry(
                r,
                [
                    ("reason", json!(r.try_get::<String, _>("reason")?)),
                    ("since", json!(r.try_get::<i64, _>("updated_at")?)),
                ],
            )
        },
    )
    .await?;
    // Open a day after it was written (never confirmed by `fund_change` or the query, or
    // never answered): its job keeps sending it, but its order is final and would be listed
    // nowhere else.
    let unconfirmed_refunds = list(
        "unconfirmed_refunds",
        crate::store::query(
            "SELECT r.id, r.order_id, o.out_trade_no, r.out_request_no, r.amount_fen, r.state, r.created_at \
             FROM refunds r JOIN orders o ON o.id = r.order_id \
             WHERE r.state IN ('requested', 'unknown') AND r.created_at < $1 \
             ORDER BY r.created_at LIMIT $2",
        )
        .bind(now.saturating_sub(STUCK_AFTER_MS))
        .bind(limit),
        pool,
        |r| {
            refund_entry(
                r,
                [
                    ("state", json!(r.try_get::<String, _>("state")?)),
                    ("created_at", json!(r.try_get::<i64, _>("created_at")?)),
                ],
            )
        },
    )
    .await?;
    // The open states by name (not "NOT IN the final ones"), so the state index finds them
    // without reading every order.
    let stuck_orders = list(
        "stuck_orders",
        crate::store::query(
            "SELECT o.id, o.out_trade_no, m.code AS machine, o.state, o.created_at \
             FROM orders o JOIN machines m ON m.id = o.machine_id \
             WHERE o.state IN ('awaiting_payment', 'payment_unknown', 'paid', 'dispensing') \
             AND o.created_at < $1 \
             ORDER BY o.created_at LIMIT $2",
        )
        .bind(now.saturating_sub(STUCK_AFTER_MS))
        .bind(limit),
        pool,
        |r| {
            let id = r.try_get::<i64, _>("id")?;
            Ok(Entry {
                key: format!("order:{id}"),
                body: json!({
                    "order_id": id, "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                    "machine": r.try_get::<String, _>("machine")?, "state": r.try_get::<String, _>("state")?,
                    "created_at": r.try_get::<i64, _>("created_at")?,
                }),
            })
        },
    )
    .await?;
    let faulty_machines = list(
        "faulty_machines",
        crate::store::query(
            "SELECT code, fault FROM machines WHERE fault IS NOT NULL ORDER BY code LIMIT $1",
        )
        .bind(limit),
        pool,
        |r| {
            let code = r.try_get::<String, _>("code")?;
            let fault = r.try_get::<String, _>("fault")?;
            Ok(Entry {
                // Another fault of the same machine is another thing to look at.
                key: format!("{code}:{fault}"),
                body: json!({ "code": code, "fault": fault }),
            })
        },
    )
    .await?;
    let indeterminate_vends = list(
        "indeterminate_vends",
        crate::store::query(
            "SELECT o.out_trade_no, m.code AS machine, l.slot_code, v.at, v.line_no, v.unit_no \
             FROM vend_results v JOIN orders o ON o.id = v.order_id \
             JOIN machines m ON m.id = o.machine_id \
             JOIN order_lines l ON l.order_id = v.order_id AND l.line_no = v.line_no \
             WHERE v.state = 'indeterminate' AND v.at >= $1 ORDER BY v.at LIMIT $2",
        )
        .bind(now.saturating_sub(INDETERMINATE_WITHIN_MS))
        .bind(limit),
        pool,
        |r| {
            let out_trade_no = r.try_get::<String, _>("out_trade_no")?;
            Ok(Entry {
                key: format!(
                    "{out_trade_no}:{}:{}",
                    get_int(r, "line_no")?,
                    get_int(r, "unit_no")?
                ),
                body: json!({
                    "out_trade_no": out_trade_no,
                    "machine": r.try_get::<String, _>("machine")?, "slot": r.try_get::<String, _>("slot_code")?,
                    "at": r.try_get::<i64, _>("at")?,
                }),
            })
        },
    )
    .await?;
    let vended_after_expiry = list(
        "vended_after_expiry",
        crate::store::query(
            "SELECT o.out_trade_no, m.code AS machine, o.state, lv.command_id, lv.dispensed, \
             lv.indeterminate, lv.stock_corrected, lv.reported_at \
             FROM late_vends lv JOIN orders o ON o.id = lv.order_id \
             JOIN machines m ON m.id = lv.machine_id \
             WHERE lv.reported_at >= $1 AND lv.dispensed + lv.indeterminate > 0 \
             ORDER BY lv.reported_at LIMIT $2",
        )
        .bind(now.saturating_sub(INDETERMINATE_WITHIN_MS))
        .bind(limit),
        pool,
        |r| {
            let command_id = r.try_get::<String, _>("command_id")?;
            Ok(Entry {
                key: command_id.clone(),
                body: json!({
                    "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
                    "machine": r.try_get::<String, _>("machine")?,
                    "order_state": r.try_get::<String, _>("state")?,
                    "command_id": command_id,
                    "dispensed": get_int(r, "dispensed")?,
                    "indeterminate": get_int(r, "indeterminate")?,
                    "stock_corrected": get_int(r, "stock_corrected")?,
                    "at": r.try_get::<i64, _>("reported_at")?,
                }),
            })
        },
    )
    .await?;
    Ok(vec![
        disputes,
        failed_refunds,
        unconfirmed_refunds,
        stuck_orders,
        faulty_machines,
        indeterminate_vends,
        vended_after_expiry,
    ])
}

/// A refund's entry: what names it (`id`, `order_id`, `out_trade_no`, `out_request_no`,
/// `amount_fen` of `r`) and what its list adds.
fn refund_entry<const N: usize>(
    r: &Row,
    more: [(&str, Value); N],
) -> Result<Entry, crate::store::Error> {
    let id = r.try_get::<i64, _>("id")?;
    let mut body = json!({
        "refund_id": id, "order_id": r.try_get::<i64, _>("order_id")?,
        "out_trade_no": r.try_get::<String, _>("out_trade_no")?,
        "out_request_no": r.try_get::<String, _>("out_request_no")?,
        "amount_fen": r.try_get::<i64, _>("amount_fen")?,
    });
    if let Some(fields) = body.as_object_mut() {
        for (name, value) in more {
            fields.insert(name.to_owned(), value);
        }
    }
    Ok(Entry {
        key: format!("refund:{id}"),
        body,
    })
}

/// The rows of one list, each as its entry.
async fn list(
    name: &'static str,
    query: crate::store::sql::Query<'_>,
    pool: &Pool,
    to_entry: impl Fn(&Row) -> Result<Entry, crate::store::Error>,
) -> Result<List, crate::store::Error> {
    let entries = query
        .fetch_all(pool)
        .await?
        .iter()
        .map(to_entry)
        .collect::<Result<_, _>>()?;
    Ok(List { name, entries })
}
