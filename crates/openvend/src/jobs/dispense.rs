//! Dispensing a paid order: send the `dispense` command, then watch it.
//!
//! - Not acknowledged within the command's TTL (the machine is offline or powered off) or
//!   refused by the machine: nothing left it, so every unit is refunded (once).
//! - Acknowledged: the machine's `dispense_result` finishes the order (the device-event job).
//!   No result long after the ack: the order goes to `dispute` for a person, because the
//!   goods may or may not have come out and guessing either way loses money.
//!
//! The command and the order's watch (when this job is queued) are recorded with the payment
//! in one transaction ([`record_paid`], [`orders::mark_paid`]), so a crash anywhere is
//! resumed by the next run: the command row is the memory of what was sent.

use super::Next;
use crate::device::ledger::{ACK_GRACE_MS, Recorded};
use crate::device::protocol::{Command, Line};
use crate::domain::order::{OrderEvent, OrderLine, OrderState};
use crate::pay::vend::{self, ReportedVend, Reporter, UnitResult, VendError, VendOrder};
use crate::services::Services;
use crate::store::Conn;
use crate::store::orders::{self, Order};

/// One step of dispensing order `order_id`.
pub async fn run(svc: &Services, order_id: i64) -> anyhow::Result<Next> {
    let Some(order) = orders::by_id(&svc.db, order_id).await? else {
        return Ok(Next::Done);
    };
    let now = svc.now();
    match order.state {
        OrderState::Paid => {}
        OrderState::Dispensing => return watch_result(svc, &order, now).await,
        _ => return Ok(Next::Done),
    }
    let Some(command) = latest_dispense(svc, &order.out_trade_no).await? else {
        return send(svc, &order).await;
    };
    // The machine may acknowledge until the grace after the TTL; decide only then.
    let decide_at = command.expires_at.saturating_add(ACK_GRACE_MS);
    match command.state.as_str() {
        "pending" | "sent" if decide_at > now => Ok(Next::At(decide_at)),
        "pending" | "sent" | "expired" => {
            svc.device.expire_due().await?;
            // An ack this process holds in memory came in time, though its write keeps
            // failing: the goods may be coming out. Decided once it is written.
            if svc.device.ack_held(&command.command_id) {
                return Ok(Next::At(svc.now() + 1_000));
            }
            let settled = refund_undelivered(
                svc,
                &order,
                "the machine did not acknowledge the dispense in time",
            )
            .await?;
            // An ack that came in time may have been stored since the command was read: the
            // order is vending then, and this job watches for its result instead.
            Ok(if settled {
                Next::Done
            } else {
                Next::At(svc.now())
            })
        }
        "rejected" => {
            let why = command.result.unwrap_or_else(|| "no reason given".into());
            refund_undelivered(svc, &order, &format!("the machine refused: {why}")).await?;
            Ok(Next::Done)
        }
        // Acknowledged or done: the device-event job is moving the order on; look again.
        _ => Ok(Next::At(now + 1_000)),
    }
}

/// Records the dispense command of an order just marked paid, with its timeline entry, in
/// the payment's transaction; [`orders::mark_paid`] set the order's watch to [`watch_at`],
/// when this job is queued to watch the command if the order has not finished by then.
/// Deliver the answer once the transaction has committed: a crash before that leaves the
/// command `pending`, re-delivered when the link or the machine comes back, and this job
/// refunds the order if it is never acknowledged. `lines` are the order's, read before the
/// statement that marked it paid.
pub async fn record_paid(
    svc: &Services,
    conn: &mut Conn,
    (order_id, out_trade_no, machine): (i64, &str, &str),
    lines: Vec<OrderLine>,
    now: i64,
) -> anyhow::Result<Recorded> {
    record(svc, conn, (order_id, out_trade_no, machine), lines, now).await
}

/// The dispense of a paid order with no command yet (queued by an earlier version, or its
/// command lost): record and deliver it now.
async fn send(svc: &Services, order: &Order) -> anyhow::Result<Next> {
    let machine = orders::machine_code(&svc.db, order.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {} has no machine", order.id))?;
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    let lines = orders::lines(&mut *tx, order.id).await?;
    let recorded = record(
        svc,
        &mut tx,
        (order.id, &order.out_trade_no, &machine),
        lines,
        now,
    )
    .await?;
    tx.commit().await?;
    svc.device.deliver(&recorded).await;
    Ok(Next::At(watch_at(svc, now)))
}

async fn record(
    svc: &Services,
    conn: &mut Conn,
    (order_id, out_trade_no, machine): (i64, &str, &str),
    lines: Vec<OrderLine>,
    now: i64,
) -> anyhow::Result<Recorded> {
    let items = lines
        .into_iter()
        .map(|l| Line {
            slot: l.slot,
            qty: l.qty,
        })
        .collect();
    let command = Command::Dispense {
        order_id: out_trade_no.to_owned(),
        items,
        expires_at: Some(svc.device.expiry_from(svc.device.now_ms())),
    };
    let recorded = svc
        .device
        .record(&mut *conn, machine, &command, None)
        .await?;
    orders::add_event(
        &mut *conn,
        order_id,
        now,
        "device",
        "dispense_sent",
        &format!("command {} to {machine}", recorded.command_id),
    )
    .await?;
    Ok(recorded)
}

/// When a dispense recorded at `now` is decided, and so when the dispense job first looks at
/// an order paid at `now`: its command expires a TTL later, and the machine may still
/// acknowledge during the grace after that.
pub fn watch_at(svc: &Services, now: i64) -> i64 {
    now.saturating_add(svc.device.command_ttl_ms())
        .saturating_add(ACK_GRACE_MS)
}

/// An acknowledged dispense waits for its result until the result window closes.
async fn watch_result(svc: &Services, order: &Order, now: i64) -> anyhow::Result<Next> {
    let acked_at = latest_dispense(svc, &order.out_trade_no)
        .await?
        .and_then(|c| c.acked_at)
        .unwrap_or(now);
    let window = i64::try_from(svc.device_settings.result_wait_secs).unwrap_or(i64::MAX) * 1000;
    let deadline = acked_at.saturating_add(window);
    if now < deadline {
        return Ok(Next::At(deadline));
    }
    let mut tx = svc.db.begin().await?;
    orders::transition(
        &mut *tx,
        order.id,
        OrderState::Dispensing,
        OrderEvent::EvidenceConflict,
        now,
    )
    .await?;
    orders::add_event(
        &mut *tx,
        order.id,
        now,
        "system",
        "dispute",
        "the machine acknowledged the dispense but never reported a result; a person must check",
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(
        order_id = order.id,
        "dispense result missing; order needs a person"
    );
    Ok(Next::Done)
}

/// Refunds every unit of an order still paid whose dispense never reached the machine (or
/// that the machine refused), releasing its stock reservations, with the reason on its
/// timeline, in one transaction. Answers whether it settled the order: an order no longer
/// paid (finished already, or acknowledged by the machine meanwhile and vending) is left as
/// it is, so a call that loses a race with the ack changes nothing.
pub async fn refund_undelivered(svc: &Services, order: &Order, why: &str) -> anyhow::Result<bool> {
    let units: Vec<UnitResult> = orders::lines(&svc.db.pool, order.id)
        .await?
        .into_iter()
        .flat_map(|l| {
            std::iter::repeat_n(
                UnitResult {
                    slot: l.slot,
                    result: ReportedVend::Failed,
                    reason: Some("undelivered".into()),
                },
                l.qty as usize,
            )
        })
        .collect();
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    orders::add_event(
        &mut *tx,
        order.id,
        now,
        "device",
        "dispense_undelivered",
        why,
    )
    .await?;
    match vend::record_results_in(
        &mut tx,
        now,
        VendOrder::Id(order.id),
        &units,
        Reporter::Undelivered,
    )
    .await
    {
        Ok(recorded) => {
            tx.commit().await?;
            if let Some(key) = recorded.refund_job {
                svc.run_soon(key);
            }
            Ok(true)
        }
        // Dropping the transaction takes the timeline entry back with it.
        Err(VendError::NotVending(..)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The order's latest dispense command, as the ledger has it.
pub(crate) struct DispenseCommand {
    pub(crate) state: String,
    pub(crate) expires_at: i64,
    pub(crate) acked_at: Option<i64>,
    pub(crate) result: Option<String>,
    pub(crate) command_id: String,
}

pub(crate) async fn latest_dispense(
    svc: &Services,
    out_trade_no: &str,
) -> anyhow::Result<Option<DispenseCommand>> {
    let row = crate::store::query(
        "SELECT state, expires_at, acked_at, result, command_id FROM device_commands \
         WHERE order_id = $1 AND kind = 'dispense' ORDER BY id DESC LIMIT 1",
    )
    .bind(out_trade_no)
    .fetch_optional(&svc.db.pool)
    .await?;
    row.map(|r| {
        Ok(DispenseCommand {
            state: r.try_get(0)?,
            expires_at: r.try_get(1)?,
            acked_at: r.try_get(2)?,
            result: r.try_get(3)?,
            command_id: r.try_get(4)?,
        })
    })
    .transpose()
}
