//! Embedded migrations, one change per file, per backend folder.

use super::{Backend, Db, StoreError, query};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:expr, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../../migrations/postgres/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_core"),
    migration!(2, "0002_orders"),
    migration!(3, "0003_jobs"),
    migration!(4, "0004_device"),
    migration!(5, "0005_sale"),
    migration!(6, "0006_vend_flow"),
    migration!(7, "0007_accounts"),
    migration!(8, "0008_open_commands"),
    migration!(9, "0009_keyed_tables"),
    migration!(10, "0010_machine_disabled"),
    migration!(11, "0011_keyed_timeline"),
    migration!(12, "0012_indeterminate_vends"),
    migration!(13, "0013_keyed_jobs"),
    migration!(14, "0014_cheap_checks"),
    migration!(15, "0015_late_vends"),
    migration!(16, "0016_alerts_sent"),
    migration!(17, "0017_refunds_by_order"),
    migration!(18, "0018_expect_rows"),
    migration!(19, "0019_refunds_unconfirmed"),
    migration!(20, "0020_operator_alipay"),
    migration!(21, "0021_cancel_sent"),
    migration!(22, "0022_order_watch"),
];

/// An arbitrary constant naming OpenVend's migration lock.
const PG_LOCK_KEY: i64 = 0x0_0E9E_7D00;

/// Applies the pending migrations in one transaction: all of them or none. On PostgreSQL a
/// transaction-scoped advisory lock makes instances that start together take turns (the
/// second finds nothing left to do); on SQLite `BEGIN IMMEDIATE` does the same.
pub(super) async fn run(db: &Db) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    if db.backend == Backend::Postgres {
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
        .await?;
    let applied: Vec<i64> = query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    // Data written under a newer schema may mean what this build cannot see: refuse to run.
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(&found) = applied.iter().max()
        && found > known
    {
        return Err(StoreError::NewerSchema { found, known });
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match db.backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        tx.execute_batch(sql).await?;
        query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(crate::services::now_ms())
            .execute(&mut *tx)
            .await?;
        done.push(m);
    }
    tx.commit().await?;
    for m in done {
        tracing::info!(version = m.version, name = m.name, "migration applied");
    }
    Ok(())
}
