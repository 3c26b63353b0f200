//! `/gateway.do`: parameters merged from the query string and a form or multipart body,
//! checked in Alipay's order, dispatched to an API, answered signed with the sandbox's key.

use std::sync::Arc;

use alipay::sign::{Charset, SignScope, string_to_sign};
use alipay::{KeyRole, PublicKey, SignType};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::Ctx;
use crate::api::{self, Call};
use crate::error::ApiError;
use crate::fault::GatewayFault;
use crate::model::{App, KeyMode};

/// Largest request accepted (Alipay's own limit is not published; 1 MiB is plenty).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The merged request parameters, decoded to text.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// A parameter's value (empty values count as absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `GET|POST /gateway.do`.
pub async fn handle(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let charset_hint = request
        .uri()
        .query()
        .and_then(charset_in_query)
        .unwrap_or_default();
    let raw = match collect_raw(request).await {
        Ok(raw) => raw,
        Err(resp) => return resp,
    };
    let charset = raw
        .iter()
        .find(|(k, _)| k == b"charset")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(Charset::parse)
        .unwrap_or(charset_hint);
    let mut pairs = Vec::with_capacity(raw.len());
    for (k, v) in &raw {
        let key = String::from_utf8_lossy(k).into_owned();
        let value = match charset.decode(v) {
            Ok(v) => v.into_owned(),
            Err(_) => {
                let err = ApiError::invalid(
                    "isv.invalid-charset",
                    format!("参数{key}的值不是合法的{charset}编码"),
                );
                return answer_unsigned("error", &err, charset);
            }
        };
        if pairs
            .iter()
            .any(|(existing, _): &(String, String)| *existing == key)
        {
            let err = ApiError::invalid("isv.invalid-parameter", format!("参数{key}重复"));
            return answer_unsigned("error", &err, charset);
        }
        pairs.push((key, value));
    }
    let params = Params { pairs };
    process(ctx, params, charset).await
}

fn charset_in_query(q: &str) -> Option<Charset> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix("charset="))
        .and_then(Charset::parse)
}

type RawPairs = Vec<(Vec<u8>, Vec<u8>)>;

async fn collect_raw(request: Request) -> Result<RawPairs, Response> {
    let mut raw: RawPairs = match request.uri().query() {
        Some(q) => alipay::form::decode(q.as_bytes()).map_err(|e| bad_request(&e.to_string()))?,
        None => Vec::new(),
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| bad_request(&e.to_string()))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| bad_request(&e.to_string()))?
        {
            let name = field.name().unwrap_or("").as_bytes().to_vec();
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| bad_request(&e.to_string()))?;
            // Files are not signed and not used by any API the sandbox serves.
            if !is_file {
                raw.push((name, data.to_vec()));
            }
        }
    } else {
        let body = axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES)
            .await
            .map_err(|_| {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
            })?;
        if !body.is_empty() {
            raw.extend(alipay::form::decode(&body).map_err(|e| bad_request(&e.to_string()))?);
        }
    }
    Ok(raw)
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("malformed request: {why}")).into_response()
}

/// Checks a request in Alipay's order and runs it.
pub async fn process(ctx: Arc<Ctx>, params: Params, charset: Charset) -> Response {
    let method = params.get("method").unwrap_or("").to_owned();
    let key = if method.is_empty() {
        "error".to_owned()
    } else {
        method.clone()
    };
    let Some(app_id) = params.get("app_id") else {
        return answer_unsigned(
            &key,
            &ApiError::missing("isv.missing-app-id", "缺少AppID参数"),
            charset,
        );
    };
    let Some(app) = ctx.app(app_id) else {
        return answer_unsigned(
            &key,
            &ApiError::invalid("isv.invalid-app-id", "无效的AppID参数"),
            charset,
        );
    };
    if let Err(e) = check_request(&app, &params, charset, &ctx) {
        return ctx.answer(&app, &key, Err(e), charset);
    }
    let fault = ctx.faults.gateway_fault(&app.app_id, &method);
    if let Some(delay) = fault.delay() {
        tokio::time::sleep(delay).await;
    }
    if matches!(fault, GatewayFault::UnknownBefore { .. }) {
        return ctx.answer(&app, &key, Err(fault.unknown_error()), charset);
    }
    if let GatewayFault::Refuse { sub_code } = &fault {
        let refusal = ApiError::business(sub_code, "refused by a fault rule");
        return ctx.answer(&app, &key, Err(refusal), charset);
    }
    if let GatewayFault::Answer { fields, .. } = &fault {
        return ctx.answer(&app, &key, Ok(fields.clone()), charset);
    }
    let biz = match parse_biz(&params) {
        Ok(b) => b,
        Err(e) => return ctx.answer(&app, &key, Err(e), charset),
    };
    let notify_url = params.get("notify_url").map(str::to_owned);
    let call = Call {
        app: &app,
        method: &method,
        biz,
        params: &params,
        notify_url,
        now: ctx.clock.now_ms(),
    };
    let result = api::dispatch(&ctx, &call);
    ctx.wake_notifier();
    match fault {
        GatewayFault::UnknownAfter { .. } => {
            ctx.answer(&app, &key, Err(fault.unknown_error()), charset)
        }
        GatewayFault::NoAnswer { ms } => {
            // The operation happened; the caller never hears about it.
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            (StatusCode::GATEWAY_TIMEOUT, "").into_response()
        }
        _ => ctx.answer(&app, &key, result, charset),
    }
}

fn check_request(app: &App, params: &Params, charset: Charset, ctx: &Ctx) -> Result<(), ApiError> {
    let Some(sign) = params.get("sign") else {
        return Err(ApiError::missing("isv.missing-signature", "缺少签名参数"));
    };
    let Some(sign_type) = params.get("sign_type") else {
        return Err(ApiError::missing(
            "isv.missing-signature-type",
            "缺少签名类型参数",
        ));
    };
    let sign_type: SignType = sign_type
        .parse()
        .map_err(|_| ApiError::invalid("isv.invalid-signature-type", "无效的签名类型参数"))?;
    match params.get("charset") {
        None => return Err(ApiError::missing("isv.missing-charset", "缺少字符集参数")),
        Some(c) if Charset::parse(c).is_none() => {
            return Err(ApiError::invalid("isv.invalid-charset", "字符集错误"));
        }
        _ => {}
    }
    // Codes: §1.8 and Alipay's common error list (`app-cert-not-exist` for an SN that names no
    // certificate of the app); observed answers use 40002 for the missing ones too.
    if let KeyMode::Certificate { app_cert_sn, .. } = &app.key_mode {
        match params.get("app_cert_sn") {
            None => {
                return Err(ApiError::invalid(
                    "isv.missing-app-cert-sn",
                    "缺少应用公钥证书序列号",
                ));
            }
            Some(sn) if sn != app_cert_sn => {
                return Err(ApiError::invalid(
                    "isv.app-cert-not-exist",
                    "应用公钥证书不存在",
                ));
            }
            _ => {}
        }
        match params.get("alipay_root_cert_sn") {
            None => {
                return Err(ApiError::invalid(
                    "isv.missing-alipay-root-cert-sn",
                    "缺少支付宝根证书序列号",
                ));
            }
            Some(sn) if !ctx.root_cert_sn_matches(sn) => {
                return Err(ApiError::invalid(
                    "isv.invalid-alipay-root-cert-sn",
                    "支付宝根证书序列号不匹配",
                ));
            }
            _ => {}
        }
    }
    let to_sign = string_to_sign(params.iter(), SignScope::Request);
    let bytes = charset
        .encode(&to_sign)
        .map_err(|_| ApiError::invalid("isv.invalid-charset", "字符集错误"))?;
    let key = ctx.app_key(app).ok_or_else(|| {
        ApiError::conditions(
            "isv.missing-signature-config",
            "应用未配置对应签名算法的公钥或者证书",
        )
    })?;
    if !key.verify(sign_type, &bytes, sign) {
        // Alipay prints the string it verified, which is what developers debug with.
        return Err(ApiError::invalid(
            "isv.invalid-signature",
            format!(
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{to_sign}"
            ),
        ));
    }
    let Some(ts) = params.get("timestamp") else {
        return Err(ApiError::missing("isv.missing-timestamp", "缺少时间戳参数"));
    };
    if alipay::time::parse_timestamp(ts).is_none() {
        return Err(ApiError::invalid(
            "isv.invalid-timestamp",
            "非法的时间戳参数",
        ));
    }
    if params.get("version").is_none() {
        return Err(ApiError::missing("isv.missing-version", "缺少版本参数"));
    }
    let Some(method) = params.get("method") else {
        return Err(ApiError::missing("isv.missing-method", "缺少方法名参数"));
    };
    if !api::is_known(method) {
        return Err(ApiError::invalid("isv.invalid-method", "不存在的方法名"));
    }
    Ok(())
}

fn parse_biz(params: &Params) -> Result<Map<String, Value>, ApiError> {
    match params.get("biz_content") {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ApiError::invalid(
                "isv.invalid-parameter",
                "biz_content不是合法的JSON对象",
            )),
        },
    }
}

/// Serialises a response object as Alipay does: compact, `/` escaped as `\/`.
pub fn alipay_json(value: &Value) -> String {
    serde_json::to_string(value)
        .unwrap_or_default()
        .replace('/', "\\/")
}

/// The envelope key of a method.
pub fn response_key(method: &str) -> String {
    alipay::envelope::response_key(method)
}

/// An unsigned error answer (the app is unknown, so nothing can be signed for it).
fn answer_unsigned(method: &str, err: &ApiError, charset: Charset) -> Response {
    let object = Value::Object(err.to_object());
    let key = if method == "error" {
        "error_response".to_owned()
    } else {
        response_key(method)
    };
    let body = format!("{{\"{key}\":{}}}", alipay_json(&object));
    raw_answer(body, charset)
}

/// Wraps signed or unsigned answer text into an HTTP response in `charset`.
pub fn raw_answer(body: String, charset: Charset) -> Response {
    let bytes = charset
        .encode(&body)
        .map(|b| b.into_owned())
        .unwrap_or_else(|_| body.into_bytes());
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("text/html;charset={}", charset.as_str()).parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    (StatusCode::OK, headers, Body::from(Bytes::from(bytes))).into_response()
}

/// Loads an app's registered public key.
pub fn parse_app_key(text: &str) -> Option<PublicKey> {
    PublicKey::from_text(KeyRole::AppPublicKey, text).ok()
}
