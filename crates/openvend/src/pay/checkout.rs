//! What every sale channel shares before and after its Alipay call: find the machine, price
//! the lines from the server's catalogue (never from the buyer or the machine), reserve the
//! stock with the order in one transaction, and record Alipay's answer (success: the payment
//! refs and the resolver job; refused: closed and stock released; unknown: resolved by query).
//! The QR sale (`pay::sale`) and the H5 sale (`h5::shop`) differ only in the call between.

use alipay::{Amount, Failure, Unknown};

use crate::device::ledger::DeviceError;
use crate::domain::fen::Fen;
use crate::domain::order::{OrderEvent, OrderLine, OrderState, order_total};
use crate::services::Services;
use crate::store::orders::{self, NewOrder, OrderError};
use crate::store::{Conn, Executor, StoreError, get_int, watches};

/// Minutes a buyer has to pay (Alipay's `timeout_express`).
pub const PAY_TIMEOUT_MINUTES: u32 = 5;

/// Seconds from an order's creation to its resolver's first query, and between queries while
/// the buyer may still pay (the notification's fallback).
pub const POLL_INTERVAL_SECS: u32 = 10;

/// The timings a sale is opened with, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleTerms {
    /// A machine not heard from for this long (ms) cannot sell.
    pub offline_after_ms: i64,
    /// Minutes the buyer has to pay.
    pub pay_timeout_minutes: u32,
    /// Seconds to the resolver's first query.
    pub poll_interval_secs: u32,
}

impl SaleTerms {
    /// The terms of a server with these device settings.
    pub fn new(device: &crate::config::DeviceSettings) -> SaleTerms {
        SaleTerms {
            offline_after_ms: i64::try_from(device.offline_after_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
            pay_timeout_minutes: PAY_TIMEOUT_MINUTES,
            poll_interval_secs: POLL_INTERVAL_SECS,
        }
    }
}

impl Default for SaleTerms {
    fn default() -> Self {
        SaleTerms::new(&crate::config::DeviceSettings::default())
    }
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

/// Why a sale was refused; every variant says so to the buyer or machine at once.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// Unknown machine.
    #[error("machine {0} is not known")]
    UnknownMachine(String),
    /// The machine reports a fault.
    #[error("machine {0} is faulty: {1}")]
    MachineFaulty(String, String),
    /// The operator took the machine out of service.
    #[error("machine {0} is disabled by its operator")]
    MachineDisabled(String),
    /// Nothing asked, or too much.
    #[error("a sale needs 1 to 10 lines, each with a quantity of 1 to 10")]
    BadItems,
    /// A slot cannot sell.
    #[error("slot {0} cannot sell: {1}")]
    Slot(String, String),
    /// No heartbeat from the machine lately: it could neither show a code nor dispense.
    #[error("machine {0} is offline")]
    MachineOffline(String),
    /// The machine asked for this sale before and it no longer waits for payment.
    #[error("request {0} was already handled (order {1})")]
    RequestHandled(String, String),
    /// Alipay refused the trade.
    #[error("Alipay refused the trade: {0}")]
    Refused(String),
    /// Alipay's answer is unknown: the order is being resolved by query.
    #[error("the payment service did not answer; order {0} will be resolved by query")]
    PaymentUnknown(String),
    /// Alipay answered after the order was given up (its resolver cancels the trade).
    #[error("order {0} no longer waits for payment: Alipay's answer came too late")]
    AnsweredTooLate(String),
    /// The store.
    #[error(transparent)]
    Order(#[from] OrderError),
}

impl From<StoreError> for SaleError {
    fn from(e: StoreError) -> Self {
        SaleError::Order(OrderError::Store(e))
    }
}

impl From<DeviceError> for SaleError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::UnknownMachine(code) => SaleError::UnknownMachine(code),
            DeviceError::Store(e) => SaleError::from(e),
        }
    }
}

impl From<crate::store::Error> for SaleError {
    fn from(e: crate::store::Error) -> Self {
        SaleError::Order(OrderError::from(e))
    }
}

/// What a sale needs to know about its machine.
#[derive(Debug, Clone)]
pub struct MachineFacts {
    /// Row id.
    pub id: i64,
    /// The machine's code.
    pub code: String,
    /// Its operator.
    pub operator_id: i64,
    /// Alipay `terminal_id`.
    pub terminal_id: String,
    /// The operator's PID (`seller_id`, collection restriction).
    pub seller_pid: String,
    /// The machine's last sign of life (server clock, ms).
    pub last_heartbeat_at: Option<i64>,
}

impl MachineFacts {
    /// Refuses a sale on a machine that has not been heard from within the offline window.
    pub fn ensure_online(&self, terms: &SaleTerms, now: i64) -> Result<(), SaleError> {
        if self
            .last_heartbeat_at
            .is_none_or(|at| now.saturating_sub(at) > terms.offline_after_ms)
        {
            return Err(SaleError::MachineOffline(self.code.clone()));
        }
        Ok(())
    }
}

/// Lines priced from the catalogue.
#[derive(Debug, Clone)]
pub struct Priced {
    /// The lines, at the server's prices.
    pub lines: Vec<OrderLine>,
    /// Product names, line by line.
    pub names: Vec<String>,
    /// Total of the lines.
    pub total: Fen,
    /// The same total for Alipay.
    pub amount: Amount,
}

/// An order written with its stock reserved, not yet known to Alipay.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// Order id.
    pub order_id: i64,
    /// Merchant trade number.
    pub out_trade_no: String,
    /// When the buyer's time is up.
    pub expires_at: i64,
}

/// The machine with this code, if it can sell.
pub async fn machine(svc: &Services, code: &str) -> Result<MachineFacts, SaleError> {
    machine_on(&svc.db.pool, code).await
}

/// [`machine`], read on `executor` (a transaction's connection, or the pool).
pub async fn machine_on<E: Executor>(executor: E, code: &str) -> Result<MachineFacts, SaleError> {
    let row = machine_query(code).fetch_optional(executor).await?;
    machine_from(row, code)
}

/// The statement that reads what [`machine_from`] checks.
pub fn machine_query(code: &str) -> crate::store::Query<'_> {
    crate::store::query(
        "SELECT m.id, m.operator_id, m.terminal_id, m.fault, m.last_heartbeat_at, m.disabled_at, o.seller_pid \
         FROM machines m JOIN operators o ON o.id = m.operator_id WHERE m.code = $1",
    )
    .bind(code)
}

/// The machine [`machine_query`] found, if it can sell.
pub fn machine_from(row: Option<crate::store::Row>, code: &str) -> Result<MachineFacts, SaleError> {
    let row = row.ok_or_else(|| SaleError::UnknownMachine(code.to_owned()))?;
    if row.try_get::<Option<i64>, _>("disabled_at")?.is_some() {
        return Err(SaleError::MachineDisabled(code.to_owned()));
    }
    if let Some(fault) = row.try_get::<Option<String>, _>("fault")? {
        return Err(SaleError::MachineFaulty(code.to_owned(), fault));
    }
    Ok(MachineFacts {
        id: row.try_get("id")?,
        code: code.to_owned(),
        operator_id: row.try_get("operator_id")?,
        terminal_id: row.try_get("terminal_id")?,
        seller_pid: row.try_get("seller_pid")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
    })
}

/// Checks the request's shape and prices its lines from the server's catalogue, checking
/// each slot can sell the quantity asked.
pub async fn price(
    svc: &Services,
    machine: &MachineFacts,
    items: &[SaleItem],
) -> Result<Priced, SaleError> {
    price_on(&svc.db.pool, machine, items).await
}

/// Most lines in one sale.
pub const MAX_SALE_LINES: usize = 10;
/// Most units of one line of a sale.
pub const MAX_SALE_QTY: u32 = 10;

// A machine reports one result per unit: every unit of the largest sale must fit in one report.
const _: () =
    assert!(MAX_SALE_LINES * MAX_SALE_QTY as usize <= crate::device::protocol::MAX_RESULTS);

/// Refuses a request with no lines, more than [`MAX_SALE_LINES`], or a quantity outside 1 to
/// [`MAX_SALE_QTY`].
pub fn check_items(items: &[SaleItem]) -> Result<(), SaleError> {
    if items.is_empty()
        || items.len() > MAX_SALE_LINES
        || items.iter().any(|i| i.qty == 0 || i.qty > MAX_SALE_QTY)
    {
        return Err(SaleError::BadItems);
    }
    Ok(())
}

/// [`price`], read on `executor` in one statement.
pub async fn price_on<E: Executor>(
    executor: E,
    machine: &MachineFacts,
    items: &[SaleItem],
) -> Result<Priced, SaleError> {
    check_items(items)?;
    let sql = slots_sql(items.len());
    let rows = slots_query(&sql, &machine.code, items)
        .fetch_all(executor)
        .await?;
    priced_from(&rows, items)
}

/// The text of [`slots_query`] for `lines` lines.
pub fn slots_sql(lines: usize) -> String {
    let codes: Vec<String> = (0..lines).map(|i| format!("${}", i + 2)).collect();
    format!(
        "SELECT s.code, s.product_id, s.price_fen, s.capacity, s.stock, s.reserved, \
         CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled, p.name \
         FROM slots s JOIN machines m ON m.id = s.machine_id LEFT JOIN products p ON p.id = s.product_id \
         WHERE m.code = $1 AND s.code IN ({})",
        codes.join(", ")
    )
}

/// The statement that reads the slots [`priced_from`] prices, on the machine with this code
/// (so it needs nothing read before it). `sql` is [`slots_sql`] for these items.
pub fn slots_query<'q>(sql: &'q str, machine: &str, items: &[SaleItem]) -> crate::store::Query<'q> {
    let mut query = crate::store::query(sql).bind(machine);
    for item in items {
        query = query.bind(&item.slot);
    }
    query
}

/// Prices `items` from the rows of [`slots_query`], checking each slot can sell the quantity
/// asked (the items are checked already: [`check_items`]).
pub fn priced_from(rows: &[crate::store::Row], items: &[SaleItem]) -> Result<Priced, SaleError> {
    let mut lines = Vec::new();
    let mut names = Vec::new();
    for item in items {
        let row = rows
            .iter()
            .find(|r| r.try_get::<String, _>("code").is_ok_and(|c| c == item.slot))
            .ok_or_else(|| SaleError::Slot(item.slot.clone(), "no such slot".into()))?;
        let slot = crate::domain::slot::Slot {
            code: row.try_get("code")?,
            product_id: row.try_get("product_id")?,
            price: Fen(row.try_get("price_fen")?),
            capacity: u32::try_from(get_int(row, "capacity")?).unwrap_or(0),
            stock: u32::try_from(get_int(row, "stock")?).unwrap_or(0),
            reserved: u32::try_from(get_int(row, "reserved")?).unwrap_or(0),
            enabled: get_int(row, "enabled")? != 0,
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
    let total = order_total(&lines).ok_or(SaleError::BadItems)?;
    let amount = Amount::from_fen(total.0).map_err(|_| SaleError::BadItems)?;
    Ok(Priced {
        lines,
        names,
        total,
        amount,
    })
}

/// Writes the order and reserves its stock (for `account`, when a buyer account places it).
/// Committed before Alipay is called.
pub async fn reserve(
    svc: &Services,
    machine: &MachineFacts,
    priced: &Priced,
    channel: &'static str,
    account: Option<i64>,
    now: i64,
) -> Result<Reserved, SaleError> {
    let mut tx = svc.db.begin().await?;
    let order = Reservation {
        terms: svc.sale_terms,
        machine,
        priced,
        channel,
        request_id: None,
    };
    let reserved = reserve_in(&mut tx, &order, account, now).await?;
    tx.commit().await?;
    Ok(reserved)
}

/// What [`reserve_in`] writes.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    /// The terms of the sale.
    pub terms: SaleTerms,
    /// Where.
    pub machine: &'a MachineFacts,
    /// What, at what price.
    pub priced: &'a Priced,
    /// `qr`, `jsapi`, …
    pub channel: &'static str,
    /// The machine's request id, for a sale a machine asked for.
    pub request_id: Option<&'a str>,
}

/// [`reserve`] in the caller's transaction; on an error nothing of the order remains in it.
pub async fn reserve_in(
    conn: &mut Conn,
    sale: &Reservation<'_>,
    account: Option<i64>,
    now: i64,
) -> Result<Reserved, SaleError> {
    let Reservation {
        terms,
        machine,
        priced,
        channel,
        request_id,
    } = *sale;
    // A machine that cannot be reached could neither show the code nor vend.
    machine.ensure_online(&terms, now)?;
    let out_trade_no = new_out_trade_no(machine.id, now);
    let expires_at = now + i64::from(terms.pay_timeout_minutes) * 60_000;
    let order = NewOrder {
        out_trade_no: out_trade_no.clone(),
        operator_id: machine.operator_id,
        machine_id: machine.id,
        channel,
        lines: priced.lines.clone(),
        total: priced.total,
        expires_at,
        request_id: request_id.map(str::to_owned),
        resolve_at: now + i64::from(terms.poll_interval_secs) * 1000,
    };
    let order_id = orders::create_reserving_in(conn, &order, account, now)
        .await
        .map_err(|e| match e {
            OrderError::SlotUnavailable(slot) => SaleError::Slot(slot, "out of stock".into()),
            other => SaleError::Order(other),
        })?;
    Ok(Reserved {
        order_id,
        out_trade_no,
        expires_at,
    })
}

/// Alipay created the trade: records its refs. The order's resolver (watching from the order)
/// queries while the buyer may still pay (the notification's fallback) and cancels when
/// their time is up. [`SaleError::AnsweredTooLate`] when the resolver gave the order up
/// first: nothing is recorded and the refs must not be shown.
pub async fn created(
    svc: &Services,
    order_id: i64,
    out_trade_no: &str,
    qr_code: Option<&str>,
    trade_no: Option<&str>,
    (kind, detail): (&str, &str),
    now: i64,
) -> Result<(), SaleError> {
    let mut tx = svc.db.begin().await?;
    record_created(
        &mut tx,
        order_id,
        out_trade_no,
        qr_code,
        trade_no,
        (kind, detail),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// [`created`] in the caller's transaction, for a sale that records more with it (the
/// machine's `show_qr` answer).
pub async fn record_created(
    conn: &mut Conn,
    order_id: i64,
    out_trade_no: &str,
    qr_code: Option<&str>,
    trade_no: Option<&str>,
    (kind, detail): (&str, &str),
    now: i64,
) -> Result<(), SaleError> {
    if !orders::set_payment_refs(&mut *conn, order_id, qr_code, trade_no).await? {
        return Err(SaleError::AnsweredTooLate(out_trade_no.to_owned()));
    }
    orders::add_event(&mut *conn, order_id, now, "alipay", kind, detail).await?;
    Ok(())
}

/// [`record_created`] queued to go out with the transaction's next statement: read whether
/// the order still waited for its answer with [`created_applied`] after that statement ran
/// (and drop the transaction if not).
pub async fn queue_created(
    conn: &mut Conn,
    order_id: i64,
    qr_code: Option<&str>,
    trade_no: Option<&str>,
    (kind, detail): (&str, &str),
    now: i64,
) -> Result<crate::store::Later, SaleError> {
    let applied = orders::set_payment_refs_later(&mut *conn, order_id, qr_code, trade_no).await?;
    orders::add_event(&mut *conn, order_id, now, "alipay", kind, detail).await?;
    Ok(applied)
}

/// Whether what [`queue_created`] queued found the order still waiting for its answer.
pub fn created_applied(applied: crate::store::Later, out_trade_no: &str) -> Result<(), SaleError> {
    match applied.rows_affected()? {
        1 => Ok(()),
        _ => Err(SaleError::AnsweredTooLate(out_trade_no.to_owned())),
    }
}

/// Alipay refused the trade: the order closes unpaid and its stock is released.
pub async fn refused(
    svc: &Services,
    order_id: i64,
    kind: &str,
    failure: &Failure,
    now: i64,
) -> SaleError {
    let record = async {
        let mut tx = svc.db.begin().await?;
        orders::close_unpaid_in(&mut tx, order_id, OrderState::AwaitingPayment, now).await?;
        orders::add_event(
            &mut *tx,
            order_id,
            now,
            "alipay",
            kind,
            &failure.to_string(),
        )
        .await?;
        tx.commit().await?;
        Ok::<(), SaleError>(())
    };
    match record.await {
        Ok(()) => SaleError::Refused(failure.to_string()),
        Err(e) => e,
    }
}

/// Alipay's answer is unknown: the order is resolved by query at once (nobody holds a code
/// or trade number to pay with, so the resolver cancels rather than waits).
pub async fn unknown(
    svc: &Services,
    order_id: i64,
    out_trade_no: &str,
    kind: &str,
    unknown: &Unknown,
    now: i64,
) -> SaleError {
    let record = async {
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
            kind,
            &unknown.to_string(),
        )
        .await?;
        // The resolver watches the order from its first poll: make it due now.
        watches::resolve_now(&mut *tx, order_id, now).await?;
        tx.commit().await?;
        Ok::<(), SaleError>(())
    };
    match record.await {
        Ok(()) => {
            svc.run_soon(resolve_key(order_id));
            SaleError::PaymentUnknown(out_trade_no.to_owned())
        }
        Err(e) => e,
    }
}

pub use orders::resolve_key;

/// The trade subject: product names, without the characters Alipay refuses, ≤ 256 characters.
pub fn subject(names: &[String]) -> String {
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
