//! Control endpoints for the buyer-side steps of the APIs in this module: issuing a payment
//! code, consenting to OAuth, agreeing to a freeze, signing an agreement, passing the face
//! step. Each is a thin wrapper over a pub fn of its family, which buyer pages reuse.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::agreement::{self, SignRequest};
use super::fund_auth::{self, FreezeKey};
use super::{codes, oauth};
use crate::Ctx;
use crate::api::fields::yuan;
use crate::clock::fmt_ms;
use crate::store::Store;

/// The routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route(
            "/control/buyers/{user_id}/payment_code",
            post(issue_payment_code),
        )
        .route("/control/oauth/authorize", post(authorize))
        .route("/control/fund_auth/freeze", post(freeze))
        .route("/control/agreements/sign", post(sign_agreement))
    // `POST /control/face/token` is served by the face page module, which also honours
    // face-capture faults.
}

/// A refused control call: the status and a reason, as the other control endpoints answer.
#[derive(Debug)]
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Result<T> = std::result::Result<T, Refused>;

fn unprocessable(msg: impl Into<String>) -> Refused {
    Refused(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
}

/// Runs `f` on the store, flushes, and wakes the notifier for anything it queued.
fn with_store<T>(ctx: &Ctx, f: impl FnOnce(&mut Store, i64) -> T) -> T {
    let now = ctx.clock.now_ms();
    let out = {
        let mut store = ctx.store();
        let out = f(&mut store, now);
        store.flush();
        out
    };
    ctx.wake_notifier();
    out
}

async fn issue_payment_code(
    State(ctx): State<Arc<Ctx>>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let code = with_store(&ctx, |store, now| {
        codes::issue_payment_code(store, &user_id, now)
    })
    .map_err(|e| Refused(StatusCode::NOT_FOUND, e))?;
    Ok(Json(json!({
        "auth_code": code.code, "user_id": code.user_id,
        "expires_at": fmt_ms(code.expires_at), "expires_at_ms": code.expires_at,
    })))
}

#[derive(Debug, Deserialize)]
struct Authorize {
    app_id: String,
    buyer_id: String,
    scope: String,
    redirect_uri: String,
    #[serde(default)]
    state: Option<String>,
}

async fn authorize(State(ctx): State<Arc<Ctx>>, Json(req): Json<Authorize>) -> Result<Json<Value>> {
    let code = with_store(&ctx, |store, now| {
        oauth::check_authorize(
            store,
            &req.app_id,
            &req.buyer_id,
            &req.scope,
            &req.redirect_uri,
        )?;
        Ok::<_, String>(oauth::issue_code(
            &ctx,
            store,
            &req.app_id,
            &req.buyer_id,
            &req.scope,
            now,
        ))
    })
    .map_err(unprocessable)?;
    let redirect = callback_url(&req, &code);
    Ok(Json(json!({ "auth_code": code, "redirect_url": redirect })))
}

/// The callback Alipay redirects the browser to after consent (§5.2).
fn callback_url(req: &Authorize, code: &str) -> String {
    let enc = |s: &str| alipay::form::encode_component(s.as_bytes());
    let sep = if req.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut url = format!(
        "{}{sep}app_id={}&source=alipay_wallet&scope={}&auth_code={}",
        req.redirect_uri,
        enc(&req.app_id),
        enc(&req.scope),
        enc(code)
    );
    if let Some(state) = &req.state {
        url.push_str(&format!("&state={}", enc(state)));
    }
    url
}

#[derive(Debug, Deserialize)]
struct FreezeReq {
    app_id: String,
    #[serde(default)]
    auth_no: Option<String>,
    #[serde(default)]
    out_order_no: Option<String>,
    buyer_id: String,
}

async fn freeze(State(ctx): State<Arc<Ctx>>, Json(req): Json<FreezeReq>) -> Result<Json<Value>> {
    let key = match (&req.auth_no, &req.out_order_no) {
        (Some(a), _) => FreezeKey::AuthNo(a),
        (None, Some(o)) => FreezeKey::OutOrderNo(o),
        (None, None) => return Err(unprocessable("auth_no or out_order_no is required")),
    };
    let f = with_store(&ctx, |store, now| {
        fund_auth::complete_freeze(&ctx, store, &req.app_id, key, &req.buyer_id, now)
    })
    .map_err(|e| {
        Refused(
            StatusCode::CONFLICT,
            format!("{}: {}", e.sub_code, e.sub_msg),
        )
    })?;
    Ok(Json(json!({
        "auth_no": f.auth_no, "out_order_no": f.out_order_no, "order_status": f.order_status,
        "amount": yuan(f.total_freeze_fen), "rest_amount": yuan(f.rest_fen()),
        "payer_user_id": f.payer_user_id,
    })))
}

#[derive(Debug, Deserialize)]
struct SignReq {
    app_id: String,
    buyer_id: String,
    #[serde(default)]
    external_agreement_no: Option<String>,
    personal_product_code: String,
    #[serde(default)]
    sign_scene: Option<String>,
    #[serde(default)]
    notify_url: Option<String>,
}

async fn sign_agreement(
    State(ctx): State<Arc<Ctx>>,
    Json(req): Json<SignReq>,
) -> Result<Json<Value>> {
    let sign = SignRequest {
        app_id: req.app_id,
        user_id: req.buyer_id,
        external_agreement_no: req.external_agreement_no.filter(|s| !s.is_empty()),
        personal_product_code: req.personal_product_code,
        sign_scene: req.sign_scene.unwrap_or_else(|| "DEFAULT|DEFAULT".into()),
        notify_url: req.notify_url,
    };
    let a = with_store(&ctx, |store, now| agreement::sign(&ctx, store, sign, now))
        .map_err(unprocessable)?;
    Ok(Json(json!({
        "agreement_no": a.agreement_no, "external_agreement_no": a.external_agreement_no,
        "status": a.status, "sign_time": fmt_ms(a.signed_at),
    })))
}
