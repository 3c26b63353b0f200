//! Orders in the store: created with their stock reservations in one transaction, moved only
//! through the domain state machine with a conditional update (so two writers cannot both
//! move the same order), and a timeline of everything that happened to them.

use super::{Conn, Db, StoreError};
use crate::domain::fen::Fen;
use crate::domain::order::{IllegalTransition, OrderEvent, OrderLine, OrderState};

/// A new order to write.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The merchant trade number.
    pub out_trade_no: String,
    /// The operator.
    pub operator_id: i64,
    /// The machine.
    pub machine_id: i64,
    /// `qr`, `jsapi`, `face` or `cabinet`.
    pub channel: &'static str,
    /// The lines, priced by the server.
    pub lines: Vec<OrderLine>,
    /// Total of the lines.
    pub total: Fen,
    /// When the buyer's time is up.
    pub expires_at: i64,
    /// The machine's request id, for sales the machine asked for (one order per request).
    pub request_id: Option<String>,
    /// When the payment resolver first looks at the order: the order's watch, written in its
    /// own row, so no order can be left unwatched whatever fails after (a crash or a lost
    /// connection between Alipay's answer and recording it). The job dispatcher queues the
    /// resolver then ([`crate::store::watches`]), if the order still waits.
    pub resolve_at: i64,
}

/// The dedup key of an order's payment resolver job.
pub fn resolve_key(order_id: i64) -> String {
    format!("resolve_payment:{order_id}")
}

/// The dedup key of an order's dispense job.
pub fn dispense_key(order_id: i64) -> String {
    format!("dispense:{order_id}")
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Row id.
    pub id: i64,
    /// The merchant trade number.
    pub out_trade_no: String,
    /// The operator.
    pub operator_id: i64,
    /// The machine.
    pub machine_id: i64,
    /// Current state.
    pub state: OrderState,
    /// Total.
    pub total: Fen,
    /// Refunded so far.
    pub refunded: Fen,
    /// Alipay's trade number, once known.
    pub trade_no: Option<String>,
    /// The QR code shown, for QR sales.
    pub qr_code: Option<String>,
    /// When unpaid orders close.
    pub expires_at: i64,
    /// When the resolver first sent `alipay.trade.cancel` for it: from then on its trade ends
    /// closed, or its payment goes back (by the cancel, or a refund if Alipay will not cancel
    /// it); a payment is never served.
    pub cancel_sent_at: Option<i64>,
}

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The machine already has an order for this request id: nothing was written.
    #[error("this machine already asked for this sale (same request id)")]
    DuplicateRequest,
    /// A slot cannot sell (disabled, empty, unknown): nothing was written.
    #[error("slot {0} cannot sell the quantity asked (unknown, disabled or out of stock)")]
    SlotUnavailable(String),
    /// The state machine refused.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Another writer moved the order first.
    #[error("order {0} changed concurrently; reload and retry")]
    Concurrent(i64),
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::store::Error> for OrderError {
    fn from(e: crate::store::Error) -> Self {
        OrderError::Store(StoreError::Store(e))
    }
}

/// Writes an order and reserves its stock atomically: either every slot is reserved and the
/// order exists, or nothing changed.
pub async fn create_reserving(db: &Db, order: &NewOrder, now: i64) -> Result<i64, OrderError> {
    create_reserving_for(db, order, None, now).await
}

/// [`create_reserving`], also recording (in the same transaction) the buyer account that
/// placed the order, when there is one (the H5 pages).
pub async fn create_reserving_for(
    db: &Db,
    order: &NewOrder,
    account: Option<i64>,
    now: i64,
) -> Result<i64, OrderError> {
    let mut tx = db.begin().await?;
    let id = create_reserving_in(&mut tx, order, account, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`create_reserving_for`] in the caller's transaction (a machine's buy request is recorded
/// with its order). On an error nothing of the order remains in the transaction, which the
/// caller may go on with.
pub async fn create_reserving_in(
    conn: &mut Conn,
    order: &NewOrder,
    account: Option<i64>,
    now: i64,
) -> Result<i64, OrderError> {
    if let [line] = order.lines.as_slice()
        && conn.is_postgres()
    {
        // One round trip for the reservation and the order.
        let id = reserve_and_insert_one_line(&mut *conn, order, line, now).await?;
        return record_created_order(conn, order, id, account, now).await;
    }
    let mut reserved = 0;
    let mut refusal = None;
    for line in &order.lines {
        if reserve_line(&mut *conn, order.machine_id, line).await? {
            reserved += 1;
        } else {
            refusal = Some(OrderError::SlotUnavailable(line.slot.clone()));
            break;
        }
    }
    // A second copy of the request (same machine and request id) writes nothing.
    let id = match refusal {
        Some(_) => None,
        None => bind_new_order(
            crate::store::query(
                "INSERT INTO orders (out_trade_no, operator_id, machine_id, channel, state, total_fen, created_at, updated_at, expires_at, request_id, watch_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10) \
                 ON CONFLICT (machine_id, request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING id",
            ),
            order,
            now,
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get::<i64, _>(0))
        .transpose()?,
    };
    let Some(id) = id else {
        // Give back what this order reserved.
        for line in &order.lines[..reserved] {
            give_back_line(&mut *conn, order.machine_id, line).await?;
        }
        return Err(refusal.unwrap_or(OrderError::DuplicateRequest));
    };
    record_created_order(conn, order, id, account, now).await
}

/// Binds `$1`–`$10` of an order's row: out_trade_no, operator, machine, channel, state,
/// total, created (and updated) at, expires at, request id, and the payment's first poll as
/// the order's watch (see migration 22).
fn bind_new_order<'q>(
    query: crate::store::Query<'q>,
    order: &'q NewOrder,
    now: i64,
) -> crate::store::Query<'q> {
    query
        .bind(&order.out_trade_no)
        .bind(order.operator_id)
        .bind(order.machine_id)
        .bind(order.channel)
        .bind(OrderState::AwaitingPayment.as_str())
        .bind(order.total.0)
        .bind(now)
        .bind(order.expires_at)
        .bind(order.request_id.as_deref())
        .bind(order.resolve_at)
}

/// On PostgreSQL, a one-line order's reservation and its row in one statement: the order is
/// inserted only if the slot had the stock, and the answer says which happened. A second
/// copy of the request (same machine and request id) writes nothing: its reservation is given
/// back, as on the path that reserves line by line.
async fn reserve_and_insert_one_line(
    conn: &mut Conn,
    order: &NewOrder,
    line: &OrderLine,
    now: i64,
) -> Result<i64, OrderError> {
    let row = bind_new_order(
        crate::store::query(
            "WITH reserved AS (\
                 UPDATE slots SET reserved = reserved + $11 \
                 WHERE machine_id = $3 AND code = $12 AND enabled AND product_id = $13 AND stock - reserved >= $11 \
                 RETURNING 1), \
             created AS (\
                 INSERT INTO orders (out_trade_no, operator_id, machine_id, channel, state, total_fen, created_at, updated_at, expires_at, request_id, watch_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM reserved) \
                 ON CONFLICT (machine_id, request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING id) \
             SELECT (SELECT count(*) FROM reserved) AS reserved, (SELECT id FROM created) AS id",
        ),
        order,
        now,
    )
    .bind(i64::from(line.qty))
    .bind(&line.slot)
    .bind(line.product_id)
    .fetch_one(&mut *conn)
    .await?;
    let reserved: i64 = row.try_get("reserved")?;
    let id: Option<i64> = row.try_get("id")?;
    match (reserved, id) {
        (0, _) => Err(OrderError::SlotUnavailable(line.slot.clone())),
        (_, Some(id)) => Ok(id),
        (_, None) => {
            give_back_line(&mut *conn, order.machine_id, line).await?;
            Err(OrderError::DuplicateRequest)
        }
    }
}

/// What goes with a new order's row: its lines, its account and its timeline's first entry
/// (its payment resolver's watch is in the row).
async fn record_created_order(
    conn: &mut Conn,
    order: &NewOrder,
    id: i64,
    account: Option<i64>,
    now: i64,
) -> Result<i64, OrderError> {
    for (i, line) in order.lines.iter().enumerate() {
        crate::store::query(
            "INSERT INTO order_lines (order_id, line_no, slot_code, product_id, qty, unit_price_fen) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(i as i64 + 1)
        .bind(&line.slot)
        .bind(line.product_id)
        .bind(i64::from(line.qty))
        .bind(line.unit_price.0)
        .defer(&mut *conn)
        .await?;
    }
    if let Some(account) = account {
        crate::store::query("INSERT INTO account_orders (order_id, account_id) VALUES ($1, $2)")
            .bind(id)
            .bind(account)
            .defer(&mut *conn)
            .await?;
    }
    add_event(
        &mut *conn,
        id,
        now,
        "system",
        "created",
        &format!("total {} in {} line(s)", order.total, order.lines.len()),
    )
    .await?;
    Ok(id)
}

/// Reserves one line's quantity, if the slot sells this product and has the stock.
async fn reserve_line(
    conn: &mut Conn,
    machine_id: i64,
    line: &OrderLine,
) -> Result<bool, OrderError> {
    let done = crate::store::query(
        "UPDATE slots SET reserved = reserved + $1 \
         WHERE machine_id = $2 AND code = $3 AND enabled AND product_id = $4 AND stock - reserved >= $1",
    )
    .bind(i64::from(line.qty))
    .bind(machine_id)
    .bind(&line.slot)
    .bind(line.product_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back a line's reservation made in this transaction.
async fn give_back_line(
    conn: &mut Conn,
    machine_id: i64,
    line: &OrderLine,
) -> Result<(), OrderError> {
    crate::store::query(
        "UPDATE slots SET reserved = reserved - $1 WHERE machine_id = $2 AND code = $3 AND reserved >= $1",
    )
    .bind(i64::from(line.qty))
    .bind(machine_id)
    .bind(&line.slot)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn row_to_order(r: &crate::store::Row) -> Result<Order, OrderError> {
    let state: String = r.try_get("state")?;
    Ok(Order {
        id: r.try_get("id")?,
        out_trade_no: r.try_get("out_trade_no")?,
        operator_id: r.try_get("operator_id")?,
        machine_id: r.try_get("machine_id")?,
        state: OrderState::parse(&state).ok_or(OrderError::NotFound)?,
        total: Fen(r.try_get("total_fen")?),
        refunded: Fen(r.try_get("refunded_fen")?),
        trade_no: r.try_get("trade_no")?,
        qr_code: r.try_get("qr_code")?,
        expires_at: r.try_get("expires_at")?,
        cancel_sent_at: r.try_get("cancel_sent_at")?,
    })
}

const ORDER_COLUMNS: &str = "id, out_trade_no, operator_id, machine_id, state, total_fen, refunded_fen, trade_no, qr_code, expires_at, cancel_sent_at";

/// The order with this merchant trade number.
pub async fn by_out_trade_no(db: &Db, out_trade_no: &str) -> Result<Option<Order>, OrderError> {
    let row = crate::store::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = $1"
    ))
    .bind(out_trade_no)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(row_to_order).transpose()
}

/// An order with what a payment for it is checked against and where it is dispensed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayableOrder {
    /// The order.
    pub order: Order,
    /// Its operator's Alipay PID: the only `seller_id` its payment may name.
    pub seller_pid: String,
    /// The code of its machine.
    pub machine: String,
}

/// The order with this merchant trade number, with its operator's PID and its machine's
/// code, in one query (a notification needs all three), read with the transaction's next
/// statement: [`payable_from`] its row after that.
pub async fn payable_later<E>(
    executor: E,
    out_trade_no: &str,
) -> Result<crate::store::Later, OrderError>
where
    E: crate::store::Executor,
{
    // Built once: every notification runs it.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns = ORDER_COLUMNS
            .split(", ")
            .map(|c| format!("o.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {columns}, p.seller_pid, m.code AS machine_code FROM orders o \
             JOIN operators p ON p.id = o.operator_id JOIN machines m ON m.id = o.machine_id \
             WHERE o.out_trade_no = $1"
        )
    });
    Ok(crate::store::query(&SQL)
        .bind(out_trade_no)
        .fetch_later(executor)
        .await?)
}

/// The order [`payable_later`] read, if there is one.
pub fn payable_from(row: Option<crate::store::Row>) -> Result<Option<PayableOrder>, OrderError> {
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(PayableOrder {
        order: row_to_order(&row)?,
        seller_pid: row.try_get("seller_pid")?,
        machine: row.try_get("machine_code")?,
    }))
}

/// The order with this id.
pub async fn by_id(db: &Db, id: i64) -> Result<Option<Order>, OrderError> {
    let row = crate::store::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(row_to_order).transpose()
}

/// Moves an order from `from` on `event`, only if it is still in `from`. Returns the new state.
pub async fn transition<E>(
    executor: E,
    id: i64,
    from: OrderState,
    event: OrderEvent,
    now: i64,
) -> Result<OrderState, OrderError>
where
    E: crate::store::Executor,
{
    let to = from.apply(event)?;
    if to == from {
        return Ok(to);
    }
    // On PostgreSQL, in a transaction, the check goes out with the next statement or the
    // commit (`expect_rows`): an order that moved on fails the transaction there.
    crate::store::query(
        "UPDATE orders SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .expect_rows(executor, 1)
    .await
    .map_err(|e| concurrent_or_store(e, id))?;
    Ok(to)
}

/// Closes an order as unpaid from `from` and releases the stock it held, in the caller's
/// transaction.
pub async fn close_unpaid_in(
    tx: &mut crate::store::Conn,
    id: i64,
    from: OrderState,
    now: i64,
) -> Result<(), OrderError> {
    transition(&mut *tx, id, from, OrderEvent::ClosedUnpaid, now).await?;
    release_reservations(&mut *tx, id).await
}

/// A guarded transition's error: the order moved on, or the store failed.
fn concurrent_or_store(e: crate::store::Error, order_id: i64) -> OrderError {
    if e.is_rows_not_as_expected() {
        OrderError::Concurrent(order_id)
    } else {
        OrderError::from(e)
    }
}

/// Records the QR code and (when known) the trade number of an order still awaiting payment.
/// False when the order has moved on, e.g. its resolver gave Alipay's answer up as lost and
/// is cancelling the trade: that answer must then not reach a buyer.
pub async fn set_payment_refs<E>(
    executor: E,
    id: i64,
    qr_code: Option<&str>,
    trade_no: Option<&str>,
) -> Result<bool, OrderError>
where
    E: crate::store::Executor,
{
    let done = payment_refs_update(id, qr_code, trade_no)
        .execute(executor)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// [`set_payment_refs`] run with the transaction's next statement: one row changed when it
/// applied.
pub async fn set_payment_refs_later<E>(
    executor: E,
    id: i64,
    qr_code: Option<&str>,
    trade_no: Option<&str>,
) -> Result<crate::store::Later, OrderError>
where
    E: crate::store::Executor,
{
    Ok(payment_refs_update(id, qr_code, trade_no)
        .execute_later(executor)
        .await?)
}

fn payment_refs_update<'q>(
    id: i64,
    qr_code: Option<&'q str>,
    trade_no: Option<&'q str>,
) -> crate::store::Query<'q> {
    crate::store::query(
        "UPDATE orders SET qr_code = COALESCE($1, qr_code), trade_no = COALESCE($2, trade_no) \
         WHERE id = $3 AND state = 'awaiting_payment'",
    )
    .bind(qr_code)
    .bind(trade_no)
    .bind(id)
}

/// Moves an order that is awaiting payment with neither QR code nor trade number recorded to
/// `payment_unknown`: nobody was given anything to pay with, so Alipay's answer counts as
/// lost and the order is resolved by query and cancel. False when an answer was recorded
/// first (or the order moved on): the two are decided by the same row, so a late answer is
/// either shown and waited for, or never shown.
pub async fn give_up_unanswered<E>(executor: E, id: i64, now: i64) -> Result<bool, OrderError>
where
    E: crate::store::Executor,
{
    let from = OrderState::AwaitingPayment;
    let to = from.apply(OrderEvent::ResultUnknown)?;
    let done = crate::store::query(
        "UPDATE orders SET state = $1, updated_at = $2 \
         WHERE id = $3 AND state = $4 AND qr_code IS NULL AND trade_no IS NULL",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back the stock reserved by an order's lines (the order ended unpaid).
pub async fn release_reservations<E>(executor: E, id: i64) -> Result<(), OrderError>
where
    E: crate::store::Executor,
{
    crate::store::query(
        "UPDATE slots SET reserved = reserved - (SELECT SUM(l.qty) FROM order_lines l JOIN orders o ON o.id = l.order_id \
           WHERE l.order_id = $1 AND l.slot_code = slots.code AND o.machine_id = slots.machine_id) \
         WHERE EXISTS (SELECT 1 FROM order_lines l JOIN orders o ON o.id = l.order_id \
           WHERE l.order_id = $1 AND l.slot_code = slots.code AND o.machine_id = slots.machine_id)",
    )
    .bind(id)
    .defer(executor)
    .await?;
    Ok(())
}

/// Appends to an order's timeline.
pub async fn add_event<E>(
    executor: E,
    order_id: i64,
    at: i64,
    source: &str,
    kind: &str,
    detail: &str,
) -> Result<(), OrderError>
where
    E: crate::store::Executor,
{
    crate::store::query(
        "INSERT INTO order_events (order_id, at, source, kind, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    // SQLite keeps the timeline in one B-tree keyed by order (migration 11): `id` counts the
    // order's entries. Its one writer at a time makes the count safe.
    .on_sqlite(
        "INSERT INTO order_events (order_id, id, at, source, kind, detail) VALUES \
         ($1, (SELECT COALESCE(MAX(id), 0) + 1 FROM order_events WHERE order_id = $1), $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(at)
    .bind(source)
    .bind(kind)
    .bind(detail)
    .defer(executor)
    .await?;
    Ok(())
}

/// [`add_event`] for the order with this merchant trade number, if there is one, without
/// reading its id first.
pub async fn add_event_by_trade_no<E>(
    executor: E,
    out_trade_no: &str,
    at: i64,
    source: &str,
    kind: &str,
    detail: &str,
) -> Result<(), OrderError>
where
    E: crate::store::Executor,
{
    crate::store::query(
        "INSERT INTO order_events (order_id, at, source, kind, detail) \
         SELECT id, $2, $3, $4, $5 FROM orders WHERE out_trade_no = $1",
    )
    // As in `add_event`: `id` counts the order's entries on SQLite.
    .on_sqlite(
        "INSERT INTO order_events (order_id, id, at, source, kind, detail) \
         SELECT o.id, (SELECT COALESCE(MAX(e.id), 0) + 1 FROM order_events e WHERE e.order_id = o.id), $2, $3, $4, $5 \
         FROM orders o WHERE o.out_trade_no = $1",
    )
    .bind(out_trade_no)
    .bind(at)
    .bind(source)
    .bind(kind)
    .bind(detail)
    .defer(executor)
    .await?;
    Ok(())
}

/// An order's timeline, oldest first: (at, source, kind, detail).
pub async fn timeline(
    db: &Db,
    order_id: i64,
) -> Result<Vec<(i64, String, String, String)>, OrderError> {
    let rows = crate::store::query(
        "SELECT at, source, kind, detail FROM order_events WHERE order_id = $1 ORDER BY at, id",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect::<Result<_, crate::store::Error>>()
        .map_err(OrderError::from)
}

/// Marks an order paid from `from` (a verified notification or query) and records Alipay's
/// trade number and the buyer, in the caller's transaction. The caller records the dispense
/// in the same transaction (`jobs::dispense::record_paid`); the order's watch moves to
/// `dispense_watch_at`, when the dispense job looks at the command's fate if the machine has
/// not finished by then.
pub async fn mark_paid(
    tx: &mut crate::store::Conn,
    order_id: i64,
    from: OrderState,
    (trade_no, buyer_id): (&str, Option<&str>),
    (now, dispense_watch_at): (i64, i64),
    source: &str,
) -> Result<(), OrderError> {
    // The state move and the payment refs in one conditional statement. On PostgreSQL its
    // check goes with the commit (`expect_rows`): an order that moved on fails the
    // transaction there instead of here, and nothing of it is stored either way. An order
    // whose cancel went out is never marked paid: that cancel gives the money back.
    let to = from.apply(OrderEvent::PaymentConfirmed)?;
    crate::store::query(
        "UPDATE orders SET state = $1, updated_at = $2, trade_no = $3, buyer_id = COALESCE($4, buyer_id), watch_at = $7 \
         WHERE id = $5 AND state = $6 AND cancel_sent_at IS NULL",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(trade_no)
    .bind(buyer_id)
    .bind(order_id)
    .bind(from.as_str())
    .bind(dispense_watch_at)
    .expect_rows(&mut *tx, 1)
    .await
    .map_err(|e| concurrent_or_store(e, order_id))?;
    add_event(
        &mut *tx,
        order_id,
        now,
        "alipay",
        "paid",
        &format!("confirmed by {source}"),
    )
    .await?;
    // Money in is a money action: on the audit trail too, with Alipay's trade number.
    let detail = format!("trade {trade_no}, confirmed by {source}");
    crate::store::audit::payment_received(&mut *tx, now, order_id, &detail).await?;
    // The payment is known: the poll that was waiting for it has nothing left to do.
    super::jobs::cancel(&mut *tx, &resolve_key(order_id)).await?;
    Ok(())
}

/// Records that the resolver is about to send `alipay.trade.cancel` for order `order_id`,
/// whose payment is unknown, unless that is recorded already; false when the order is no
/// longer waiting on its payment (paid or ended meanwhile), so no cancel may go out. From
/// then on a payment of it is not served ([`mark_paid`] refuses it): the cancel, or a refund
/// if Alipay will not cancel it, gives it back.
pub async fn mark_cancel_sent(db: &Db, order_id: i64, now: i64) -> Result<bool, OrderError> {
    let changed = crate::store::query(
        "UPDATE orders SET cancel_sent_at = COALESCE(cancel_sent_at, $1) WHERE id = $2 AND state = $3",
    )
    .bind(now)
    .bind(order_id)
    .bind(OrderState::PaymentUnknown.as_str())
    .execute(&db.pool)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Records the trade number of a payment notified for order `order_id` after its cancel went
/// out (it stays `payment_unknown`: that cancel refunds the payment). Such an order is never
/// closed as unpaid ([`close_cancelled_unpaid`]). Fails as `Concurrent` when the order has
/// moved on; on PostgreSQL, with the commit.
pub async fn record_paid_after_cancel(
    tx: &mut crate::store::Conn,
    order_id: i64,
    trade_no: &str,
    now: i64,
) -> Result<(), OrderError> {
    crate::store::query(
        "UPDATE orders SET trade_no = COALESCE(trade_no, $1), updated_at = $2 \
         WHERE id = $3 AND state = $4 AND cancel_sent_at IS NOT NULL",
    )
    .bind(trade_no)
    .bind(now)
    .bind(order_id)
    .bind(OrderState::PaymentUnknown.as_str())
    .expect_rows(&mut *tx, 1)
    .await
    .map_err(|e| concurrent_or_store(e, order_id))
}

/// Closes an order whose payment was unknown as unpaid, unless a payment of it was notified
/// ([`record_paid_after_cancel`] kept its trade number): then `Concurrent`, and the next
/// query decides. On PostgreSQL the check goes with the commit.
pub async fn close_cancelled_unpaid(
    tx: &mut crate::store::Conn,
    order_id: i64,
    now: i64,
) -> Result<(), OrderError> {
    let to = OrderState::PaymentUnknown.apply(OrderEvent::ClosedUnpaid)?;
    crate::store::query(
        "UPDATE orders SET state = $1, updated_at = $2 \
         WHERE id = $3 AND state = $4 AND (cancel_sent_at IS NULL OR trade_no IS NULL)",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(order_id)
    .bind(OrderState::PaymentUnknown.as_str())
    .expect_rows(&mut *tx, 1)
    .await
    .map_err(|e| concurrent_or_store(e, order_id))
}

/// A machine accepted the dispense command `command_id` of order `out_trade_no`: a paid
/// order moves to dispensing, and the timeline records it — in the caller's transaction (the
/// one that records the acknowledgement in the command ledger). An order that has moved on
/// already (its result came first, or it was refunded) only gets the timeline entry.
pub async fn acknowledge_dispense(
    tx: &mut crate::store::Conn,
    out_trade_no: &str,
    command_id: &str,
    now: i64,
) -> Result<(), OrderError> {
    // A paid order moves on in one conditional statement; any other state (moved on
    // already, or not ours to move) only gets the timeline entry. Neither needs an answer:
    // on PostgreSQL both go out with the transaction's next statement.
    let to = OrderState::Paid.apply(OrderEvent::DispenseAcknowledged)?;
    crate::store::query(
        "UPDATE orders SET state = $1, updated_at = $2 WHERE out_trade_no = $3 AND state = $4",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(out_trade_no)
    .bind(OrderState::Paid.as_str())
    .defer(&mut *tx)
    .await?;
    add_event_by_trade_no(
        &mut *tx,
        out_trade_no,
        now,
        "device",
        "dispense_acknowledged",
        command_id,
    )
    .await
}

/// The lines of an order, in order.
pub async fn lines<E>(executor: E, order_id: i64) -> Result<Vec<OrderLine>, OrderError>
where
    E: crate::store::Executor,
{
    let rows = lines_query(order_id).fetch_all(executor).await?;
    lines_from(&rows)
}

/// The lines of the order `out_trade_no`, read with the transaction's next statement, for a
/// caller that needs them before it knows the order's id: [`lines_from`] the rows after it.
pub async fn lines_by_trade_no_later<E>(
    executor: E,
    out_trade_no: &str,
) -> Result<crate::store::Later, OrderError>
where
    E: crate::store::Executor,
{
    Ok(crate::store::query(
        "SELECT l.slot_code, l.product_id, l.qty, l.unit_price_fen FROM order_lines l \
         JOIN orders o ON o.id = l.order_id WHERE o.out_trade_no = $1 ORDER BY l.line_no",
    )
    .bind(out_trade_no)
    .fetch_later(executor)
    .await?)
}

fn lines_query(order_id: i64) -> crate::store::Query<'static> {
    crate::store::query(
        "SELECT slot_code, product_id, qty, unit_price_fen FROM order_lines WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
}

/// The lines in the rows [`lines`] or [`lines_by_trade_no_later`] read.
pub fn lines_from(rows: &[crate::store::Row]) -> Result<Vec<OrderLine>, OrderError> {
    rows.iter()
        .map(|r| {
            Ok(OrderLine {
                slot: r.try_get("slot_code")?,
                product_id: r.try_get("product_id")?,
                qty: u32::try_from(super::get_int(r, "qty")?).unwrap_or(0),
                unit_price: crate::domain::fen::Fen(r.try_get("unit_price_fen")?),
            })
        })
        .collect::<Result<_, crate::store::Error>>()
        .map_err(OrderError::from)
}

/// The code of the machine an order belongs to.
pub async fn machine_code(db: &Db, order_id: i64) -> Result<Option<String>, OrderError> {
    let row = crate::store::query(
        "SELECT m.code FROM machines m JOIN orders o ON o.machine_id = m.id WHERE o.id = $1",
    )
    .bind(order_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}
