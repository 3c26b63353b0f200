//! Order watches: when an order's wait (the buyer's payment, the machine's dispense) is next
//! looked at, kept in the order's own row (`orders.watch_at`, migration 22) rather than in a
//! job row per order.
//!
//! Most orders end their wait long before it (paid within seconds of the code being shown,
//! dispensed within seconds of the payment), so a sale writes no job row for its waits: the
//! watch is a column of the row its state changes already rewrite, in the index those state
//! changes already move (`orders_state_idx`, by state and watch). The job dispatcher turns
//! the watches that come due into jobs ([`queue_due`]), clearing them in the same
//! transaction, and the job runs, polls and retries as any other. A crash loses nothing: a
//! watch is cleared only with its job stored.

use std::sync::LazyLock;

use super::{Backend, Db, StoreError};
use crate::domain::order::OrderState;
use crate::store::orders::{dispense_key, resolve_key};

/// The states whose orders wait on something, and the job that watches each.
const WATCHED: [(OrderState, Watcher); 4] = [
    (OrderState::AwaitingPayment, Watcher::ResolvePayment),
    (OrderState::PaymentUnknown, Watcher::ResolvePayment),
    (OrderState::Paid, Watcher::Dispense),
    (OrderState::Dispensing, Watcher::Dispense),
];

/// The job that watches an order in a waiting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watcher {
    /// `resolve_payment`: the payment poll, then the close or cancel.
    ResolvePayment,
    /// `dispense`: the command's acknowledgement, then the result.
    Dispense,
}

impl Watcher {
    fn of(state: &str) -> Option<Watcher> {
        WATCHED
            .iter()
            .find(|(s, _)| s.as_str() == state)
            .map(|(_, w)| *w)
    }

    fn kind(self) -> &'static str {
        match self {
            Watcher::ResolvePayment => "resolve_payment",
            Watcher::Dispense => "dispense",
        }
    }

    fn key(self, order_id: i64) -> String {
        match self {
            Watcher::ResolvePayment => resolve_key(order_id),
            Watcher::Dispense => dispense_key(order_id),
        }
    }
}

fn payload(order_id: i64) -> String {
    format!("{{\"order_id\":{order_id}}}")
}

/// `'awaiting_payment', 'payment_unknown', …`: the watched states in SQL.
fn watched_states() -> String {
    WATCHED
        .iter()
        .map(|(s, _)| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Queues the job of every order whose watch has come (at most `limit` of them, earliest
/// first), clearing those watches in the same transaction; answers how many watches it took.
/// An order whose job is queued already (made due by a buyer's page, say) keeps that one. On
/// PostgreSQL the orders are picked `FOR NO KEY UPDATE SKIP LOCKED`, so instances sharing the
/// store never wait on each other and each watch is taken by one of them, while inserts that
/// only refer to an order (its timeline entries) need not wait for a sweep.
pub async fn queue_due(db: &Db, now: i64, limit: usize) -> Result<usize, StoreError> {
    static ANY_DUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT 1 FROM orders WHERE state IN ({}) AND watch_at <= $1 LIMIT 1",
            watched_states()
        )
    });
    // Read first: most sweeps find nothing, and on SQLite a write would wait for the writer.
    if crate::store::query(&ANY_DUE)
        .bind(now)
        .fetch_optional(&db.pool)
        .await?
        .is_none()
    {
        return Ok(0);
    }
    static PICK_SQLITE: LazyLock<String> = LazyLock::new(|| pick_due_sql(""));
    static PICK_POSTGRES: LazyLock<String> =
        LazyLock::new(|| pick_due_sql(" FOR NO KEY UPDATE SKIP LOCKED"));
    let pick = match db.backend {
        Backend::Sqlite => &*PICK_SQLITE,
        Backend::Postgres => &*PICK_POSTGRES,
    };
    let mut tx = db.begin().await?;
    let due = crate::store::query(pick)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    let mut taken = 0;
    for row in &due {
        let order_id: i64 = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let watch_at: i64 = row.try_get(2)?;
        let Some(watcher) = Watcher::of(&state) else {
            continue;
        };
        crate::store::query("UPDATE orders SET watch_at = NULL WHERE id = $1")
            .bind(order_id)
            .defer(&mut *tx)
            .await?;
        // Due since its watch came: claimed in that order among the other due jobs.
        let key = watcher.key(order_id);
        let payload = payload(order_id);
        super::jobs::enqueue_deferred(&mut *tx, watcher.kind(), &key, &payload, watch_at, now)
            .await?;
        taken += 1;
    }
    tx.commit().await?;
    Ok(taken)
}

fn pick_due_sql(lock: &str) -> String {
    format!(
        "SELECT id, state, watch_at FROM orders WHERE state IN ({states}) AND watch_at <= $1 \
         ORDER BY watch_at LIMIT $2{lock}",
        states = watched_states()
    )
}

/// When the next watch comes, if any order waits with one.
pub async fn next_due(db: &Db) -> Result<Option<i64>, StoreError> {
    // One minimum per state: each is a single seek in `orders_state_idx`.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let per_state = WATCHED
            .iter()
            .map(|(s, _)| {
                format!(
                    "SELECT MIN(watch_at) AS at FROM orders WHERE state = '{}'",
                    s.as_str()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        format!("SELECT MIN(at) AS at FROM ({per_state}) AS watches")
    });
    let row = crate::store::query(&SQL).fetch_one(&db.pool).await?;
    Ok(row.try_get::<Option<i64>, _>("at")?)
}

/// Makes order `order_id`'s payment resolver due now, queueing it if its watch has not come
/// yet (a buyer's page asks for a check, a notification needs the resolver's query). A
/// resolver being run keeps its lease and its next run; true when a job was queued or made due.
pub async fn resolve_now<E>(executor: E, order_id: i64, now: i64) -> Result<bool, StoreError>
where
    E: crate::store::Executor,
{
    let kind = Watcher::ResolvePayment.kind();
    super::jobs::enqueue_or_run_now(
        executor,
        kind,
        &resolve_key(order_id),
        &payload(order_id),
        now,
    )
    .await
}
