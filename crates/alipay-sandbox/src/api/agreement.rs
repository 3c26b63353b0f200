//! 商户代扣 agreements: signing (done by the buyer on a page, or by the control API in its
//! place), `alipay.user.agreement.query`, and the lookup `trade.pay` uses to charge one.

use serde_json::{Map, Value};

use super::Call;
use super::fields::*;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{Agreement, IdMode, Millis};
use crate::notify;
use crate::store::Store;

/// Long-term agreements show this end date (as Alipay does).
const FOREVER: &str = "2115-02-01 00:00:00";

/// What a buyer signs.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The app.
    pub app_id: String,
    /// The signer.
    pub user_id: String,
    /// `external_agreement_no` (the merchant's number), if any.
    pub external_agreement_no: Option<String>,
    /// `personal_product_code`, e.g. `GENERAL_WITHHOLDING_P`.
    pub personal_product_code: String,
    /// `sign_scene`, e.g. `INDUSTRY|ALIPAYGO`.
    pub sign_scene: String,
    /// Where `dut_user_sign` goes; else the app's notify URL, else its app gateway.
    pub notify_url: Option<String>,
}

/// Signs an agreement (status `NORMAL`) and queues `dut_user_sign`. Signing again what is
/// already signed returns the existing agreement without a new notification.
pub fn sign(
    _ctx: &Ctx,
    store: &mut Store,
    req: SignRequest,
    now: Millis,
) -> Result<Agreement, String> {
    let app = store
        .data
        .apps
        .get(&req.app_id)
        .cloned()
        .ok_or_else(|| format!("no app {}", req.app_id))?;
    if !store.data.buyers.contains_key(&req.user_id) {
        return Err(format!("no buyer {}", req.user_id));
    }
    if req.personal_product_code.is_empty() || req.sign_scene.is_empty() {
        return Err("personal_product_code and sign_scene are required".into());
    }
    if let Some(ext) = &req.external_agreement_no
        && (ext.len() > 32 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err("external_agreement_no: up to 32 letters or digits".into());
    }
    if let Some(a) = store.data.agreements.values().find(|a| {
        a.app_id == req.app_id
            && a.user_id == req.user_id
            && a.personal_product_code == req.personal_product_code
            && a.sign_scene == req.sign_scene
            && a.external_agreement_no == req.external_agreement_no
            && a.status == "NORMAL"
    }) {
        return Ok(a.clone());
    }
    let seq = store.next_seq();
    let agreement = Agreement {
        app_id: req.app_id,
        agreement_no: ids::agreement_no(now, seq),
        external_agreement_no: req.external_agreement_no,
        user_id: req.user_id,
        personal_product_code: req.personal_product_code,
        sign_scene: req.sign_scene,
        status: "NORMAL".into(),
        signed_at: now,
        notify_url: req
            .notify_url
            .or_else(|| app.notify_url.clone())
            .or_else(|| app.gateway_notify_url.clone()),
    };
    store.put_agreement(agreement.clone());
    queue_sign_notification(store, &agreement, now);
    Ok(agreement)
}

/// Queues `dut_user_sign` (§2.7).
fn queue_sign_notification(store: &mut Store, a: &Agreement, now: Millis) {
    let Some(url) = a.notify_url.clone() else {
        return;
    };
    let logon = store
        .data
        .buyers
        .get(&a.user_id)
        .map(|b| mask_logon(&b.logon_id))
        .unwrap_or_default();
    let mut p: Vec<(String, String)> = vec![
        ("notify_id".into(), ids::notify_id()),
        ("notify_type".into(), "dut_user_sign".into()),
        ("notify_time".into(), fmt_ms(now)),
        ("app_id".into(), a.app_id.clone()),
        ("auth_app_id".into(), a.app_id.clone()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("sign_type".into(), "RSA2".into()),
        ("agreement_no".into(), a.agreement_no.clone()),
        ("alipay_user_id".into(), a.user_id.clone()),
        ("alipay_logon_id".into(), logon),
        (
            "personal_product_code".into(),
            a.personal_product_code.clone(),
        ),
        ("sign_scene".into(), a.sign_scene.clone()),
        ("status".into(), a.status.clone()),
        ("sign_time".into(), fmt_ms(a.signed_at)),
        ("valid_time".into(), fmt_ms(a.signed_at)),
        ("invalid_time".into(), FOREVER.into()),
    ];
    if let Some(ext) = &a.external_agreement_no {
        p.push(("external_agreement_no".into(), ext.clone()));
    }
    notify::enqueue(store, &a.app_id, url, p, now);
}

/// The agreement a `trade.pay` names in `agreement_params`, checked to be chargeable.
pub fn chargeable(store: &Store, app_id: &str, agreement_no: &str) -> Result<Agreement, ApiError> {
    let a = store
        .data
        .agreements
        .get(agreement_no)
        .filter(|a| a.app_id == app_id)
        .ok_or_else(|| ApiError::business("ACQ.AGREEMENT_NOT_EXIST", "协议不存在"))?;
    if a.status != "NORMAL" {
        return Err(ApiError::business(
            "ACQ.AGREEMENT_STATUS_NOT_NORMAL",
            "协议状态非正常状态",
        ));
    }
    Ok(a.clone())
}

/// `alipay.user.agreement.query`: by `agreement_no`, or by the signer and product and scene.
pub fn query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let app = call.app;
    let found = if let Some(no) = opt_str(biz, "agreement_no")? {
        store
            .data
            .agreements
            .get(no)
            .filter(|a| a.app_id == app.app_id)
    } else {
        let user = match (
            opt_str(biz, "alipay_user_id")?,
            opt_str(biz, "alipay_open_id")?,
        ) {
            (Some(u), _) => u.to_owned(),
            (None, Some(o)) => super::trade::find_by_open_id(store, &app.app_id, o)
                .map(|b| b.user_id)
                .unwrap_or_default(),
            (None, None) => {
                return Err(plain_param(
                    "agreement_no和alipay_user_id/alipay_open_id不能同时为空",
                ));
            }
        };
        let product = opt_str(biz, "personal_product_code")?
            .ok_or_else(|| plain_param("缺少必选参数personal_product_code"))?;
        let scene = opt_str(biz, "sign_scene")?.unwrap_or("DEFAULT|DEFAULT");
        let external = opt_str(biz, "external_agreement_no")?;
        store.data.agreements.values().find(|a| {
            a.app_id == app.app_id
                && a.user_id == user
                && a.personal_product_code == product
                && a.sign_scene == scene
                && external.is_none_or(|e| a.external_agreement_no.as_deref() == Some(e))
        })
    };
    let a =
        found.ok_or_else(|| ApiError::business("USER_AGREEMENT_NOT_EXIST", "用户协议不存在"))?;
    let mut out = Map::new();
    match app.id_mode {
        IdMode::UserId => out.insert("principal_id".into(), a.user_id.clone().into()),
        IdMode::OpenId => out.insert(
            "principal_open_id".into(),
            ids::open_id(&app.app_id, &a.user_id).into(),
        ),
    };
    if let Some(b) = store.data.buyers.get(&a.user_id) {
        out.insert("alipay_logon_id".into(), mask_logon(&b.logon_id).into());
    }
    out.insert("agreement_no".into(), a.agreement_no.clone().into());
    if let Some(ext) = &a.external_agreement_no {
        out.insert("external_agreement_no".into(), ext.clone().into());
    }
    out.insert(
        "personal_product_code".into(),
        a.personal_product_code.clone().into(),
    );
    out.insert("sign_scene".into(), a.sign_scene.clone().into());
    out.insert("status".into(), a.status.clone().into());
    out.insert("sign_time".into(), fmt_ms(a.signed_at).into());
    out.insert("valid_time".into(), fmt_ms(a.signed_at).into());
    out.insert("invalid_time".into(), Value::from(FOREVER));
    out.insert("third_party_type".into(), "PARTNER".into());
    Ok(out)
}

/// This family's parameter error carries no `ACQ.` prefix.
fn plain_param(msg: &str) -> ApiError {
    ApiError::business("INVALID_PARAMETER", msg)
}
