//! The daily and monthly bills (§3.9): rendering, the short-lived download URLs, and the
//! differences a reconciliation test injects.
//!
//! `alipay.data.dataservice.bill.downloadurl.query` (in `api::bill`) renders the bill at once
//! and keeps the zip under a random token for 30 seconds of sandbox time; `GET
//! /bill/download/{token}` serves it. Tokens and differences live in memory only: a URL
//! outlives no restart anyway, and differences belong to the test that set them.

pub mod render;
pub mod zipfile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Ctx;
use crate::model::Millis;
use render::{Period, Row, RowKind};

/// How long a download URL works after issue (§3.9), ms of sandbox time.
pub const URL_LIFETIME_MS: Millis = 30_000;

/// A rendered bill waiting to be fetched.
#[derive(Debug, Clone)]
struct Issued {
    file_name: String,
    bytes: Arc<Vec<u8>>,
    expires_at: Millis,
}

/// One injected reconciliation difference, for a day (`yyyy-MM-dd`) of an app's bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The app whose bill changes.
    pub app_id: String,
    /// The bill day, `yyyy-MM-dd` (monthly bills of that month include it too).
    pub date: String,
    /// What changes.
    #[serde(flatten)]
    pub change: Change,
}

/// What a difference does to the bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// 长款: a payment the merchant does not have.
    ExtraTrade {
        /// Its `out_trade_no`.
        out_trade_no: String,
        /// Its `trade_no` (generated).
        trade_no: String,
        /// Amount, fen.
        amount_fen: i64,
    },
    /// 短款: a merchant trade left out of the bill (its payment and refund rows).
    MissingTrade {
        /// The trade.
        out_trade_no: String,
    },
    /// The payment row of a trade shows another amount.
    AmountMismatch {
        /// The trade.
        out_trade_no: String,
        /// The amount the bill shows, fen.
        amount_fen: i64,
    },
}

impl Difference {
    /// Beijing noon of the difference's day, for rows it adds.
    fn noon(&self) -> Option<Millis> {
        let at = alipay::time::parse_timestamp(&format!("{} 12:00:00", self.date))?;
        Some((at.unix_timestamp_nanos() / 1_000_000) as Millis)
    }

    /// Applies the difference to the rows of `period` (when its day is in the period).
    pub fn apply(&self, rows: &mut Vec<Row>, period: &Period) {
        let Some(noon) = self.noon() else { return };
        let at = crate::clock::to_datetime(noon);
        if !(period.start <= at && at < period.end) {
            return;
        }
        match &self.change {
            Change::ExtraTrade {
                out_trade_no,
                trade_no,
                amount_fen,
            } => rows.push(Row {
                trade_no: trade_no.clone(),
                out_trade_no: out_trade_no.clone(),
                kind: RowKind::Payment,
                subject: "长款".into(),
                created: noon,
                finished: noon,
                store_id: None,
                operator_id: None,
                terminal_id: None,
                buyer: String::new(),
                amount_fen: *amount_fen,
                out_request_no: None,
                fee_fen: render::service_fee(*amount_fen),
                royalty_fen: 0,
                remark: String::new(),
            }),
            Change::MissingTrade { out_trade_no } => {
                rows.retain(|r| r.out_trade_no != *out_trade_no)
            }
            Change::AmountMismatch {
                out_trade_no,
                amount_fen,
            } => {
                for r in rows
                    .iter_mut()
                    .filter(|r| r.out_trade_no == *out_trade_no && r.kind == RowKind::Payment)
                {
                    r.amount_fen = *amount_fen;
                    r.fee_fen = render::service_fee(*amount_fen);
                }
            }
        }
    }
}

/// Issued download URLs and injected differences.
#[derive(Debug, Default)]
pub struct BillDesk {
    issued: Mutex<HashMap<String, Issued>>,
    differences: Mutex<Vec<Difference>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BillDesk {
    /// Keeps a rendered bill under a new token until `now + 30 s`; returns the token.
    pub fn issue(&self, file_name: String, bytes: Vec<u8>, now: Millis) -> String {
        let token = crate::ids::random_hex(32);
        let mut issued = lock(&self.issued);
        issued.retain(|_, i| i.expires_at > now);
        issued.insert(
            token.clone(),
            Issued {
                file_name,
                bytes: Arc::new(bytes),
                expires_at: now + URL_LIFETIME_MS,
            },
        );
        token
    }

    /// The differences that touch `app_id`'s bills.
    pub fn differences_of(&self, app_id: &str) -> Vec<Difference> {
        lock(&self.differences)
            .iter()
            .filter(|d| d.app_id == app_id)
            .cloned()
            .collect()
    }
}

/// The routes: the download, and the control endpoints for differences.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/bill/download/{token}", get(download))
        .route(
            "/control/bill/differences",
            get(list_differences)
                .post(add_difference)
                .delete(clear_differences),
        )
}

fn error_page(status: StatusCode, text: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>账单下载</title><p>{text}</p>"
        )),
    )
        .into_response()
}

async fn download(State(ctx): State<Arc<Ctx>>, Path(token): Path<String>) -> Response {
    let now = ctx.clock.now_ms();
    let found = lock(&ctx.bills.issued).get(&token).cloned();
    match found {
        None => error_page(StatusCode::NOT_FOUND, "账单文件不存在 (no such bill link)"),
        Some(i) if now >= i.expires_at => error_page(
            StatusCode::GONE,
            "下载链接已过期，请重新获取 (the link expired 30 s after issue; request a new one)",
        ),
        Some(i) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", i.file_name),
                ),
            ],
            i.bytes.as_ref().clone(),
        )
            .into_response(),
    }
}

/// `POST /control/bill/differences` body.
#[derive(Debug, Deserialize)]
struct NewDifference {
    app_id: String,
    date: String,
    kind: String,
    #[serde(default)]
    out_trade_no: Option<String>,
    /// Yuan, e.g. `"12.34"`.
    #[serde(default)]
    amount: Option<String>,
}

fn refused(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn differences_json(ctx: &Ctx) -> Value {
    json!({ "differences": *lock(&ctx.bills.differences) })
}

async fn list_differences(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(differences_json(&ctx))
}

async fn clear_differences(State(ctx): State<Arc<Ctx>>) -> StatusCode {
    lock(&ctx.bills.differences).clear();
    StatusCode::NO_CONTENT
}

async fn add_difference(State(ctx): State<Arc<Ctx>>, Json(req): Json<NewDifference>) -> Response {
    let unprocessable = |m: String| refused(StatusCode::UNPROCESSABLE_ENTITY, m);
    if crate::api::bill::parse_day(&req.date).is_none() {
        return unprocessable(format!("date {:?} is not yyyy-MM-dd", req.date));
    }
    if ctx.app(&req.app_id).is_none() {
        return refused(StatusCode::NOT_FOUND, "no such app");
    }
    let amount = match req.amount.as_deref().map(alipay::Amount::parse) {
        None => None,
        Some(Ok(a)) => Some(a.fen()),
        Some(Err(e)) => return unprocessable(format!("amount: {e}")),
    };
    let known_trade = |o: &str| ctx.store().trade_by_out_no(&req.app_id, o).is_some();
    let change = match (req.kind.as_str(), req.out_trade_no, amount) {
        ("extra_trade", out, Some(amount_fen)) => {
            let now = ctx.clock.now_ms();
            let seq = {
                let mut store = ctx.store();
                let n = store.next_seq();
                store.flush();
                n
            };
            Change::ExtraTrade {
                out_trade_no: out.unwrap_or_else(|| format!("extra_{seq}")),
                trade_no: crate::ids::trade_no(now, seq),
                amount_fen,
            }
        }
        ("extra_trade", _, None) => return unprocessable("extra_trade needs amount".into()),
        ("missing_trade", Some(o), _) if known_trade(&o) => {
            Change::MissingTrade { out_trade_no: o }
        }
        ("amount_mismatch", Some(o), Some(amount_fen)) if known_trade(&o) => {
            Change::AmountMismatch {
                out_trade_no: o,
                amount_fen,
            }
        }
        ("amount_mismatch", Some(_), None) => {
            return unprocessable("amount_mismatch needs amount".into());
        }
        ("missing_trade" | "amount_mismatch", Some(o), _) => {
            return refused(StatusCode::NOT_FOUND, format!("the app has no trade {o:?}"));
        }
        ("missing_trade" | "amount_mismatch", None, _) => {
            return unprocessable(format!("{} needs out_trade_no", req.kind));
        }
        (other, _, _) => {
            return unprocessable(format!(
                "kind {other:?} is not extra_trade, missing_trade or amount_mismatch"
            ));
        }
    };
    let diff = Difference {
        app_id: req.app_id,
        date: req.date,
        change,
    };
    lock(&ctx.bills.differences).push(diff.clone());
    (StatusCode::CREATED, Json(json!(diff))).into_response()
}
