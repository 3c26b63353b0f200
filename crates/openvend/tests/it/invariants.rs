//! The invariants of reliability.md §2, checked from OpenVend's store against the sandbox's
//! own ledger (what Alipay actually holds) and the simulated machines' physical log. Every
//! end-to-end test calls `check` once all orders have settled.

use std::collections::HashMap;

use openvend::store::{Db, get_int};
use serde_json::Value;

/// Units that physically left machines, per order (from the simulators' own log).
pub type VendLog = HashMap<String, u32>;

/// Fails the test with every violation found.
pub async fn check(db: &Db, sandbox_url: &str, vended: Option<&VendLog>) {
    let trades: Value = reqwest::get(format!("{sandbox_url}/control/trades"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_out: HashMap<String, &Value> = trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["out_trade_no"].as_str().unwrap().to_owned(), t))
        .collect();
    let orders = openvend::store::query(
        "SELECT id, out_trade_no, state, total_fen, refunded_fen FROM orders",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut problems = Vec::new();
    for o in &orders {
        let id: i64 = o.try_get("id").unwrap();
        let out: String = o.try_get("out_trade_no").unwrap();
        let state: String = o.try_get("state").unwrap();
        let total: i64 = o.try_get("total_fen").unwrap();
        let refunded: i64 = o.try_get("refunded_fen").unwrap();
        let trade = by_out.get(&out);
        let alipay_paid = trade.is_some_and(|t| {
            t["buyer_user_id"].is_string() && t["trade_status"] != "WAIT_BUYER_PAY"
        });
        let alipay_refunded = trade.map_or(0, |t| t["refunded_fen"].as_i64().unwrap_or(0));
        let succeeded: i64 = openvend::store::query(
            "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) AS n FROM refunds WHERE order_id = $1 AND state = 'succeeded'",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .map(|r| get_int(&r, "n").unwrap())
        .unwrap();
        let open_refunds: i64 = openvend::store::query(
            "SELECT COUNT(*) AS n FROM refunds WHERE order_id = $1 AND state <> 'succeeded'",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .map(|r| get_int(&r, "n").unwrap())
        .unwrap();
        let dispenses: i64 = openvend::store::query(
            "SELECT COUNT(*) AS n FROM device_commands WHERE order_id = $1 AND kind = 'dispense' AND state IN ('acknowledged', 'done')",
        )
        .bind(&out)
        .fetch_one(&db.pool)
        .await
        .map(|r| get_int(&r, "n").unwrap())
        .unwrap();
        let units = openvend::store::query("SELECT state FROM vend_results WHERE order_id = $1")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
        // Indeterminate units are refunded by default (the buyer is not made to prove it).
        let out_units = units
            .iter()
            .filter(|u| u.get::<String, _>(0) == "dispensed")
            .count() as u32;
        let ordered: i64 = openvend::store::query(
            "SELECT CAST(COALESCE(SUM(qty), 0) AS BIGINT) AS n FROM order_lines WHERE order_id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .map(|r| get_int(&r, "n").unwrap())
        .unwrap();
        let mut bad = |what: String| problems.push(format!("{out} ({state}): {what}"));
        // 5. No stuck states.
        if !matches!(state.as_str(), "completed" | "refunded" | "closed") {
            bad("not in a final state".into());
        }
        // 7. Refunded total <= paid total, and what we say was refunded is what Alipay refunded.
        if refunded > total || alipay_refunded > total {
            bad(format!(
                "refunded {refunded}/{alipay_refunded} > total {total}"
            ));
        }
        if open_refunds > 0 {
            bad(format!("{open_refunds} refund(s) not settled"));
        }
        if succeeded != alipay_refunded && state != "refunded" {
            bad(format!(
                "our refunds {succeeded} != Alipay's {alipay_refunded}"
            ));
        }
        if refunded != alipay_refunded {
            bad(format!(
                "order says refunded {refunded}, Alipay {alipay_refunded}"
            ));
        }
        // 2. No dispense without payment.
        if dispenses > 0 && !alipay_paid {
            bad("dispensed without a payment at Alipay".into());
        }
        // 3. At most one dispense per unit; at most one acknowledged dispense command.
        if dispenses > 1 {
            bad(format!("{dispenses} dispense commands acknowledged"));
        }
        if i64::from(out_units) > ordered {
            bad(format!("{out_units} units out of {ordered} ordered"));
        }
        if let Some(log) = vended {
            let physical = log.get(&out).copied().unwrap_or(0);
            if physical != out_units {
                bad(format!(
                    "machine vended {physical}, server recorded {out_units}"
                ));
            }
        }
        // 1 / 4. Conservation: paid and not dispensed => refunded; unpaid => nothing taken.
        match state.as_str() {
            "closed" if alipay_paid && alipay_refunded != total => {
                bad("closed but Alipay holds the buyer's money".into());
            }
            "refunded" => {
                if alipay_refunded != total {
                    bad(format!(
                        "refunded but Alipay refunded {alipay_refunded} of {total}"
                    ));
                }
                if out_units > 0 {
                    bad("refunded in full but units came out".into());
                }
            }
            "completed" => {
                if !alipay_paid {
                    bad("completed without payment".into());
                }
                let failed_value: i64 = openvend::store::query(
                    "SELECT CAST(COALESCE(SUM(l.unit_price_fen), 0) AS BIGINT) AS n FROM vend_results v JOIN order_lines l ON l.order_id = v.order_id AND l.line_no = v.line_no WHERE v.order_id = $1 AND v.state IN ('failed', 'indeterminate')",
                )
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .map(|r| get_int(&r, "n").unwrap())
                .unwrap();
                if failed_value != alipay_refunded {
                    bad(format!(
                        "failed units worth {failed_value}, Alipay refunded {alipay_refunded}"
                    ));
                }
            }
            _ => {}
        }
    }
    // Reservations are released once nothing is in flight; stock never goes negative.
    let slots = openvend::store::query("SELECT s.code, s.stock, s.reserved FROM slots s")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for s in &slots {
        let (stock, reserved) = (
            get_int(s, "stock").unwrap(),
            get_int(s, "reserved").unwrap(),
        );
        if stock < 0 || reserved != 0 {
            problems.push(format!(
                "slot {}: stock {stock}, reserved {reserved}",
                s.get::<String, _>(0)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "invariants violated:\n{}",
        problems.join("\n")
    );
}

/// Orders waiting on something (the buyer's payment, the machine's dispense) that nothing
/// will look at again: neither the order's own watch nor the job that watches it. Holds at
/// any moment, a crash's included, not only once everything settled.
pub async fn unwatched(db: &Db) -> Vec<String> {
    crate::sale::strings_in(
        db,
        openvend::store::query(
        "SELECT o.out_trade_no || ' ' || o.state FROM orders o \
         WHERE o.state IN ('awaiting_payment', 'payment_unknown', 'paid', 'dispensing') AND o.watch_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.dedup_key = \
             CASE WHEN o.state IN ('paid', 'dispensing') THEN 'dispense:' ELSE 'resolve_payment:' END || CAST(o.id AS TEXT))",
        ),
    )
    .await
}
