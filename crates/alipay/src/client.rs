//! The gateway client: builds and signs requests, sends them, verifies and classifies answers.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::cert::CertMode;
use crate::envelope;
use crate::form;
use crate::keys::{AppPrivateKey, PublicKey};
use crate::outcome::{AlipayError, Failure, Outcome, Unknown};
use crate::request::{ApiRequest, CallOptions};
use crate::retry::RetryPolicy;
use crate::sign::{Charset, SignScope, SignType, string_to_sign};

/// Alipay's production gateway.
pub const PRODUCTION_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
/// Alipay's own sandbox gateway.
pub const ALIPAY_SANDBOX_GATEWAY: &str = "https://openapi-sandbox.dl.alipaydev.com/gateway.do";
/// The user-authorisation page of Alipay's own sandbox.
pub const ALIPAY_SANDBOX_AUTHORIZE_URL: &str =
    "https://openauth-sandbox.dl.alipaydev.com/oauth2/publicAppAuthorize.htm";
/// Alipay's production user-authorisation page.
pub const PRODUCTION_AUTHORIZE_URL: &str =
    "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm";

/// Parameters the official SDKs send in the URL query; everything else goes in the body.
const QUERY_PARAMS: &[&str] = &[
    "app_id",
    "method",
    "format",
    "charset",
    "sign_type",
    "sign",
    "timestamp",
    "version",
    "notify_url",
    "return_url",
    "auth_token",
    "app_auth_token",
    "app_cert_sn",
    "alipay_root_cert_sn",
    "ws_service_url",
];

/// How responses are verified: with Alipay's public key, or with certificates.
#[derive(Debug)]
pub enum Verification {
    /// Public-key mode (密钥模式): one Alipay public key.
    PublicKey(PublicKey),
    /// Certificate mode (公钥证书模式).
    Certificates(CertMode),
}

/// A configuration problem found when building the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alipay client configuration: {0}")]
pub struct ConfigError(pub String);

/// Client settings other than keys.
#[derive(Debug, Clone)]
pub struct Config {
    /// The app id (`app_id`).
    pub app_id: String,
    /// Gateway URL: production, Alipay's sandbox, or any compatible gateway.
    pub gateway_url: String,
    /// The user-authorisation page URL (for [`Client::authorize_url`]).
    pub authorize_url: String,
    /// Charset of requests and answers.
    pub charset: Charset,
    /// Default `notify_url` for trade calls.
    pub notify_url: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries of read-only calls after an unknown outcome.
    pub retry: RetryPolicy,
}

impl Config {
    /// Settings for an app against production, with sensible timeouts.
    pub fn new(app_id: impl Into<String>) -> Self {
        Config {
            app_id: app_id.into(),
            gateway_url: PRODUCTION_GATEWAY.to_owned(),
            authorize_url: PRODUCTION_AUTHORIZE_URL.to_owned(),
            charset: Charset::Utf8,
            notify_url: None,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// A signed request, ready to send: query parameters and body parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Common parameters (sent in the URL query), including `sign`.
    pub query: Vec<(String, String)>,
    /// Business parameters (sent as the form body), normally only `biz_content`.
    pub body: Vec<(String, String)>,
}

impl SignedRequest {
    /// All parameters, query first.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .iter()
            .chain(self.body.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// An Alipay OpenAPI client. Cheap to clone; share one per app.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    key: AppPrivateKey,
    verification: Verification,
    http: reqwest::Client,
}

impl Client {
    /// Builds a client. Refuses an Alipay public key that is the app's own public key.
    pub fn new(
        config: Config,
        key: AppPrivateKey,
        verification: Verification,
    ) -> Result<Self, ConfigError> {
        if config.app_id.trim().is_empty() {
            return Err(ConfigError("app_id is empty".into()));
        }
        let url = reqwest::Url::parse(&config.gateway_url).map_err(|e| {
            ConfigError(format!(
                "gateway_url {:?} is not a URL: {e}",
                config.gateway_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError(format!(
                "gateway_url {:?} must be http or https",
                config.gateway_url
            )));
        }
        if let Verification::PublicKey(alipay_key) = &verification
            && alipay_key.same_key(&key.public_key())
        {
            return Err(ConfigError(
                "the Alipay public key given is the app's own public key; use the Alipay public key (支付宝公钥) shown in the console".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                key,
                verification,
                http,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Builds the common parameters, serialises `biz_content` and signs, at `timestamp`.
    /// Pure apart from the RSA signature: no clock, no I/O.
    pub fn sign_request<R: ApiRequest>(
        &self,
        request: &R,
        options: &CallOptions,
        timestamp: OffsetDateTime,
    ) -> Result<SignedRequest, Failure> {
        request.validate().map_err(Failure::NotSent)?;
        let biz_content = if R::HAS_BIZ_CONTENT {
            Some(
                serde_json::to_string(request)
                    .map_err(|e| Failure::NotSent(format!("biz_content: {e}")))?,
            )
        } else {
            None
        };
        let extra = request.top_level_params();
        self.sign_params(R::METHOD, biz_content, extra, options, timestamp)
    }

    fn sign_params(
        &self,
        method: &str,
        biz_content: Option<String>,
        extra: Vec<(&'static str, String)>,
        options: &CallOptions,
        timestamp: OffsetDateTime,
    ) -> Result<SignedRequest, Failure> {
        let cfg = &self.inner.config;
        let mut query: Vec<(String, String)> = vec![
            ("app_id".into(), cfg.app_id.clone()),
            ("method".into(), method.to_owned()),
            ("format".into(), "JSON".into()),
            ("charset".into(), cfg.charset.as_str().into()),
            ("sign_type".into(), SignType::Rsa2.as_str().into()),
            ("timestamp".into(), crate::time::format_timestamp(timestamp)),
            ("version".into(), "1.0".into()),
        ];
        let notify = options.notify_url.as_ref().or(cfg.notify_url.as_ref());
        let optional = [
            ("notify_url", notify),
            ("return_url", options.return_url.as_ref()),
            ("auth_token", options.auth_token.as_ref()),
            ("app_auth_token", options.app_auth_token.as_ref()),
        ];
        for (name, value) in optional {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                query.push((name.into(), v.clone()));
            }
        }
        if let Verification::Certificates(certs) = &self.inner.verification {
            query.push(("app_cert_sn".into(), certs.app_cert_sn().to_owned()));
            query.push((
                "alipay_root_cert_sn".into(),
                certs.root_cert_sn().to_owned(),
            ));
        }
        let mut body = Vec::new();
        for (name, value) in extra {
            if QUERY_PARAMS.contains(&name) {
                query.push((name.into(), value));
            } else {
                body.push((name.into(), value));
            }
        }
        if let Some(bc) = biz_content {
            body.push(("biz_content".into(), bc));
        }
        let to_sign = string_to_sign(
            query
                .iter()
                .chain(body.iter())
                .map(|(k, v)| (k.as_str(), v.as_str())),
            SignScope::Request,
        );
        let bytes = cfg
            .charset
            .encode(&to_sign)
            .map_err(|e| Failure::NotSent(format!("request text in {}: {e}", cfg.charset)))?;
        let sign = self.inner.key.sign(&bytes);
        query.push(("sign".into(), sign));
        Ok(SignedRequest { query, body })
    }

    /// The full signed parameter string of a request (`k=v&…`, URL-encoded), as the SDKs'
    /// `sdkExecute` returns for app-side calls (`orderStr` of `alipay.fund.auth.order.app.freeze`).
    pub fn sdk_execute<R: ApiRequest>(
        &self,
        request: &R,
        options: &CallOptions,
    ) -> Result<String, Failure> {
        let signed = self.sign_request(request, options, OffsetDateTime::now_utc())?;
        self.encode_pairs(signed.all())
    }

    /// A signed GET URL for page APIs (`alipay.user.agreement.page.sign`): the gateway URL with
    /// every parameter in the query.
    pub fn page_url<R: ApiRequest>(
        &self,
        request: &R,
        options: &CallOptions,
    ) -> Result<String, Failure> {
        let query = self.sdk_execute(request, options)?;
        Ok(format!("{}?{query}", self.inner.config.gateway_url))
    }

    /// The user-authorisation URL (§5.1): `scope` is `auth_base` or `auth_user`.
    pub fn authorize_url(&self, scope: &str, redirect_uri: &str, state: &str) -> String {
        let enc = |s: &str| form::encode_component(s.as_bytes());
        format!(
            "{}?app_id={}&scope={}&redirect_uri={}&state={}",
            self.inner.config.authorize_url,
            enc(&self.inner.config.app_id),
            enc(scope),
            enc(redirect_uri),
            enc(state)
        )
    }

    fn encode_pairs<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<String, Failure> {
        let charset = self.inner.config.charset;
        let mut out = String::new();
        for (k, v) in pairs {
            let v = charset
                .encode(v)
                .map_err(|e| Failure::NotSent(format!("{k}: {e}")))?;
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&form::encode_component(k.as_bytes()));
            out.push('=');
            out.push_str(&form::encode_component(&v));
        }
        Ok(out)
    }

    /// Calls one API and classifies the answer into success, failure or unknown.
    pub async fn execute<R: ApiRequest>(
        &self,
        request: &R,
        options: &CallOptions,
    ) -> Outcome<R::Response> {
        let span = tracing::info_span!(
            "alipay.call",
            method = R::METHOD,
            out_trade_no = request.out_trade_no().unwrap_or(""),
        );
        self.execute_inner(request, options).instrument(span).await
    }

    async fn execute_inner<R: ApiRequest>(
        &self,
        request: &R,
        options: &CallOptions,
    ) -> Outcome<R::Response> {
        let mut attempt = 0u32;
        loop {
            let signed = match self.sign_request(request, options, OffsetDateTime::now_utc()) {
                Ok(s) => s,
                Err(f) => return Outcome::Failure(f),
            };
            let outcome = match self.send(&signed).await {
                Ok(body) => self.process::<R::Response>(R::METHOD, &body).await,
                Err(unknown) => Outcome::Unknown(unknown),
            };
            if let Outcome::Unknown(unknown) = &outcome
                && let Some(delay) = self
                    .inner
                    .config
                    .retry
                    .delay(R::READ_ONLY, attempt, unknown)
            {
                tracing::debug!(attempt, ?delay, reason = %unknown, "retrying read-only call");
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
            match &outcome {
                Outcome::Success(_) => tracing::debug!("success"),
                Outcome::Failure(f) => tracing::info!(failure = %f, "definite failure"),
                Outcome::Unknown(u) => tracing::warn!(unknown = %u, "unknown result"),
            }
            return outcome;
        }
    }

    async fn send(&self, signed: &SignedRequest) -> Result<Vec<u8>, Unknown> {
        let cfg = &self.inner.config;
        let query = self
            .encode_pairs(signed.query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|f| Unknown::Malformed(f.to_string()))?;
        let body = self
            .encode_pairs(signed.body.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|f| Unknown::Malformed(f.to_string()))?;
        let url = format!("{}?{query}", cfg.gateway_url);
        let response = self
            .inner
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!(
                    "application/x-www-form-urlencoded;charset={}",
                    cfg.charset.as_str()
                ),
            )
            .body(body)
            .send()
            .await
            .map_err(classify_transport_error)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Unknown::HttpStatus(status));
        }
        let bytes = response.bytes().await.map_err(classify_transport_error)?;
        Ok(bytes.to_vec())
    }

    /// Verifies and classifies a raw gateway answer to `method`.
    pub async fn process<T: DeserializeOwned>(&self, method: &str, body: &[u8]) -> Outcome<T> {
        let charset = self.inner.config.charset;
        let env = match Envelope::parse(method, body, charset) {
            Ok(env) => env,
            Err(u) => return Outcome::Unknown(u),
        };
        let verified = match env.sign {
            None => false,
            Some(sign) => {
                let key = match self.key_for(env.cert_sn).await {
                    Ok(k) => k,
                    Err(u) => return Outcome::Unknown(u),
                };
                if !key.verify(SignType::Rsa2, env.raw, sign) {
                    tracing::warn!(method, "response signature did not verify");
                    return Outcome::Unknown(Unknown::BadSignature);
                }
                true
            }
        };
        interpret(env.raw, charset, verified)
    }

    async fn key_for(&self, cert_sn: Option<&str>) -> Result<PublicKey, Unknown> {
        match &self.inner.verification {
            Verification::PublicKey(k) => Ok(k.clone()),
            Verification::Certificates(certs) => {
                let Some(sn) = cert_sn else {
                    return certs.any_key().ok_or_else(|| {
                        Unknown::CertificateUnavailable("no Alipay certificate loaded".into())
                    });
                };
                if let Some(k) = certs.key_for(sn) {
                    return Ok(k);
                }
                self.download_alipay_cert(certs, sn).await
            }
        }
    }

    /// Fetches an Alipay certificate we do not know yet (`alipay.open.app.alipaycert.download`),
    /// checks it was issued by the root chain, and remembers it.
    async fn download_alipay_cert(&self, certs: &CertMode, sn: &str) -> Result<PublicKey, Unknown> {
        tracing::info!(
            alipay_cert_sn = sn,
            "downloading unknown Alipay certificate"
        );
        let method = "alipay.open.app.alipaycert.download";
        let biz = serde_json::json!({ "alipay_cert_sn": sn }).to_string();
        let signed = self
            .sign_params(
                method,
                Some(biz),
                Vec::new(),
                &CallOptions::default(),
                OffsetDateTime::now_utc(),
            )
            .map_err(|f| Unknown::CertificateUnavailable(f.to_string()))?;
        let body = self.send(&signed).await?;
        let charset = self.inner.config.charset;
        let env = Envelope::parse(method, &body, charset)?;
        let text = charset
            .decode(env.raw)
            .map_err(|e| Unknown::Malformed(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Unknown::Malformed(e.to_string()))?;
        let content = value
            .get("alipay_cert_content")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Unknown::CertificateUnavailable(format!(
                    "download answer without certificate: {value}"
                ))
            })?;
        use base64::Engine as _;
        let pem_bytes = base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| {
                Unknown::CertificateUnavailable(format!("certificate content is not base64: {e}"))
            })?;
        let pem = String::from_utf8(pem_bytes).map_err(|_| {
            Unknown::CertificateUnavailable("certificate content is not text".into())
        })?;
        let ders = crate::cert::pem_certificates(&pem)
            .map_err(|e| Unknown::CertificateUnavailable(e.0))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for der in &ders {
            crate::cert::verify_issued_by(der, certs.roots(), now)
                .map_err(|e| Unknown::CertificateUnavailable(e.0))?;
            certs
                .add_alipay_cert_der(der)
                .map_err(|e| Unknown::CertificateUnavailable(e.0))?;
        }
        // The download answer itself must verify with a certificate we now trust.
        let download_key = env.cert_sn.and_then(|s| certs.key_for(s)).ok_or_else(|| {
            Unknown::CertificateUnavailable(
                "download answer signed by an unknown certificate".into(),
            )
        })?;
        if !env
            .sign
            .is_some_and(|s| download_key.verify(SignType::Rsa2, env.raw, s))
        {
            return Err(Unknown::BadSignature);
        }
        certs.key_for(sn).ok_or_else(|| {
            Unknown::CertificateUnavailable(format!("downloaded certificate is not {sn}"))
        })
    }
}

/// The parts of a gateway answer: the raw response object and its signature.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Raw bytes of `<method>_response` (or `error_response`).
    pub raw: &'a [u8],
    /// The `sign` member, if any.
    pub sign: Option<&'a str>,
    /// The `alipay_cert_sn` member (certificate mode), if any.
    pub cert_sn: Option<&'a str>,
    /// True when the answer used `error_response`.
    pub is_error_response: bool,
}

impl<'a> Envelope<'a> {
    /// Splits an answer to `method`; `<method>_response` first, then `error_response`.
    pub fn parse(method: &str, body: &'a [u8], charset: Charset) -> Result<Self, Unknown> {
        let members =
            envelope::members(body, charset).map_err(|e| Unknown::Malformed(e.to_string()))?;
        let key = envelope::response_key(method);
        let (raw, is_error_response) = match envelope::find(&members, &key) {
            Some(raw) => (raw, false),
            None => match envelope::find(&members, "error_response") {
                Some(raw) => (raw, true),
                None => {
                    return Err(Unknown::Malformed(format!(
                        "answer has neither `{key}` nor `error_response`"
                    )));
                }
            },
        };
        Ok(Envelope {
            raw,
            sign: envelope::find_str(&members, "sign"),
            cert_sn: envelope::find_str(&members, "alipay_cert_sn"),
            is_error_response,
        })
    }
}

/// Classifies a (verified or unsigned) response object.
pub fn interpret<T: DeserializeOwned>(raw: &[u8], charset: Charset, verified: bool) -> Outcome<T> {
    let text = match charset.decode(raw) {
        Ok(t) => t,
        Err(e) => return Outcome::Unknown(Unknown::Malformed(e.to_string())),
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Outcome::Unknown(Unknown::Malformed(e.to_string())),
    };
    let code = value.get("code").and_then(|c| c.as_str()).unwrap_or("");
    if code == "10000" {
        if !verified {
            return Outcome::Unknown(Unknown::UnsignedSuccess);
        }
        return match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(body) => Outcome::Success(body),
            Err(e) => Outcome::Unknown(Unknown::Malformed(format!(
                "at `{}`: {}",
                e.path(),
                e.inner()
            ))),
        };
    }
    if code == "10003" {
        let trade_no = value
            .get("trade_no")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        return Outcome::Unknown(Unknown::InProcess { trade_no });
    }
    let error: AlipayError = match serde_json::from_value(value) {
        Ok(e) => e,
        Err(e) => return Outcome::Unknown(Unknown::Malformed(format!("error answer: {e}"))),
    };
    if error.code.is_empty() {
        return Outcome::Unknown(Unknown::Malformed("answer has no `code`".into()));
    }
    if error.is_unknown_result() {
        return Outcome::Unknown(Unknown::Gateway(error));
    }
    Outcome::Failure(Failure::Alipay(error))
}

fn classify_transport_error(e: reqwest::Error) -> Unknown {
    // The URL carries the common parameters, a user's `auth_token` among them: never in errors.
    let e = e.without_url();
    if e.is_timeout() {
        Unknown::Timeout
    } else {
        // Connection refused, reset, TLS or body errors: the request may have been received.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Unknown::Connection(msg)
    }
}
