//! The H5 pages' settings: `[h5]` (the key material of sessions, OAuth `state` and phone
//! storage) and `[sms]` (which carrier sends the codes, and the abuse limits).

use serde::Deserialize;

use crate::config::Secret;

/// `[h5]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct H5Settings {
    /// Master secret (≥ 32 characters) from which the state-signing, phone-index and
    /// phone-sealing keys are derived. Every instance of one deployment needs the same one.
    /// Absent: made once and kept in the data folder (`h5_secret`).
    pub secret: Option<Secret>,
}

/// Which SMS carrier sends the codes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmsProviderKind {
    /// Nothing is sent: the code goes to the log, the console and `sms-outbox.log` in the
    /// data folder (the embedded demo's default).
    #[default]
    Log,
    /// Alibaba Cloud SMS (`SendSms`).
    Aliyun,
}

/// `[sms]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SmsSettings {
    /// `log` or `aliyun`. Absent: `log` with the embedded sandbox; with real Alipay it must
    /// be chosen ([`SmsSettings::provider`]).
    pub provider: Option<SmsProviderKind>,
    /// Alibaba Cloud AccessKey id.
    pub access_key_id: Option<String>,
    /// Alibaba Cloud AccessKey secret.
    pub access_key_secret: Option<Secret>,
    /// The approved SMS signature (签名名称).
    pub sign_name: Option<String>,
    /// The approved template (模板CODE) with a `${code}` variable.
    pub template_code: Option<String>,
    /// The SMS endpoint.
    pub endpoint: String,
    /// Seconds between two codes to one phone (60; lower only for tests and demos).
    pub resend_secs: u32,
    /// Codes sent to one phone in 24 hours, at most.
    pub daily_per_phone: u32,
    /// Codes requested from one IP address in 24 hours, at most.
    pub daily_per_ip: u32,
}

impl Default for SmsSettings {
    fn default() -> Self {
        SmsSettings {
            provider: None,
            access_key_id: None,
            access_key_secret: None,
            sign_name: None,
            template_code: None,
            endpoint: "https://dysmsapi.aliyuncs.com/".into(),
            resend_secs: 60,
            daily_per_phone: 10,
            daily_per_ip: 30,
        }
    }
}

impl SmsSettings {
    /// The provider in use: the one chosen, or `log`.
    pub fn provider(&self) -> SmsProviderKind {
        self.provider.unwrap_or_default()
    }

    /// Checks the settings; the error names the setting and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=3600).contains(&self.resend_secs) {
            return Err(("sms.resend_secs", "must be 1 to 3600".into()));
        }
        if self.daily_per_phone == 0 {
            return Err(("sms.daily_per_phone", "must be at least 1".into()));
        }
        if self.daily_per_ip == 0 {
            return Err(("sms.daily_per_ip", "must be at least 1".into()));
        }
        if self.provider() == SmsProviderKind::Aliyun {
            let missing = |v: Option<&str>| v.is_none_or(|s| s.trim().is_empty());
            if missing(self.access_key_id.as_deref()) {
                return Err((
                    "sms.access_key_id",
                    "is required with provider \"aliyun\"".into(),
                ));
            }
            if missing(self.access_key_secret.as_ref().map(Secret::expose)) {
                return Err((
                    "sms.access_key_secret",
                    "is required with provider \"aliyun\"".into(),
                ));
            }
            if missing(self.sign_name.as_deref()) {
                return Err((
                    "sms.sign_name",
                    "is required with provider \"aliyun\"".into(),
                ));
            }
            if missing(self.template_code.as_deref()) {
                return Err((
                    "sms.template_code",
                    "is required with provider \"aliyun\"".into(),
                ));
            }
            if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
                return Err(("sms.endpoint", "must be an http(s) URL".into()));
            }
        }
        Ok(())
    }
}

impl H5Settings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(s) = &self.secret
            && s.expose().len() < 32
        {
            return Err(("h5.secret", "must be at least 32 characters".into()));
        }
        Ok(())
    }
}
