//! User authorisation (免登): exchange an `auth_code` for a token, read the user's profile
//! (§5). The authorisation page URL itself is [`crate::Client::authorize_url`].

use serde::{Deserialize, Serialize};

use super::wire;
use crate::request::ApiRequest;
use crate::types::UserRef;

/// The grant of an [`OauthToken`] call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OauthGrant {
    /// `grant_type=authorization_code` with `code` (the callback's `auth_code`).
    AuthorizationCode(String),
    /// `grant_type=refresh_token` with `refresh_token`.
    RefreshToken(String),
}

/// `alipay.system.oauth.token`: no `biz_content`; `grant_type` and `code`/`refresh_token` are
/// top-level parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OauthToken {
    /// What to exchange.
    pub grant: OauthGrant,
}

impl OauthToken {
    /// Exchange a callback `auth_code`.
    pub fn authorization_code(code: impl Into<String>) -> Self {
        OauthToken {
            grant: OauthGrant::AuthorizationCode(code.into()),
        }
    }

    /// Refresh a token.
    pub fn refresh_token(token: impl Into<String>) -> Self {
        OauthToken {
            grant: OauthGrant::RefreshToken(token.into()),
        }
    }
}

impl ApiRequest for OauthToken {
    const METHOD: &'static str = "alipay.system.oauth.token";
    type Response = OauthTokenResponse;
    const HAS_BIZ_CONTENT: bool = false;
    fn top_level_params(&self) -> Vec<(&'static str, String)> {
        match &self.grant {
            OauthGrant::AuthorizationCode(code) => vec![
                ("grant_type", "authorization_code".into()),
                ("code", code.clone()),
            ],
            OauthGrant::RefreshToken(token) => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", token.clone()),
            ],
        }
    }
    fn validate(&self) -> Result<(), String> {
        let (field, value) = match &self.grant {
            OauthGrant::AuthorizationCode(c) => ("code", c),
            OauthGrant::RefreshToken(t) => ("refresh_token", t),
        };
        if value.is_empty() || value.len() > 128 || value.contains(['&', '=', ' ']) {
            return Err(format!(
                "{field} must be the token text from Alipay (1 to 128 characters)"
            ));
        }
        Ok(())
    }
}

/// Answer to `alipay.system.oauth.token`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OauthTokenResponse {
    /// User id (`2088…`), for user_id apps.
    pub user_id: Option<String>,
    /// Open id, for open_id apps.
    pub open_id: Option<String>,
    /// Access token, for `alipay.user.info.share` (`auth_token`).
    pub access_token: String,
    /// Access token lifetime in seconds (sent as a number or a string).
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub expires_in: Option<i64>,
    /// Refresh token.
    pub refresh_token: Option<String>,
    /// Refresh token lifetime in seconds.
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub re_expires_in: Option<i64>,
    /// Authorisation start time.
    pub auth_start: Option<String>,
    /// Union id (app groups).
    pub union_id: Option<String>,
    /// `permanent` for never-expiring tokens.
    pub auth_token_type: Option<String>,
    /// Deprecated user id.
    pub alipay_user_id: Option<String>,
}

impl OauthTokenResponse {
    /// The user, by user id or open_id.
    pub fn user(&self) -> Option<UserRef> {
        UserRef::from_pair(self.user_id.as_deref(), self.open_id.as_deref())
    }
}

/// `alipay.user.info.share`: the profile of the user whose token is passed with
/// [`crate::CallOptions::with_user_token`] (an `auth_user` token; `auth_base` gets `20001`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserInfoShare;

impl ApiRequest for UserInfoShare {
    const METHOD: &'static str = "alipay.user.info.share";
    type Response = UserInfoShareResponse;
    const READ_ONLY: bool = true;
    const HAS_BIZ_CONTENT: bool = false;
}

/// Answer to `alipay.user.info.share`. Every field is optional: what comes back depends on the
/// app's approvals and the user's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserInfoShareResponse {
    /// User id.
    pub user_id: Option<String>,
    /// Open id.
    pub open_id: Option<String>,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// Nickname.
    pub nick_name: Option<String>,
    /// `F` or `M`.
    pub gender: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Country code.
    pub country_code: Option<String>,
    /// Mobile number.
    pub mobile: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Real name.
    pub user_name: Option<String>,
    /// `T`/`F`.
    pub is_certified: Option<String>,
    /// `1` company, `2` person.
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub user_type: Option<String>,
    /// `Q`, `T`, `B`, `W`.
    pub user_status: Option<String>,
    /// `T`/`F`.
    pub is_blocked: Option<String>,
    /// Age (a number or a string).
    #[serde(default, deserialize_with = "wire::opt_text")]
    pub age: Option<String>,
}

impl UserInfoShareResponse {
    /// The user, by user id or open_id.
    pub fn user(&self) -> Option<UserRef> {
        UserRef::from_pair(self.user_id.as_deref(), self.open_id.as_deref())
    }
}
