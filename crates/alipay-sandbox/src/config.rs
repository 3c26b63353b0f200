//! Sandbox settings: from a TOML file, command-line flags or code.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::IdMode;

/// Alipay's notification retry schedule, seconds after the first attempt's predecessor:
/// now, then +2m, +10m, +10m, +1h, +2h, +6h, +15h (8 attempts in about 24h22m).
pub const DEFAULT_NOTIFY_SCHEDULE: [u64; 8] = [0, 120, 600, 600, 3600, 7200, 21600, 54000];

/// An app registered at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// `app_id`.
    pub app_id: String,
    /// The app public key (SPKI PEM or bare base64).
    pub public_key: String,
    /// The merchant PID; generated when absent.
    #[serde(default)]
    pub seller_pid: Option<String>,
    /// Extra allowed `seller_id`s (收款限制集).
    #[serde(default)]
    pub allowed_seller_ids: Vec<String>,
    /// Default notify URL.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// App gateway URL for messages.
    #[serde(default)]
    pub gateway_notify_url: Option<String>,
    /// Allowed OAuth redirect URIs (empty: any).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// user_id or open_id.
    #[serde(default)]
    pub id_mode: IdMode,
}

/// How an app registers: with its public key only, or with a certificate the sandbox issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AppKeyMode {
    /// 密钥模式.
    #[default]
    PublicKey,
    /// 公钥证书模式.
    #[serde(alias = "certificate")]
    Cert,
}

/// Which state changes are notified (Alipay's default: payment only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NotifyPolicy {
    /// Notify `TRADE_CLOSED` (unpaid close, or full refund).
    pub trade_closed: bool,
    /// Notify `TRADE_FINISHED`.
    pub trade_finished: bool,
    /// Notify partial refunds (as `TRADE_SUCCESS` with `refund_fee`).
    pub refunds: bool,
}

/// All sandbox settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// Where state and keys live; `None` keeps everything in memory with fresh keys.
    pub data_dir: Option<PathBuf>,
    /// The base URL the sandbox is reached at (for QR codes, pages, bill URLs).
    /// Defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// Notification schedule, seconds between attempts (first is normally 0).
    pub notify_schedule_secs: Vec<u64>,
    /// Real seconds per sandbox second for notification retries: 60.0 runs a 2m gap in 2s.
    pub time_factor: f64,
    /// Which changes are notified.
    pub notify: NotifyPolicy,
    /// Seed of the fault injector's random choices.
    pub seed: u64,
    /// Apps registered at start.
    pub apps: Vec<AppConfig>,
    /// The `app_id`s among `apps` that register in certificate mode (公钥证书模式): the
    /// sandbox issues each a certificate for its `public_key`, kept across restarts.
    pub cert_apps: Vec<String>,
    /// Buyers created at start when the store has none.
    pub demo_buyers: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            data_dir: None,
            public_url: None,
            notify_schedule_secs: DEFAULT_NOTIFY_SCHEDULE.to_vec(),
            time_factor: 1.0,
            notify: NotifyPolicy::default(),
            seed: 1,
            apps: Vec::new(),
            cert_apps: Vec::new(),
            demo_buyers: 3,
        }
    }
}

impl SandboxConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read sandbox config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("sandbox config {}: {e}", path.display()))
    }
}
