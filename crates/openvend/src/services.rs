//! What request handlers and jobs share: the store, the Alipay client and the facts about
//! OpenVend's Alipay app. Built once by `App::build`, passed around as `Arc<Services>`.

use alipay::{Client, PublicKey};

use crate::store::Db;

/// Shared services.
#[derive(Debug)]
pub struct Services {
    /// The store.
    pub db: Db,
    /// The Alipay client.
    pub alipay: Client,
    /// Alipay's public key, for notifications.
    pub alipay_key: PublicKey,
    /// OpenVend's Alipay app id (notifications must name it).
    pub app_id: String,
    /// Minutes a buyer has to pay a QR order.
    pub pay_timeout_minutes: u32,
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
