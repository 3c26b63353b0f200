//! Chaos: many QR sales on several simulated machines with random faults everywhere at once —
//! unknown gateway answers (before and after the operation), lost and duplicated
//! notifications, failing units, machines going offline at payment, buyers who never pay —
//! then time is driven forward until everything settles, and the invariants are checked
//! against the sandbox's ledger and the machines' own vend log. Seeded: set
//! `OPENVEND_CHAOS_SEED` (and `OPENVEND_CHAOS_SALES`) to replay or widen a run.

use std::time::Duration;

use openvend::sim::{MachineSim, SimEvent};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::flow::{log_vend, machine, pay};
use crate::invariants::{self, VendLog};
use crate::sale::{Running, control, start};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Adds a machine through the operator API, with three stocked slots.
pub async fn add_machine(r: &Running, code: &str) {
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let slots: Vec<_> = (1..=3)
        .map(|i| json!({ "code": format!("A{i}"), "product_id": i, "price_fen": 100 * i + 50, "capacity": 30, "stock": 30 }))
        .collect();
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/machines", r.http_url))
        .bearer_auth(token.trim())
        .json(&json!({ "code": code, "kind": "vending", "terminal_id": code.replace('-', ""), "slots": slots }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
}

/// Drains what a machine has reported so far into the vend log.
pub fn drain(events: &mut UnboundedReceiver<SimEvent>, log: &mut VendLog) {
    while let Ok(ev) = events.try_recv() {
        log_vend(log, &ev);
    }
}

/// What keeps a run from having settled: open orders, jobs, unfinished refunds.
pub async fn stuck(db: &openvend::store::Db) -> Vec<String> {
    crate::sale::strings_in(
        db,
        openvend::store::query(
        "SELECT 'order ' || out_trade_no || ' ' || state FROM orders WHERE state NOT IN ('completed', 'refunded', 'closed') \
         UNION ALL SELECT 'job ' || kind || ' ' || dedup_key || ' attempts ' || CAST(attempts AS TEXT) || ' run_at ' || CAST(run_at AS TEXT) || ' ' || COALESCE(last_error, '') FROM jobs \
         UNION ALL SELECT 'refund ' || out_request_no || ' ' || state FROM refunds WHERE state <> 'succeeded'",
        ),
    )
    .await
}

pub async fn all_settled(db: &openvend::store::Db) -> bool {
    let pending: i64 = openvend::store::query(
        "SELECT (SELECT COUNT(*) FROM orders WHERE state NOT IN ('completed', 'refunded', 'closed')) \
         + (SELECT COUNT(*) FROM refunds WHERE state <> 'succeeded') + (SELECT COUNT(*) FROM jobs) AS n",
    )
    .fetch_one(&db.pool)
    .await
    .map(|row| openvend::store::get_int(&row, "n").unwrap())
    .unwrap();
    pending == 0
}

#[tokio::test]
async fn many_sales_under_random_faults_keep_every_invariant() {
    let seed = env_or("OPENVEND_CHAOS_SEED", 20_261_128);
    let sales = env_or("OPENVEND_CHAOS_SALES", 40);
    println!("chaos seed {seed}, {sales} sales");
    let mut rng = Rng(seed);
    let r = start().await;
    let codes = ["VM-0001", "CH-0002", "CH-0003", "CH-0004"];
    for code in &codes[1..] {
        add_machine(&r, code).await;
    }
    crate::sale::mark_machines_online(&r).await;
    let mut machines: Vec<(MachineSim, UnboundedReceiver<SimEvent>)> = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        machines.push(
            machine(&r, code, |s| {
                s.fail_rate = 0.15;
                s.fail_reason = "dropped".into();
                s.seed = seed + i as u64;
            })
            .await,
        );
    }
    for rule in [
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "unknown_after" }, "probability": 0.1 }),
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "unknown_before" }, "probability": 0.05 }),
        json!({ "method": "alipay.trade.query", "fault": { "kind": "unknown_before", "answer": "system_error" }, "probability": 0.15 }),
        json!({ "method": "alipay.trade.cancel", "fault": { "kind": "unknown_after" }, "probability": 0.1 }),
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "unknown_after" }, "probability": 0.2 }),
        json!({ "notification": { "kind": "drop" }, "probability": 0.3 }),
        json!({ "notification": { "kind": "duplicate", "times": 5 }, "probability": 0.2 }),
    ] {
        control(&r, "/control/faults", rule).await;
    }

    let mut log = VendLog::new();
    for _ in 0..sales {
        let m = rng.below(codes.len() as u64) as usize;
        let slot = format!("A{}", 1 + rng.below(3));
        let qty = 1 + rng.below(2) as u32;
        let pays = rng.chance(0.8);
        let offline = rng.chance(0.1);
        let (sim, events) = &mut machines[m];
        sim.buy(&[(slot.as_str(), qty)]).await.unwrap();
        // Wait for this request's answer, logging whatever else the machine does meanwhile.
        let qr = loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("no answer to a buy request")
                .unwrap();
            log_vend(&mut log, &ev);
            match ev {
                SimEvent::ShowQr { qr_code, .. } => break Some(qr_code),
                SimEvent::SaleRefused { .. } => break None,
                _ => {}
            }
        };
        // Whatever the faults did so far, every order waiting on something is watched.
        assert_eq!(
            crate::invariants::unwatched(&r.app_services.db).await,
            Vec::<String>::new(),
            "seed {seed}"
        );
        let Some(qr) = qr else { continue };
        if offline {
            sim.go_offline().await;
        }
        if pays {
            pay(&r, &qr).await;
        }
        if offline {
            // Sometimes back in time, sometimes after the dispense expired.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if rng.chance(0.5) {
                r.app_services.clock.advance(61_000);
                r.app_services.jobs_ready.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sim.go_online().await.unwrap();
            sim.heartbeat(None).await.unwrap();
        }
    }

    // Drive time forward until every order, refund and job has settled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        for (sim, events) in machines.iter_mut() {
            drain(events, &mut log);
            let _ = sim.heartbeat(None).await;
        }
        // Until it settles, every order waiting on something is watched.
        assert_eq!(
            crate::invariants::unwatched(&r.app_services.db).await,
            Vec::<String>::new(),
            "seed {seed}"
        );
        if all_settled(&r.app_services.db).await {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "not settled after 120 s (seed {seed}, server clock {}): {:#?}",
                r.app_services.now(),
                stuck(&r.app_services.db).await
            );
        }
        r.app_services.clock.advance(61_000);
        control(&r, "/control/clock/advance", json!({ "seconds": 600 })).await;
        for _ in 0..4 {
            r.app_services.jobs_ready.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (_, events) in machines.iter_mut() {
        drain(events, &mut log);
    }
    let states = crate::sale::strings(
        &r,
        openvend::store::query(
            "SELECT state || ' ' || CAST(COUNT(*) AS TEXT) FROM orders GROUP BY state ORDER BY state",
        ),
    )
    .await;
    println!(
        "orders: {states:?}; units vended: {}",
        log.values().sum::<u32>()
    );
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
    let completed: i64 =
        openvend::store::query("SELECT COUNT(*) AS n FROM orders WHERE state = 'completed'")
            .fetch_one(&r.app_services.db.pool)
            .await
            .map(|row| openvend::store::get_int(&row, "n").unwrap())
            .unwrap();
    assert!(completed > 0, "the chaos run sold nothing (seed {seed})");
}
