//! Sending SMS codes: the [`SmsProvider`] trait and its two adapters.
//!
//! - [`LogSms`] sends nothing: the code goes to the log, the console and an outbox file in the
//!   data folder, so the embedded demo (and the tests) work offline.
//! - [`AliyunSms`] calls Alibaba Cloud SMS `SendSms` (RPC style, API version 2017-05-25) over
//!   HTTPS, signed with HMAC-SHA1 as Alibaba Cloud's RPC signature document describes
//!   ([`rpc_signature`], tested against its worked example).

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;

use super::phone::Phone;
use super::settings::SmsSettings;
use crate::config::Secret;

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The carrier refused (its code and message).
    #[error("the SMS carrier refused: {0}")]
    Refused(String),
    /// The carrier could not be reached or answered nonsense.
    #[error("the SMS carrier is unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so providers can be used as trait objects.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SmsError>> + Send + 'a>>;

/// Sends a verification code to a phone.
pub trait SmsProvider: Send + Sync + std::fmt::Debug {
    /// Sends `code` to `phone`.
    fn send_code<'a>(&'a self, phone: &'a Phone, code: &'a str) -> SendFuture<'a>;
}

/// The offline adapter: writes the code where the operator (or a test) can read it.
#[derive(Debug)]
pub struct LogSms {
    outbox: PathBuf,
}

impl LogSms {
    /// Writes to `outbox` (appending) besides the log and the console.
    pub fn new(outbox: PathBuf) -> LogSms {
        LogSms { outbox }
    }
}

impl SmsProvider for LogSms {
    fn send_code<'a>(&'a self, phone: &'a Phone, code: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            // The demo carrier: the code is meant to be read here; the number stays masked.
            tracing::info!(phone = %phone, code, "SMS code (log provider, not sent)");
            println!("SMS to {phone}: verification code {code}");
            let line = format!("{} {code}\n", phone.masked());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.outbox)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| {
                    SmsError::Unavailable(format!("outbox {}: {e}", self.outbox.display()))
                })
        })
    }
}

/// Alibaba Cloud SMS.
#[derive(Debug)]
pub struct AliyunSms {
    endpoint: String,
    access_key_id: String,
    access_key_secret: Secret,
    sign_name: String,
    template_code: String,
    http: reqwest::Client,
}

impl AliyunSms {
    /// From `[sms]` (already validated).
    pub fn from_settings(s: &SmsSettings) -> anyhow::Result<AliyunSms> {
        let need = |v: Option<&str>, name: &str| {
            v.map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("setting `sms.{name}` is required"))
        };
        Ok(AliyunSms {
            endpoint: s.endpoint.clone(),
            access_key_id: need(s.access_key_id.as_deref(), "access_key_id")?,
            access_key_secret: s
                .access_key_secret
                .clone()
                .ok_or_else(|| anyhow::anyhow!("setting `sms.access_key_secret` is required"))?,
            sign_name: need(s.sign_name.as_deref(), "sign_name")?,
            template_code: need(s.template_code.as_deref(), "template_code")?,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// The signed query of a `SendSms` call.
    fn signed_params(
        &self,
        phone: &Phone,
        code: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = [
            ("AccessKeyId", self.access_key_id.as_str()),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("PhoneNumbers", phone.digits()),
            ("RegionId", "cn-hangzhou"),
            ("SignName", self.sign_name.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", self.template_code.as_str()),
            ("Timestamp", timestamp),
            ("Version", "2017-05-25"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        params.push((
            "TemplateParam".into(),
            serde_json::json!({ "code": code }).to_string(),
        ));
        let signature = rpc_signature("GET", &params, self.access_key_secret.expose());
        params.push(("Signature".into(), signature));
        params
    }
}

impl SmsProvider for AliyunSms {
    fn send_code<'a>(&'a self, phone: &'a Phone, code: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let timestamp = time::OffsetDateTime::now_utc()
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
                ))
                .map_err(|e| SmsError::Unavailable(e.to_string()))?;
            let nonce = crate::ids::random_hex(32);
            let params = self.signed_params(phone, code, &timestamp, &nonce);
            let query = canonical_query(&params);
            let sep = if self.endpoint.contains('?') {
                '&'
            } else {
                '?'
            };
            let url = format!("{}{sep}{query}", self.endpoint);
            let answer = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| SmsError::Unavailable(e.without_url().to_string()))?;
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.map_err(|e| {
                SmsError::Unavailable(format!("HTTP {status}: {}", e.without_url()))
            })?;
            match body.get("Code").and_then(serde_json::Value::as_str) {
                Some("OK") => Ok(()),
                Some(code) => Err(SmsError::Refused(format!(
                    "{code}: {}",
                    body.get("Message")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                ))),
                None => Err(SmsError::Unavailable(format!(
                    "HTTP {status} without a Code"
                ))),
            }
        })
    }
}

/// Alibaba Cloud's percent-encoding: RFC 3986 unreserved characters stay, everything else is
/// `%XX` of its UTF-8 bytes (so a space is `%20`, `*` is `%2A`, `~` stays).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parameters sorted by name and encoded: `k=v&k=v`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The RPC signature: Base64(HMAC-SHA1(secret + "&", METHOD & %2F & encode(canonical query))),
/// over every parameter except `Signature`.
pub fn rpc_signature(method: &str, params: &[(String, String)], secret: &str) -> String {
    let unsigned: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    let string_to_sign = format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(&unsigned))
    );
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD
        .encode(hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The worked example of Alibaba Cloud's RPC signature document (ECS `DescribeRegions`,
    /// AccessKey `testid` / `testsecret`): its string-to-sign and its signature.
    #[test]
    fn the_signature_matches_alibaba_clouds_worked_example() {
        let params = pairs(&[
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ]);
        assert_eq!(
            format!("GET&%2F&{}", percent_encode(&canonical_query(&params))),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(
            rpc_signature("GET", &params, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn percent_encoding_follows_alibaba_clouds_rules() {
        assert_eq!(percent_encode("a b*c~d+e/"), "a%20b%2Ac~d%2Be%2F");
        assert_eq!(percent_encode("签名"), "%E7%AD%BE%E5%90%8D");
    }

    #[test]
    fn a_send_sms_request_carries_every_parameter_and_a_signature_over_them() {
        let s = AliyunSms::from_settings(&SmsSettings {
            provider: Some(super::super::settings::SmsProviderKind::Aliyun),
            access_key_id: Some("testid".into()),
            access_key_secret: Some("testsecret".into()),
            sign_name: Some("阿里云".into()),
            template_code: Some("SMS_1000000".into()),
            ..SmsSettings::default()
        })
        .unwrap();
        let phone = Phone::parse("13800000000").unwrap();
        let params = s.signed_params(&phone, "123456", "2024-01-01T00:00:00Z", "n1");
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("Action"), "SendSms");
        assert_eq!(get("PhoneNumbers"), "13800000000");
        assert_eq!(get("TemplateParam"), "{\"code\":\"123456\"}");
        assert_eq!(
            get("Signature"),
            rpc_signature("GET", &params, "testsecret")
        );
        assert!(!format!("{s:?}").contains("testsecret"));
    }
}
