//! A vend the server heard of too late. A machine that acknowledged a `dispense` in time by
//! its own clock, then lost its network (or whose server was down) for longer than the grace
//! after the command's expiry, has its ack and result refused: the server has refunded the
//! buyer, or will, without them (device protocol §5). The refusal stands, and the order is
//! not touched. But if the result says units came out, the goods are gone and the operator
//! must know: the first such report of each command is kept ([`keep`]), the units it says
//! came out are taken off stock no reservation holds (those the order itself still holds, when
//! the report beat the order's settlement, once that releases them: [`correct_rest`]), the
//! order's timeline says so, and `/api/v1/attention` lists it.

use crate::domain::order::VendState;
use crate::pay::vend::{UnitResult, match_units};
use crate::store::Conn;
use crate::store::orders::{self, OrderError};

/// What a late report says came out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateVend {
    /// Units the machine says came out.
    pub dispensed: i64,
    /// Units it could not say (power lost mid-vend).
    pub indeterminate: i64,
    /// Units taken off their slot's stock so far: fewer than the two above while the slot's
    /// stock is held by reservations (the rest waits for the order's settlement, or, if other
    /// orders hold it, for a person to count the slot).
    pub stock_corrected: i64,
}

/// Keeps the refused `dispense_result` (event `msg_id`, already recorded in `tx`) of the
/// expired dispense `command_id` for the order `out_trade_no` of machine `machine_id`.
/// Returns `None`, and the caller drops the transaction, when there is nothing to keep: the
/// order is unknown, or a report of this command was already kept (a machine repeating its
/// result under a new `msg_id` does not lower the stock twice).
pub async fn keep(
    tx: &mut Conn,
    machine_id: i64,
    (command_id, msg_id): (&str, &str),
    out_trade_no: &str,
    report: &[UnitResult],
    now: i64,
) -> Result<Option<LateVend>, OrderError> {
    let Some(order) = crate::store::query(
        "SELECT id, state FROM orders WHERE out_trade_no = $1 AND machine_id = $2",
    )
    .bind(out_trade_no)
    .bind(machine_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let order_id: i64 = order.try_get(0)?;
    let state: String = order.try_get(1)?;
    let lines = orders::lines(&mut *tx, order_id).await?;
    let (units, _extra) = match_units(lines.iter(), report);
    let mut late = LateVend::default();
    let mut summary = Vec::new();
    let mut uncorrected: Vec<&str> = Vec::new();
    for (line, line_units) in lines.iter().zip(units) {
        let states: Vec<VendState> = line_units.into_iter().map(|(s, _)| s).collect();
        for state in &states {
            match state {
                VendState::Dispensed => late.dispensed += 1,
                VendState::Indeterminate => late.indeterminate += 1,
                VendState::Failed | VendState::Pending => continue,
            }
            // Only stock no reservation holds: reservations stay as they are. If this order's
            // own is not yet released (the server had not settled it when this arrived), a
            // unit it holds waits for the settlement ([`correct_rest`]).
            if lower_stock(tx, machine_id, &line.slot).await? {
                late.stock_corrected += 1;
            } else {
                uncorrected.push(&line.slot);
            }
        }
        summary.push(format!("{}: {:?}", line.slot, states));
    }
    let kept = crate::store::query(
        "INSERT INTO late_vends (command_id, order_id, machine_id, msg_id, reported_at, dispensed, indeterminate, stock_corrected, uncorrected) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(command_id)
    .bind(order_id)
    .bind(machine_id)
    .bind(msg_id)
    .bind(now)
    .bind(late.dispensed)
    .bind(late.indeterminate)
    .bind(late.stock_corrected)
    .bind(slot_list(&uncorrected))
    .execute(&mut *tx)
    .await?;
    if kept.rows_affected() == 0 {
        return Ok(None);
    }
    let out = late.dispensed + late.indeterminate;
    let detail = format!(
        "the machine reported after its dispense {command_id} had expired: {}; refused, the order was {state} \
         when it arrived; {} of {out} units taken off the slot stock",
        summary.join("; "),
        late.stock_corrected
    );
    orders::add_event(
        &mut *tx,
        order_id,
        now,
        "device",
        "vended_after_expiry",
        &detail,
    )
    .await?;
    if out > 0 {
        tracing::error!(
            order = out_trade_no,
            command_id,
            dispensed = late.dispensed,
            indeterminate = late.indeterminate,
            order_state = %state,
            "a machine vended a dispense the server had given up on; a person must check"
        );
    }
    Ok(Some(late))
}

/// `late_vends.uncorrected`: the slot of each unit not yet taken off, as a JSON list.
fn slot_list(slots: &[impl AsRef<str>]) -> String {
    let slots: Vec<&str> = slots.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&slots).unwrap_or_else(|_| "[]".into())
}

/// Takes one unit off `slot`'s stock if a unit no reservation holds is left; answers whether.
async fn lower_stock(tx: &mut Conn, machine_id: i64, slot: &str) -> Result<bool, OrderError> {
    let lowered = crate::store::query(
        "UPDATE slots SET stock = stock - 1 WHERE machine_id = $1 AND code = $2 AND stock > reserved",
    )
    .bind(machine_id)
    .bind(slot)
    .execute(&mut *tx)
    .await?;
    Ok(lowered.rows_affected() > 0)
}

/// In the transaction that settles order `order_id` before its dispense was acknowledged (its
/// reservations just released), takes off the stock a late report of that dispense could not
/// take off before; answers how many units. Settled in the same transaction, a unit is taken
/// off exactly once, and before a new sale can reserve it.
pub async fn correct_rest(tx: &mut Conn, order_id: i64, now: i64) -> Result<i64, OrderError> {
    let rows = crate::store::query(
        "SELECT command_id, machine_id, uncorrected FROM late_vends WHERE order_id = $1 AND uncorrected <> '[]'",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut taken = 0;
    for row in &rows {
        let command_id: String = row.try_get(0)?;
        let machine_id: i64 = row.try_get(1)?;
        let slots: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>(2)?).unwrap_or_default();
        let mut left = Vec::new();
        let mut lowered = 0;
        for slot in slots {
            if lower_stock(tx, machine_id, &slot).await? {
                lowered += 1;
            } else {
                left.push(slot);
            }
        }
        if lowered == 0 {
            continue;
        }
        crate::store::query(
            "UPDATE late_vends SET stock_corrected = stock_corrected + $2, uncorrected = $3 WHERE command_id = $1",
        )
        .bind(&command_id)
        .bind(lowered)
        .bind(slot_list(&left))
        .execute(&mut *tx)
        .await?;
        let detail = format!(
            "{lowered} more units the machine reported after its dispense {command_id} had expired \
             taken off the slot stock, now that the order's reservation is released; {} left to count",
            left.len()
        );
        orders::add_event(
            &mut *tx,
            order_id,
            now,
            "system",
            "vended_after_expiry",
            &detail,
        )
        .await?;
        taken += lowered;
    }
    Ok(taken)
}
