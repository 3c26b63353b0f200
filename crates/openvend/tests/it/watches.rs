//! Order watches (`store::watches`): an order's waits kept in its own row become jobs when
//! they come, once each, on SQLite and on PostgreSQL.

use openvend::domain::fen::Fen;
use openvend::domain::order::OrderLine;
use openvend::store::orders::{NewOrder, create_reserving, dispense_key, resolve_key};
use openvend::store::{Db, get_int, watches};

use crate::store::{postgres_db, postgres_url_if_asked, sqlite_db};

/// An operator, a machine and a slot of 1,000 colas.
async fn stocked(db: &Db) {
    db.migrate().await.unwrap();
    db.pool
        .execute_batch(
            "INSERT INTO operators (id, name, seller_pid, fund_mode, created_at) VALUES (1, 'Demo', '2088000000000001', 'collection', 1); \
             INSERT INTO machines (id, operator_id, code, kind, terminal_id, secret, created_at) VALUES (1, 1, 'VM-1', 'vending', 'VM1', 's', 1); \
             INSERT INTO products (id, operator_id, name, created_at) VALUES (1, 1, 'Cola', 1); \
             INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES (1, 'A1', 1, 350, 1000, 1000);",
        )
        .await
        .unwrap();
}

/// A one-cola order whose first payment poll is at `resolve_at`.
async fn order(db: &Db, no: &str, resolve_at: i64) -> i64 {
    let order = NewOrder {
        out_trade_no: no.into(),
        operator_id: 1,
        machine_id: 1,
        channel: "qr",
        lines: vec![OrderLine {
            slot: "A1".into(),
            product_id: 1,
            qty: 1,
            unit_price: Fen(350),
        }],
        total: Fen(350),
        expires_at: 100_000,
        request_id: None,
        resolve_at,
    };
    create_reserving(db, &order, 1).await.unwrap()
}

/// Puts order `id` in `state` with its watch at `watch_at`, as a payment or a vend would.
async fn set(db: &Db, id: i64, state: &str, watch_at: Option<i64>) {
    openvend::store::query("UPDATE orders SET state = $1, watch_at = $2 WHERE id = $3")
        .bind(state)
        .bind(watch_at)
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
}

/// The queued jobs: (key, kind, due at), by key.
async fn jobs(db: &Db) -> Vec<(String, String, i64)> {
    let rows = openvend::store::query("SELECT dedup_key, kind, run_at FROM jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut jobs: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.try_get(0).unwrap(),
                r.try_get(1).unwrap(),
                get_int(r, "run_at").unwrap(),
            )
        })
        .collect();
    jobs.sort();
    jobs
}

async fn watch(db: &Db, id: i64) -> Option<i64> {
    openvend::store::query("SELECT watch_at FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

#[tokio::test]
async fn watches_that_come_become_jobs_once_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    watches_story(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn watches_that_come_become_jobs_once_on_postgres() {
    watches_story(&postgres_db().await).await;
}

async fn watches_story(db: &Db) {
    stocked(db).await;
    // Writing an order writes its watch, not a job.
    let due = order(db, "o-due", 500).await;
    let later = order(db, "o-later", 5_000).await;
    let paid = order(db, "o-paid", 500).await;
    let asked = order(db, "o-asked", 500).await;
    let done = order(db, "o-done", 500).await;
    assert_eq!(jobs(db).await, []);
    assert_eq!(watch(db, due).await, Some(500));
    set(db, paid, "paid", Some(400)).await;
    set(db, done, "completed", Some(300)).await;
    // A buyer's page asks for one order's check before its watch comes.
    assert!(watches::resolve_now(&db.pool, asked, 200).await.unwrap());
    assert!(
        !watches::resolve_now(&db.pool, asked, 250).await.unwrap(),
        "already due: nothing to change"
    );
    assert_eq!(watches::next_due(db).await.unwrap(), Some(400));

    // Before any watch comes, a sweep changes nothing.
    assert_eq!(watches::queue_due(db, 399, 100).await.unwrap(), 0);
    assert_eq!(jobs(db).await.len(), 1);

    // At 1000: the due orders get their job, due since their watch came; the asked-for
    // order keeps the job it has; the later one and the finished one get nothing.
    assert_eq!(watches::queue_due(db, 1_000, 100).await.unwrap(), 3);
    let want = |key: String, kind: &str, at: i64| (key, kind.to_owned(), at);
    let mut expected = vec![
        want(dispense_key(paid), "dispense", 400),
        want(resolve_key(asked), "resolve_payment", 200),
        want(resolve_key(due), "resolve_payment", 500),
    ];
    expected.sort();
    assert_eq!(jobs(db).await, expected);
    for id in [due, paid, asked] {
        assert_eq!(watch(db, id).await, None, "order {id}'s watch is cleared");
    }
    assert_eq!(watch(db, later).await, Some(5_000));
    assert_eq!(
        watch(db, done).await,
        Some(300),
        "a finished order is not watched"
    );
    assert_eq!(watches::next_due(db).await.unwrap(), Some(5_000));

    // Queued once: a second sweep finds nothing.
    assert_eq!(watches::queue_due(db, 1_000, 100).await.unwrap(), 0);
    assert_eq!(jobs(db).await, expected);

    // At most `limit` a sweep, earliest first; the next sweep takes the rest.
    let many: Vec<i64> = {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(order(db, &format!("o-many-{n}"), 2_000 + n).await);
        }
        ids
    };
    assert_eq!(watches::queue_due(db, 3_000, 2).await.unwrap(), 2);
    assert_eq!(watch(db, many[0]).await, None);
    assert_eq!(watch(db, many[1]).await, None);
    assert_eq!(watch(db, many[2]).await, Some(2_002));
    assert_eq!(watches::next_due(db).await.unwrap(), Some(2_002));
    assert_eq!(watches::queue_due(db, 3_000, 100).await.unwrap(), 3);
    assert_eq!(jobs(db).await.len(), expected.len() + many.len());
}

/// Several instances sweep the same due watches at once (PostgreSQL): none waits on another
/// or fails, and every order gets its one job.
#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn instances_sweeping_the_same_watches_queue_each_once_on_postgres() {
    const ORDERS: i64 = 200;
    let url = postgres_url_if_asked()
        .await
        .expect("OPENVEND_TEST_POSTGRES must name a PostgreSQL URL");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Db::connect(&url, false).await.unwrap());
    }
    stocked(&instances[0]).await;
    for n in 0..ORDERS {
        order(&instances[0], &format!("o-{n}"), 100 + n % 7).await;
    }
    let mut sweepers = Vec::new();
    for db in &instances {
        for _ in 0..3 {
            let db = db.clone();
            sweepers.push(tokio::spawn(async move {
                let mut queued = 0;
                loop {
                    let n = watches::queue_due(&db, 1_000, 15).await.unwrap();
                    if n == 0 && watches::next_due(&db).await.unwrap().is_none() {
                        return queued;
                    }
                    queued += n;
                }
            }));
        }
    }
    let mut queued = 0;
    for s in sweepers {
        queued += s.await.unwrap();
    }
    assert_eq!(queued, ORDERS as usize, "each watch was taken by one sweep");
    let db = &instances[0];
    assert_eq!(jobs(db).await.len(), ORDERS as usize);
    let watched =
        openvend::store::query("SELECT COUNT(*) AS n FROM orders WHERE watch_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(get_int(&watched, "n").unwrap(), 0);
}
