//! What a machine's event means for orders, stock and the machine. The ledger has already
//! verified, deduplicated and stored the event and queued this job in the same transaction;
//! every branch here is idempotent, because a crash can run it twice.

use super::Next;
use super::dispense;
use crate::device::protocol::{AckStatus, Event, ItemResult, Line};
use crate::pay::sale;
use crate::pay::vend::{self, UnitResult, VendError};
use crate::services::Services;
use crate::store::orders;

/// A stored event, as its job carries it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The machine's code.
    pub machine: &'a str,
    /// The event kind.
    pub kind: &'a str,
    /// The event body, as stored.
    pub body: &'a str,
}

/// Handles the stored event `msg_id` of machine `machine_id`: the one its job carries, or
/// read back from the store.
pub async fn run(
    svc: &Services,
    machine_id: i64,
    msg_id: &str,
    carried: Option<Stored<'_>>,
) -> anyhow::Result<Next> {
    let (machine, kind, body) = match carried {
        Some(s) => (s.machine.to_owned(), s.kind.to_owned(), s.body.to_owned()),
        None => {
            let Some(row) = crate::store::query(
                "SELECT e.kind, e.body, m.code FROM device_events e JOIN machines m ON m.id = e.machine_id \
                 WHERE e.machine_id = $1 AND e.msg_id = $2",
            )
            .bind(machine_id)
            .bind(msg_id)
            .fetch_optional(&svc.db.pool)
            .await?
            else {
                return Ok(Next::Done);
            };
            (row.try_get(2)?, row.try_get(0)?, row.try_get(1)?)
        }
    };
    // The ledger accepted it, so it parses; a failure here is a bug worth a log, not a retry.
    let event = match Event::parse(&kind, &body) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(machine, msg_id, error = %e, "stored device event does not parse");
            return Ok(Next::Done);
        }
    };
    match event {
        Event::Ack {
            command_id,
            status,
            reason,
        } => on_ack(svc, &command_id, status, reason.as_deref()).await?,
        Event::DispenseResult {
            order_id, items, ..
        } => on_result(svc, &machine, &order_id, &items).await?,
        Event::BuyRequest { request_id, items } => {
            on_buy_request(svc, &machine, msg_id, &request_id, &items).await?;
        }
        Event::Fault { code, detail } => on_fault(svc, machine_id, &code, &detail).await?,
        Event::Heartbeat { .. } => {}
        Event::DoorClosed { .. } | Event::FaceToken { .. } => {
            tracing::info!(
                machine,
                kind,
                "event kind not used by this machine's sale flow"
            );
        }
    }
    Ok(Next::Done)
}

async fn on_ack(
    svc: &Services,
    command_id: &str,
    status: AckStatus,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let Some(command) = svc.device.command(command_id).await? else {
        return Ok(());
    };
    let Some(order_ref) = command.order_id.as_deref() else {
        return Ok(());
    };
    let Some(order) = orders::by_out_trade_no(&svc.db, order_ref).await? else {
        return Ok(());
    };
    let now = svc.now();
    match (command.kind.as_str(), status) {
        ("dispense", AckStatus::Accepted | AckStatus::AlreadyDone) => {
            // The ledger now applies an accepted dispense in the transaction that records it
            // and queues no job; this is for jobs an earlier version queued. The result may
            // have finished the order already.
            let mut tx = svc.db.begin().await?;
            orders::acknowledge_dispense(&mut tx, &order.out_trade_no, command_id, now).await?;
            tx.commit().await?;
        }
        ("dispense", AckStatus::Rejected) => {
            let why = format!(
                "the machine refused: {}",
                reason.unwrap_or("no reason given")
            );
            dispense::refund_undelivered(svc, &order, &why).await?;
        }
        (kind, status) => {
            let detail = match reason {
                Some(r) => format!("{kind} {status:?}: {r}"),
                None => format!("{kind} {status:?}"),
            };
            orders::add_event(&svc.db.pool, order.id, now, "device", "ack", &detail).await?;
        }
    }
    Ok(())
}

async fn on_result(
    svc: &Services,
    machine: &str,
    order_ref: &str,
    items: &[ItemResult],
) -> anyhow::Result<()> {
    let Some(order) = orders::by_out_trade_no(&svc.db, order_ref).await? else {
        return Ok(());
    };
    let units: Vec<UnitResult> = items.iter().map(UnitResult::from).collect();
    match vend::record_results(svc, order.id, &units, vend::Reporter::Machine).await {
        Ok(outcome) => {
            tracing::info!(machine, order_id = order.id, state = %outcome.state, refund_fen = outcome.refund.0, "vend recorded");
            Ok(())
        }
        // A late or repeated report for a finished order changes nothing.
        Err(VendError::NotVending(..)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A buy request an earlier version queued as a device event: taken as the ledger now takes
/// one, in a transaction of its own.
async fn on_buy_request(
    svc: &Services,
    machine: &str,
    msg_id: &str,
    request_id: &str,
    items: &[Line],
) -> anyhow::Result<()> {
    let request = sale::BuyRequest {
        machine,
        msg_id,
        request_id,
        items,
    };
    let mut tx = svc.db.begin().await?;
    let reads = sale::read_ahead(&mut tx, &request).await?;
    let taken = sale::take_request_in(
        &mut tx,
        &svc.device,
        svc.sale_terms,
        request,
        reads,
        svc.now(),
    )
    .await?;
    tx.commit().await?;
    match taken {
        // Run here, as the dispatcher would: this job is claimed by its transaction.
        sale::Taken::Precreate(claimed) => {
            if let Some(job) = claimed.committed() {
                Box::pin(super::run_claimed(svc, job)).await;
            }
        }
        sale::Taken::Answered(recorded) => svc.device.deliver(&recorded).await,
        sale::Taken::BeingCreated => {}
    }
    Ok(())
}

async fn on_fault(svc: &Services, machine_id: i64, code: &str, detail: &str) -> anyhow::Result<()> {
    let text: String = format!("{code}: {detail}").chars().take(500).collect();
    crate::store::query("UPDATE machines SET fault = $2 WHERE id = $1")
        .bind(machine_id)
        .bind(&text)
        .execute(&svc.db.pool)
        .await?;
    tracing::warn!(machine_id, fault = %text, "machine reports a fault; its sales are stopped");
    Ok(())
}
