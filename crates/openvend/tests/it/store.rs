//! The store "story": the same sequence of operations on SQLite and on PostgreSQL.

use openvend::store::{Db, StoreError, jobs};

/// The first column of every row `sql` answers, as text.
async fn texts(db: &Db, sql: &str) -> Vec<String> {
    openvend::store::query(sql)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect()
}

pub async fn sqlite_db() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/openvend.db", dir.path().display());
    let db = Db::connect(&url, true).await.unwrap();
    (db, dir)
}

/// When `OPENVEND_TEST_POSTGRES` is set, the flow tests run on a fresh schema of that
/// PostgreSQL instead of SQLite (`.ci/run.d/30-postgres.sh` does this): the URL of that schema.
pub async fn postgres_url_if_asked() -> Option<String> {
    let base = std::env::var("OPENVEND_TEST_POSTGRES").ok()?;
    let schema = unique_schema();
    let admin = Db::connect(&base, false).await.unwrap();
    openvend::store::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin.pool)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// A fresh schema in the PostgreSQL named by `OPENVEND_TEST_POSTGRES`.
pub async fn postgres_db() -> Db {
    let base = std::env::var("OPENVEND_TEST_POSTGRES")
        .expect("OPENVEND_TEST_POSTGRES must name a PostgreSQL URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL suite");
    let schema = unique_schema();
    let admin = Db::connect(&base, false).await.unwrap();
    openvend::store::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin.pool)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Db::connect(
        &format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        false,
    )
    .await
    .unwrap()
}

/// Makes the store refuse every ack event from now on, until [`take_ack_events`]: a write of
/// held acks then fails, as when the database is away for them.
pub async fn refuse_ack_events(db: &Db) {
    let refuse = if db.backend == openvend::store::Backend::Postgres {
        vec![
            "CREATE FUNCTION refuse_acks() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'acks refused'; END $$",
            "CREATE TRIGGER refuse_acks BEFORE INSERT ON device_events FOR EACH ROW \
             WHEN (NEW.kind = 'ack') EXECUTE FUNCTION refuse_acks()",
        ]
    } else {
        vec![
            "CREATE TRIGGER refuse_acks BEFORE INSERT ON device_events WHEN NEW.kind = 'ack' \
             BEGIN SELECT RAISE(ABORT, 'acks refused'); END",
        ]
    };
    for sql in refuse {
        openvend::store::query(sql).execute(&db.pool).await.unwrap();
    }
}

/// Undoes [`refuse_ack_events`].
pub async fn take_ack_events(db: &Db) {
    openvend::store::query("DROP TRIGGER refuse_acks ON device_events")
        .on_sqlite("DROP TRIGGER refuse_acks")
        .execute(&db.pool)
        .await
        .unwrap();
    if db.backend == openvend::store::Backend::Postgres {
        openvend::store::query("DROP FUNCTION refuse_acks()")
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

/// A schema name no other test of this run (nor, practically, of an earlier run) uses: the
/// process id, a per-process counter and the time, never added together.
pub fn unique_schema() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// What is left to refund of an order is read through an index on the order, not by reading
/// every refund (SQLite's plan; PostgreSQL plans by the table's size).
#[tokio::test]
async fn an_orders_refunds_are_read_by_an_index() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    let detail = query_plan(
        &db,
        openvend::store::query(
            "EXPLAIN QUERY PLAN SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM refunds \
             WHERE order_id = $1 AND state <> 'failed'",
        )
        .bind(1_i64),
    )
    .await;
    assert!(
        detail
            .iter()
            .any(|d| d.contains("USING INDEX refunds_order_idx")),
        "{detail:?}"
    );
}

/// The attention list of refunds still open after a day reads the open refunds by age through
/// their partial index (migration 19), not every refund ever made.
#[tokio::test]
async fn open_refunds_are_read_by_an_index() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    let detail = query_plan(
        &db,
        openvend::store::query(
            "EXPLAIN QUERY PLAN SELECT r.id, r.order_id, o.out_trade_no, r.out_request_no, r.amount_fen, r.state, r.created_at \
             FROM refunds r JOIN orders o ON o.id = r.order_id \
             WHERE r.state IN ('requested', 'unknown') AND r.created_at < $1 \
             ORDER BY r.created_at LIMIT $2",
        )
        .bind(1_i64)
        .bind(200_i64),
    )
    .await;
    assert!(
        detail
            .iter()
            .any(|d| d.contains("USING INDEX refunds_open")),
        "{detail:?}"
    );
    assert!(
        !detail.iter().any(|d| d.contains("TEMP B-TREE")),
        "no sort: {detail:?}"
    );
}

/// The `detail` lines of SQLite's plan for an `EXPLAIN QUERY PLAN` statement.
async fn query_plan(db: &Db, explain: openvend::store::Query<'_>) -> Vec<String> {
    let plan = explain.fetch_all(&db.pool).await.unwrap();
    plan.iter().map(|r| r.try_get("detail").unwrap()).collect()
}

#[tokio::test]
async fn the_store_story_holds_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    story(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn the_store_story_holds_on_postgres() {
    let db = postgres_db().await;
    story(&db).await;
}

#[tokio::test]
async fn an_order_refused_inside_a_longer_transaction_leaves_nothing_behind_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    refused_order_leaves_nothing(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn an_order_refused_inside_a_longer_transaction_leaves_nothing_behind_on_postgres() {
    let db = postgres_db().await;
    refused_order_leaves_nothing(&db).await;
}

#[tokio::test]
async fn deferred_writes_keep_their_order_and_fail_their_transaction_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    deferred_writes(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn deferred_writes_keep_their_order_and_fail_their_transaction_on_postgres() {
    let db = postgres_db().await;
    deferred_writes(&db).await;
}

/// On PostgreSQL a transaction's write of several statements goes out with one `Sync`
/// (`store::pg_socket`); this checks that it does, and what could go wrong around it: a
/// `COMMIT` that itself fails, and a statement outside a transaction cancelled mid-way on a
/// connection the next transactions use.
#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn a_transactions_statements_share_one_sync_on_postgres() {
    use openvend::store::query;
    let db = postgres_db().await;
    db.pool
        .execute_batch(
            "CREATE TABLE marks (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); \
             CREATE TABLE once (k BIGINT, CONSTRAINT once_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .unwrap();
    let mark = |id: i64, n: i64| {
        query("INSERT INTO marks (id, n) VALUES ($1, $2)")
            .bind(id)
            .bind(n)
    };

    let before = db.pool.shared_sync_writes();
    let mut tx = db.begin().await.unwrap();
    mark(1, 10).defer(&mut *tx).await.unwrap();
    let n: i64 = query("SELECT n FROM marks WHERE id = $1")
        .bind(1_i64)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 10);
    query("UPDATE marks SET n = n + 1 WHERE id = $1")
        .bind(1_i64)
        .defer(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.pool.shared_sync_writes() - before,
        2,
        "BEGIN, the insert and the read in one write; the update and COMMIT in another"
    );

    // A COMMIT that fails itself (a deferred unique constraint) says why, keeps nothing, and
    // its connection serves the next transaction.
    let mut tx = db.begin().await.unwrap();
    for _ in 0..2 {
        query("INSERT INTO once (k) VALUES (1)")
            .defer(&mut *tx)
            .await
            .unwrap();
    }
    let e = tx
        .commit()
        .await
        .expect_err("the deferred constraint fails the commit");
    assert!(e.is_unique_violation(), "{e}");
    assert_eq!(count_notes(&db, "SELECT COUNT(*) FROM once").await, 0);

    // Statements outside a transaction cancelled before their answer (more than the pool has
    // connections), then transactions on the same connections: each sees only its own.
    for _ in 0..20 {
        let slow = query("SELECT pg_sleep(0.05)").execute(&db.pool);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(2), slow)
                .await
                .is_err(),
            "the sleep was cut off"
        );
    }
    for id in 100..130 {
        let mut tx = db.begin().await.unwrap();
        mark(id, id).defer(&mut *tx).await.unwrap();
        let seen: i64 = query("SELECT COUNT(*) FROM marks WHERE id >= 100")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(seen, id - 99);
        tx.commit().await.unwrap();
    }
    assert_eq!(count_notes(&db, "SELECT COUNT(*) FROM marks").await, 31);
    let n: i64 = query("SELECT n FROM marks WHERE id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 11);
}

#[tokio::test]
async fn rows_read_later_arrive_with_the_next_statement_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    rows_read_later(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn rows_read_later_arrive_with_the_next_statement_on_postgres() {
    let db = postgres_db().await;
    rows_read_later(&db).await;
}

#[tokio::test]
async fn a_write_that_changes_other_rows_than_expected_fails_its_transaction_on_sqlite() {
    let (db, _dir) = sqlite_db().await;
    expected_rows(&db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn a_write_that_changes_other_rows_than_expected_fails_its_transaction_on_postgres() {
    let db = postgres_db().await;
    expected_rows(&db).await;
}

/// `Query::expect_rows`: a guarded write that must change so many rows. When it does, the
/// transaction commits; when it does not, the transaction fails with `RowsNotAsExpected` —
/// on SQLite at once, on PostgreSQL (where the check runs in the database and goes out with
/// the commit) at the commit — and nothing of it is stored.
async fn expected_rows(db: &Db) {
    use openvend::store::query;
    db.migrate().await.unwrap(); // PostgreSQL's check is a function of migration 18
    db.pool
        .execute_batch("CREATE TABLE doors (id BIGINT PRIMARY KEY, state TEXT NOT NULL)")
        .await
        .unwrap();
    query("INSERT INTO doors (id, state) VALUES (1, 'shut'), (2, 'shut')")
        .execute(&db.pool)
        .await
        .unwrap();
    let open = |id: i64| {
        query("UPDATE doors SET state = 'open' WHERE id = $1 AND state = 'shut'").bind(id)
    };
    let states = || async {
        query("SELECT state FROM doors ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>(0).unwrap())
            .collect::<Vec<_>>()
    };

    let mut tx = db.begin().await.unwrap();
    open(1).expect_rows(&mut *tx, 1).await.unwrap();
    query("INSERT INTO doors (id, state) VALUES (3, 'shut')")
        .defer(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(states().await, ["open", "shut", "shut"]);

    // Door 1 is open already: its transition changes nothing, and the transaction fails.
    let mut tx = db.begin().await.unwrap();
    open(2).expect_rows(&mut *tx, 1).await.unwrap();
    let failed = match open(1).expect_rows(&mut *tx, 1).await {
        Err(e) => {
            drop(tx); // SQLite: at once; the transaction is given up
            e
        }
        Ok(()) => {
            query("INSERT INTO doors (id, state) VALUES (4, 'shut')")
                .defer(&mut *tx)
                .await
                .unwrap();
            tx.commit()
                .await
                .expect_err("the commit fails the transaction")
        }
    };
    assert!(failed.is_rows_not_as_expected(), "{failed}");
    assert!(
        failed
            .to_string()
            .contains("0 row(s) changed where 1 expected"),
        "{failed}"
    );
    assert_eq!(
        states().await,
        ["open", "shut", "shut"],
        "nothing of the failed transaction is stored"
    );

    // Zero rows can be what is expected, and more than one.
    let mut tx = db.begin().await.unwrap();
    open(1).expect_rows(&mut *tx, 0).await.unwrap();
    query("UPDATE doors SET state = 'open' WHERE state = 'shut'")
        .expect_rows(&mut *tx, 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(states().await, ["open", "open", "open"]);
}

/// `Query::fetch_later`: a read (or a write's `RETURNING`) that goes out with the
/// transaction's next statement or its commit. It sees what ran before it and not what is
/// queued after it; its rows are there once that round trip is over; a failing one fails the
/// transaction; one never sent says so instead of answering nothing.
async fn rows_read_later(db: &Db) {
    use openvend::store::query;
    db.pool
        .execute_batch("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    let insert = |id: i64, body: &'static str| {
        query("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(body)
    };
    let bodies = |rows: Vec<openvend::store::Row>| -> Vec<String> {
        rows.iter().map(|r| r.try_get(0).unwrap()).collect()
    };

    let mut tx = db.begin().await.unwrap();
    insert(1, "a").defer(&mut *tx).await.unwrap();
    let before = query("SELECT body FROM notes ORDER BY id")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    let returned = query("INSERT INTO notes (id, body) VALUES (2, 'b') RETURNING id")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    let none = query("SELECT body FROM notes WHERE id = 99")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    let changed = query("UPDATE notes SET body = body || '!' WHERE id <= 2")
        .execute_later(&mut *tx)
        .await
        .unwrap();
    let unchanged = query("UPDATE notes SET body = 'x' WHERE id = 99")
        .execute_later(&mut *tx)
        .await
        .unwrap();
    let count = count_in(&mut tx, "SELECT COUNT(*) FROM notes").await;
    assert_eq!(changed.rows_affected().unwrap(), 2);
    assert_eq!(unchanged.rows_affected().unwrap(), 0);
    assert_eq!(
        count, 2,
        "the next statement saw the write queued before it"
    );
    assert_eq!(
        bodies(before.rows().unwrap()),
        ["a"],
        "read before the insert after it"
    );
    let id: i64 = returned.first().unwrap().unwrap().try_get(0).unwrap();
    assert_eq!(id, 2);
    assert!(none.first().unwrap().is_none());

    // Queued last, it goes out with the commit and is read after it.
    let committed = query("INSERT INTO notes (id, body) VALUES (3, 'c') RETURNING body")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(bodies(committed.rows().unwrap()), ["c"]);
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE body LIKE '%!'").await,
        2
    );
    assert_eq!(count_notes(db, "SELECT COUNT(*) FROM notes").await, 3);

    // One that fails fails the transaction (SQLite at once, PostgreSQL at the commit) and
    // answers the error, not an empty result.
    let mut tx = db.begin().await.unwrap();
    insert(4, "d").execute(&mut *tx).await.unwrap();
    let outcome = match query("INSERT INTO notes (id, body) VALUES (1, 'again') RETURNING id")
        .fetch_later(&mut *tx)
        .await
    {
        Err(e) => {
            drop(tx);
            Err(e)
        }
        Ok(failed) => {
            let committed = tx.commit().await;
            let read = failed.rows().expect_err("a failed statement has no rows");
            assert!(read.is_unique_violation(), "{read}");
            committed
        }
    };
    let e = outcome.expect_err("a duplicate key cannot commit");
    assert!(e.is_unique_violation(), "{e}");
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE id = 4").await,
        0
    );

    // Read before its round trip (PostgreSQL) or after a dropped transaction: an error.
    let mut tx = db.begin().await.unwrap();
    let early = query("SELECT body FROM notes")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let read = early.rows();
    if db.backend == openvend::store::Backend::Postgres {
        assert!(read.is_err(), "rows of a statement never sent: {read:?}");
    } else {
        assert_eq!(read.unwrap().len(), 3, "SQLite ran it at once");
    }
}

async fn count_in(tx: &mut openvend::store::Tx, sql: &str) -> i64 {
    openvend::store::query(sql)
        .fetch_one(&mut **tx)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn count_notes(db: &Db, sql: &str) -> i64 {
    openvend::store::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// `Query::defer`: on PostgreSQL the write waits and goes out with the transaction's next
/// statement or its `COMMIT`. The transaction must behave exactly as if it had run at once:
/// later statements see it, in order; its failure fails the commit and leaves nothing; a
/// transaction dropped before or after anything went out leaves nothing, and its connection
/// serves the next caller outside any transaction.
async fn deferred_writes(db: &Db) {
    use openvend::store::query;
    db.pool
        .execute_batch("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    let insert = |id: i64, body: &'static str| {
        query("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(body)
    };

    // Seen by the next statement, in the order deferred, and committed.
    let mut tx = db.begin().await.unwrap();
    insert(1, "a").defer(&mut *tx).await.unwrap();
    query("UPDATE notes SET body = $1 WHERE id = $2")
        .bind("b")
        .bind(1_i64)
        .defer(&mut *tx)
        .await
        .unwrap();
    let body: String = query("SELECT body FROM notes WHERE id = 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(
        body, "b",
        "the update ran after the insert, before the read"
    );
    insert(2, "c").defer(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count_notes(db, "SELECT COUNT(*) FROM notes").await, 2);

    // A deferred write that fails fails the transaction (SQLite says so at once, PostgreSQL
    // at the commit), and nothing of that transaction stays.
    let mut tx = db.begin().await.unwrap();
    insert(3, "d").execute(&mut *tx).await.unwrap();
    let outcome = match insert(1, "duplicate").defer(&mut *tx).await {
        Err(e) => {
            drop(tx); // rolled back
            Err(e)
        }
        Ok(()) => tx.commit().await,
    };
    let e = outcome.expect_err("a duplicate key cannot commit");
    assert!(e.is_unique_violation(), "{e}");
    assert_eq!(count_notes(db, "SELECT COUNT(*) FROM notes").await, 2);
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE id = 3").await,
        0
    );

    // On PostgreSQL a transaction's statements share one write (and one `Sync`): a read sent
    // after a failing write is skipped by the database and answered with the error it gives a
    // statement of a failed transaction, the failing write's own error is the one reported,
    // and nothing stays. SQLite refuses the duplicate at once.
    let postgres = db.backend == openvend::store::Backend::Postgres;
    let shared = db.pool.shared_sync_writes();
    let mut tx = db.begin().await.unwrap();
    insert(8, "i").defer(&mut *tx).await.unwrap();
    if insert(1, "duplicate").defer(&mut *tx).await.is_ok() {
        let skipped = query("SELECT body FROM notes WHERE id = 2")
            .fetch_later(&mut *tx)
            .await
            .unwrap();
        let e = query("SELECT body FROM notes WHERE id = 8")
            .fetch_one(&mut *tx)
            .await
            .expect_err("a failed transaction answers nothing");
        assert!(e.is_unique_violation(), "{e}");
        match skipped.first() {
            Err(openvend::store::Error::Database { code, .. }) => {
                assert_eq!(
                    code.as_deref(),
                    Some("25P02"),
                    "a skipped statement's answer"
                );
            }
            other => panic!("a statement after the failing one answered {other:?}"),
        }
        assert_eq!(
            db.pool.shared_sync_writes(),
            shared + 1,
            "the failing write went out with one Sync"
        );
    }
    drop(tx);
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE id = 8").await,
        0
    );
    // Several reads in one write each get their own rows.
    let shared = db.pool.shared_sync_writes();
    let mut tx = db.begin().await.unwrap();
    let first = query("SELECT body FROM notes WHERE id = 2")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    let none = query("SELECT body FROM notes WHERE id = 99")
        .fetch_later(&mut *tx)
        .await
        .unwrap();
    insert(9, "j").defer(&mut *tx).await.unwrap();
    let all: i64 = query("SELECT COUNT(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    tx.commit().await.unwrap();
    let body: String = first.first().unwrap().unwrap().try_get(0).unwrap();
    assert_eq!((body.as_str(), all), ("c", 3));
    assert!(none.first().unwrap().is_none());
    if postgres {
        assert_eq!(
            db.pool.shared_sync_writes(),
            shared + 1,
            "BEGIN, the reads, the insert and the count in one write (the COMMIT goes alone)"
        );
    }

    // Only deferred writes: they go out with the commit.
    let mut tx = db.begin().await.unwrap();
    insert(4, "e").defer(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE id = 4").await,
        1
    );

    // Dropped before anything went out: nothing written.
    let mut tx = db.begin().await.unwrap();
    insert(5, "f").defer(&mut *tx).await.unwrap();
    drop(tx);
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE id = 5").await,
        0
    );

    // Dropped after statements went out, more times than the pool has connections: each is
    // rolled back, and no connection comes back still inside its transaction (a later
    // commit on it would commit the dropped rows too).
    for id in 100..140 {
        let mut tx = db.begin().await.unwrap();
        insert(id, "dropped").execute(&mut *tx).await.unwrap();
        insert(id + 1000, "dropped too")
            .defer(&mut *tx)
            .await
            .unwrap();
        drop(tx);
    }
    for id in 200..240 {
        let mut tx = db.begin().await.unwrap();
        insert(id, "kept").defer(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE body LIKE 'dropped%'").await,
        0
    );
    assert_eq!(
        count_notes(db, "SELECT COUNT(*) FROM notes WHERE body = 'kept'").await,
        40
    );
}

/// A machine's buy request is recorded in the transaction that writes its order; when the
/// order cannot be written (a slot without stock after another was reserved, the same
/// request again) that transaction goes on and commits, so nothing of the order may remain.
async fn refused_order_leaves_nothing(db: &Db) {
    use openvend::domain::fen::Fen;
    use openvend::domain::order::OrderLine;
    use openvend::store::orders::{NewOrder, OrderError, create_reserving_in};
    db.migrate().await.unwrap();
    db.pool
        .execute_batch(
            "INSERT INTO operators (id, name, seller_pid, fund_mode, created_at) VALUES (1, 'Demo', '2088000000000001', 'collection', 1); \
             INSERT INTO machines (id, operator_id, code, kind, terminal_id, secret, created_at) VALUES (1, 1, 'VM-1', 'vending', 'VM1', 's', 1); \
             INSERT INTO products (id, operator_id, name, created_at) VALUES (1, 1, 'Cola', 1); \
             INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES (1, 'A1', 1, 350, 10, 5); \
             INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES (1, 'B1', 1, 350, 10, 0);",
        )
        .await
        .unwrap();
    let line = |slot: &str, qty: u32| OrderLine {
        slot: slot.into(),
        product_id: 1,
        qty,
        unit_price: Fen(350),
    };
    let order = |no: &str, lines: Vec<OrderLine>| NewOrder {
        out_trade_no: no.into(),
        operator_id: 1,
        machine_id: 1,
        channel: "qr",
        total: Fen(350 * i64::from(lines.iter().map(|l| l.qty).sum::<u32>())),
        lines,
        expires_at: 1_000,
        request_id: Some("r-1".into()),
        resolve_at: 500,
    };
    let mut tx = db.begin().await.unwrap();
    let empty_second_line = order("o-1", vec![line("A1", 2), line("B1", 1)]);
    assert!(matches!(
        create_reserving_in(&mut tx, &empty_second_line, None, 1).await,
        Err(OrderError::SlotUnavailable(slot)) if slot == "B1"
    ));
    let id = create_reserving_in(&mut tx, &order("o-2", vec![line("A1", 1)]), None, 1)
        .await
        .unwrap();
    assert!(matches!(
        create_reserving_in(&mut tx, &order("o-3", vec![line("A1", 3)]), None, 1).await,
        Err(OrderError::DuplicateRequest)
    ));
    // One line (on PostgreSQL reserved and written in one statement) from an empty slot.
    assert!(matches!(
        create_reserving_in(&mut tx, &order("o-4", vec![line("B1", 1)]), None, 1).await,
        Err(OrderError::SlotUnavailable(slot)) if slot == "B1"
    ));
    // Without a request id (an H5 sale), one line and two: both paths on PostgreSQL.
    let without_request = |no: &str, lines| NewOrder {
        request_id: None,
        ..order(no, lines)
    };
    create_reserving_in(
        &mut tx,
        &without_request("o-5", vec![line("A1", 1)]),
        None,
        1,
    )
    .await
    .unwrap();
    create_reserving_in(
        &mut tx,
        &without_request("o-6", vec![line("A1", 1), line("A1", 1)]),
        None,
        1,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let reserved = |code: &'static str| async move {
        openvend::store::query("SELECT reserved FROM slots WHERE code = $1")
            .bind(code)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    };
    assert_eq!(
        reserved("A1").await,
        4,
        "only the orders written hold stock"
    );
    assert_eq!(reserved("B1").await, 0);
    let orders = texts(db, "SELECT out_trade_no FROM orders ORDER BY out_trade_no").await;
    assert_eq!(orders, ["o-2", "o-5", "o-6"]);
    let lines: i64 = openvend::store::query("SELECT COUNT(*) FROM order_lines WHERE order_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(lines, 1);
}

/// Many SQLite transactions and statements at once on the one connection: each commits or
/// rolls back alone, a failed statement spoils nobody else's, and what `commit` (or a
/// statement outside a transaction) reported done is in the file for another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sqlite_transactions_keep_their_own_outcome() {
    let (db, dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..200i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("g{n}");
            match n % 4 {
                // A transaction that commits.
                0 | 1 => {
                    let mut tx = db.begin().await.unwrap();
                    jobs::enqueue(&mut *tx, "refund", &key, "{}", n, n).await.unwrap();
                    tokio::task::yield_now().await;
                    tx.commit().await.unwrap();
                    true
                }
                // One that is dropped half-way.
                2 => {
                    let mut tx = db.begin().await.unwrap();
                    jobs::enqueue(&mut *tx, "refund", &key, "{}", n, n).await.unwrap();
                    drop(tx);
                    false
                }
                // A statement on its own, then one that fails its constraint.
                _ => {
                    jobs::enqueue(&db.pool, "refund", &key, "{}", n, n)
                        .await
                        .unwrap();
                    let dup = openvend::store::query(
                        "INSERT INTO jobs (kind, dedup_key, payload, attempts, run_at, created_at) VALUES ('refund', $1, '{}', 0, 1, 1)",
                    )
                    .bind(&key)
                    .execute(&db.pool)
                    .await;
                    assert!(dup.is_err(), "the key is taken");
                    true
                }
            }
        }));
    }
    let mut kept = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap() {
            kept.push(format!("g{n}"));
        }
    }
    // Another connection to the file sees exactly what was reported committed.
    let other = Db::connect(
        &format!("sqlite://{}/openvend.db", dir.path().display()),
        false,
    )
    .await
    .unwrap();
    let rows = openvend::store::query("SELECT dedup_key FROM jobs ORDER BY id")
        .fetch_all(&other.pool)
        .await
        .unwrap();
    let mut seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    seen.sort();
    kept.sort();
    assert_eq!(seen, kept);
}

#[tokio::test]
async fn instances_sharing_a_sqlite_queue_claim_each_job_once() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    claim_race(vec![db.clone(), db]).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run with OPENVEND_TEST_POSTGRES set"]
async fn instances_sharing_a_postgres_queue_claim_each_job_once() {
    let url = postgres_url_if_asked()
        .await
        .expect("OPENVEND_TEST_POSTGRES must name a PostgreSQL URL");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Db::connect(&url, false).await.unwrap());
    }
    instances[0].migrate().await.unwrap();
    claim_race(instances).await;
}

/// Several instances (each its own pool) empty one queue at once, each with batch sweeps and
/// claims by key racing one another: every job is claimed by exactly one of them.
async fn claim_race(instances: Vec<Db>) {
    const JOBS: usize = 300;
    for n in 0..JOBS {
        jobs::enqueue(&instances[0].pool, "refund", &format!("k{n}"), "{}", 1, 1)
            .await
            .unwrap();
    }
    let mut racers = Vec::new();
    for (i, db) in instances.into_iter().enumerate() {
        for worker in 0..4 {
            let db = db.clone();
            racers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = worker * 7 + i;
                loop {
                    // Half the time a claim by key (a hint), else a batch sweep.
                    let claimed = if n % 2 == 0 {
                        jobs::claim_key(&db, &format!("k{}", n % JOBS), 10, 60_000)
                            .await
                            .unwrap()
                            .into_iter()
                            .collect()
                    } else {
                        let batch = jobs::claim_due(&db, 10, 60_000, 5).await.unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        batch
                    };
                    mine.extend(claimed.into_iter().map(|j| j.id));
                    n += 1;
                }
            }));
        }
    }
    let mut all = Vec::new();
    for r in racers {
        all.extend(r.await.unwrap());
    }
    let claimed = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), claimed, "a job was claimed twice");
    assert_eq!(claimed, JOBS, "every job was claimed");
}

/// SQLite checks a CHECK constraint's `IN` list of three values or more by building a
/// temporary B-tree at every write of the column (about 2 µs, over twenty times a sale):
/// after the migrations, a plain insert into any table builds none.
#[tokio::test]
async fn no_check_constraint_makes_sqlite_build_a_temporary_table() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    let tables = texts(
        &db,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .await;
    assert!(tables.len() > 10, "{tables:?}");
    let mut building = Vec::new();
    for table in &tables {
        let columns = texts(
            &db,
            &format!("SELECT name FROM pragma_table_info('{table}')"),
        )
        .await;
        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "EXPLAIN INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            params.join(", ")
        );
        let mut explain = openvend::store::query(&sql);
        for _ in &columns {
            explain = explain.bind(None::<i64>);
        }
        let opcodes: Vec<String> = explain
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("opcode").unwrap())
            .collect();
        if opcodes.iter().any(|op| op == "OpenEphemeral") {
            building.push(table.clone());
        }
    }
    assert_eq!(building, Vec::<String>::new());
    // The rewritten constraints still refuse what they refused.
    let bad = openvend::store::query(
        "INSERT INTO order_events (order_id, id, at, source, kind, detail) VALUES (1, 1, 0, 'bogus', 'k', 'd')",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("CHECK"), "{bad}");
}

#[tokio::test]
async fn a_missing_sqlite_file_is_not_created_silently_and_unknown_schemes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/typo.db", dir.path().display());
    assert!(matches!(
        Db::connect(&url, false).await,
        Err(StoreError::MissingFile(_))
    ));
    assert!(!dir.path().join("typo.db").exists());
    let err = Db::connect("mysql://x", false).await.unwrap_err();
    assert!(err.to_string().contains("unknown scheme"), "{err}");
}

async fn story(db: &Db) {
    db.migrate().await.unwrap();
    db.migrate().await.unwrap(); // a second run applies nothing

    // The fleet.
    let op: i64 = openvend::store::query("INSERT INTO operators (name, seller_pid, fund_mode, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
        .bind("Demo")
        .bind("2088000000000001")
        .bind("collection")
        .bind(1i64)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let machine: i64 = openvend::store::query(
        "INSERT INTO machines (operator_id, code, kind, terminal_id, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(op)
    .bind("VM-0001")
    .bind("vending")
    .bind("VM0001")
    .bind("s3cret")
    .bind(1i64)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    let product: i64 = openvend::store::query(
        "INSERT INTO products (operator_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(op)
    .bind("Cola")
    .bind(1i64)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    openvend::store::query("INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES ($1, 'A1', $2, 350, 10, 2)")
        .bind(machine)
        .bind(product)
        .execute(&db.pool)
        .await
        .unwrap();

    // Reserving is a conditional update: it cannot oversell.
    let reserve = |qty: i32| {
        openvend::store::query(
            "UPDATE slots SET reserved = reserved + $1 WHERE machine_id = $2 AND code = 'A1' AND enabled AND stock - reserved >= $1",
        )
        .bind(qty)
        .bind(machine)
        .execute(&db.pool)
    };
    assert_eq!(reserve(2).await.unwrap().rows_affected(), 1);
    assert_eq!(
        reserve(1).await.unwrap().rows_affected(),
        0,
        "no stock left to reserve"
    );

    // States are checked by the database too.
    let bad = openvend::store::query(
        "INSERT INTO orders (out_trade_no, operator_id, machine_id, channel, state, total_fen, created_at, updated_at, expires_at) \
         VALUES ('o1', $1, $2, 'qr', 'PAID', 350, 1, 1, 2)",
    )
    .bind(op)
    .bind(machine)
    .execute(&db.pool)
    .await;
    assert!(bad.is_err(), "an unknown state is refused");
    let over = openvend::store::query(
        "INSERT INTO orders (out_trade_no, operator_id, machine_id, channel, state, total_fen, refunded_fen, created_at, updated_at, expires_at) \
         VALUES ('o2', $1, $2, 'qr', 'paid', 350, 351, 1, 1, 2)",
    )
    .bind(op)
    .bind(machine)
    .execute(&db.pool)
    .await;
    assert!(over.is_err(), "refunds above the total are refused");

    // Jobs: deduplicated, claimed once, retried, completed.
    assert!(
        jobs::enqueue(&db.pool, "resolve_payment", "resolve:o1", "{}", 100, 1)
            .await
            .unwrap()
    );
    assert!(
        !jobs::enqueue(&db.pool, "resolve_payment", "resolve:o1", "{}", 100, 1)
            .await
            .unwrap()
    );
    assert_eq!(
        jobs::claim(db, 99, 1000).await.unwrap(),
        None,
        "not due yet"
    );
    let job = jobs::claim(db, 100, 1000).await.unwrap().expect("due job");
    assert_eq!((job.kind.as_str(), job.attempts), ("resolve_payment", 1));
    assert_eq!(
        jobs::claim(db, 500, 1000).await.unwrap(),
        None,
        "leased to the first worker"
    );
    jobs::retry_later(db, &job, "gateway timeout", 2000)
        .await
        .unwrap();
    assert_eq!(jobs::claim(db, 1999, 1000).await.unwrap(), None);
    let again = jobs::claim(db, 2000, 1000)
        .await
        .unwrap()
        .expect("retried job");
    assert_eq!(again.attempts, 2);
    // A job that asks to run again (a poll) starts its count again: a failure after many
    // polls backs off from one second, not from the cap.
    jobs::poll_later(db, &again, 2100).await.unwrap();
    let polled = jobs::claim(db, 2100, 1000)
        .await
        .unwrap()
        .expect("polled job");
    assert_eq!(polled.attempts, 1);
    jobs::complete(db, &polled).await.unwrap();
    assert_eq!(jobs::count(db).await.unwrap(), 0);

    // A job that ends its own row and queues another in one transaction (the payment poll
    // recording a payment and queueing the dispense): SQLite may give the new row the same
    // id, and completing the first job must leave the second.
    jobs::enqueue(&db.pool, "resolve_payment", "poll:1", "{}", 10, 1)
        .await
        .unwrap();
    let poll = jobs::claim_key(db, "poll:1", 10, 1000)
        .await
        .unwrap()
        .expect("due poll");
    let mut tx = db.begin().await.unwrap();
    jobs::cancel(&mut *tx, "poll:1").await.unwrap();
    jobs::enqueue(&mut *tx, "dispense", "dispense:1", "{}", 5_000, 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    jobs::complete(db, &poll).await.unwrap();
    jobs::retry_later(db, &poll, "late", 20).await.unwrap();
    jobs::poll_later(db, &poll, 30).await.unwrap();
    let left = openvend::store::query("SELECT dedup_key, run_at FROM jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].get::<String, _>(0), "dispense:1");
    assert_eq!(
        left[0].get::<i64, _>(1),
        5_000,
        "not rescheduled by the poll"
    );
    jobs::cancel(&db.pool, "dispense:1").await.unwrap();

    // A job queued already claimed (a device event this process runs at once) is nobody
    // else's until its lease ends or it is released; released, the sweep takes it.
    let claimed = jobs::enqueue_claimed(&db.pool, "device_event", "ev:1", "{}", 100, 1000)
        .await
        .unwrap()
        .job()
        .unwrap()
        .expect("queued");
    assert_eq!((claimed.dedup_key.as_str(), claimed.attempts), ("ev:1", 1));
    let taken = jobs::enqueue_claimed(&db.pool, "device_event", "ev:1", "{}", 100, 1000)
        .await
        .map(|_| ())
        .expect_err("one job per key: a taken key fails");
    assert!(
        matches!(&taken, openvend::store::StoreError::Store(e) if e.is_unique_violation()),
        "{taken}"
    );
    // In a transaction, read back after the commit it went out with (PostgreSQL).
    let mut tx = db.begin().await.unwrap();
    let queued = jobs::enqueue_claimed(&mut tx, "device_event", "ev:2", "{}", 100, 1000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let queued = queued.job().unwrap().expect("queued in the transaction");
    assert_eq!((queued.dedup_key.as_str(), queued.attempts), ("ev:2", 1));
    jobs::complete(db, &queued).await.unwrap();
    assert_eq!(jobs::claim(db, 500, 1000).await.unwrap(), None, "leased");
    jobs::release(db, &claimed).await.unwrap();
    let swept = jobs::claim(db, 500, 1000).await.unwrap().expect("released");
    assert_eq!((swept.id, swept.attempts), (claimed.id, 1));
    jobs::complete(db, &swept).await.unwrap();
    assert_eq!(jobs::count(db).await.unwrap(), 0);

    // A sweep claims due jobs in batches, oldest due first, never one that is leased or
    // not yet due.
    for (key, run_at) in [("a", 30), ("b", 10), ("c", 20), ("d", 5_000)] {
        jobs::enqueue(&db.pool, "refund", key, "{}", run_at, 1)
            .await
            .unwrap();
    }
    let first = jobs::claim_due(db, 100, 1000, 2).await.unwrap();
    let mut keys: Vec<&str> = first.iter().map(|j| j.dedup_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["b", "c"], "the two due first");
    let rest = jobs::claim_due(db, 100, 1000, 10).await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|j| j.dedup_key.as_str())
            .collect::<Vec<_>>(),
        ["a"],
        "leased and future jobs stay"
    );
    // A hinted job is claimed by its key once; a leased one, a future one or a missing one
    // is not claimed.
    assert_eq!(jobs::claim_key(db, "a", 100, 1000).await.unwrap(), None);
    assert_eq!(jobs::claim_key(db, "d", 100, 1000).await.unwrap(), None);
    assert_eq!(jobs::claim_key(db, "zz", 100, 1000).await.unwrap(), None);
    let d = jobs::claim_key(db, "d", 5_000, 1000)
        .await
        .unwrap()
        .expect("due and free");
    assert_eq!((d.dedup_key.as_str(), d.attempts), ("d", 1));
    assert_eq!(jobs::claim_key(db, "d", 5_001, 1000).await.unwrap(), None);
    // A job with nothing left to do is dropped by its key.
    for key in ["a", "b", "c", "d"] {
        jobs::cancel(&db.pool, key).await.unwrap();
    }
    assert_eq!(jobs::count(db).await.unwrap(), 0);
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(jobs::backoff_ms(1), 1_000);
    assert_eq!(jobs::backoff_ms(2), 2_000);
    assert_eq!(jobs::backoff_ms(11), 600_000);
    assert_eq!(jobs::backoff_ms(i64::MAX), 600_000);
}

/// An error that makes SQLite roll a whole transaction back (here `INSERT OR ROLLBACK`; in
/// production a full disk or an I/O error) ends it: the transaction's later statements are
/// refused, as on PostgreSQL, instead of each running and committing on its own.
#[tokio::test]
async fn statements_after_sqlite_rolled_a_transaction_back_are_refused() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    jobs::enqueue(&db.pool, "refund", "taken", "{}", 1, 1)
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    jobs::enqueue(&mut *tx, "refund", "before", "{}", 1, 1)
        .await
        .unwrap();
    let rolled_back = openvend::store::query(
        "INSERT OR ROLLBACK INTO jobs (kind, dedup_key, payload, attempts, run_at, created_at) \
         VALUES ('refund', 'taken', '{}', 0, 1, 1)",
    )
    .execute(&mut *tx)
    .await;
    assert!(rolled_back.is_err(), "the key is taken");
    let after = jobs::enqueue(&mut *tx, "refund", "after", "{}", 1, 1).await;
    let refused = after.expect_err("the transaction is over");
    assert!(
        refused.to_string().contains("rolled back"),
        "names why: {refused}"
    );
    let commit = tx.commit().await.expect_err("there is nothing to commit");
    assert!(commit.to_string().contains("rolled back"), "{commit}");
    assert_eq!(
        texts(&db, "SELECT dedup_key FROM jobs ORDER BY dedup_key").await,
        ["taken"]
    );
}

/// A database a newer version migrated is refused, with the versions named: this build
/// would misread what it cannot see (e.g. orders watched from a column it does not know).
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused() {
    let (db, _dir) = sqlite_db().await;
    db.migrate().await.unwrap();
    db.migrate().await.expect("migrating again changes nothing");
    openvend::store::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from_the_future', 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let refused = db.migrate().await.expect_err("a newer schema");
    assert!(
        matches!(refused, StoreError::NewerSchema { found: 9999, .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("newer OpenVend"), "{refused}");
}
