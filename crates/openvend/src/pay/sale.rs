//! The QR sale (当面付扫码): a machine asks to sell slots, the server reserves the stock,
//! creates the trade with `alipay.trade.precreate` (terminal id, the operator's `seller_id`,
//! a short timeout) and hands back the QR code to show. The steps shared with the H5 sale
//! live in [`super::checkout`].

use alipay::api::trade::Precreate;
use alipay::{CallOptions, Outcome};

use super::checkout::{self};
pub use super::checkout::{SaleError, SaleItem};
use crate::services::Services;
use crate::store::orders::OrderError;

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
    start(svc, req, None, now).await
}

/// Starts the QR sale a machine asked for with `buy_request`. The request id makes it
/// idempotent: asking again (a repeated or re-sent request) returns the same order and code
/// while it can still be paid, and never creates a second order.
pub async fn start_machine_sale(
    svc: &Services,
    req: &SaleRequest,
    request_id: &str,
    now: i64,
) -> Result<SaleStarted, SaleError> {
    if let Some(started) = existing_request(svc, &req.machine, request_id).await? {
        return started;
    }
    match start(svc, req, Some(request_id), now).await {
        Err(SaleError::Order(OrderError::DuplicateRequest)) => {
            // A concurrent copy of the same request won the race.
            match existing_request(svc, &req.machine, request_id).await? {
                Some(started) => started,
                None => Err(SaleError::Order(OrderError::DuplicateRequest)),
            }
        }
        other => other,
    }
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
    request_id: Option<&str>,
    now: i64,
) -> Result<SaleStarted, SaleError> {
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
        Outcome::Success(answer) => {
            checkout::created(
                svc,
                order.order_id,
                Some(&answer.qr_code),
                None,
                "precreated",
                "QR code issued",
                now,
            )
            .await?;
            Ok(SaleStarted {
                order_id: order.order_id,
                out_trade_no: order.out_trade_no,
                qr_code: answer.qr_code,
                amount_fen: priced.total.0,
                expires_at: order.expires_at,
            })
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
