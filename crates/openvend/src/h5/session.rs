//! Browser sessions and OAuth `state` values, in the store.
//!
//! A session's cookie holds a random token; the row keeps only its SHA-256, so a copy of the
//! database does not log anyone in. A session names the Alipay user it was opened for and,
//! once the phone is bound, the account. Logging in (phone bound) issues a new token, so a
//! token planted before the login is worth nothing after it.
//!
//! A `state` is `nonce.mac`: the nonce names a one-use row (scope, machine, expiry) and the
//! MAC binds it to the browser-id cookie set when the sign-in started, so a state carried to
//! another browser, forged, replayed or late is refused before any code is exchanged.

use alipay::UserRef;

use super::keys::{Keys, sha256_hex};
use crate::store::Db;

/// How long a sign-in may take from redirect to callback.
pub const STATE_TTL_MS: i64 = 10 * 60_000;
/// A logged-in session lasts 30 days.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 3_600_000;
/// A pending session (phone not yet bound) lasts 30 minutes.
pub const PENDING_TTL_MS: i64 = 30 * 60_000;

/// Which id Alipay gave for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `user_id` (2088…).
    UserId,
    /// `open_id` (apps migrated to open_id).
    OpenId,
}

impl IdKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::OpenId => "open_id",
        }
    }

    fn parse(s: &str) -> Option<IdKind> {
        match s {
            "user_id" => Some(IdKind::UserId),
            "open_id" => Some(IdKind::OpenId),
            _ => None,
        }
    }
}

/// An Alipay user as the app knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayUser {
    /// The app the id belongs to (open_ids are per app).
    pub app_id: String,
    /// Which id.
    pub kind: IdKind,
    /// The id.
    pub id: String,
}

impl AlipayUser {
    /// From the id Alipay returned.
    pub fn new(app_id: &str, user: &UserRef) -> AlipayUser {
        let kind = match user {
            UserRef::UserId(_) => IdKind::UserId,
            UserRef::OpenId(_) => IdKind::OpenId,
        };
        AlipayUser {
            app_id: app_id.to_owned(),
            kind,
            id: user.as_str().to_owned(),
        }
    }

    /// As the `buyer_id`/`buyer_open_id` of a trade.
    pub fn user_ref(&self) -> UserRef {
        match self.kind {
            IdKind::UserId => UserRef::UserId(self.id.clone()),
            IdKind::OpenId => UserRef::OpenId(self.id.clone()),
        }
    }
}

/// A session row.
#[derive(Debug, Clone)]
pub struct Session {
    /// Row id (stable across logins).
    pub id: i64,
    /// The Alipay user.
    pub user: AlipayUser,
    /// The account, once the phone is bound.
    pub account_id: Option<i64>,
    /// Nickname from `alipay.user.info.share`.
    pub nick_name: Option<String>,
    /// Avatar URL from `alipay.user.info.share`.
    pub avatar: Option<String>,
    /// The machine the buyer came from.
    pub machine_code: String,
}

/// A new random token and its stored hash.
pub fn new_token() -> (String, String) {
    let token = crate::ids::random_hex(48);
    let hash = sha256_hex(&token);
    (token, hash)
}

/// Opens a session; returns the cookie token.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    db: &Db,
    user: &AlipayUser,
    account_id: Option<i64>,
    nick_name: Option<&str>,
    avatar: Option<&str>,
    machine_code: &str,
    now: i64,
) -> Result<String, crate::store::Error> {
    // Each new session sweeps out the expired ones.
    crate::store::query("DELETE FROM h5_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(&db.pool)
        .await?;
    let (token, hash) = new_token();
    let ttl = if account_id.is_some() {
        SESSION_TTL_MS
    } else {
        PENDING_TTL_MS
    };
    crate::store::query(
        "INSERT INTO h5_sessions (token_hash, app_id, id_kind, alipay_id, account_id, nick_name, avatar, machine_code, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&hash)
    .bind(&user.app_id)
    .bind(user.kind.as_str())
    .bind(&user.id)
    .bind(account_id)
    .bind(nick_name)
    .bind(avatar)
    .bind(machine_code)
    .bind(now)
    .bind(now + ttl)
    .execute(&db.pool)
    .await?;
    Ok(token)
}

/// The live session of a cookie token.
pub async fn find(db: &Db, token: &str, now: i64) -> Result<Option<Session>, crate::store::Error> {
    if token.len() != 48 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row = crate::store::query(
        "SELECT id, app_id, id_kind, alipay_id, account_id, nick_name, avatar, machine_code \
         FROM h5_sessions WHERE token_hash = $1 AND expires_at > $2",
    )
    .bind(sha256_hex(token))
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let kind: String = r.try_get("id_kind")?;
    let Some(kind) = IdKind::parse(&kind) else {
        return Ok(None);
    };
    Ok(Some(Session {
        id: r.try_get("id")?,
        user: AlipayUser {
            app_id: r.try_get("app_id")?,
            kind,
            id: r.try_get("alipay_id")?,
        },
        account_id: r.try_get("account_id")?,
        nick_name: r.try_get("nick_name")?,
        avatar: r.try_get("avatar")?,
        machine_code: r.try_get("machine_code")?,
    }))
}

/// Logs a pending session in to `account_id` under a new token (in the caller's transaction);
/// returns the new cookie token.
pub async fn log_in(
    tx: &mut crate::store::Conn,
    session_id: i64,
    account_id: i64,
    now: i64,
) -> Result<String, crate::store::Error> {
    let (token, hash) = new_token();
    crate::store::query(
        "UPDATE h5_sessions SET token_hash = $1, account_id = $2, expires_at = $3 WHERE id = $4",
    )
    .bind(&hash)
    .bind(account_id)
    .bind(now + SESSION_TTL_MS)
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    Ok(token)
}

/// Why a callback's `state` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Not one of ours, or not started in this browser.
    Forged,
    /// Already used.
    Replayed,
    /// Too old.
    Expired,
}

/// What a valid state was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateUse {
    /// `auth_base` or `auth_user`.
    pub scope: String,
    /// The machine page to return to.
    pub machine_code: String,
}

/// Makes a one-use state for a sign-in started by `browser`.
pub async fn new_state(
    db: &Db,
    keys: &Keys,
    browser: &str,
    scope: &str,
    machine_code: &str,
    now: i64,
) -> Result<String, crate::store::Error> {
    // Old states are worth nothing; each new sign-in sweeps them out.
    crate::store::query("DELETE FROM oauth_states WHERE expires_at < $1")
        .bind(now - STATE_TTL_MS)
        .execute(&db.pool)
        .await?;
    let nonce = crate::ids::random_hex(32);
    crate::store::query(
        "INSERT INTO oauth_states (nonce, browser_hash, scope, machine_code, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&nonce)
    .bind(sha256_hex(browser))
    .bind(scope)
    .bind(machine_code)
    .bind(now)
    .bind(now + STATE_TTL_MS)
    .execute(&db.pool)
    .await?;
    Ok(format!("{nonce}.{}", keys.state_mac(&nonce, browser)))
}

/// Checks and uses up a state from a callback, for the browser that presents `browser`.
pub async fn use_state(
    db: &Db,
    keys: &Keys,
    state: &str,
    browser: Option<&str>,
    now: i64,
) -> Result<Result<StateUse, StateError>, crate::store::Error> {
    let (Some((nonce, mac)), Some(browser)) = (state.split_once('.'), browser) else {
        return Ok(Err(StateError::Forged));
    };
    if !keys.state_mac_ok(nonce, browser, mac) {
        return Ok(Err(StateError::Forged));
    }
    let Some(row) = crate::store::query(
        "SELECT browser_hash, scope, machine_code, expires_at, used_at FROM oauth_states WHERE nonce = $1",
    )
    .bind(nonce)
    .fetch_optional(&db.pool)
    .await?
    else {
        return Ok(Err(StateError::Forged));
    };
    if row.try_get::<String, _>("browser_hash")? != sha256_hex(browser) {
        return Ok(Err(StateError::Forged));
    }
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        return Ok(Err(StateError::Replayed));
    }
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(Err(StateError::Expired));
    }
    // One use, even when two callbacks race.
    let done = crate::store::query(
        "UPDATE oauth_states SET used_at = $1 WHERE nonce = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(nonce)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(Err(StateError::Replayed));
    }
    Ok(Ok(StateUse {
        scope: row.try_get("scope")?,
        machine_code: row.try_get("machine_code")?,
    }))
}
