//! `GET /oauth2/publicAppAuthorize.htm`: Alipay's user-authorisation page, at the same path so
//! an authorize URL differs only by host. The buyer picks an account (or passes `user_id`,
//! a sandbox extension for headless use); `auth_base` redirects at once, `auth_user` asks for
//! consent first unless the buyer already consented for this app. The redirect carries
//! `app_id`, `source=alipay_wallet`, `scope`, `auth_code` and `state`.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{
    buyer_select, error_page, found, hidden, html_escape, is_http_url, page, resolve_buyer,
    see_other, with_query,
};
use crate::Ctx;
use crate::model::{App, Buyer};

#[derive(Debug, Deserialize)]
pub struct AuthorizeParams {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: String,
    /// Sandbox extension: the buyer, skipping the picker.
    #[serde(default)]
    user_id: String,
    /// Consent form answer: `allow` or `deny`.
    #[serde(default)]
    decision: String,
}

const SCOPES: &[&str] = &["auth_base", "auth_user"];

/// Checks app, scope and redirect URI; the error page otherwise.
fn check(ctx: &Ctx, p: &AuthorizeParams) -> Result<App, Box<Response>> {
    let Some(app) = ctx.app(&p.app_id) else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "应用不存在（app_id无效）",
            "Unknown app_id",
        )));
    };
    if p.scope.is_empty() || !p.scope.split(',').all(|s| SCOPES.contains(&s.trim())) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "授权范围scope无效，应为auth_base或auth_user",
            "scope must be auth_base or auth_user",
        )));
    }
    if !is_http_url(&p.redirect_uri) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri无效：应为http(s)地址",
            "redirect_uri must be an http(s) URL",
        )));
    }
    if !app.redirect_uris.is_empty() && !app.redirect_uris.contains(&p.redirect_uri) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri与应用配置的授权回调地址不一致",
            "redirect_uri does not match the app's registered redirect URIs (exact match)",
        )));
    }
    Ok(app)
}

fn wants_user_info(scope: &str) -> bool {
    scope.split(',').any(|s| s.trim() == "auth_user")
}

fn has_consented(ctx: &Ctx, app_id: &str, user_id: &str) -> bool {
    ctx.store()
        .data
        .grants
        .values()
        .any(|g| g.app_id == app_id && g.user_id == user_id && wants_user_info(&g.scope))
}

fn carried(p: &AuthorizeParams) -> String {
    [
        hidden("app_id", &p.app_id),
        hidden("scope", &p.scope),
        hidden("redirect_uri", &p.redirect_uri),
        hidden("state", &p.state),
    ]
    .concat()
}

fn redirect_with_code(ctx: &Ctx, p: &AuthorizeParams, buyer: &Buyer) -> String {
    let code = {
        let mut store = ctx.store();
        let code = crate::api::oauth::issue_code(
            ctx,
            &mut store,
            &p.app_id,
            &buyer.user_id,
            &p.scope,
            ctx.clock.now_ms(),
        );
        store.flush();
        code
    };
    with_query(
        &p.redirect_uri,
        &[
            ("app_id", &p.app_id),
            ("source", "alipay_wallet"),
            ("scope", &p.scope),
            ("auth_code", &code),
            ("state", &p.state),
        ],
    )
}

/// `GET /oauth2/publicAppAuthorize.htm`.
pub async fn show_authorize(
    State(ctx): State<Arc<Ctx>>,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    let app = match check(&ctx, &p) {
        Ok(app) => app,
        Err(page) => return *page,
    };
    if p.user_id.is_empty() {
        let body = format!(
            "<form class=\"card\" method=\"get\" action=\"/oauth2/publicAppAuthorize.htm\">\
<p>应用 <code>{}</code> 请求登录<span class=\"en\">An app asks you to sign in</span></p>{}{}\
<button type=\"submit\">登录<span class=\"en\">Sign in</span></button></form>",
            html_escape(&app.app_id),
            carried(&p),
            buyer_select(&ctx, "user_id"),
        );
        return page(StatusCode::OK, "支付宝登录", "Sign in with Alipay", &body);
    }
    let Some(buyer) = resolve_buyer(&ctx, &p.user_id) else {
        return error_page(StatusCode::BAD_REQUEST, "买家不存在", "No such buyer");
    };
    if wants_user_info(&p.scope) && !has_consented(&ctx, &app.app_id, &buyer.user_id) {
        let body = format!(
            "<form class=\"card\" method=\"post\" action=\"/oauth2/consent\">\
<p>应用 <code>{}</code> 申请获取你的信息<span class=\"en\">This app asks for your profile</span></p>\
<ul><li>公开信息（昵称、头像）<span class=\"en\">Public profile (nickname, avatar)</span></li></ul>\
<p>当前账号 <span class=\"en\">Signed in as</span> {}</p>{}{}\
<button type=\"submit\" name=\"decision\" value=\"allow\">同意授权<span class=\"en\">Allow</span></button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">拒绝<span class=\"en\">Deny</span></button></form>",
            html_escape(&app.app_id),
            html_escape(&buyer.nick_name),
            carried(&p),
            hidden("user_id", &buyer.user_id),
        );
        return page(StatusCode::OK, "授权确认", "Authorise this app", &body);
    }
    found(&redirect_with_code(&ctx, &p, &buyer))
}

/// `POST /oauth2/consent`: the consent form's answer.
pub async fn post_consent(State(ctx): State<Arc<Ctx>>, Form(p): Form<AuthorizeParams>) -> Response {
    if let Err(page) = check(&ctx, &p) {
        return *page;
    }
    let Some(buyer) = resolve_buyer(&ctx, &p.user_id) else {
        return error_page(StatusCode::BAD_REQUEST, "买家不存在", "No such buyer");
    };
    if p.decision != "allow" {
        return page(
            StatusCode::OK,
            "已取消授权",
            "Authorisation declined",
            "<div class=\"card\"><p id=\"status\">你已拒绝授权<span class=\"en\">You declined; the app gets nothing</span></p></div>",
        );
    }
    see_other(&redirect_with_code(&ctx, &p, &buyer))
}
