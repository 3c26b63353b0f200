//! The audit trail: one append-only row per money action (a payment received, refunds asked
//! for and settled, a cancel that refunded) and per operator act on the fleet (a machine
//! added, its secret read or replaced, its service stopped or resumed, a fault cleared, a
//! slot edited), written in the transaction of what it records.

use super::{Error, Executor};

/// A payment received for order `order_id` (Alipay is the actor), with its particulars.
pub async fn payment_received<E: Executor>(
    executor: E,
    at: i64,
    order_id: i64,
    detail: &str,
) -> Result<(), Error> {
    let subject = format!("order:{order_id}");
    record(executor, at, "alipay", "payment_received", &subject, detail).await
}

/// Appends one row: who (`actor`) did what (`action`) to which thing (`subject`, e.g.
/// `order:42`, `machine:VM-0001`), with the particulars in `detail`.
pub async fn record<E: Executor>(
    executor: E,
    at: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), Error> {
    super::query(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .defer(executor)
    .await
}
