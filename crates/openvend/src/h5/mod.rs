//! The buyer's H5 pages: a machine's fixed QR code opens `/m/<machine>` in the Alipay app;
//! silent authorisation (`auth_base`) logs a known buyer in with no prompt (免登); an unknown
//! one goes through `auth_user`, `alipay.user.info.share` and an SMS-checked phone number that
//! binds to an existing account or registers a new one. Then the buyer picks products, the
//! server creates the trade (`alipay.trade.create` with the buyer's id, the machine's
//! `terminal_id` and the operator's `seller_id`) and the page pays it with JSAPI `tradePay`,
//! then follows the order until the goods are out or refunded.
//!
//! - [`oauth`]: the sign-in redirect and the callback (`state` checks, token exchange).
//! - [`bind`]: the phone page, SMS codes, binding.
//! - [`shop`]: the machine page, the order, the payment page and its status JSON.
//! - [`account`]: the buyer's orders and refunds.
//! - [`session`], [`accounts`], [`codes`]: the store side; [`keys`], [`phone`], [`sms`],
//!   [`html`]: the pieces they use.

pub mod account;
pub mod accounts;
pub mod bind;
pub mod codes;
pub mod html;
pub mod keys;
pub mod oauth;
pub mod phone;
pub mod session;
pub mod settings;
pub mod shop;
pub mod sms;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::Settings;
use crate::services::Services;
use html::Lang;
use keys::Keys;
use session::Session;
use settings::SmsProviderKind;
use sms::SmsProvider;

/// Forms on these pages are tiny.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The session cookie.
pub const SESSION_COOKIE: &str = "ov_s";
/// The browser-id cookie that binds an OAuth `state` to the browser that started the sign-in.
pub const BROWSER_COOKIE: &str = "ov_b";

/// What the H5 handlers share.
#[derive(Debug)]
pub struct H5 {
    /// The platform's services.
    pub svc: Arc<Services>,
    /// Keys for states, phones and codes.
    pub keys: Keys,
    /// The SMS carrier.
    pub sms: Box<dyn SmsProvider>,
    /// SMS send limits.
    pub limits: codes::Limits,
    /// The embedded sandbox's base URL (its `bridge.js` stands in for the Alipay app).
    pub sandbox_url: Option<String>,
    /// `scheme://host[:port]` of the public URL, for the `Origin` check.
    pub origin: String,
    /// The fixed OAuth `redirect_uri`.
    pub redirect_uri: String,
    /// Cookies get `Secure` when the public URL is https.
    pub secure_cookies: bool,
}

impl H5 {
    /// Builds the H5 state from the settings.
    pub fn build(
        settings: &Settings,
        svc: Arc<Services>,
        sandbox_url: Option<String>,
        public_url: &str,
    ) -> anyhow::Result<H5> {
        let master = match &settings.h5.secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => data_dir_secret(&settings.data_dir)?.into_bytes(),
        };
        let sms: Box<dyn SmsProvider> = match settings.sms.provider() {
            SmsProviderKind::Log => {
                Box::new(sms::LogSms::new(settings.data_dir.join("sms-outbox.log")))
            }
            SmsProviderKind::Aliyun => Box::new(sms::AliyunSms::from_settings(&settings.sms)?),
        };
        let after = public_url.find("://").map(|i| i + 3).unwrap_or(0);
        let origin = match public_url[after..].find('/') {
            Some(i) => public_url[..after + i].to_owned(),
            None => public_url.to_owned(),
        };
        Ok(H5 {
            svc,
            keys: Keys::from_master(&master)?,
            sms,
            limits: codes::Limits {
                resend_ms: i64::from(settings.sms.resend_secs) * 1000,
                per_phone: settings.sms.daily_per_phone,
                per_ip: settings.sms.daily_per_ip,
            },
            sandbox_url,
            origin,
            redirect_uri: redirect_uri(public_url),
            secure_cookies: public_url.starts_with("https://"),
        })
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, under `/m`.
    pub fn cookie(&self, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let text = format!(
            "{name}={value}; Path=/m; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session of the request's cookie, if live.
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, Internal> {
        match cookie(headers, SESSION_COOKIE) {
            Some(token) => Ok(session::find(&self.svc.db, &token, self.svc.now()).await?),
            None => Ok(None),
        }
    }

    /// False for a form posted from another site (its `Origin` is not ours). SameSite=Lax
    /// already keeps the session cookie off such posts; this refuses them outright.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(o) => o == self.origin,
        }
    }
}

/// The fixed OAuth callback of a deployment.
pub fn redirect_uri(public_url: &str) -> String {
    format!("{}/m/oauth/callback", public_url.trim_end_matches('/'))
}

/// The H5 master secret of an install without `h5.secret`: made once, kept in the data folder
/// (readable by the owner only).
fn data_dir_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("h5_secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if t.len() >= 32 {
            return Ok(t.to_owned());
        }
    }
    let secret = crate::ids::random_hex(64);
    crate::app::write_owner_only(&path, &secret)?;
    Ok(secret)
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The H5 routes.
pub fn router() -> Router<Arc<H5>> {
    Router::new()
        .route("/m/oauth/callback", get(oauth::callback))
        .route("/m/phone", get(bind::show_phone))
        .route("/m/phone/send", post(bind::send_code))
        .route("/m/phone/verify", post(bind::verify_code))
        .route("/m/account", get(account::show_account))
        .route("/m/o/{id}", get(shop::show_order))
        .route("/m/o/{id}/status", get(shop::order_status))
        .route("/m/o/{id}/result", post(shop::pay_result))
        .route("/m/{code}", get(shop::show_machine))
        .route("/m/{code}/order", post(shop::create_order))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
}

/// An error no buyer can fix: logged once here, shown as a short page without internals.
#[derive(Debug)]
pub struct Internal(pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Internal {
    fn from(e: E) -> Self {
        Internal(e.into())
    }
}

impl IntoResponse for Internal {
    fn into_response(self) -> Response {
        tracing::error!(error = %format!("{:#}", self.0), "H5 page failed");
        html::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            Lang::Zh,
            "出错了 / Something went wrong",
            "服务暂时不可用，请稍后再试。The service is unavailable; please try again shortly.",
            None,
        )
    }
}

/// What H5 handlers return.
pub type PageResult = Result<Response, Internal>;

/// A 303 to `to`, with cookies.
pub fn see_other(to: &str, cookies: &[HeaderValue]) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r
}

/// A page for a form posted from another site.
pub fn cross_site(lang: Lang) -> Response {
    html::message(
        StatusCode::FORBIDDEN,
        lang,
        lang.t("请求被拒绝", "Request refused"),
        lang.t(
            "这个表单不是从本站页面提交的。",
            "This form was not sent from this site's pages.",
        ),
        None,
    )
}

/// A page for a request that needs a signed-in buyer.
pub fn sign_in_needed(lang: Lang) -> Response {
    html::message(
        StatusCode::UNAUTHORIZED,
        lang,
        lang.t("请先登录", "Sign in first"),
        lang.t(
            "请用支付宝扫描售货机上的二维码登录。",
            "Scan a machine's code with Alipay to sign in.",
        ),
        None,
    )
}
