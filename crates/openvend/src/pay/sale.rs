//! The QR sale (当面付扫码): a machine asks to sell slots, the server reserves the stock,
//! creates the trade with `alipay.trade.precreate` (terminal id, the operator's `seller_id`,
//! a short timeout) and hands back the QR code to show. The steps shared with the H5 sale
//! live in [`super::checkout`].

use alipay::api::trade::Precreate;
use alipay::{CallOptions, Outcome};

use super::checkout::{self};
pub use super::checkout::{SaleError, SaleItem};
use crate::services::Services;

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
    if req.items.is_empty() || req.items.len() > 10 {
        return Err(SaleError::BadItems);
    }
    let machine = checkout::machine(svc, &req.machine).await?;
    let priced = checkout::price(svc, &machine, &req.items).await?;
    let order = checkout::reserve(svc, &machine, &priced, "qr", None, now).await?;

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
