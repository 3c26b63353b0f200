//! Control endpoints of certificate mode: an app's certificates, the CA's root chain and
//! Alipay certificate, and rotation of the Alipay certificate.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::model::{App, KeyMode};

/// The routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/control/apps/{app_id}/certs", get(get_app_certs))
        .route(
            "/control/apps/{app_id}/appCertPublicKey.crt",
            get(get_app_cert_file),
        )
        .route("/control/ca", get(get_ca))
        .route("/control/ca/alipayRootCert.crt", get(get_root_file))
        .route(
            "/control/ca/alipayCertPublicKey_RSA2.crt",
            get(get_alipay_cert_file),
        )
        .route("/control/ca/rotate", post(rotate))
}

/// The certificates an app in certificate mode configures: its own, Alipay's and the root
/// chain, with their SNs. `None` for apps in public-key mode.
pub fn certs_json(ctx: &Ctx, app: &App) -> Option<Map<String, Value>> {
    let KeyMode::Certificate {
        app_cert_sn,
        app_cert_pem,
    } = &app.key_mode
    else {
        return None;
    };
    let alipay = ctx.ca.current_alipay_cert();
    let value = json!({
        "key_mode": "cert",
        "app_cert_sn": app_cert_sn,
        "app_cert": app_cert_pem,
        "alipay_cert_sn": alipay.as_ref().map(|c| c.sn.clone()),
        "alipay_cert": alipay.map(|c| c.pem),
        "alipay_root_cert_sn": ctx.ca.root_cert_sn(),
        "alipay_root_cert": ctx.ca.root_chain_pem(),
    });
    match value {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn pem_file(pem: String) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
}

/// The certificates of a cert-mode app, or why there are none (status and reason).
fn cert_app(ctx: &Ctx, app_id: &str) -> Result<Map<String, Value>, (StatusCode, &'static str)> {
    let app = ctx
        .app(app_id)
        .ok_or((StatusCode::NOT_FOUND, "no such app"))?;
    certs_json(ctx, &app).ok_or((
        StatusCode::CONFLICT,
        "the app is in public-key mode; register it with \"key_mode\": \"cert\"",
    ))
}

async fn get_app_certs(State(ctx): State<Arc<Ctx>>, Path(app_id): Path<String>) -> Response {
    match cert_app(&ctx, &app_id) {
        Ok(certs) => Json(Value::Object(certs)).into_response(),
        Err((status, why)) => error(status, why),
    }
}

async fn get_app_cert_file(State(ctx): State<Arc<Ctx>>, Path(app_id): Path<String>) -> Response {
    match cert_app(&ctx, &app_id) {
        Ok(certs) => pem_file(
            certs
                .get("app_cert")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        Err((status, why)) => error(status, why),
    }
}

fn ca_json(ctx: &Ctx) -> Value {
    let current = ctx.ca.current_alipay_cert();
    let all: Vec<String> = ctx.ca.alipay_certs().into_iter().map(|c| c.sn).collect();
    json!({
        "alipay_root_cert_sn": ctx.ca.root_cert_sn(),
        "alipay_root_cert": ctx.ca.root_chain_pem(),
        "alipay_cert_sn": current.as_ref().map(|c| c.sn.clone()),
        "alipay_cert": current.map(|c| c.pem),
        "alipay_cert_sns": all,
    })
}

async fn get_ca(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(ca_json(&ctx))
}

async fn get_root_file(State(ctx): State<Arc<Ctx>>) -> Response {
    pem_file(ctx.ca.root_chain_pem())
}

async fn get_alipay_cert_file(State(ctx): State<Arc<Ctx>>) -> Response {
    match ctx.ca.current_alipay_cert() {
        Some(c) => pem_file(c.pem),
        None => error(StatusCode::NOT_FOUND, "no Alipay certificate issued"),
    }
}

/// Issues a new Alipay certificate (new serial, so a new SN) for the same signing key.
async fn rotate(State(ctx): State<Arc<Ctx>>) -> Response {
    match ctx.ca.issue_alipay_cert(&ctx.public_key) {
        Ok(_) => Json(ca_json(&ctx)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Alipay certificate rotation failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not issue or save the certificate",
            )
        }
    }
}
