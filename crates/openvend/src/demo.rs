//! What an empty database is seeded with: the operator, and with the embedded sandbox a demo
//! fleet (one machine of each kind, a few products in stocked slots), so `openvend serve` can
//! sell something at once.

use crate::store::{Db, StoreError};

/// One demo machine: code, kind, terminal id, site.
const MACHINES: &[(&str, &str, &str, &str)] = &[
    ("VM-0001", "vending", "VM0001", "Lobby, Building A"),
    ("FM-0001", "face", "FM0001", "Canteen"),
    ("CB-0001", "cabinet", "CB0001", "Gym"),
];

/// Products: name and price in fen.
const PRODUCTS: &[(&str, i64)] = &[
    ("可口可乐 Coca-Cola 330ml", 350),
    ("农夫山泉 Spring water 550ml", 200),
    ("乐事薯片 Lay's chips", 650),
];

/// Seeds an empty database: the operator receiving under `seller_pid`, and with `fleet`
/// (the embedded sandbox) the demo machines and products too. With real Alipay only the
/// operator is written: its machines and products come from the operator API. Returns true
/// when it seeded.
pub async fn seed_if_empty(db: &Db, seller_pid: &str, fleet: bool) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    let count: i64 = crate::store::query("SELECT COUNT(*) FROM operators")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if count > 0 {
        return Ok(false);
    }
    let now = crate::services::now_ms();
    let op: i64 = crate::store::query("INSERT INTO operators (name, seller_pid, fund_mode, alipay, created_at) VALUES ($1, $2, 'collection', $3, $4) RETURNING id")
        .bind(if fleet { "Demo Operator" } else { "Operator" })
        .bind(seller_pid)
        .bind(if fleet { "sandbox" } else { "real" })
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if !fleet {
        tx.commit().await?;
        return Ok(true);
    }
    let mut products = Vec::new();
    for (name, price) in PRODUCTS {
        let id: i64 = crate::store::query(
            "INSERT INTO products (operator_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(op)
        .bind(*name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        products.push((id, *price));
    }
    for (code, kind, terminal_id, site) in MACHINES {
        let secret = crate::ids::random_hex(32);
        let machine: i64 = crate::store::query(
            "INSERT INTO machines (operator_id, code, kind, terminal_id, site, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(op)
        .bind(*code)
        .bind(*kind)
        .bind(*terminal_id)
        .bind(*site)
        .bind(secret)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        for (i, (product, price)) in products.iter().enumerate() {
            crate::store::query("INSERT INTO slots (machine_id, code, product_id, price_fen, capacity, stock) VALUES ($1, $2, $3, $4, 10, 8)")
                .bind(machine)
                .bind(format!("A{}", i + 1))
                .bind(*product)
                .bind(*price)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// What start-up does when the database's operator receives under another PID than the one
/// configured (the seed above wrote it once).
#[derive(Debug, PartialEq, Eq)]
pub enum AccountCheck {
    /// The same account: nothing to do.
    Same,
    /// The embedded sandbox registered its app anew (its data folder was removed): the
    /// operator now receives under the new sandbox PID. Returns the old one.
    SandboxMoved(String),
}

/// Checks that the operator of an existing database receives under `seller_pid`, the PID its
/// trades are restricted to (`seller_id`) and its notifications are checked against. With
/// real Alipay a different one stops start-up: the orders in that database were made for the
/// other account (or for the embedded sandbox's demo), and moving them silently would send
/// money to, or refuse notifications from, the wrong account. With the embedded sandbox the
/// new PID is taken and the change is on the audit trail, but only for an operator the
/// sandbox seeded: a real operator's database started without the `alipay.*` settings (a
/// forgotten `--config`, an instance missing its variables) stops start-up instead of being
/// moved to the sandbox, which on a shared PostgreSQL would restrict the running instances'
/// trades to the sandbox's PID and refuse Alipay's notifications.
pub async fn check_receiving_account(
    db: &Db,
    seller_pid: &str,
    sandbox: bool,
) -> anyhow::Result<AccountCheck> {
    let mut tx = db.begin().await?;
    let rows = crate::store::query("SELECT id, seller_pid, alipay FROM operators ORDER BY id")
        .fetch_all(&mut *tx)
        .await?;
    let mut moved = None;
    for row in &rows {
        let id: i64 = row.try_get(0)?;
        let stored: String = row.try_get(1)?;
        let receives_through: String = row.try_get(2)?;
        if stored == seller_pid {
            continue;
        }
        if sandbox && receives_through != "sandbox" {
            anyhow::bail!(
                "alipay: this database's operator receives under {stored} through real Alipay, \
                 but no alipay settings were given (alipay.app_id, alipay.private_key_file, \
                 alipay.alipay_public_key_file, alipay.seller_id and public_url, or their \
                 OPENVEND_* variables), so the embedded sandbox would start and take \
                 its orders. Give the settings, or point database_url at another database for \
                 the demo"
            );
        }
        if !sandbox {
            anyhow::bail!(
                "alipay.seller_id: this database's operator receives under {stored}, not \
                 {seller_pid}; its orders and notifications belong to that account (or to the \
                 embedded sandbox's demo). Point database_url at the database of account \
                 {seller_pid}, or at a new one"
            );
        }
        crate::store::query("UPDATE operators SET seller_pid = $1 WHERE id = $2")
            .bind(seller_pid)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::store::audit::record(
            &mut *tx,
            crate::services::now_ms(),
            "system",
            "receiving_account_changed",
            &format!("operator:{id}"),
            &format!("embedded sandbox registered anew: {stored} -> {seller_pid}"),
        )
        .await?;
        moved = Some(stored);
    }
    tx.commit().await?;
    Ok(match moved {
        Some(old) => AccountCheck::SandboxMoved(old),
        None => AccountCheck::Same,
    })
}
