//! Typed, layered settings: built-in defaults, then a TOML file, then `OPENVEND_*` variables.
//!
//! With no file and no variables, everything is embedded: SQLite in `./openvend-data/`, the
//! in-process MQTT broker, and the Alipay sandbox standing in for Alipay. Giving real Alipay
//! credentials (`alipay.app_id` + key files + gateway) switches the sandbox off. Secrets are
//! kept in [`Secret`], whose `Debug` never shows them. Bad settings stop start-up with a
//! message naming the setting.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A value that must not be printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text. Call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// All settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Folder for the embedded defaults (SQLite file, sandbox state, keys).
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: String,
    /// The public base URL (for `notify_url`, QR pages); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// `sqlite://…` or `postgres://…`; defaults to SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// MQTT settings.
    pub mqtt: MqttSettings,
    /// Alipay settings; absent = the embedded sandbox.
    pub alipay: Option<AlipaySettings>,
    /// Token for the operator API.
    pub api_token: Option<Secret>,
    /// Listen address of the embedded Alipay sandbox (used only without real Alipay settings).
    pub sandbox_listen: String,
    /// How the embedded sandbox names users to OpenVend's app: `user_id` or `open_id`.
    pub sandbox_id_mode: alipay_sandbox::model::IdMode,
    /// The buyer's H5 pages.
    pub h5: crate::h5::settings::H5Settings,
    /// The SMS carrier of the phone check.
    pub sms: crate::h5::settings::SmsSettings,
    /// How the server treats machines.
    pub device: DeviceSettings,
    /// Where what needs a person is pushed.
    pub alerts: AlertSettings,
    /// Job workers in this instance (payment resolution, dispensing, refunds, device events).
    pub job_workers: usize,
    /// Threads of the server's async runtime. One by default, a current-thread runtime: a sale
    /// costs about a fifth less CPU on one thread than on two, because no task wakes another
    /// on a second CPU, and one thread carries hundreds of orders a second
    /// (docs/performance.md). Raise it on a machine with many cores serving other load.
    pub worker_threads: usize,
}

/// Timings of the device channel.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    /// How long a command waits for its machine's ack. A paid order whose machine does not
    /// acknowledge the dispense in this time (offline, powered off) is refunded in full.
    pub command_ttl_secs: u64,
    /// A machine without a heartbeat for this long is offline: new sales are refused.
    pub offline_after_secs: u64,
    /// How long an acknowledged dispense may take to report its result before the order is
    /// handed to a person (never refunded or completed by guessing). Longer than a
    /// 10-minute network outage, so a result a machine held through one still completes
    /// its order.
    pub result_wait_secs: u64,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            command_ttl_secs: 60,
            offline_after_secs: 90,
            result_wait_secs: 900,
        }
    }
}

/// The alert webhook: each new entry of the attention list (`GET /api/v1/attention`: disputes,
/// refused refunds, stuck orders, machine faults, units of unknown outcome, late vends) is
/// POSTed once, as signed JSON, to a URL the deployment names (a chat bot's hook, a pager).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// `https://…` (or `http://…`) that receives the alerts; absent or empty = the attention
    /// list only. Kept like a secret: a chat bot's hook carries its token in the URL.
    pub webhook_url: Option<Secret>,
    /// The HMAC key of the `X-OpenVend-Signature` header, at least 16 characters; required
    /// with `webhook_url`.
    pub webhook_secret: Option<Secret>,
    /// How often the lists are looked at for new entries.
    pub interval_secs: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook_url: None,
            webhook_secret: None,
            interval_secs: 30,
        }
    }
}

impl AlertSettings {
    /// The webhook's URL and secret when both are set; an empty value counts as unset.
    pub fn webhook(&self) -> Option<(&Secret, &Secret)> {
        self.url().zip(self.secret())
    }

    fn url(&self) -> Option<&Secret> {
        self.webhook_url.as_ref().filter(|u| !u.expose().is_empty())
    }

    fn secret(&self) -> Option<&Secret> {
        self.webhook_secret
            .as_ref()
            .filter(|s| !s.expose().is_empty())
    }

    fn validate(&self) -> Result<(), SettingError> {
        if !(5..=3600).contains(&self.interval_secs) {
            return Err(err("alerts.interval_secs", "must be 5 to 3600 seconds"));
        }
        match (self.url(), self.secret()) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(err(
                "alerts.webhook_secret",
                "is set without alerts.webhook_url",
            )),
            (Some(_), None) => Err(err(
                "alerts.webhook_secret",
                "is required with alerts.webhook_url (receivers check each alert with it)",
            )),
            (Some(url), Some(secret)) => {
                // The URL itself is not repeated: it may carry a token.
                let parsed = reqwest::Url::parse(url.expose())
                    .map_err(|e| err("alerts.webhook_url", format!("is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
                    return Err(err(
                        "alerts.webhook_url",
                        "is not an http(s) URL with a host",
                    ));
                }
                if secret.expose().chars().count() < 16 {
                    return Err(err(
                        "alerts.webhook_secret",
                        "must be at least 16 characters",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Device channel settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// `mqtt://host:port` of an external broker; absent = the embedded broker.
    pub url: Option<String>,
    /// Listen address of the embedded broker (not 1883, which an installed broker may hold).
    pub embedded_listen: String,
    /// Username for the external broker.
    pub username: Option<String>,
    /// Password for the external broker.
    pub password: Option<Secret>,
    /// The server's client id at the external broker. The broker keeps its session (the
    /// events it has not acknowledged) under this id, so it stays the same across restarts
    /// and differs between deployments sharing a broker.
    pub client_id: String,
    /// `mqtt://host:port` machines connect to, as the operator API hands it out. Unset: the
    /// external broker's `url`, or the embedded broker's listen address (required when that
    /// listens on every address, which is no address a machine can use).
    pub public_url: Option<String>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            url: None,
            embedded_listen: "127.0.0.1:18830".into(),
            username: None,
            password: None,
            client_id: "openvend-server".into(),
            public_url: None,
        }
    }
}

impl MqttSettings {
    /// The URL machines are told to connect to: `public_url`, the external broker's, or the
    /// embedded broker's at `listen` (its real port, when asked for port 0). `None` when the
    /// embedded broker listens on every address and no `public_url` names one.
    pub fn machine_url(&self, listen: std::net::SocketAddr) -> Option<String> {
        if let Some(url) = self.public_url.as_ref().or(self.url.as_ref()) {
            return Some(url.clone());
        }
        if listen.ip().is_unspecified() {
            return None;
        }
        // `SocketAddr` writes an IPv6 address in brackets, as a URL needs.
        Some(format!("mqtt://{listen}"))
    }
}

/// A real Alipay app.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlipaySettings {
    /// The app id.
    pub app_id: String,
    /// File with the app private key (PEM or bare base64, PKCS#1 or PKCS#8).
    pub private_key_file: PathBuf,
    /// File with Alipay's public key.
    pub alipay_public_key_file: PathBuf,
    /// Gateway URL (production by default).
    #[serde(default = "default_gateway")]
    pub gateway_url: String,
    /// The user-authorisation page the H5 sign-in sends buyers to. Unset: Alipay's own
    /// sandbox page when `gateway_url` is Alipay's sandbox gateway, else production's.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// The operator's seller PID (collection restriction `seller_id`).
    pub seller_id: String,
}

/// `mqtt://host:port` (or `tcp://`) with a host and a port number.
fn valid_mqtt_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    else {
        return false;
    };
    rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

fn default_gateway() -> String {
    alipay::client::PRODUCTION_GATEWAY.to_owned()
}

impl AlipaySettings {
    /// Where buyers authorise the app: the setting, else the page that goes with the gateway
    /// (a sandbox app is unknown to production's page).
    pub fn authorize_url(&self) -> &str {
        match &self.authorize_url {
            Some(url) => url,
            None if self.gateway_url == alipay::client::ALIPAY_SANDBOX_GATEWAY => {
                alipay::client::ALIPAY_SANDBOX_AUTHORIZE_URL
            }
            None => alipay::client::PRODUCTION_AUTHORIZE_URL,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./openvend-data"),
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: None,
            mqtt: MqttSettings::default(),
            alipay: None,
            api_token: None,
            sandbox_listen: "127.0.0.1:8081".into(),
            device: DeviceSettings::default(),
            alerts: AlertSettings::default(),
            job_workers: 16,
            worker_threads: 1,
            sandbox_id_mode: Default::default(),
            h5: Default::default(),
            sms: Default::default(),
        }
    }
}

/// A setting that is wrong, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `{setting}`: {problem}")]
pub struct SettingError {
    /// The setting's name as written in the file (dotted) or the variable.
    pub setting: String,
    /// What is wrong.
    pub problem: String,
}

fn err(setting: &str, problem: impl Into<String>) -> SettingError {
    SettingError {
        setting: setting.to_owned(),
        problem: problem.into(),
    }
}

impl Settings {
    /// Defaults, then the TOML file (if any), then the given environment variables.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingError> {
        let mut s = match file {
            None => Settings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text)
                    .map_err(|e| err("--config", format!("{}: {e}", path.display())))?
            }
        };
        for (key, value) in env {
            s.apply_env(&key, value)?;
        }
        s.validate()?;
        Ok(s)
    }

    fn apply_env(&mut self, key: &str, value: String) -> Result<(), SettingError> {
        let Some(name) = key.strip_prefix("OPENVEND_") else {
            return Ok(());
        };
        match name {
            "DATA_DIR" => self.data_dir = PathBuf::from(value),
            "LISTEN" => self.listen = value,
            "PUBLIC_URL" => self.public_url = Some(value),
            "DATABASE_URL" => self.database_url = Some(Secret(value)),
            "MQTT_URL" => self.mqtt.url = Some(value),
            "MQTT_EMBEDDED_LISTEN" => self.mqtt.embedded_listen = value,
            "MQTT_USERNAME" => self.mqtt.username = Some(value),
            "MQTT_PASSWORD" => self.mqtt.password = Some(Secret(value)),
            "MQTT_CLIENT_ID" => self.mqtt.client_id = value,
            "MQTT_PUBLIC_URL" => self.mqtt.public_url = Some(value),
            "API_TOKEN" => self.api_token = Some(Secret(value)),
            "SANDBOX_LISTEN" => self.sandbox_listen = value,
            "JOB_WORKERS" => self.job_workers = parse_number(key, &value)?,
            "WORKER_THREADS" => self.worker_threads = parse_number(key, &value)?,
            "DEVICE_COMMAND_TTL_SECS" => self.device.command_ttl_secs = parse_number(key, &value)?,
            "DEVICE_OFFLINE_AFTER_SECS" => {
                self.device.offline_after_secs = parse_number(key, &value)?
            }
            "DEVICE_RESULT_WAIT_SECS" => self.device.result_wait_secs = parse_number(key, &value)?,
            "SANDBOX_ID_MODE" => {
                self.sandbox_id_mode = match value.as_str() {
                    "user_id" => alipay_sandbox::model::IdMode::UserId,
                    "open_id" => alipay_sandbox::model::IdMode::OpenId,
                    _ => return Err(err(key, "must be user_id or open_id")),
                }
            }
            "ALERTS_WEBHOOK_URL" => self.alerts.webhook_url = Some(Secret(value)),
            "ALERTS_WEBHOOK_SECRET" => self.alerts.webhook_secret = Some(Secret(value)),
            "ALERTS_INTERVAL_SECS" => self.alerts.interval_secs = parse_number(key, &value)?,
            "H5_SECRET" => self.h5.secret = Some(Secret(value)),
            "SMS_PROVIDER" => {
                self.sms.provider = Some(match value.as_str() {
                    "log" => crate::h5::settings::SmsProviderKind::Log,
                    "aliyun" => crate::h5::settings::SmsProviderKind::Aliyun,
                    _ => return Err(err(key, "must be log or aliyun")),
                })
            }
            "SMS_ACCESS_KEY_ID" => self.sms.access_key_id = Some(value),
            "SMS_ACCESS_KEY_SECRET" => self.sms.access_key_secret = Some(Secret(value)),
            "SMS_SIGN_NAME" => self.sms.sign_name = Some(value),
            "SMS_TEMPLATE_CODE" => self.sms.template_code = Some(value),
            "SMS_ENDPOINT" => self.sms.endpoint = value,
            "SMS_DAILY_PER_PHONE" | "SMS_DAILY_PER_IP" | "SMS_RESEND_SECS" => {
                let n = value
                    .parse::<u32>()
                    .map_err(|_| err(key, "must be a whole number"))?;
                match name {
                    "SMS_DAILY_PER_PHONE" => self.sms.daily_per_phone = n,
                    "SMS_DAILY_PER_IP" => self.sms.daily_per_ip = n,
                    _ => self.sms.resend_secs = n,
                }
            }
            "ALIPAY_APP_ID"
            | "ALIPAY_PRIVATE_KEY_FILE"
            | "ALIPAY_PUBLIC_KEY_FILE"
            | "ALIPAY_GATEWAY_URL"
            | "ALIPAY_AUTHORIZE_URL"
            | "ALIPAY_SELLER_ID" => {
                let a = self.alipay.get_or_insert_with(|| AlipaySettings {
                    app_id: String::new(),
                    private_key_file: PathBuf::new(),
                    alipay_public_key_file: PathBuf::new(),
                    gateway_url: default_gateway(),
                    authorize_url: None,
                    seller_id: String::new(),
                });
                match name {
                    "ALIPAY_APP_ID" => a.app_id = value,
                    "ALIPAY_PRIVATE_KEY_FILE" => a.private_key_file = PathBuf::from(value),
                    "ALIPAY_PUBLIC_KEY_FILE" => a.alipay_public_key_file = PathBuf::from(value),
                    "ALIPAY_GATEWAY_URL" => a.gateway_url = value,
                    "ALIPAY_AUTHORIZE_URL" => a.authorize_url = Some(value),
                    _ => a.seller_id = value,
                }
            }
            // Variables of other tools are not settings: OPENVEND_LOG, the fault tests'
            // OPENVEND_FAILPOINTS, `machine-sim`'s secret, `openvend sandbox`'s data folder,
            // the chaos test's and other test settings. One exported for them must not stop
            // `serve` in the same shell.
            "LOG" | "FAILPOINTS" | "SIM_SECRET" | "SANDBOX_DATA" => {}
            _ if name.starts_with("TEST_") || name.starts_with("CHAOS_") => {}
            other => return Err(err(key, format!("unknown setting OPENVEND_{other}"))),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), SettingError> {
        if !(1..=64).contains(&self.job_workers) {
            return Err(err("job_workers", "must be 1 to 64"));
        }
        if !(1..=256).contains(&self.worker_threads) {
            return Err(err("worker_threads", "must be 1 to 256"));
        }
        if !(5..=3600).contains(&self.device.command_ttl_secs) {
            return Err(err("device.command_ttl_secs", "must be 5 to 3600 seconds"));
        }
        if !(10..=86_400).contains(&self.device.offline_after_secs) {
            return Err(err(
                "device.offline_after_secs",
                "must be 10 to 86400 seconds",
            ));
        }
        if !(10..=86_400).contains(&self.device.result_wait_secs) {
            return Err(err(
                "device.result_wait_secs",
                "must be 10 to 86400 seconds",
            ));
        }
        self.alerts.validate()?;
        if let Some(token) = &self.api_token {
            let t = token.expose();
            // A header value cannot end in a line break: a token read from a file with one
            // would never match, and every operator request would be refused.
            if t.trim() != t {
                return Err(err("api_token", "has spaces or a line break at either end"));
            }
            if t.chars().count() < 16 {
                return Err(err("api_token", "must be at least 16 characters"));
            }
            // The guard reads the header as visible ASCII: any other character would make
            // every operator request fail, however the token is sent.
            if !t.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(err(
                    "api_token",
                    "must be printable ASCII (letters, digits, punctuation, spaces)",
                ));
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.listen),
            ));
        }
        if self.sandbox_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "sandbox_listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8081",
                    self.sandbox_listen
                ),
            ));
        }
        if self
            .mqtt
            .embedded_listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(err(
                "mqtt.embedded_listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:18830",
                    self.mqtt.embedded_listen
                ),
            ));
        }
        // What brokers accept in a client id without trouble; an empty one asks for a
        // session the broker forgets.
        let id = &self.mqtt.client_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(err(
                "mqtt.client_id",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(url) = &self.mqtt.public_url
            && !valid_mqtt_url(url)
        {
            return Err(err(
                "mqtt.public_url",
                format!("{url:?} must be mqtt://host:port"),
            ));
        }
        if self.mqtt.public_url.is_none()
            && self.mqtt.url.is_none()
            && self
                .mqtt
                .embedded_listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
        {
            return Err(err(
                "mqtt.public_url",
                format!(
                    "is required when mqtt.embedded_listen ({}) listens on every address: \
                     name the mqtt://host:port machines connect to",
                    self.mqtt.embedded_listen
                ),
            ));
        }
        if let Some(url) = &self.database_url {
            let scheme = url.expose().split_once("://").map(|(s, _)| s).unwrap_or("");
            if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
                return Err(err(
                    "database_url",
                    "must start with sqlite:// or postgres://",
                ));
            }
        }
        if let Some(url) = &self.mqtt.url
            && !(url.starts_with("mqtt://") || url.starts_with("tcp://"))
        {
            return Err(err("mqtt.url", format!("{url:?} must start with mqtt://")));
        }
        self.h5.validate().map_err(|(s, p)| err(s, p))?;
        self.sms.validate().map_err(|(s, p)| err(s, p))?;
        if let Some(a) = &self.alipay {
            if a.app_id.is_empty() || !a.app_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("alipay.app_id", "must be the app's numeric id"));
            }
            if !alipay::types::is_user_id(&a.seller_id) {
                return Err(err(
                    "alipay.seller_id",
                    "must be the operator's 16-digit 2088… PID",
                ));
            }
            if a.private_key_file.as_os_str().is_empty() {
                return Err(err(
                    "alipay.private_key_file",
                    "is required with real Alipay settings",
                ));
            }
            if a.alipay_public_key_file.as_os_str().is_empty() {
                return Err(err(
                    "alipay.alipay_public_key_file",
                    "is required with real Alipay settings",
                ));
            }
            // The demo's default writes buyers' codes to the log and sends nothing: with real
            // buyers that must be a choice, not a default.
            if self.sms.provider.is_none() {
                return Err(err(
                    "sms.provider",
                    "must be chosen with real Alipay settings: \"aliyun\" sends buyers their \
                     phone codes; \"log\" sends nothing and writes each code to the log",
                ));
            }
            if !(a.gateway_url.starts_with("https://") || a.gateway_url.starts_with("http://")) {
                return Err(err("alipay.gateway_url", "must be an http(s) URL"));
            }
            if let Some(url) = &a.authorize_url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(err("alipay.authorize_url", "must be an http(s) URL"));
            }
            // Alipay posts its notifications to `<public_url>/alipay/notify`: without the
            // address it reaches us at, every payment would wait for the poll instead.
            if self.public_url.is_none() {
                return Err(err(
                    "public_url",
                    "is required with real Alipay settings: the https:// address Alipay reaches this server at",
                ));
            }
        }
        if let Some(url) = &self.public_url {
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(err(
                    "public_url",
                    format!(
                        "{url:?} must be an absolute http(s) URL like https://vend.example.com"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// True when no real Alipay app is configured: the embedded sandbox stands in.
    pub fn uses_sandbox(&self) -> bool {
        self.alipay.is_none()
    }

    /// The database URL, defaulting to SQLite in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("openvend.db").display()),
        }
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, SettingError> {
    value
        .trim()
        .parse()
        .map_err(|_| err(key, format!("{value:?} is not a whole number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let s = Settings::load(None, Vec::new()).unwrap();
        assert!(s.uses_sandbox());
        assert_eq!(s.database_url(), "sqlite://./openvend-data/openvend.db");
        assert_eq!(s.mqtt.url, None);
    }

    #[test]
    fn environment_overrides_the_file_and_secrets_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openvend.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\ndatabase_url = \"sqlite:///tmp/x.db\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("OPENVEND_DATABASE_URL", "postgres://u:pw@h/db"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000");
        assert_eq!(s.database_url(), "postgres://u:pw@h/db");
        assert!(!format!("{s:?}").contains("pw@"), "secrets must not print");
    }

    #[test]
    fn sms_and_h5_settings_load_from_a_file_and_hide_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openvend.toml");
        std::fs::write(
            &file,
            "sandbox_id_mode = \"open_id\"\n[sms]\nprovider = \"aliyun\"\naccess_key_id = \"LTAI\"\naccess_key_secret = \"topsecret\"\nsign_name = \"OpenVend\"\ntemplate_code = \"SMS_1\"\ndaily_per_ip = 5\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), Vec::new()).unwrap();
        assert_eq!(s.sandbox_id_mode, alipay_sandbox::model::IdMode::OpenId);
        assert_eq!(
            s.sms.provider(),
            crate::h5::settings::SmsProviderKind::Aliyun
        );
        assert_eq!((s.sms.daily_per_phone, s.sms.daily_per_ip), (10, 5));
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn an_empty_alert_webhook_is_no_webhook_and_its_url_is_never_printed() {
        let s = Settings::load(
            None,
            env(&[
                ("OPENVEND_ALERTS_WEBHOOK_URL", ""),
                ("OPENVEND_ALERTS_WEBHOOK_SECRET", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.alerts.webhook(), None);
        let url = "https://hooks.example.com/send?access_token=topsecret";
        let s = Settings::load(
            None,
            env(&[
                ("OPENVEND_ALERTS_WEBHOOK_URL", url),
                ("OPENVEND_ALERTS_WEBHOOK_SECRET", "0123456789abcdef"),
            ]),
        )
        .unwrap();
        assert_eq!(s.alerts.webhook().map(|(u, _)| u.expose()), Some(url));
        assert!(!format!("{s:?}").contains("topsecret"));
        let e = Settings::load(
            None,
            env(&[
                (
                    "OPENVEND_ALERTS_WEBHOOK_URL",
                    "ftp://x/?access_token=topsecret",
                ),
                ("OPENVEND_ALERTS_WEBHOOK_SECRET", "0123456789abcdef"),
            ]),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn variables_of_the_other_commands_are_not_settings() {
        let s = Settings::load(
            None,
            env(&[
                ("OPENVEND_SIM_SECRET", "00ff"),
                ("OPENVEND_SANDBOX_DATA", "./sandbox-data"),
                ("OPENVEND_CHAOS_SEED", "7"),
                ("OPENVEND_CHAOS_SALES", "40"),
                ("OPENVEND_API_TOKEN", "0123456789abcdef"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.api_token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn the_authorisation_page_goes_with_the_gateway_unless_set() {
        let load = |vars: &[(&str, &str)]| {
            let mut all = vec![
                ("OPENVEND_ALIPAY_APP_ID", "2021000000000001"),
                ("OPENVEND_ALIPAY_SELLER_ID", "2088000000000001"),
                ("OPENVEND_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem"),
                ("OPENVEND_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem"),
                ("OPENVEND_SMS_PROVIDER", "log"),
                ("OPENVEND_PUBLIC_URL", "https://vend.example.com"),
            ];
            all.extend_from_slice(vars);
            Settings::load(None, env(&all)).unwrap().alipay.unwrap()
        };
        assert_eq!(
            load(&[]).authorize_url(),
            alipay::client::PRODUCTION_AUTHORIZE_URL
        );
        assert_eq!(
            load(&[(
                "OPENVEND_ALIPAY_GATEWAY_URL",
                alipay::client::ALIPAY_SANDBOX_GATEWAY
            )])
            .authorize_url(),
            alipay::client::ALIPAY_SANDBOX_AUTHORIZE_URL
        );
        assert_eq!(
            load(&[(
                "OPENVEND_ALIPAY_AUTHORIZE_URL",
                "http://127.0.0.1:9090/oauth2/publicAppAuthorize.htm"
            )])
            .authorize_url(),
            "http://127.0.0.1:9090/oauth2/publicAppAuthorize.htm"
        );
    }

    #[test]
    fn machines_are_told_an_mqtt_address_they_can_reach() {
        let s = |vars: &[(&str, &str)]| Settings::load(None, env(vars)).unwrap().mqtt;
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            s(&[]).machine_url(at("127.0.0.1:18830")).as_deref(),
            Some("mqtt://127.0.0.1:18830")
        );
        assert_eq!(
            s(&[]).machine_url(at("[::1]:18830")).as_deref(),
            Some("mqtt://[::1]:18830")
        );
        let public = s(&[
            ("OPENVEND_MQTT_EMBEDDED_LISTEN", "0.0.0.0:18830"),
            ("OPENVEND_MQTT_PUBLIC_URL", "mqtt://vend.example.com:18830"),
        ]);
        assert_eq!(
            public.machine_url(at("0.0.0.0:18830")).as_deref(),
            Some("mqtt://vend.example.com:18830")
        );
        assert_eq!(s(&[]).machine_url(at("0.0.0.0:18830")), None);
        let external = s(&[("OPENVEND_MQTT_URL", "mqtt://broker.internal:1883")]);
        assert_eq!(
            external.machine_url(at("127.0.0.1:1")).as_deref(),
            Some("mqtt://broker.internal:1883")
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("OPENVEND_LISTEN", "nope")], "listen"),
            (&[("OPENVEND_DATABASE_URL", "mysql://x")], "database_url"),
            (&[("OPENVEND_MQTT_URL", "http://x")], "mqtt.url"),
            (&[("OPENVEND_ALIPAY_APP_ID", "2021")], "alipay.seller_id"),
            (&[("OPENVEND_ALIPAY_APP_ID", "abc")], "alipay.app_id"),
            (&[("OPENVEND_FROBNICATE", "1")], "OPENVEND_FROBNICATE"),
            (&[("OPENVEND_JOB_WORKERS", "many")], "OPENVEND_JOB_WORKERS"),
            (&[("OPENVEND_JOB_WORKERS", "0")], "job_workers"),
            (&[("OPENVEND_WORKER_THREADS", "0")], "worker_threads"),
            (
                &[("OPENVEND_DEVICE_COMMAND_TTL_SECS", "1")],
                "device.command_ttl_secs",
            ),
            (
                &[("OPENVEND_SANDBOX_ID_MODE", "uid")],
                "OPENVEND_SANDBOX_ID_MODE",
            ),
            (&[("OPENVEND_SMS_PROVIDER", "aliyun")], "sms.access_key_id"),
            (&[("OPENVEND_SMS_DAILY_PER_IP", "0")], "sms.daily_per_ip"),
            (&[("OPENVEND_H5_SECRET", "short")], "h5.secret"),
            (&[("OPENVEND_API_TOKEN", "")], "api_token"),
            (&[("OPENVEND_API_TOKEN", "admin")], "api_token"),
            (
                &[("OPENVEND_API_TOKEN", "0123456789abcdef0123\n")],
                "api_token",
            ),
            (
                &[("OPENVEND_API_TOKEN", "ключ-оператора-2024")],
                "api_token",
            ),
            (&[("OPENVEND_MQTT_CLIENT_ID", "")], "mqtt.client_id"),
            (
                &[("OPENVEND_MQTT_CLIENT_ID", "open vend")],
                "mqtt.client_id",
            ),
            (
                &[("OPENVEND_MQTT_PUBLIC_URL", "mqtt://vend.example")],
                "mqtt.public_url",
            ),
            (
                &[("OPENVEND_MQTT_EMBEDDED_LISTEN", "0.0.0.0:18830")],
                "mqtt.public_url",
            ),
            (
                &[("OPENVEND_MQTT_EMBEDDED_LISTEN", "[::]:18830")],
                "mqtt.public_url",
            ),
            (&[("OPENVEND_API_TOKEN", "0123456789\tabcdef")], "api_token"),
            (
                &[
                    ("OPENVEND_ALIPAY_APP_ID", "2021000000000001"),
                    ("OPENVEND_ALIPAY_SELLER_ID", "2088000000000001"),
                    ("OPENVEND_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem"),
                    ("OPENVEND_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem"),
                    ("OPENVEND_ALIPAY_AUTHORIZE_URL", "openauth.example"),
                    ("OPENVEND_SMS_PROVIDER", "log"),
                    ("OPENVEND_PUBLIC_URL", "https://vend.example.com"),
                ],
                "alipay.authorize_url",
            ),
            (
                &[
                    ("OPENVEND_ALIPAY_APP_ID", "2021000000000001"),
                    ("OPENVEND_ALIPAY_SELLER_ID", "2088000000000001"),
                    ("OPENVEND_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem"),
                    ("OPENVEND_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem"),
                ],
                "sms.provider",
            ),
            (
                &[
                    ("OPENVEND_ALIPAY_APP_ID", "2021000000000001"),
                    ("OPENVEND_ALIPAY_SELLER_ID", "2088000000000001"),
                    ("OPENVEND_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem"),
                    ("OPENVEND_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem"),
                    ("OPENVEND_SMS_PROVIDER", "log"),
                ],
                "public_url",
            ),
            (&[("OPENVEND_PUBLIC_URL", "vend.example.com")], "public_url"),
            (&[("OPENVEND_PUBLIC_URL", "https://")], "public_url"),
            (
                &[("OPENVEND_ALERTS_WEBHOOK_URL", "https://hooks.example.com/a")],
                "alerts.webhook_secret",
            ),
            (
                &[("OPENVEND_ALERTS_WEBHOOK_SECRET", "0123456789abcdef")],
                "alerts.webhook_secret",
            ),
            (
                &[
                    ("OPENVEND_ALERTS_WEBHOOK_URL", "hooks.example.com/a"),
                    ("OPENVEND_ALERTS_WEBHOOK_SECRET", "0123456789abcdef"),
                ],
                "alerts.webhook_url",
            ),
            (
                &[
                    ("OPENVEND_ALERTS_WEBHOOK_URL", "ftp://hooks.example.com/a"),
                    ("OPENVEND_ALERTS_WEBHOOK_SECRET", "0123456789abcdef"),
                ],
                "alerts.webhook_url",
            ),
            (
                &[
                    ("OPENVEND_ALERTS_WEBHOOK_URL", "https://hooks.example.com/a"),
                    ("OPENVEND_ALERTS_WEBHOOK_SECRET", "short"),
                ],
                "alerts.webhook_secret",
            ),
            (
                &[("OPENVEND_ALERTS_INTERVAL_SECS", "1")],
                "alerts.interval_secs",
            ),
        ];
        for (vars, setting) in cases {
            let e = Settings::load(None, env(vars)).unwrap_err();
            assert_eq!(e.setting, *setting, "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let e = Settings::load(Some(&file), Vec::new()).unwrap_err();
        assert!(e.problem.contains("lisen"), "{e}");
    }
}
