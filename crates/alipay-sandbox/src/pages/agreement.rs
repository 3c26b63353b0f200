//! `GET /agreement/sign`: the page a buyer signs a withholding agreement (商户代扣) on.
//! Signing stores an [`Agreement`] in `NORMAL` state, queues a `dut_user_sign` notification
//! (to `notify_url`, else the app gateway) and returns to `return_url` when given.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{
    buyer_select, error_page, hidden, html_escape, is_http_url, page, resolve_buyer, see_other,
    with_query,
};
use crate::Ctx;
use crate::model::{Agreement, App, Buyer, Millis};
use crate::store::Store;

/// What the signing page was asked for.
#[derive(Debug, Clone, Deserialize)]
pub struct SignRequest {
    /// The app.
    #[serde(default)]
    pub app_id: String,
    /// `personal_product_code` (default `GENERAL_WITHHOLDING_P`).
    #[serde(default)]
    pub personal_product_code: String,
    /// `sign_scene` (default `DEFAULT|DEFAULT`).
    #[serde(default)]
    pub sign_scene: String,
    /// `external_agreement_no`.
    #[serde(default)]
    pub external_agreement_no: String,
    /// Where `dut_user_sign` goes (else the app gateway).
    #[serde(default)]
    pub notify_url: String,
    /// Where the buyer returns after signing.
    #[serde(default)]
    pub return_url: String,
    /// The signer (form field).
    #[serde(default)]
    pub user_id: String,
}

impl SignRequest {
    fn normalise(&mut self) {
        if self.personal_product_code.is_empty() {
            self.personal_product_code = "GENERAL_WITHHOLDING_P".into();
        }
        if self.sign_scene.is_empty() {
            self.sign_scene = "DEFAULT|DEFAULT".into();
        }
    }
}

/// Signs (or finds the already signed) agreement through the agreement API, which also
/// queues `dut_user_sign`.
pub fn sign_agreement(
    ctx: &Ctx,
    store: &mut Store,
    app: &App,
    req: &SignRequest,
    buyer: &Buyer,
    now: Millis,
) -> Result<Agreement, String> {
    let request = crate::api::agreement::SignRequest {
        app_id: app.app_id.clone(),
        user_id: buyer.user_id.clone(),
        external_agreement_no: (!req.external_agreement_no.is_empty())
            .then(|| req.external_agreement_no.clone()),
        personal_product_code: req.personal_product_code.clone(),
        sign_scene: req.sign_scene.clone(),
        notify_url: (!req.notify_url.is_empty()).then(|| req.notify_url.clone()),
    };
    let agreement = crate::api::agreement::sign(ctx, store, request, now)?;
    store.flush();
    Ok(agreement)
}

fn check(ctx: &Ctx, req: &SignRequest) -> Result<App, Box<Response>> {
    let Some(app) = ctx.app(&req.app_id) else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "应用不存在（app_id无效）",
            "Unknown app_id",
        )));
    };
    for (name, url) in [
        ("notify_url", &req.notify_url),
        ("return_url", &req.return_url),
    ] {
        if !url.is_empty() && !is_http_url(url) {
            return Err(Box::new(error_page(
                StatusCode::BAD_REQUEST,
                &format!("{name}无效：应为http(s)地址"),
                &format!("{name} must be an http(s) URL"),
            )));
        }
    }
    Ok(app)
}

/// `GET /agreement/sign`.
pub async fn show_sign(
    State(ctx): State<Arc<Ctx>>,
    Query(mut req): Query<SignRequest>,
) -> Response {
    req.normalise();
    let app = match check(&ctx, &req) {
        Ok(a) => a,
        Err(p) => return *p,
    };
    let body = format!(
        "<form class=\"card\" method=\"post\" action=\"/agreement/sign\">\
<p>应用 <code>{}</code> 申请开通免密支付（代扣）<span class=\"en\">This merchant asks to charge you without a password (withholding agreement)</span></p>\
<dl><dt>产品 <span class=\"en\">Product</span></dt><dd>{}</dd><dt>场景 <span class=\"en\">Scene</span></dt><dd>{}</dd></dl>{}{}{}{}{}{}{}\
<button type=\"submit\">同意协议并开通<span class=\"en\">Agree and sign</span></button></form>",
        html_escape(&app.app_id),
        html_escape(&req.personal_product_code),
        html_escape(&req.sign_scene),
        hidden("app_id", &req.app_id),
        hidden("personal_product_code", &req.personal_product_code),
        hidden("sign_scene", &req.sign_scene),
        hidden("external_agreement_no", &req.external_agreement_no),
        hidden("notify_url", &req.notify_url),
        hidden("return_url", &req.return_url),
        buyer_select(&ctx, "user_id"),
    );
    page(
        StatusCode::OK,
        "签约代扣协议",
        "Sign a withholding agreement",
        &body,
    )
}

/// `POST /agreement/sign`.
pub async fn post_sign(State(ctx): State<Arc<Ctx>>, Form(mut req): Form<SignRequest>) -> Response {
    req.normalise();
    let app = match check(&ctx, &req) {
        Ok(a) => a,
        Err(p) => return *p,
    };
    let Some(buyer) = resolve_buyer(&ctx, &req.user_id) else {
        return error_page(StatusCode::BAD_REQUEST, "买家不存在", "No such buyer");
    };
    let signed = {
        let mut store = ctx.store();
        sign_agreement(&ctx, &mut store, &app, &req, &buyer, ctx.clock.now_ms())
    };
    let agreement = match signed {
        Ok(a) => a,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, "签约失败", &why),
    };
    ctx.wake_notifier();
    if !req.return_url.is_empty() {
        return see_other(&with_query(
            &req.return_url,
            &[
                ("agreement_no", &agreement.agreement_no),
                (
                    "external_agreement_no",
                    agreement.external_agreement_no.as_deref().unwrap_or(""),
                ),
                ("status", "NORMAL"),
            ],
        ));
    }
    let body = format!(
        "<div class=\"card\"><p class=\"ok\" id=\"status\">签约成功<span class=\"en\">Agreement signed</span></p>\
<p>协议号 <span class=\"en\">Agreement number</span> <code id=\"agreement_no\">{}</code></p></div>",
        html_escape(&agreement.agreement_no)
    );
    page(StatusCode::OK, "签约成功", "Signed", &body)
}
