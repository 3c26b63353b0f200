//! The QR sale (当面付扫码): a machine asks to sell slots, the server reserves the stock,
//! creates the trade with `alipay.trade.precreate` (terminal id, the operator's `seller_id`,
//! a short timeout) and hands back the QR code to show. The steps shared with the H5 sale
//! live in [`super::checkout`].

use alipay::api::trade::Precreate;
use alipay::{CallOptions, Outcome};

use super::checkout::{self};
pub use super::checkout::{SaleError, SaleItem};
use crate::device::ledger::Recorded;
use crate::device::protocol::Command;
use crate::services::Services;
use crate::store::Conn;
use crate::store::jobs::{self, Job};
use crate::store::orders::{self, OrderError};

/// What a machine asks to sell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The machine's code.
    pub machine: String,
    /// Slots and quantities.
    pub items: Vec<SaleItem>,
}

/// A sale waiting for the buyer to pay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SaleStarted {
    /// Order id.
    pub order_id: i64,
    /// Merchant trade number.
    pub out_trade_no: String,
    /// The code to show.
    pub qr_code: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// When the offer ends.
    pub expires_at: i64,
}

/// Starts a QR sale.
pub async fn start_qr_sale(
    svc: &Services,
    req: &SaleRequest,
    now: i64,
) -> Result<SaleStarted, SaleError> {
    Ok(start(svc, req, None, now).await?.0)
}

/// Where a machine's sale is answered: the `show_qr` command is recorded under this key in
/// the transaction that records Alipay's answer, so a retried job answers once.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The machine's request id.
    pub request_id: &'a str,
    /// The command's idempotency key.
    pub key: &'a str,
    /// The job that answers (the buy request's), deleted in the answering transaction.
    pub job: Option<&'a Job>,
}

/// Starts the QR sale a machine asked for with `buy_request`, and records the `show_qr`
/// command that answers it, to [`deliver`](crate::device::ledger::DeviceChannel::deliver).
/// The request id makes it idempotent: asking again (a repeated or re-sent request) answers
/// with the same order and code while it can still be paid, and never creates a second order.
pub async fn start_machine_sale(
    svc: &Services,
    req: &SaleRequest,
    answer: Answer<'_>,
    now: i64,
) -> Result<(SaleStarted, Recorded), SaleError> {
    let again = match existing_request(svc, &req.machine, answer.request_id).await? {
        Some(started) => started?,
        None => match start(svc, req, Some(answer), now).await {
            Ok((started, Some(recorded))) => return Ok((started, recorded)),
            Ok((started, None)) => started,
            Err(SaleError::Order(OrderError::DuplicateRequest)) => {
                // A concurrent copy of the same request won the race.
                match existing_request(svc, &req.machine, answer.request_id).await? {
                    Some(started) => started?,
                    None => return Err(SaleError::Order(OrderError::DuplicateRequest)),
                }
            }
            Err(e) => return Err(e),
        },
    };
    let mut tx = svc.db.begin().await?;
    let recorded = record_show_qr(svc, &mut tx, &req.machine, &again, answer, now).await?;
    tx.commit().await?;
    Ok((again, recorded))
}

/// Records the `show_qr` command answering `answer` and its timeline entry, once per key, and
/// ends the job that answers.
async fn record_show_qr(
    svc: &Services,
    conn: &mut Conn,
    machine: &str,
    started: &SaleStarted,
    answer: Answer<'_>,
    now: i64,
) -> Result<Recorded, SaleError> {
    let command = Command::ShowQr {
        order_id: started.out_trade_no.clone(),
        qr_code: started.qr_code.clone(),
        amount_fen: started.amount_fen,
        expires_at: started.expires_at,
    };
    let recorded = svc
        .device
        .record(&mut *conn, machine, &command, Some(answer.key))
        .await?;
    if recorded.new.is_some() {
        let detail = format!(
            "command {} for request {}",
            recorded.command_id, answer.request_id
        );
        orders::add_event(
            &mut *conn,
            started.order_id,
            now,
            "device",
            "show_qr_sent",
            &detail,
        )
        .await?;
    }
    if let Some(job) = answer.job {
        jobs::complete_in(&mut *conn, job)
            .await
            .map_err(|e| SaleError::Order(OrderError::Store(e)))?;
    }
    Ok(recorded)
}

/// The order an earlier copy of this request made, as the machine should see it.
async fn existing_request(
    svc: &Services,
    machine: &str,
    request_id: &str,
) -> Result<Option<Result<SaleStarted, SaleError>>, SaleError> {
    let row = crate::store::query(
        "SELECT o.id, o.out_trade_no, o.qr_code, o.total_fen, o.expires_at, o.state FROM orders o \
         JOIN machines m ON m.id = o.machine_id WHERE m.code = $1 AND o.request_id = $2",
    )
    .bind(machine)
    .bind(request_id)
    .fetch_optional(&svc.db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let out_trade_no: String = row.try_get("out_trade_no")?;
    let state: String = row.try_get("state")?;
    let qr_code: Option<String> = row.try_get("qr_code")?;
    Ok(Some(match (state.as_str(), qr_code) {
        ("awaiting_payment", Some(qr_code)) => Ok(SaleStarted {
            order_id: row.try_get("id")?,
            out_trade_no,
            qr_code,
            amount_fen: row.try_get("total_fen")?,
            expires_at: row.try_get("expires_at")?,
        }),
        _ => Err(SaleError::RequestHandled(
            request_id.to_owned(),
            out_trade_no,
        )),
    }))
}

async fn start(
    svc: &Services,
    req: &SaleRequest,
    answer: Option<Answer<'_>>,
    now: i64,
) -> Result<(SaleStarted, Option<Recorded>), SaleError> {
    let request_id = answer.map(|a| a.request_id);
    if req.items.is_empty() || req.items.len() > 10 {
        return Err(SaleError::BadItems);
    }
    let machine = checkout::machine(svc, &req.machine).await?;
    let priced = checkout::price(svc, &machine, &req.items).await?;
    let order = checkout::reserve(svc, &machine, &priced, "qr", None, request_id, now).await?;

    // The order and its reservation are committed before Alipay is called.
    let precreate = Precreate::new(
        order.out_trade_no.clone(),
        priced.amount,
        checkout::subject(&priced.names),
    )
    .terminal_id(machine.terminal_id.clone())
    .seller_id(machine.seller_pid.clone())
    .timeout_express(format!("{}m", svc.pay_timeout_minutes));
    match svc
        .alipay
        .execute(&precreate, &CallOptions::default())
        .await
    {
        Outcome::Success(precreated) => {
            let started = SaleStarted {
                order_id: order.order_id,
                out_trade_no: order.out_trade_no,
                qr_code: precreated.qr_code,
                amount_fen: priced.total.0,
                expires_at: order.expires_at,
            };
            let mut tx = svc.db.begin().await?;
            checkout::record_created(
                &mut tx,
                started.order_id,
                Some(&started.qr_code),
                None,
                "precreated",
                "QR code issued",
                now,
            )
            .await?;
            let recorded = match answer {
                Some(a) => {
                    Some(record_show_qr(svc, &mut tx, &machine.code, &started, a, now).await?)
                }
                None => None,
            };
            tx.commit().await?;
            Ok((started, recorded))
        }
        Outcome::Failure(f) => {
            Err(checkout::refused(svc, order.order_id, "precreate_refused", &f, now).await)
        }
        Outcome::Unknown(u) => Err(checkout::unknown(
            svc,
            order.order_id,
            &order.out_trade_no,
            "precreate_unknown",
            &u,
            now,
        )
        .await),
    }
}
