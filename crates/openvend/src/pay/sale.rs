//! The QR sale (当面付扫码): a machine asks to sell slots, the server reserves the stock,
//! creates the trade with `alipay.trade.precreate` (terminal id, the operator's `seller_id`,
//! a short timeout) and hands back the QR code to show.

use alipay::api::trade::Precreate;
use alipay::{Amount, CallOptions, Outcome};
use sqlx::Row as _;

use crate::domain::fen::Fen;
use crate::domain::order::{OrderEvent, OrderLine, OrderState, order_total};
use crate::services::Services;
use crate::store::orders::{self, NewOrder, OrderError};
use crate::store::{StoreError, get_int, jobs};

/// What a machine asks to sell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The machine's code.
    pub machine: String,
    /// Slots and quantities.
    pub items: Vec<SaleItem>,
}

/// One slot and quantity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleItem {
    /// The slot code.
    pub slot: String,
    /// How many.
    pub qty: u32,
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

/// Why a sale was refused; every variant says so to the machine at once.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// Unknown machine.
    #[error("machine {0} is not known")]
    UnknownMachine(String),
    /// The machine reports a fault.
    #[error("machine {0} is faulty: {1}")]
    MachineFaulty(String, String),
    /// No heartbeat from the machine lately: it could not show the code nor dispense.
    #[error("machine {0} is offline")]
    MachineOffline(String),
    /// The machine asked for this sale before and it is no longer waiting for payment.
    #[error("request {0} was already handled (order {1})")]
    RequestHandled(String, String),
    /// Nothing asked, or too much.
    #[error("a sale needs 1 to 10 lines, each with a quantity of 1 to 10")]
    BadItems,
    /// A slot cannot sell.
    #[error("slot {0} cannot sell: {1}")]
    Slot(String, String),
    /// Alipay refused the trade.
    #[error("Alipay refused the trade: {0}")]
    Refused(String),
    /// Alipay's answer is unknown: the order is being resolved by query.
    #[error("the payment service did not answer; order {0} will be resolved by query")]
    PaymentUnknown(String),
    /// The store.
    #[error(transparent)]
    Order(#[from] OrderError),
}

impl From<StoreError> for SaleError {
    fn from(e: StoreError) -> Self {
        SaleError::Order(OrderError::Store(e))
    }
}

impl From<sqlx::Error> for SaleError {
    fn from(e: sqlx::Error) -> Self {
        SaleError::Order(OrderError::from(e))
    }
}

struct MachineFacts {
    id: i64,
    operator_id: i64,
    terminal_id: String,
    seller_pid: String,
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
    let row = sqlx::query(
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
    if req.items.is_empty()
        || req.items.len() > 10
        || req.items.iter().any(|i| i.qty == 0 || i.qty > 10)
    {
        return Err(SaleError::BadItems);
    }
    let machine = machine_facts(svc, &req.machine, now).await?;
    let (lines, names) = price_lines(svc, machine.id, &req.items).await?;
    let total = order_total(&lines).ok_or(SaleError::BadItems)?;
    let amount = Amount::from_fen(total.0).map_err(|_| SaleError::BadItems)?;
    let out_trade_no = new_out_trade_no(machine.id, now);
    let expires_at = now + i64::from(svc.pay_timeout_minutes) * 60_000;
    let order = NewOrder {
        out_trade_no: out_trade_no.clone(),
        operator_id: machine.operator_id,
        machine_id: machine.id,
        channel: "qr",
        lines,
        total,
        expires_at,
        request_id: request_id.map(str::to_owned),
    };
    let order_id = orders::create_reserving(&svc.db, &order, now)
        .await
        .map_err(|e| match e {
            OrderError::SlotUnavailable(slot) => SaleError::Slot(slot, "out of stock".into()),
            other => SaleError::Order(other),
        })?;

    // The order and its reservation are committed before Alipay is called.
    let precreate = Precreate::new(out_trade_no.clone(), amount, subject(&names))
        .terminal_id(machine.terminal_id.clone())
        .seller_id(machine.seller_pid.clone())
        .timeout_express(format!("{}m", svc.pay_timeout_minutes));
    match svc
        .alipay
        .execute(&precreate, &CallOptions::default())
        .await
    {
        Outcome::Success(answer) => {
            orders::set_payment_refs(&svc.db, order_id, Some(&answer.qr_code), None).await?;
            orders::add_event(
                &svc.db.pool,
                order_id,
                now,
                "alipay",
                "precreated",
                "QR code issued",
            )
            .await?;
            // The notification normally settles the order; querying is the fallback, and at
            // the end of the buyer's time the same job cancels the trade.
            let payload = serde_json::json!({ "order_id": order_id }).to_string();
            let first_poll = now + i64::from(svc.poll_interval_secs) * 1000;
            let key = format!("resolve_payment:{order_id}");
            jobs::enqueue(
                &svc.db.pool,
                "resolve_payment",
                &key,
                &payload,
                first_poll,
                now,
            )
            .await?;
            Ok(SaleStarted {
                order_id,
                out_trade_no,
                qr_code: answer.qr_code,
                amount_fen: total.0,
                expires_at,
            })
        }
        Outcome::Failure(f) => {
            let mut tx = svc.db.begin().await?;
            orders::transition(
                &mut *tx,
                order_id,
                OrderState::AwaitingPayment,
                OrderEvent::ClosedUnpaid,
                now,
            )
            .await?;
            orders::release_reservations(&mut *tx, order_id).await?;
            orders::add_event(
                &mut *tx,
                order_id,
                now,
                "alipay",
                "precreate_refused",
                &f.to_string(),
            )
            .await?;
            tx.commit().await?;
            Err(SaleError::Refused(f.to_string()))
        }
        Outcome::Unknown(u) => {
            let mut tx = svc.db.begin().await?;
            orders::transition(
                &mut *tx,
                order_id,
                OrderState::AwaitingPayment,
                OrderEvent::ResultUnknown,
                now,
            )
            .await?;
            orders::add_event(
                &mut *tx,
                order_id,
                now,
                "alipay",
                "precreate_unknown",
                &u.to_string(),
            )
            .await?;
            let payload = serde_json::json!({ "order_id": order_id }).to_string();
            jobs::enqueue(
                &mut *tx,
                "resolve_payment",
                &format!("resolve_payment:{order_id}"),
                &payload,
                now,
                now,
            )
            .await?;
            tx.commit().await?;
            Err(SaleError::PaymentUnknown(out_trade_no))
        }
    }
}

async fn machine_facts(svc: &Services, code: &str, now: i64) -> Result<MachineFacts, SaleError> {
    let row = sqlx::query(
        "SELECT m.id, m.operator_id, m.terminal_id, m.fault, m.last_heartbeat_at, o.seller_pid FROM machines m JOIN operators o ON o.id = m.operator_id WHERE m.code = $1",
    )
    .bind(code)
    .fetch_optional(&svc.db.pool)
    .await?
    .ok_or_else(|| SaleError::UnknownMachine(code.to_owned()))?;
    if let Some(fault) = row.try_get::<Option<String>, _>("fault")? {
        return Err(SaleError::MachineFaulty(code.to_owned(), fault));
    }
    let last_heartbeat: Option<i64> = row.try_get("last_heartbeat_at")?;
    let window = i64::try_from(svc.device_settings.offline_after_secs).unwrap_or(i64::MAX) * 1000;
    if last_heartbeat.is_none_or(|at| now.saturating_sub(at) > window) {
        return Err(SaleError::MachineOffline(code.to_owned()));
    }
    Ok(MachineFacts {
        id: row.try_get("id")?,
        operator_id: row.try_get("operator_id")?,
        terminal_id: row.try_get("terminal_id")?,
        seller_pid: row.try_get("seller_pid")?,
    })
}

/// Prices the lines from the server's catalogue (never from the machine) and checks each slot.
async fn price_lines(
    svc: &Services,
    machine_id: i64,
    items: &[SaleItem],
) -> Result<(Vec<OrderLine>, Vec<String>), SaleError> {
    let mut lines = Vec::new();
    let mut names = Vec::new();
    for item in items {
        let row = sqlx::query(
            "SELECT s.code, s.product_id, s.price_fen, s.capacity, s.stock, s.reserved, \
             CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled, p.name \
             FROM slots s LEFT JOIN products p ON p.id = s.product_id WHERE s.machine_id = $1 AND s.code = $2",
        )
        .bind(machine_id)
        .bind(&item.slot)
        .fetch_optional(&svc.db.pool)
        .await?
        .ok_or_else(|| SaleError::Slot(item.slot.clone(), "no such slot".into()))?;
        let slot = crate::domain::slot::Slot {
            code: row.try_get("code")?,
            product_id: row.try_get("product_id")?,
            price: Fen(row.try_get("price_fen")?),
            capacity: u32::try_from(get_int(&row, "capacity")?).unwrap_or(0),
            stock: u32::try_from(get_int(&row, "stock")?).unwrap_or(0),
            reserved: u32::try_from(get_int(&row, "reserved")?).unwrap_or(0),
            enabled: get_int(&row, "enabled")? != 0,
        };
        slot.check_sale(item.qty)
            .map_err(|e| SaleError::Slot(item.slot.clone(), e.to_string()))?;
        let product_id = slot
            .product_id
            .ok_or_else(|| SaleError::Slot(item.slot.clone(), "no product".into()))?;
        names.push(
            row.try_get::<Option<String>, _>("name")?
                .unwrap_or_else(|| slot.code.clone()),
        );
        lines.push(OrderLine {
            slot: slot.code,
            product_id,
            qty: item.qty,
            unit_price: slot.price,
        });
    }
    Ok((lines, names))
}

/// The trade subject: product names, without the characters Alipay refuses, ≤ 256 characters.
fn subject(names: &[String]) -> String {
    let joined = names.join(" + ");
    let clean: String = joined
        .chars()
        .filter(|c| !matches!(c, '/' | '=' | '&'))
        .take(256)
        .collect();
    if clean.trim().is_empty() {
        "OpenVend".into()
    } else {
        clean
    }
}

/// `OV` + Beijing date-time + machine id + random: unique, ≤ 64, letters and digits only.
fn new_out_trade_no(machine_id: i64, now: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(now / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(alipay::time::BEIJING);
    format!(
        "OV{:04}{:02}{:02}{:02}{:02}{:02}M{machine_id}R{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        crate::ids::random_hex(10)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_drop_forbidden_characters() {
        assert_eq!(subject(&["a/b".into(), "c=d&e".into()]), "ab + cde");
        assert_eq!(subject(&["///".into()]), "OpenVend");
    }

    #[test]
    fn trade_numbers_are_alipay_safe() {
        let n = new_out_trade_no(42, 1_700_000_000_000);
        assert!(
            n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{n}"
        );
        assert!(n.starts_with("OV20231115"), "{n}");
    }
}
