//! Vend results: what each unit of a paid order did at the machine, and what follows from it
//! in one transaction — stock corrected, the order finished, and the value of every unit that
//! did not come out refunded (once: the refund number is derived from the order).

use crate::device::protocol::{self, ItemResult};
use crate::domain::fen::Fen;
use crate::domain::order::{OrderEvent, OrderLine, OrderState, VendState, refund_due};
use crate::pay::late_vend;
use crate::pay::refund::{self, RefundError};
use crate::services::Services;
use crate::store::orders::{self, OrderError};
use crate::store::{Later, Tx, get_int, jobs};

/// One unit's result as the machine reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnitResult {
    /// The slot it came from.
    pub slot: String,
    /// `dispensed`, `failed` or `indeterminate`.
    pub result: ReportedVend,
    /// Why it failed (`jam`, `empty`, `sensor`, …).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A reported result (the machine never reports `pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedVend {
    /// It came out.
    Dispensed,
    /// It did not.
    Failed,
    /// Unknown (power loss mid-vend).
    Indeterminate,
}

impl From<&ItemResult> for UnitResult {
    fn from(i: &ItemResult) -> Self {
        UnitResult {
            slot: i.slot.clone(),
            result: match i.result {
                protocol::VendOutcome::Dispensed => ReportedVend::Dispensed,
                protocol::VendOutcome::Failed => ReportedVend::Failed,
                protocol::VendOutcome::Indeterminate => ReportedVend::Indeterminate,
            },
            reason: i.reason.clone(),
        }
    }
}

impl From<ReportedVend> for VendState {
    fn from(r: ReportedVend) -> Self {
        match r {
            ReportedVend::Dispensed => VendState::Dispensed,
            ReportedVend::Failed => VendState::Failed,
            ReportedVend::Indeterminate => VendState::Indeterminate,
        }
    }
}

fn state_name(s: VendState) -> &'static str {
    match s {
        VendState::Dispensed => "dispensed",
        VendState::Failed => "failed",
        VendState::Indeterminate | VendState::Pending => "indeterminate",
    }
}

/// What recording the results decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendOutcome {
    /// The order's state afterwards.
    pub state: OrderState,
    /// Value refunded for units that did not come out.
    pub refund: Fen,
}

/// Why results were not recorded.
#[derive(Debug, thiserror::Error)]
pub enum VendError {
    /// The order is not waiting for a vend (unpaid, or already finished: a late or repeated
    /// report changes nothing).
    #[error("order {0} is {1}, not waiting for vend results")]
    NotVending(i64, OrderState),
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// Store or state machine.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The refund could not be written.
    #[error(transparent)]
    Refund(#[from] RefundError),
}

impl From<crate::store::Error> for VendError {
    fn from(e: crate::store::Error) -> Self {
        VendError::Order(OrderError::from(e))
    }
}

/// Failure reasons after which the slot must not sell again until someone looks at it.
const DISABLING_REASONS: &[&str] = &["jam", "empty", "sensor", "motor"];

/// Who says what happened to the units, which decides the orders a report may settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The machine's own `dispense_result`: it settles an order paid, vending, or in
    /// dispute (a result that comes after the result window still tells what happened).
    Machine,
    /// The server's verdict that nothing reached the machine (its dispense not acknowledged
    /// in time, or refused): it settles only an order still paid. An order the machine has
    /// acknowledged meanwhile is vending, and waits for the machine's own report.
    Undelivered,
}

impl Reporter {
    fn may_settle(self, state: OrderState) -> bool {
        match self {
            Reporter::Machine => matches!(
                state,
                OrderState::Paid | OrderState::Dispensing | OrderState::Dispute
            ),
            Reporter::Undelivered => state == OrderState::Paid,
        }
    }
}

/// Records a final report for every unit of the order. Units the report does not mention did
/// not come out. Extra entries beyond what was ordered are ignored: at most one vend per unit.
pub async fn record_results(
    svc: &Services,
    order_id: i64,
    report: &[UnitResult],
    reporter: Reporter,
) -> Result<VendOutcome, VendError> {
    let mut tx = svc.db.begin().await?;
    let recorded = record_results_in(
        &mut tx,
        svc.now(),
        VendOrder::Id(order_id),
        report,
        reporter,
    )
    .await?;
    tx.commit().await?;
    if let Some(key) = recorded.refund_job {
        svc.run_soon(key);
    }
    Ok(recorded.outcome)
}

/// Which order a report is for.
#[derive(Debug, Clone, Copy)]
pub enum VendOrder<'a> {
    /// By row id.
    Id(i64),
    /// By `out_trade_no`, as the machine's report names it.
    TradeNo(&'a str),
}

/// What [`record_results_in`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVend {
    /// The order's state and the value refunded.
    pub outcome: VendOutcome,
    /// The refund job queued in the transaction, to run once it commits.
    pub refund_job: Option<String>,
}

/// [`record_results`] in the caller's transaction, so the machine's report, the ledger's
/// `done` mark and everything the results decide commit together. The caller runs
/// `refund_job` once it has committed.
pub async fn record_results_in(
    tx: &mut Tx,
    now: i64,
    which: VendOrder<'_>,
    report: &[UnitResult],
    reporter: Reporter,
) -> Result<RecordedVend, VendError> {
    let rows = order_and_lines(which).fetch_all(&mut **tx).await?;
    record_results_read(tx, now, &rows, report, reporter).await
}

/// The order and its lines [`record_results_read`] needs, read with the transaction's next
/// statement.
pub async fn read_order_later(tx: &mut Tx, which: VendOrder<'_>) -> Result<Later, VendError> {
    Ok(order_and_lines(which).fetch_later(&mut **tx).await?)
}

/// The order and its lines in one statement (a LEFT JOIN: an order without lines still
/// answers, with nothing to match).
fn order_and_lines(which: VendOrder<'_>) -> crate::store::Query<'_> {
    macro_rules! order_and_lines {
        ($which:literal) => {
            concat!(
                "SELECT o.id, o.state, o.machine_id, o.out_trade_no, ",
                "l.line_no, l.slot_code, l.product_id, l.qty, l.unit_price_fen ",
                "FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id WHERE ",
                $which,
                " ORDER BY l.line_no"
            )
        };
    }
    match which {
        VendOrder::Id(id) => crate::store::query(order_and_lines!("o.id = $1")).bind(id),
        VendOrder::TradeNo(no) => {
            crate::store::query(order_and_lines!("o.out_trade_no = $1")).bind(no)
        }
    }
}

/// [`record_results_in`] with the rows of [`read_order_later`] read already.
pub async fn record_results_read(
    tx: &mut Tx,
    now: i64,
    rows: &[crate::store::Row],
    report: &[UnitResult],
    reporter: Reporter,
) -> Result<RecordedVend, VendError> {
    let order = rows.first().ok_or(VendError::NotFound)?;
    let order_id: i64 = order.try_get(0)?;
    let state = OrderState::parse(&order.try_get::<String, _>(1)?).ok_or(VendError::NotFound)?;
    if !reporter.may_settle(state) {
        return Err(VendError::NotVending(order_id, state));
    }
    let machine_id: i64 = order.try_get(2)?;
    let out_trade_no: String = order.try_get(3)?;
    let mut lines: Vec<(i64, OrderLine)> = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(line_no) = r.try_get::<Option<i64>, _>("line_no")? else {
            continue;
        };
        lines.push((
            line_no,
            OrderLine {
                slot: r.try_get("slot_code")?,
                product_id: r.try_get("product_id")?,
                qty: u32::try_from(get_int(r, "qty")?).unwrap_or(0),
                unit_price: Fen(r.try_get("unit_price_fen")?),
            },
        ));
    }

    let (units, extra) = match_units(lines.iter().map(|(_, l)| l), report);
    let mut per_line: Vec<(OrderLine, Vec<VendState>)> = Vec::new();
    for ((line_no, line), line_units) in lines.iter().zip(units) {
        let mut states = Vec::new();
        for (unit, (state, reason)) in (1i64..).zip(line_units) {
            crate::store::query("INSERT INTO vend_results (order_id, line_no, unit_no, state, reason, at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(order_id)
                .bind(*line_no)
                .bind(unit)
                .bind(state_name(state))
                .bind(reason.clone())
                .bind(now)
                .defer(&mut **tx)
                .await?;
            correct_stock(tx, machine_id, &line.slot, state, reason.as_deref()).await?;
            states.push(state);
        }
        per_line.push((line.clone(), states));
    }
    if extra > 0 {
        tracing::warn!(
            order_id,
            extra,
            "machine reported more units than were ordered; ignored"
        );
    }
    let dispensed_any = per_line
        .iter()
        .any(|(_, s)| s.contains(&VendState::Dispensed));
    let next = orders::transition(
        &mut **tx,
        order_id,
        state,
        OrderEvent::VendFinished { dispensed_any },
        now,
    )
    .await?;
    // A refund of what never reached the machine: a machine that vended anyway may have
    // said so already (kept as a late vend), and the units this order held until now come
    // off the stock with its reservations. (The machine's own result settles a `paid` order
    // only through an open dispense, its ack still held in memory: no late vend then, as an
    // order's one dispense is either open or expired.)
    if state == OrderState::Paid && reporter == Reporter::Undelivered {
        late_vend::correct_rest(tx, order_id, now).await?;
    }
    let wanted = refund_due(&per_line, Fen::ZERO).unwrap_or(Fen::ZERO);
    let summary: Vec<String> = per_line
        .iter()
        .map(|(l, s)| format!("{}: {:?}", l.slot, s))
        .collect();
    orders::add_event(
        &mut **tx,
        order_id,
        now,
        "device",
        "vend_finished",
        &summary.join("; "),
    )
    .await?;
    // The order has its result: the dispense job's watch for it is over.
    jobs::cancel(&mut **tx, &orders::dispense_key(order_id))
        .await
        .map_err(OrderError::from)?;
    let mut refund_job = None;
    // A refund by hand before the result may have used up part or all of what is left: the
    // automatic one is capped there (never more than was paid, never stuck on "too much").
    let due = if wanted.is_positive() {
        wanted.min(refund::left_to_refund(tx, order_id).await?)
    } else {
        Fen::ZERO
    };
    if due.is_positive() {
        // One refund per order for vend failures: its number is fixed, so a replay cannot
        // refund twice.
        let out_request_no = format!("{out_trade_no}V");
        let (record, _) = refund::request_in(
            tx,
            now,
            order_id,
            &out_request_no,
            due,
            "vend failed",
            "system",
        )
        .await?;
        refund_job = Some(refund::job_key(record.id));
    } else if wanted.is_positive() {
        orders::add_event(
            &mut **tx,
            order_id,
            now,
            "system",
            "vend_refund_covered",
            "what did not come out was already refunded by hand",
        )
        .await?;
    }
    Ok(RecordedVend {
        outcome: VendOutcome {
            state: next,
            refund: due,
        },
        refund_job,
    })
}

/// One unit's state and the machine's reason for it.
pub(crate) type UnitState = (VendState, Option<String>);

/// Each ordered unit's result, line by line, with the machine's reason: reports are matched
/// to units slot by slot, in order, and a unit the report does not mention did not come out.
/// Also returns how many reports matched no unit (at most one vend per unit).
pub(crate) fn match_units<'a>(
    lines: impl Iterator<Item = &'a OrderLine>,
    report: &[UnitResult],
) -> (Vec<Vec<UnitState>>, usize) {
    let mut remaining: Vec<&UnitResult> = report.iter().collect();
    let units = lines
        .map(|line| {
            (0..line.qty)
                .map(
                    |_| match remaining.iter().position(|r| r.slot == line.slot) {
                        Some(i) => {
                            let r = remaining.remove(i);
                            (VendState::from(r.result), r.reason.clone())
                        }
                        None => (VendState::Failed, Some("not reported".to_owned())),
                    },
                )
                .collect()
        })
        .collect();
    (units, remaining.len())
}

async fn correct_stock(
    tx: &mut crate::store::Conn,
    machine_id: i64,
    slot: &str,
    state: VendState,
    reason: Option<&str>,
) -> Result<(), crate::store::Error> {
    // The item left (or may have left): the reservation becomes a sale. It did not: the
    // reservation is released; a jam or an empty slot also disables the slot.
    let sql = match state {
        VendState::Dispensed | VendState::Indeterminate => {
            "UPDATE slots SET reserved = reserved - 1, stock = stock - 1 WHERE machine_id = $1 AND code = $2 AND reserved > 0 AND stock > 0"
        }
        VendState::Failed | VendState::Pending => {
            "UPDATE slots SET reserved = reserved - 1 WHERE machine_id = $1 AND code = $2 AND reserved > 0"
        }
    };
    crate::store::query(sql)
        .bind(machine_id)
        .bind(slot)
        .defer(&mut *tx)
        .await?;
    if state == VendState::Failed && reason.is_some_and(|r| DISABLING_REASONS.contains(&r)) {
        crate::store::query("UPDATE slots SET enabled = FALSE WHERE machine_id = $1 AND code = $2")
            .bind(machine_id)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
