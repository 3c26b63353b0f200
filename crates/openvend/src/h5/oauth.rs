//! Sign-in with Alipay. A page without a session redirects to Alipay's authorize URL with a
//! one-use `state` bound to this browser; the fixed callback checks the state, exchanges the
//! `auth_code` (`alipay.system.oauth.token`) for the buyer's user_id or open_id, and then:
//! a known buyer gets a session at once (免登); an unknown one is sent through `auth_user`,
//! whose token reads the nickname and avatar (`alipay.user.info.share`) and is then dropped
//! (never stored, never logged), and lands on the phone page.

use std::sync::Arc;

use alipay::api::oauth::{OauthToken, UserInfoShare};
use alipay::{CallOptions, Outcome};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html::{self, Lang};
use super::session::{self, AlipayUser, StateError};
use super::{BROWSER_COOKIE, H5, PageResult, SESSION_COOKIE, accounts, cookie, see_other};

/// Redirects to Alipay's authorize page for `scope`, remembering `machine_code`.
pub async fn start(h5: &H5, headers: &HeaderMap, machine_code: &str, scope: &str) -> PageResult {
    let browser = cookie(headers, BROWSER_COOKIE)
        .filter(|b| b.len() == 32 && b.bytes().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| crate::ids::random_hex(32));
    let state = session::new_state(
        &h5.svc.db,
        &h5.keys,
        &browser,
        scope,
        machine_code,
        h5.svc.now(),
    )
    .await?;
    let url = h5.svc.alipay.authorize_url(scope, &h5.redirect_uri, &state);
    let mut r = see_other(&url, &[h5.cookie(BROWSER_COOKIE, &browser, 3600)]);
    *r.status_mut() = StatusCode::FOUND;
    Ok(r)
}

/// The callback's query.
#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    auth_code: String,
    #[serde(default)]
    state: String,
}

fn refused(lang: Lang, status: StatusCode, text: &str, machine: Option<&str>) -> Response {
    let href = machine.map(|m| format!("/m/{m}"));
    html::message(
        status,
        lang,
        lang.t("登录失败", "Sign-in failed"),
        text,
        href.as_deref()
            .map(|h| (h, lang.t("重新登录", "Sign in again"))),
    )
}

/// `GET /m/oauth/callback?auth_code=…&state=…`.
#[tracing::instrument(skip_all)]
pub async fn callback(
    State(h5): State<Arc<H5>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    let now = h5.svc.now();
    let browser = cookie(&headers, BROWSER_COOKIE);
    let used = session::use_state(&h5.svc.db, &h5.keys, &q.state, browser.as_deref(), now).await?;
    let state = match used {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(?e, "OAuth state refused");
            let text = match e {
                StateError::Forged => lang.t(
                    "登录请求无效：它不是在这个浏览器里发起的，或已被篡改。请重新扫描售货机上的二维码。",
                    "This sign-in was not started in this browser, or was altered. Scan the machine's code again.",
                ),
                StateError::Replayed => lang.t(
                    "这个登录链接已经用过了。请重新扫描售货机上的二维码。",
                    "This sign-in link was already used. Scan the machine's code again.",
                ),
                StateError::Expired => lang.t(
                    "登录超时。请重新扫描售货机上的二维码。",
                    "The sign-in took too long. Scan the machine's code again.",
                ),
            };
            return Ok(refused(lang, StatusCode::BAD_REQUEST, text, None));
        }
    };
    let machine = state.machine_code.as_str();
    if q.auth_code.is_empty() {
        return Ok(refused(
            lang,
            StatusCode::BAD_REQUEST,
            lang.t("你没有授权登录。", "You did not allow the sign-in."),
            Some(machine),
        ));
    }
    let token = match h5
        .svc
        .alipay
        .execute(
            &OauthToken::authorization_code(&q.auth_code),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(t) => t,
        Outcome::Failure(f) => {
            tracing::info!(sub_code = f.sub_code(), "auth_code refused");
            return Ok(refused(
                lang,
                StatusCode::BAD_REQUEST,
                lang.t(
                    "授权码无效或已过期（可能已被使用）。请重新登录。",
                    "The authorisation code is invalid or expired (or was already used). Sign in again.",
                ),
                Some(machine),
            ));
        }
        Outcome::Unknown(u) => {
            tracing::warn!(unknown = %u, "oauth.token result unknown");
            return Ok(refused(
                lang,
                StatusCode::BAD_GATEWAY,
                lang.t(
                    "支付宝暂时没有响应，请重新登录。",
                    "Alipay did not answer; please sign in again.",
                ),
                Some(machine),
            ));
        }
    };
    let Some(user_ref) = token.user() else {
        return Ok(refused(
            lang,
            StatusCode::BAD_GATEWAY,
            lang.t("支付宝没有返回用户标识。", "Alipay returned no user id."),
            Some(machine),
        ));
    };
    let user = AlipayUser::new(&h5.svc.app_id, &user_ref);
    if let Some(account) = accounts::by_alipay_user(&h5.svc.db, &user).await? {
        let t = session::open(&h5.svc.db, &user, Some(account), None, None, machine, now).await?;
        return Ok(logged_in(&h5, machine, &t));
    }
    if state.scope != "auth_user" {
        // Unknown buyer: ask for their profile (consent page), then their phone.
        return start(&h5, &headers, machine, "auth_user").await;
    }
    // The access token reads the profile once and is dropped with `token` at the end of
    // this function; it is never stored and never logged.
    let profile = match h5
        .svc
        .alipay
        .execute(
            &UserInfoShare,
            &CallOptions::with_user_token(token.access_token.clone()),
        )
        .await
    {
        Outcome::Success(p) => Some(p),
        Outcome::Failure(f) => {
            tracing::info!(
                sub_code = f.sub_code(),
                "user.info.share refused; going on without a profile"
            );
            None
        }
        Outcome::Unknown(u) => {
            tracing::warn!(unknown = %u, "user.info.share result unknown; going on without a profile");
            None
        }
    };
    let nick = profile.as_ref().and_then(|p| p.nick_name.as_deref());
    let avatar = profile
        .as_ref()
        .and_then(|p| p.avatar.as_deref())
        .filter(|a| a.starts_with("https://") || a.starts_with("http://"));
    let t = session::open(&h5.svc.db, &user, None, nick, avatar, machine, now).await?;
    Ok(see_other(
        "/m/phone",
        &[h5.cookie(SESSION_COOKIE, &t, session::PENDING_TTL_MS / 1000)],
    ))
}

fn logged_in(h5: &H5, machine: &str, token: &str) -> Response {
    see_other(
        &format!("/m/{machine}"),
        &[h5.cookie(SESSION_COOKIE, token, session::SESSION_TTL_MS / 1000)],
    )
}

/// Outside the Alipay app with real Alipay there is no `tradePay`: say where to open the page.
pub fn open_in_alipay(lang: Lang) -> Response {
    let mut r = html::message(
        StatusCode::OK,
        lang,
        lang.t("请在支付宝中打开", "Open in Alipay"),
        lang.t(
            "请用支付宝“扫一扫”扫描售货机上的二维码，在支付宝中打开此页面。",
            "Scan the machine's code with the Alipay app to open this page in Alipay.",
        ),
        None,
    );
    r.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("user-agent"));
    r.into_response()
}

/// True when the request comes from inside the Alipay app.
pub fn inside_alipay(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("AlipayClient"))
}
