//! Face payment (刷脸付): the server-side initialize call, the ftoken query, and the face step
//! itself (`issue_ftoken`), which the control API and the buyer pages run in place of a camera.

use serde_json::Map;

use super::Call;
use super::codes::invalid_code;
use super::fields::*;
use crate::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{FaceToken, IdMode, Millis};
use crate::store::Store;

/// How long an ftoken is accepted (real lifetime unconfirmed; "short-lived").
pub const FTOKEN_TTL_MS: i64 = 5 * 60_000;

/// The face step succeeded for `user_id`: a single-use ftoken for `trade.pay`.
///
/// Returns a `Result` so a fault (weak light, no face found) can refuse, as the SDK does.
pub fn issue_ftoken(
    _ctx: &Ctx,
    store: &mut Store,
    user_id: &str,
    now: Millis,
) -> Result<String, ApiError> {
    if !store.data.buyers.contains_key(user_id) {
        return Err(ApiError::bad_param("买家不存在"));
    }
    let ftoken = ids::ftoken();
    store.put_face_token(FaceToken {
        ftoken: ftoken.clone(),
        user_id: user_id.to_owned(),
        expires_at: now + FTOKEN_TTL_MS,
        used: false,
    });
    Ok(ftoken)
}

/// True for text shaped like an ftoken: `fp` + 33 characters.
pub fn is_ftoken_shape(token: &str) -> bool {
    token.len() == 35 && token.starts_with("fp") && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The buyer behind a usable ftoken (not consumed: see [`consume`]).
pub fn buyer_of_ftoken(store: &Store, token: &str, now: Millis) -> Result<String, ApiError> {
    if !is_ftoken_shape(token) {
        return Err(invalid_code());
    }
    store
        .data
        .face_tokens
        .get(token)
        .filter(|t| !t.used && now < t.expires_at)
        .map(|t| t.user_id.clone())
        .ok_or_else(invalid_code)
}

/// Marks an ftoken used, once a trade has been made with it.
pub fn consume(store: &mut Store, token: &str) {
    if let Some(mut t) = store.data.face_tokens.get(token).cloned() {
        t.used = true;
        store.put_face_token(t);
    }
}

/// `zoloz.authentication.smilepay.initialize`: the device's meta info in, a zim session out.
pub fn initialize(_ctx: &Ctx, _store: &mut Store, call: &Call<'_>) -> ApiResult {
    // The structured variant's device fields are all optional, but an empty call means the
    // device sent nothing, which the real service refuses.
    if call.biz.is_empty() {
        return Err(ApiError::missing(
            "isv.missing-parameter",
            "缺少必选参数biz_content",
        ));
    }
    for name in ["apdid_token", "app_name", "device_type", "zim_ver"] {
        opt_str(&call.biz, name)?;
    }
    let mut out = Map::new();
    out.insert("zim_id".into(), ids::random_hex(32).into());
    out.insert(
        "zim_init_client_data".into(),
        format!("sandbox:{}", ids::random_hex(48)).into(),
    );
    Ok(out)
}

/// `zoloz.authentication.customer.ftoken.query`: who a (still valid) ftoken identifies.
pub fn ftoken_query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let ftoken = req_str(&call.biz, "ftoken")?;
    let biz_type = req_str(&call.biz, "biz_type")?;
    if !matches!(biz_type, "1" | "2" | "3" | "4") {
        return Err(ApiError::bad_param("biz_type取值1、2、3、4"));
    }
    let token = store
        .data
        .face_tokens
        .get(ftoken)
        .filter(|t| call.now < t.expires_at)
        .ok_or_else(|| ApiError::business("INVALID_FTOKEN", "ftoken无效或已过期"))?;
    let mut out = Map::new();
    match call.app.id_mode {
        IdMode::UserId => out.insert("uid".into(), token.user_id.clone().into()),
        IdMode::OpenId => out.insert(
            "open_id".into(),
            ids::open_id(&call.app.app_id, &token.user_id).into(),
        ),
    };
    Ok(out)
}
