//! Faults on request: what the gateway does instead of answering normally.
//!
//! Rules are set per app and method (either may be `*`) through the control API or config.
//! A rule fires for its next `count` matching calls (or always), so a test can say exactly
//! "the next refund answers SYSTEM_ERROR after performing it".

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Which unknown answer a fault gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownKind {
    /// `20000 isp.unknow-error`.
    #[default]
    Gateway20000,
    /// `40004 ACQ.SYSTEM_ERROR`.
    SystemError,
}

/// What a gateway call does under a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GatewayFault {
    /// Answer normally.
    None,
    /// Answer normally after a delay.
    Latency {
        /// Delay in ms.
        ms: u64,
    },
    /// Perform the operation, then hold the connection and answer 504 after `ms`:
    /// to the caller this is a timeout.
    #[serde(rename = "no_answer")]
    NoAnswer(#[serde(with = "millis")] Duration),
    /// Answer "unknown" without performing the operation.
    UnknownBefore(UnknownKind),
    /// Perform the operation, then answer "unknown".
    UnknownAfter(UnknownKind),
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl GatewayFault {
    /// A delay before handling, if any.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            GatewayFault::Latency { ms } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// The unknown-result error this fault answers with.
    pub fn unknown_error(&self) -> ApiError {
        match self {
            GatewayFault::UnknownBefore(UnknownKind::SystemError)
            | GatewayFault::UnknownAfter(UnknownKind::SystemError) => ApiError::system_error(),
            _ => ApiError::unknown(),
        }
    }
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRule {
    /// App id or `*`.
    #[serde(default = "star")]
    pub app_id: String,
    /// Method or `*`.
    #[serde(default = "star")]
    pub method: String,
    /// The fault.
    pub fault: GatewayFault,
    /// How many matching calls it applies to; `None` = until removed.
    #[serde(default)]
    pub count: Option<u32>,
}

fn star() -> String {
    "*".into()
}

/// The fault rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    gateway: Mutex<Vec<GatewayRule>>,
}

impl Faults {
    /// Adds a gateway rule (checked before older rules).
    pub fn add_gateway_rule(&self, rule: GatewayRule) {
        if let Ok(mut rules) = self.gateway.lock() {
            rules.insert(0, rule);
        }
    }

    /// Removes every rule.
    pub fn clear(&self) {
        if let Ok(mut rules) = self.gateway.lock() {
            rules.clear();
        }
    }

    /// The rules in force.
    pub fn gateway_rules(&self) -> Vec<GatewayRule> {
        self.gateway.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The fault for this call, consuming one use of a counted rule.
    pub fn gateway_fault(&self, app_id: &str, method: &str) -> GatewayFault {
        let Ok(mut rules) = self.gateway.lock() else {
            return GatewayFault::None;
        };
        let Some(i) = rules.iter().position(|r| {
            (r.app_id == "*" || r.app_id == app_id) && (r.method == "*" || r.method == method)
        }) else {
            return GatewayFault::None;
        };
        let fault = rules[i].fault;
        if let Some(n) = rules[i].count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.remove(i);
            }
        }
        fault
    }
}
