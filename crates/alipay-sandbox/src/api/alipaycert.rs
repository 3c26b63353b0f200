//! `alipay.open.app.alipaycert.download`: a certificate-mode client fetches an Alipay
//! certificate it does not know yet (an answer carried a new `alipay_cert_sn`).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::Call;
use super::fields::req_str;
use crate::Ctx;
use crate::error::{ApiError, ApiResult};

/// Answers `alipay_cert_content`: the base64 of the certificate's PEM text.
pub fn download(ctx: &Ctx, call: &Call<'_>) -> ApiResult {
    let sn = req_str(&call.biz, "alipay_cert_sn")?;
    // Alipay's common error list names this case `alipay-cert-not-exist`.
    let cert = ctx
        .ca
        .alipay_cert(sn)
        .ok_or_else(|| ApiError::invalid("isv.alipay-cert-not-exist", "支付宝公钥证书不存在"))?;
    let mut out = Map::new();
    out.insert(
        "alipay_cert_content".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(cert.pem.as_bytes())),
    );
    Ok(out)
}
