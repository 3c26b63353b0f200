//! The phone step of a new buyer: enter the number, get an SMS code, enter it. A right code
//! binds this Alipay user to the account with that phone, or registers one, and logs the
//! session in under a new token. Every refusal is a page that says why and changes nothing
//! (a wrong code counts as a try, which is the point of counting).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::codes::{self, CodeRefused, SendRefused};
use super::html::{self, Lang, esc};
use super::phone::Phone;
use super::session::{self, Session};
use super::{H5, PageResult, SESSION_COOKIE, accounts, cross_site, see_other};

fn no_session(lang: Lang) -> Response {
    html::message(
        StatusCode::UNAUTHORIZED,
        lang,
        lang.t("请重新扫码", "Scan again"),
        lang.t(
            "登录已过期。请用支付宝重新扫描售货机上的二维码。",
            "Your sign-in has expired. Scan the machine's code with Alipay again.",
        ),
        None,
    )
}

fn phone_page(
    lang: Lang,
    status: StatusCode,
    s: &Session,
    phone: &str,
    code_sent: bool,
    note: Option<(&str, bool)>,
) -> Response {
    let who = match (&s.nick_name, &s.avatar) {
        (Some(n), Some(a)) => format!(
            "<img class=\"avatar\" src=\"{}\" alt=\"\"> {}",
            esc(a),
            esc(n)
        ),
        (Some(n), None) => esc(n),
        _ => String::new(),
    };
    let note = note
        .map(|(text, bad)| {
            format!(
                "<p id=\"message\" class=\"{}\">{}</p>",
                if bad { "err" } else { "ok" },
                esc(text)
            )
        })
        .unwrap_or_default();
    let code_form = if code_sent {
        format!(
            "<form method=\"post\" action=\"/m/phone/verify\" class=\"card\">\
<input type=\"hidden\" name=\"phone\" value=\"{}\">\
<label>{}<input type=\"text\" name=\"code\" id=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"6\" required></label>\
<button type=\"submit\" id=\"verify\">{}</button></form>",
            esc(phone),
            esc(lang.t("短信验证码", "SMS code")),
            esc(lang.t("验证并继续", "Verify and continue")),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<div class=\"card\"><p>{who}</p><p class=\"muted\">{}</p></div>{note}\
<form method=\"post\" action=\"/m/phone/send\" class=\"card\">\
<label>{}<input type=\"tel\" name=\"phone\" id=\"phone\" value=\"{}\" autocomplete=\"tel\" maxlength=\"20\" required></label>\
<button type=\"submit\" id=\"send\" class=\"{}\">{}</button></form>{code_form}",
        esc(lang.t(
            "首次使用请验证手机号：已有账户的手机号会关联到这个支付宝账号，否则为你新建账户。",
            "First time here: verify your phone. If an account has this number, this Alipay account joins it; otherwise a new account is made.",
        )),
        esc(lang.t("手机号", "Mobile number")),
        esc(phone),
        if code_sent { "secondary" } else { "" },
        esc(if code_sent {
            lang.t("重新发送验证码", "Send a new code")
        } else {
            lang.t("获取验证码", "Send code")
        }),
    );
    html::page(
        status,
        lang,
        lang.t("验证手机号", "Verify your phone"),
        "",
        &body,
    )
}

async fn pending(
    h5: &H5,
    headers: &HeaderMap,
) -> Result<Result<Session, Response>, super::Internal> {
    let lang = Lang::from_headers(headers);
    match h5.session(headers).await? {
        None => Ok(Err(no_session(lang))),
        Some(s) if s.account_id.is_some() => {
            Ok(Err(see_other(&format!("/m/{}", s.machine_code), &[])))
        }
        Some(s) => Ok(Ok(s)),
    }
}

/// `GET /m/phone`.
pub async fn show_phone(State(h5): State<Arc<H5>>, headers: HeaderMap) -> PageResult {
    let lang = Lang::from_headers(&headers);
    Ok(match pending(&h5, &headers).await? {
        Ok(s) => phone_page(lang, StatusCode::OK, &s, "", false, None),
        Err(r) => r,
    })
}

/// The phone form.
#[derive(Debug, Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    phone: String,
}

/// `POST /m/phone/send`.
#[tracing::instrument(skip_all)]
pub async fn send_code(
    State(h5): State<Arc<H5>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<PhoneForm>,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    if !h5.same_origin(&headers) {
        return Ok(cross_site(lang));
    }
    let s = match pending(&h5, &headers).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let phone = match Phone::parse(&f.phone) {
        Ok(p) => p,
        Err(_) => {
            let text = lang.t(
                "请输入中国大陆手机号（11位，以13–19开头）。",
                "Enter a mainland China mobile number (11 digits starting 13–19).",
            );
            return Ok(phone_page(
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                &s,
                &f.phone,
                false,
                Some((text, true)),
            ));
        }
    };
    let index = h5.keys.phone_index(phone.digits());
    let ip = peer.ip().to_string();
    let issued = codes::issue(
        &h5.svc.db,
        &h5.keys,
        &index,
        s.id,
        &ip,
        h5.limits,
        h5.svc.now(),
    )
    .await?;
    let code = match issued {
        Ok(code) => code,
        Err(refusal) => {
            tracing::info!(phone = %phone, ?refusal, "SMS code refused");
            let text = match refusal {
                SendRefused::TooSoon { wait_secs } => match lang {
                    Lang::Zh => format!("验证码发送太频繁，请 {wait_secs} 秒后再试。"),
                    Lang::En => {
                        format!("A code was just sent to this number; try again in {wait_secs} s.")
                    }
                },
                SendRefused::PhoneCap => lang
                    .t(
                        "这个号码今天收到的验证码已达上限，请明天再试。",
                        "This number has had all its codes for today; try again tomorrow.",
                    )
                    .to_owned(),
                SendRefused::IpCap => lang
                    .t(
                        "你的网络今天请求的验证码已达上限，请明天再试。",
                        "Your network has asked for all its codes for today; try again tomorrow.",
                    )
                    .to_owned(),
            };
            let sent_before = matches!(refusal, SendRefused::TooSoon { .. });
            return Ok(phone_page(
                lang,
                StatusCode::TOO_MANY_REQUESTS,
                &s,
                phone.digits(),
                sent_before,
                Some((&text, true)),
            ));
        }
    };
    if let Err(e) = h5.sms.send_code(&phone, &code).await {
        tracing::error!(phone = %phone, error = %e, "SMS not sent");
        let text = lang.t(
            "短信发送失败，请稍后再试。",
            "The SMS could not be sent; please try again shortly.",
        );
        return Ok(phone_page(
            lang,
            StatusCode::BAD_GATEWAY,
            &s,
            phone.digits(),
            false,
            Some((text, true)),
        ));
    }
    let text = match lang {
        Lang::Zh => format!("验证码已发送至 {}，5 分钟内有效。", phone.masked()),
        Lang::En => format!(
            "A code was sent to {}; it is valid for 5 minutes.",
            phone.masked()
        ),
    };
    Ok(phone_page(
        lang,
        StatusCode::OK,
        &s,
        phone.digits(),
        true,
        Some((&text, false)),
    ))
}

/// The code form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    phone: String,
    #[serde(default)]
    code: String,
}

/// `POST /m/phone/verify`.
#[tracing::instrument(skip_all)]
pub async fn verify_code(
    State(h5): State<Arc<H5>>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    if !h5.same_origin(&headers) {
        return Ok(cross_site(lang));
    }
    let Some(s) = h5.session(&headers).await? else {
        return Ok(no_session(lang));
    };
    let Ok(phone) = Phone::parse(&f.phone) else {
        let text = lang.t("手机号无效。", "The mobile number is not valid.");
        return Ok(phone_page(
            lang,
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            &f.phone,
            false,
            Some((text, true)),
        ));
    };
    let code = f.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        let text = lang.t("验证码是 6 位数字。", "The code is 6 digits.");
        return Ok(phone_page(
            lang,
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            phone.digits(),
            true,
            Some((text, true)),
        ));
    }
    let now = h5.svc.now();
    let index = h5.keys.phone_index(phone.digits());
    let mut tx = h5.svc.db.begin().await?;
    let checked = codes::check(&mut tx, &h5.keys, &index, s.id, code, now).await?;
    if let Err(refusal) = checked {
        tx.commit().await?; // keeps a wrong try counted
        tracing::info!(phone = %phone, ?refusal, "SMS code refused");
        let (status, text, resend) = match refusal {
            CodeRefused::NoCode => (
                StatusCode::BAD_REQUEST,
                lang.t(
                    "还没有向这个号码发送验证码，请先获取验证码。",
                    "No code was sent to this number from this page; ask for one first.",
                )
                .to_owned(),
                false,
            ),
            CodeRefused::Used => (
                StatusCode::BAD_REQUEST,
                lang.t(
                    "这个验证码已经用过了，请重新获取。",
                    "This code was already used; ask for a new one.",
                )
                .to_owned(),
                false,
            ),
            CodeRefused::Expired => (
                StatusCode::BAD_REQUEST,
                lang.t(
                    "验证码已过期（5 分钟有效），请重新获取。",
                    "The code has expired (codes last 5 minutes); ask for a new one.",
                )
                .to_owned(),
                false,
            ),
            CodeRefused::NoAttemptsLeft => (
                StatusCode::TOO_MANY_REQUESTS,
                lang.t(
                    "错误次数过多，这个验证码已失效，请重新获取。",
                    "Too many wrong tries: this code no longer works; ask for a new one.",
                )
                .to_owned(),
                false,
            ),
            CodeRefused::Wrong { left } if left > 0 => (
                StatusCode::BAD_REQUEST,
                match lang {
                    Lang::Zh => format!("验证码错误，还可以再试 {left} 次。"),
                    Lang::En => format!("Wrong code; {left} tries left."),
                },
                true,
            ),
            CodeRefused::Wrong { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                lang.t(
                    "验证码错误，已无剩余次数，请重新获取。",
                    "Wrong code, and no tries are left; ask for a new one.",
                )
                .to_owned(),
                false,
            ),
        };
        return Ok(phone_page(
            lang,
            status,
            &s,
            phone.digits(),
            resend,
            Some((&text, true)),
        ));
    }
    if let Some(account) = s.account_id {
        tx.commit().await?;
        tracing::debug!(account, "code verified for a session already logged in");
        return Ok(see_other(&format!("/m/{}", s.machine_code), &[]));
    }
    let (account, created) = accounts::bind(
        &mut tx,
        &h5.keys,
        &phone,
        &s.user,
        s.nick_name.as_deref(),
        s.avatar.as_deref(),
        now,
    )
    .await?;
    let token = session::log_in(&mut tx, s.id, account, now).await?;
    tx.commit().await?;
    tracing::info!(account, created, phone = %phone, "Alipay user bound to an account");
    Ok(see_other(
        &format!("/m/{}", s.machine_code),
        &[h5.cookie(SESSION_COOKIE, &token, session::SESSION_TTL_MS / 1000)],
    ))
}
