//! User authorisation: one-time `auth_code`s (issued when the buyer consents, on the consent
//! page or through the control API), `alipay.system.oauth.token` and `alipay.user.info.share`.
//!
//! A grant is keyed by its code; the code is single use and expires after five minutes on the
//! sandbox clock. Exchanging it sets the tokens; refreshing replaces both tokens.

use serde_json::Map;

use super::Call;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{App, IdMode, Millis, OAuthGrant};
use crate::store::Store;

/// An `auth_code` is accepted for five minutes.
pub const CODE_TTL_MS: i64 = 5 * 60_000;
/// `expires_in` of an access token: 15 days (as the sandbox sample).
pub const ACCESS_TTL_SECS: i64 = 1_296_000;
/// `re_expires_in` of a refresh token: 30 days.
pub const REFRESH_TTL_SECS: i64 = 2_592_000;

/// Checks an authorisation request the way the consent page does before issuing a code.
pub fn check_authorize(
    store: &Store,
    app_id: &str,
    user_id: &str,
    scope: &str,
    redirect_uri: &str,
) -> Result<(), String> {
    let app = store
        .data
        .apps
        .get(app_id)
        .ok_or_else(|| format!("no app {app_id}"))?;
    if !store.data.buyers.contains_key(user_id) {
        return Err(format!("no buyer {user_id}"));
    }
    if scope.is_empty()
        || !scope
            .split(',')
            .all(|s| matches!(s.trim(), "auth_base" | "auth_user"))
    {
        return Err("scope must be auth_base, auth_user or both, comma-separated".into());
    }
    let allowed = if app.redirect_uris.is_empty() {
        redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")
    } else {
        app.redirect_uris.iter().any(|u| u == redirect_uri)
    };
    if !allowed {
        return Err(format!(
            "redirect_uri {redirect_uri} is not an authorisation callback of app {app_id}"
        ));
    }
    Ok(())
}

/// Issues a single-use `auth_code` for a user who consented to `scope`.
pub fn issue_code(
    _ctx: &Ctx,
    store: &mut Store,
    app_id: &str,
    user_id: &str,
    scope: &str,
    now: Millis,
) -> String {
    let code = ids::auth_code();
    store.put_grant(OAuthGrant {
        app_id: app_id.to_owned(),
        user_id: user_id.to_owned(),
        scope: scope.to_owned(),
        code: code.clone(),
        code_expires_at: now + CODE_TTL_MS,
        code_used: false,
        access_token: None,
        refresh_token: None,
        token_expires_at: 0,
    });
    code
}

/// `alipay.system.oauth.token` (top-level `grant_type`, `code`, `refresh_token`).
pub fn token(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let grant = match call.params.get("grant_type") {
        Some("authorization_code") => by_code(store, call)?,
        Some("refresh_token") => by_refresh_token(store, call)?,
        None => {
            return Err(ApiError::missing(
                "isv.missing-grant-type",
                "缺少参数grant_type",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "isv.grant-type-invalid",
                "不支持的grant_type",
            ));
        }
    };
    let grant = with_new_tokens(store, grant, call.now);
    Ok(token_fields(call.app, &grant, call.now))
}

fn by_code(store: &Store, call: &Call<'_>) -> Result<OAuthGrant, ApiError> {
    let invalid = || ApiError::invalid("isv.code-invalid", "授权码code无效");
    let code = call.params.get("code").ok_or_else(invalid)?;
    store
        .data
        .grants
        .get(code)
        .filter(|g| g.app_id == call.app.app_id && !g.code_used && call.now < g.code_expires_at)
        .cloned()
        .ok_or_else(invalid)
}

fn by_refresh_token(store: &Store, call: &Call<'_>) -> Result<OAuthGrant, ApiError> {
    let invalid = || ApiError::invalid("isv.refresh-token-invalid", "刷新令牌refresh_token无效");
    let token = call.params.get("refresh_token").ok_or_else(invalid)?;
    store
        .data
        .grants
        .values()
        .find(|g| g.app_id == call.app.app_id && g.refresh_token.as_deref() == Some(token))
        .filter(|g| call.now < refresh_expires_at(g))
        .cloned()
        .ok_or_else(invalid)
}

/// Refresh tokens outlive access tokens by the difference of their lifetimes.
fn refresh_expires_at(g: &OAuthGrant) -> Millis {
    g.token_expires_at + (REFRESH_TTL_SECS - ACCESS_TTL_SECS) * 1000
}

/// Marks the code used and issues fresh tokens (older tokens of the grant stop working).
fn with_new_tokens(store: &mut Store, mut g: OAuthGrant, now: Millis) -> OAuthGrant {
    g.code_used = true;
    g.access_token = Some(ids::token("authusrB"));
    g.refresh_token = Some(ids::token("authusrB"));
    g.token_expires_at = now + ACCESS_TTL_SECS * 1000;
    store.put_grant(g.clone());
    g
}

fn token_fields(
    app: &App,
    g: &OAuthGrant,
    now: Millis,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = Map::new();
    match app.id_mode {
        IdMode::UserId => out.insert("user_id".into(), g.user_id.clone().into()),
        IdMode::OpenId => out.insert(
            "open_id".into(),
            ids::open_id(&app.app_id, &g.user_id).into(),
        ),
    };
    out.insert(
        "access_token".into(),
        g.access_token.clone().unwrap_or_default().into(),
    );
    out.insert("expires_in".into(), ACCESS_TTL_SECS.into());
    out.insert(
        "refresh_token".into(),
        g.refresh_token.clone().unwrap_or_default().into(),
    );
    out.insert("re_expires_in".into(), REFRESH_TTL_SECS.into());
    out.insert("auth_start".into(), fmt_ms(now).into());
    out
}

/// `alipay.user.info.share` with the common parameter `auth_token`: only `auth_user` grants
/// may read the profile.
pub fn user_info(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let invalid = || ApiError::token("aop.invalid-auth-token", "无效的访问令牌");
    let token = call.params.get("auth_token").ok_or_else(invalid)?;
    let grant = store
        .data
        .grants
        .values()
        .find(|g| g.app_id == call.app.app_id && g.access_token.as_deref() == Some(token))
        .ok_or_else(invalid)?;
    if call.now >= grant.token_expires_at {
        return Err(ApiError::token("aop.auth-token-time-out", "访问令牌已过期"));
    }
    if !grant.scope.split(',').any(|s| s.trim() == "auth_user") {
        return Err(invalid());
    }
    let mut out = Map::new();
    match call.app.id_mode {
        IdMode::UserId => out.insert("user_id".into(), grant.user_id.clone().into()),
        IdMode::OpenId => out.insert(
            "open_id".into(),
            ids::open_id(&call.app.app_id, &grant.user_id).into(),
        ),
    };
    if let Some(b) = store.data.buyers.get(&grant.user_id) {
        // Alipay leaves out profile fields the user never set.
        if !b.nick_name.is_empty() {
            out.insert("nick_name".into(), b.nick_name.clone().into());
        }
        if !b.avatar.is_empty() {
            out.insert("avatar".into(), b.avatar.clone().into());
        }
    }
    Ok(out)
}
