//! Buyer accounts: found by an Alipay identity (免登) or by phone (binding). An account may
//! have several Alipay users (a phone owner who signs in with a second Alipay account, or an
//! app that moved from user_id to open_id); one Alipay user belongs to one account.

use super::keys::Keys;
use super::phone::Phone;
use super::session::AlipayUser;
use crate::store::Db;

/// The account bound to this Alipay user, if any.
pub async fn by_alipay_user(
    db: &Db,
    user: &AlipayUser,
) -> Result<Option<i64>, crate::store::Error> {
    let row = crate::store::query(
        "SELECT account_id FROM alipay_users WHERE app_id = $1 AND id_kind = $2 AND alipay_id = $3",
    )
    .bind(&user.app_id)
    .bind(user.kind.as_str())
    .bind(&user.id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// Binds `user` to the account with this phone, registering the account when there is none,
/// in the caller's transaction. Returns the account and whether it is new.
pub async fn bind(
    tx: &mut crate::store::Conn,
    keys: &Keys,
    phone: &Phone,
    user: &AlipayUser,
    nick_name: Option<&str>,
    avatar: Option<&str>,
    now: i64,
) -> anyhow::Result<(i64, bool)> {
    let index = keys.phone_index(phone.digits());
    let existing: Option<i64> =
        crate::store::query("SELECT id FROM accounts WHERE phone_index = $1")
            .bind(&index)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    let (account, created) = match existing {
        Some(id) => (id, false),
        None => {
            let id: i64 = crate::store::query(
                "INSERT INTO accounts (phone_index, phone_sealed, phone_masked, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(&index)
            .bind(keys.seal(phone.digits())?)
            .bind(phone.masked())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            (id, true)
        }
    };
    crate::store::query(
        "INSERT INTO alipay_users (app_id, id_kind, alipay_id, account_id, nick_name, avatar, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (app_id, id_kind, alipay_id) DO NOTHING",
    )
    .bind(&user.app_id)
    .bind(user.kind.as_str())
    .bind(&user.id)
    .bind(account)
    .bind(nick_name)
    .bind(avatar)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // Two pending sessions of one Alipay user may race; the first binding stands.
    let bound: i64 = crate::store::query(
        "SELECT account_id FROM alipay_users WHERE app_id = $1 AND id_kind = $2 AND alipay_id = $3",
    )
    .bind(&user.app_id)
    .bind(user.kind.as_str())
    .bind(&user.id)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    Ok((bound, created && bound == account))
}

/// The account's phone: in full (for its owner) and masked.
pub async fn phone_of(
    db: &Db,
    keys: &Keys,
    account_id: i64,
) -> Result<Option<(Option<String>, String)>, crate::store::Error> {
    let row = crate::store::query("SELECT phone_sealed, phone_masked FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| {
        let sealed: String = r.try_get(0)?;
        Ok((keys.open(&sealed), r.try_get(1)?))
    })
    .transpose()
}
