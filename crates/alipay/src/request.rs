//! What a typed API call is: a method name, a `biz_content` body and a response type.
//!
//! Adding an API is a request struct, a response struct and one `impl ApiRequest`; the
//! signing, transport and verification plumbing is shared.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed request to one gateway method.
pub trait ApiRequest: Serialize {
    /// The `method` parameter, e.g. `alipay.trade.precreate`.
    const METHOD: &'static str;
    /// The typed success body.
    type Response: DeserializeOwned;
    /// True for calls without side effects, which may be retried after an unknown outcome.
    const READ_ONLY: bool = false;
    /// False for methods that take no `biz_content` (`alipay.system.oauth.token`,
    /// `alipay.user.info.share`).
    const HAS_BIZ_CONTENT: bool = true;

    /// Parameters sent at the top level beside the common ones (e.g. `grant_type`, `code`).
    fn top_level_params(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The merchant order number this call concerns, for tracing spans.
    fn out_trade_no(&self) -> Option<&str> {
        None
    }

    /// Checks fields before anything is sent; an error here becomes `Failure::NotSent`.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Per-call options: acting for a merchant, user tokens, notification target.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// `app_auth_token`: act for a merchant who authorised this app (ISV mode).
    pub app_auth_token: Option<String>,
    /// `auth_token`: the user's access token (`alipay.user.info.share`).
    pub auth_token: Option<String>,
    /// `notify_url` for this call (overrides the client default).
    pub notify_url: Option<String>,
    /// `return_url` (page APIs).
    pub return_url: Option<String>,
}

impl CallOptions {
    /// Options acting for a merchant (`app_auth_token`).
    pub fn for_merchant(app_auth_token: impl Into<String>) -> Self {
        CallOptions {
            app_auth_token: Some(app_auth_token.into()),
            ..Default::default()
        }
    }

    /// Options carrying a user token (`auth_token`).
    pub fn with_user_token(auth_token: impl Into<String>) -> Self {
        CallOptions {
            auth_token: Some(auth_token.into()),
            ..Default::default()
        }
    }

    /// Sets the notification URL.
    pub fn notify_url(mut self, url: impl Into<String>) -> Self {
        self.notify_url = Some(url.into());
        self
    }
}
