//! Buyer-side web pages: what a person or a headless browser uses as the Alipay app.
//!
//! - `GET /qr/{trade_no}?t=…`: the page a precreate `qr_code` opens (scan, pick a buyer, pay);
//! - `GET /oauth2/publicAppAuthorize.htm`: Alipay's authorize page (same path, so an authorize
//!   URL differs only by host), with a consent step for `auth_user`;
//! - `GET /bridge.js` + `/cashier`: a `window.AlipayJSBridge` whose `tradePay` opens the
//!   sandbox cashier;
//! - `GET /agreement/sign`: the withholding-agreement signing page;
//! - `GET /face` (+ `POST /control/face/token`): the face-capture step of a face device.
//!
//! Pages are hand-written HTML built in code (no template engine, nothing to build), one
//! small mobile-first layout, Chinese with English subtitles; every piece of user or merchant
//! text goes through [`html_escape`].

mod agreement;
mod cashier;
mod face;
mod oauth;
mod qr;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::Ctx;
use crate::api::fields::{mask_logon, yuan};
use crate::model::Buyer;

pub use agreement::sign_agreement;
pub use face::issue_ftoken;

/// The page routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/qr/{trade_no}", get(qr::show_qr))
        .route("/qr/{trade_no}/pay", post(qr::pay_qr))
        .route("/oauth2/publicAppAuthorize.htm", get(oauth::show_authorize))
        .route("/oauth2/consent", post(oauth::post_consent))
        .route("/bridge.js", get(cashier::bridge_js))
        .route("/cashier", get(cashier::show_cashier))
        .route("/cashier/pay", post(cashier::pay_cashier))
        .route(
            "/agreement/sign",
            get(agreement::show_sign).post(agreement::post_sign),
        )
        .route("/face", get(face::show_face).post(face::post_face))
        .route("/control/face/token", post(face::control_token))
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{box-sizing:border-box}body{margin:0;font:16px/1.5 -apple-system,'PingFang SC','Microsoft YaHei',sans-serif;background:#f5f5f5;color:#333}\
header{background:#1677ff;color:#fff;padding:12px 16px}header h1{margin:0;font-size:18px}header p{margin:0;font-size:12px;opacity:.85}\
main{max-width:420px;margin:0 auto;padding:12px}.card{background:#fff;border-radius:8px;padding:16px;margin-bottom:12px}\
.amount{font-size:32px;font-weight:600;text-align:center;margin:8px 0}.en{display:block;font-size:12px;color:#888}\
dl{margin:0}dt{color:#888;font-size:13px}dd{margin:0 0 8px}select,button{width:100%;font-size:16px;padding:12px;border-radius:6px;margin-top:8px}\
select{border:1px solid #ccc;background:#fff}button{border:0;background:#1677ff;color:#fff}button.secondary{background:#fff;color:#1677ff;border:1px solid #1677ff}\
.ok{color:#1a7f37}.err{color:#cf222e}code{word-break:break-all;background:#f0f0f0;padding:2px 4px;border-radius:4px}";

/// A whole page: the layout around `body` (already HTML).
pub fn layout(title_zh: &str, title_en: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{tz} · 支付宝沙箱</title><style>{STYLE}</style></head><body>\
<header><h1>{tz}</h1><p>{te} · Alipay sandbox</p></header><main>{body}</main></body></html>",
        tz = html_escape(title_zh),
        te = html_escape(title_en),
    )
}

/// A page response with a status.
pub fn page(status: StatusCode, title_zh: &str, title_en: &str, body: &str) -> Response {
    (status, Html(layout(title_zh, title_en, body))).into_response()
}

/// An error page: what went wrong, in both languages.
pub fn error_page(status: StatusCode, zh: &str, en: &str) -> Response {
    let body = format!(
        "<div class=\"card\"><p class=\"err\" id=\"error\">{}<span class=\"en\">{}</span></p></div>",
        html_escape(zh),
        html_escape(en)
    );
    page(status, "出错了", "Something went wrong", &body)
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        html_escape(name),
        html_escape(value)
    )
}

/// A `<select name="user_id">` of the sandbox buyers with balances, plus "new buyer".
pub fn buyer_select(ctx: &Ctx, name: &str) -> String {
    let buyers: Vec<Buyer> = ctx.store().data.buyers.values().cloned().collect();
    let mut out = format!(
        "<label>选择买家<span class=\"en\">Choose a buyer</span><select name=\"{}\">",
        html_escape(name)
    );
    for b in &buyers {
        let _ = write!(
            out,
            "<option value=\"{}\">{} · {} · ¥{}</option>",
            html_escape(&b.user_id),
            html_escape(&b.nick_name),
            html_escape(&mask_logon(&b.logon_id)),
            html_escape(&yuan(b.balance_fen)),
        );
    }
    out.push_str(
        "<option value=\"new\">新买家（余额 ¥10000.00）/ New buyer</option></select></label>",
    );
    out
}

/// The buyer a form names: an existing user id, or `new` for a fresh buyer.
pub fn resolve_buyer(ctx: &Ctx, user_id: &str) -> Option<Buyer> {
    if user_id == "new" {
        return Some(crate::control::new_buyer(ctx, 1_000_000, None, None));
    }
    ctx.store().data.buyers.get(user_id).cloned()
}

/// `url` with `pairs` appended to its query (form-encoded).
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let encoded = alipay::form::encode(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{encoded}")
}

/// True for an absolute http(s) URL with a host.
pub fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// A 303 redirect.
pub fn see_other(location: &str) -> Response {
    match axum::http::HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, v)]).into_response(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "跳转地址无效",
            "The redirect address is not valid",
        ),
    }
}

/// A 302 redirect (what Alipay's authorize page answers).
pub fn found(location: &str) -> Response {
    match axum::http::HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(axum::http::header::LOCATION, v)]).into_response(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "跳转地址无效",
            "The redirect address is not valid",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escape_covers_markup_and_quotes() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(html_escape("可乐"), "可乐");
    }

    #[test]
    fn redirect_targets_must_be_http_urls() {
        assert!(is_http_url("https://m.example.com/cb?x=1"));
        assert!(is_http_url("http://127.0.0.1:8080"));
        assert!(!is_http_url("javascript:alert(1)"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("//evil.example"));
        assert!(!is_http_url("https://a b"));
    }

    #[test]
    fn query_pairs_are_appended_encoded() {
        assert_eq!(
            with_query("https://m/cb?x=1", &[("state", "a b&c"), ("empty", "")]),
            "https://m/cb?x=1&state=a%20b%26c"
        );
    }
}
