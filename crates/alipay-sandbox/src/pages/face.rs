//! The face step of a face vending machine: `GET /face` stands in for the device's capture
//! screen, `POST /face` (page) and `POST /control/face/token` (JSON) capture a buyer's face and
//! issue an `ftoken` (`fp…`, 35 characters, single use, short-lived) that `trade.pay` with
//! `scene=security_code` accepts. Face fault rules make the capture fail as the device SDK
//! would (weak light, no face, liveness, cancel, timeout): the machine must fall back to QR.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use super::{buyer_select, error_page, hidden, html_escape, page, resolve_buyer};
use crate::Ctx;
use crate::fault::FaceFault;
use crate::model::{FaceToken, Millis};
use crate::store::Store;

/// Issues an ftoken identifying `user_id` through the face API's issuer, and returns its record.
pub fn issue_ftoken(ctx: &Ctx, store: &mut Store, user_id: &str, now: Millis) -> Option<FaceToken> {
    let ftoken = crate::api::face::issue_ftoken(ctx, store, user_id, now).ok()?;
    store.flush();
    store.data.face_tokens.get(&ftoken).cloned()
}

#[derive(Debug, Deserialize)]
pub struct FaceParams {
    #[serde(default)]
    app_id: String,
    /// The buyer (`buyer_id` is accepted too, as the other control endpoints name it).
    #[serde(default, alias = "buyer_id")]
    user_id: String,
}

/// Captures a face: the fault in force, or a fresh token.
fn capture(ctx: &Ctx, app_id: &str, user_id: &str) -> Result<Result<FaceToken, FaceFault>, ()> {
    let buyer = resolve_buyer(ctx, user_id).ok_or(())?;
    if let Some(f) = ctx.faults.face_fault(app_id) {
        return Ok(Err(f));
    }
    let mut store = ctx.store();
    issue_ftoken(ctx, &mut store, &buyer.user_id, ctx.clock.now_ms())
        .map(Ok)
        .ok_or(())
}

/// `GET /face?app_id=…`.
pub async fn show_face(State(ctx): State<Arc<Ctx>>, Query(p): Query<FaceParams>) -> Response {
    let body = format!(
        "<form class=\"card\" method=\"post\" action=\"/face\">\
<p>请正对屏幕，保持光线充足<span class=\"en\">Face the screen in good light</span></p>{}{}\
<button type=\"submit\">开始刷脸<span class=\"en\">Start face capture</span></button></form>",
        hidden("app_id", &p.app_id),
        buyer_select(&ctx, "user_id"),
    );
    page(StatusCode::OK, "刷脸付款", "Pay with your face", &body)
}

/// `POST /face`: the capture, as a page.
pub async fn post_face(State(ctx): State<Arc<Ctx>>, Form(p): Form<FaceParams>) -> Response {
    match capture(&ctx, &p.app_id, &p.user_id) {
        Err(()) => error_page(StatusCode::BAD_REQUEST, "买家不存在", "No such buyer"),
        Ok(Err(f)) => {
            let (code, zh, en) = f.describe();
            error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("刷脸失败（{code}）：{zh}"),
                &format!("Face capture failed ({code}): {en}. Pay by QR code instead."),
            )
        }
        Ok(Ok(t)) => {
            let body = format!(
                "<div class=\"card\"><p class=\"ok\" id=\"status\">识别成功<span class=\"en\">Face recognised</span></p>\
<p>ftoken <code id=\"ftoken\">{}</code></p></div>",
                html_escape(&t.ftoken)
            );
            page(StatusCode::OK, "识别成功", "Recognised", &body)
        }
    }
}

/// `POST /control/face/token` `{"app_id"?, "user_id"}` → `{"ftoken","user_id","expires_at"}`,
/// or 409 `{"error","code"}` under a face fault, 404 for an unknown buyer.
pub async fn control_token(State(ctx): State<Arc<Ctx>>, Json(p): Json<FaceParams>) -> Response {
    match capture(&ctx, &p.app_id, &p.user_id) {
        Err(()) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such buyer" })),
        )
            .into_response(),
        Ok(Err(f)) => {
            let (code, zh, en) = f.describe();
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": format!("{zh} / {en}"), "code": code, "fault": f })),
            )
                .into_response()
        }
        Ok(Ok(t)) => {
            Json(json!({ "ftoken": t.ftoken, "user_id": t.user_id, "expires_at": t.expires_at }))
                .into_response()
        }
    }
}
