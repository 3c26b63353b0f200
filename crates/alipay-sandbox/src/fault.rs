//! Faults on request: what the gateway, the notifier and the face step do instead of
//! behaving normally.
//!
//! Three rule families, set through `POST /control/faults` (see `control`):
//! - gateway rules (`{"app_id","method","fault":{"kind":…},"count","probability"}`): what one
//!   `gateway.do` call does (latency, no answer after performing, unknown before/after);
//! - notification rules (`{"app_id","notification":{"kind":…},"count","probability"}`): how
//!   a notification is delivered (dropped, duplicated, delayed, reordered, badly signed);
//! - face rules (`{"app_id","face":{"kind":…},"count"}`): why the face step fails.
//!
//! A rule with `count` applies to its next `count` matches (gateway and face: calls;
//! notifications: notifications, every attempt of each), then stops. A rule with
//! `probability` fires on that share of matches, drawn from one splitmix64 generator seeded
//! with `config.seed`: the same seed and the same sequence of calls give the same faults, so
//! a chaos test that fails can be replayed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// Which unknown answer a fault gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownKind {
    /// `20000 isp.unknow-error`.
    #[default]
    #[serde(alias = "20000")]
    Gateway20000,
    /// `40004 ACQ.SYSTEM_ERROR`.
    #[serde(alias = "ACQ.SYSTEM_ERROR")]
    SystemError,
}

/// What a gateway call does under a fault.
///
/// JSON: `{"kind":"latency","ms":300}`, `{"kind":"no_answer","ms":5000}`,
/// `{"kind":"unknown_before","answer":"gateway20000"}`,
/// `{"kind":"unknown_after","answer":"system_error"}` (`answer` defaults to `gateway20000`),
/// `{"kind":"refuse","sub_code":"ACQ.TRADE_HAS_CLOSE"}`,
/// `{"kind":"answer","fields":{"retry_flag":"N"},"ms":3000}` (`ms` defaults to 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    NoAnswer {
        /// How long the connection is held, ms.
        #[serde(default = "default_hold_ms")]
        ms: u64,
    },
    /// Answer "unknown" without performing the operation.
    UnknownBefore {
        /// Which unknown answer.
        #[serde(default)]
        answer: UnknownKind,
    },
    /// Perform the operation, then answer "unknown".
    UnknownAfter {
        /// Which unknown answer.
        #[serde(default)]
        answer: UnknownKind,
    },
    /// Refuse without performing the operation: `40004 Business Failed` with this
    /// `sub_code` (a definite answer, as Alipay gives when it checks something else first).
    Refuse {
        /// The `sub_code`, e.g. `ACQ.TRADE_HAS_CLOSE`.
        sub_code: String,
    },
    /// Answer `10000 Success` with exactly these business fields, without performing the
    /// call: an answer Alipay may give that the sandbox's own model never does (a cancel
    /// that names no `action`, say).
    Answer {
        /// The business fields, beside `code` and `msg`.
        fields: serde_json::Map<String, Value>,
        /// A wait before answering, ms (none by default).
        #[serde(default)]
        ms: u64,
    },
}

fn default_hold_ms() -> u64 {
    30_000
}

impl GatewayFault {
    /// A delay before handling, if any.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            GatewayFault::Latency { ms } => Some(Duration::from_millis(*ms)),
            GatewayFault::Answer { ms, .. } if *ms > 0 => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// The unknown-result error this fault answers with.
    pub fn unknown_error(&self) -> ApiError {
        match self {
            GatewayFault::UnknownBefore {
                answer: UnknownKind::SystemError,
            }
            | GatewayFault::UnknownAfter {
                answer: UnknownKind::SystemError,
            } => ApiError::system_error(),
            _ => ApiError::unknown(),
        }
    }
}

/// One gateway fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Share of matching calls it fires on, 0.0..=1.0; `None` = every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

/// How a notification attempt is disturbed.
///
/// JSON: `{"kind":"drop"}` (never delivered), `{"kind":"drop","first":2}` (the first two
/// attempts are lost), `{"kind":"duplicate","times":20}` (each attempt sent 20 times at once),
/// `{"kind":"delay","ms":500}`, `{"kind":"out_of_order","batch":2}` (first attempts are held
/// until `batch` notifications of the app are waiting, then sent newest first),
/// `{"kind":"bad_signature"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NotificationFault {
    /// The attempt is lost: recorded, never sent. `first`: only the first N attempts.
    Drop {
        /// Attempts lost; `None` = all of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<u32>,
    },
    /// Each attempt is sent `times` times concurrently.
    Duplicate {
        /// Copies per attempt (at least 2).
        #[serde(default = "two")]
        times: u32,
    },
    /// Each attempt is held `ms` before it is sent.
    Delay {
        /// Hold, ms.
        ms: u64,
    },
    /// First attempts wait until `batch` are due for the app, then go out newest first.
    OutOfOrder {
        /// Batch size (at least 2).
        #[serde(default = "two")]
        batch: u32,
    },
    /// Sent with a signature that does not verify.
    BadSignature,
}

fn two() -> u32 {
    2
}

/// One notification fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRule {
    /// App id or `*`.
    #[serde(default = "star")]
    pub app_id: String,
    /// The fault.
    pub notification: NotificationFault,
    /// How many notifications it applies to; `None` = until removed.
    #[serde(default)]
    pub count: Option<u32>,
    /// Share of notifications it applies to; `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Decisions taken, by notify_id (a notification keeps its fate across attempts).
    #[serde(skip)]
    decided: BTreeMap<String, bool>,
}

/// Why the face step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaceFault {
    /// 光线太暗 (too dark to capture).
    WeakLight,
    /// No face in the frame.
    NoFace,
    /// Liveness check failed.
    LivenessFailed,
    /// The buyer cancelled.
    UserCancel,
    /// Capture timed out.
    Timeout,
}

impl FaceFault {
    /// The error code the device SDK reports, and a message (Chinese, English).
    pub fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            FaceFault::WeakLight => (
                "Z1008",
                "光线太暗，请调整光线后重试",
                "The light is too weak",
            ),
            FaceFault::NoFace => ("Z1002", "未检测到人脸", "No face detected"),
            FaceFault::LivenessFailed => ("Z1005", "活体检测失败", "Liveness check failed"),
            FaceFault::UserCancel => ("Z1003", "用户取消", "Cancelled by the user"),
            FaceFault::Timeout => ("Z1004", "刷脸超时", "Face capture timed out"),
        }
    }
}

/// One face fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceRule {
    /// App id or `*`.
    #[serde(default = "star")]
    pub app_id: String,
    /// The fault.
    pub face: FaceFault,
    /// How many captures it applies to; `None` = until removed.
    #[serde(default)]
    pub count: Option<u32>,
}

/// Any rule, as posted to `/control/faults`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// A gateway rule (has `fault`).
    Gateway(GatewayRule),
    /// A notification rule (has `notification`).
    Notification(NotificationRule),
    /// A face rule (has `face`).
    Face(FaceRule),
}

impl Rule {
    /// Reads a rule from JSON: the key `fault`, `notification` or `face` says which family.
    pub fn from_json(value: Value) -> Result<Rule, String> {
        let has = |k: &str| value.get(k).is_some();
        let family = match (has("fault"), has("notification"), has("face")) {
            (true, false, false) => "fault",
            (false, true, false) => "notification",
            (false, false, true) => "face",
            _ => {
                return Err(
                    "a rule has exactly one of \"fault\" (gateway), \"notification\" or \"face\""
                        .into(),
                );
            }
        };
        let rule = match family {
            "fault" => serde_json::from_value(value).map(Rule::Gateway),
            "notification" => serde_json::from_value(value).map(Rule::Notification),
            _ => serde_json::from_value(value).map(Rule::Face),
        }
        .map_err(|e| format!("{family} rule: {e}"))?;
        let probability = match &rule {
            Rule::Gateway(r) => r.probability,
            Rule::Notification(r) => r.probability,
            Rule::Face(_) => None,
        };
        if let Some(p) = probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("probability {p} is not within 0.0..=1.0"));
        }
        if let Rule::Gateway(GatewayRule {
            fault: GatewayFault::Refuse { sub_code },
            ..
        }) = &rule
            && (sub_code.is_empty()
                || sub_code.len() > 64
                || !sub_code.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "refuse: sub_code {sub_code:?} must be 1 to 64 visible ASCII characters"
            ));
        }
        if let Rule::Gateway(GatewayRule {
            fault: GatewayFault::Answer { fields, .. },
            ..
        }) = &rule
            && let Some(name) = ["code", "msg", "sub_code", "sub_msg"]
                .into_iter()
                .find(|n| fields.contains_key(*n))
        {
            return Err(format!(
                "answer: fields must not set {name:?}; it answers 10000 Success (use refuse for a business error)"
            ));
        }
        Ok(rule)
    }
}

fn star() -> String {
    "*".into()
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// splitmix64: a tiny, well-mixed, seedable generator (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (`None`: always, without drawing).
    pub fn chance(&mut self, p: Option<f64>) -> bool {
        match p {
            None => true,
            Some(p) if p >= 1.0 => true,
            Some(p) if p <= 0.0 => false,
            Some(p) => self.next_f64() < p,
        }
    }
}

#[derive(Debug, Default)]
struct Rules {
    gateway: Vec<GatewayRule>,
    notification: Vec<NotificationRule>,
    face: Vec<FaceRule>,
}

/// The fault rules in force, and the seeded generator behind probabilistic rules.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Rules>,
    rng: Mutex<SplitMix64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::with_seed(1)
    }
}

impl Faults {
    /// No rules; random choices seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Faults {
            rules: Mutex::new(Rules::default()),
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chance(&self, p: Option<f64>) -> bool {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).chance(p)
    }

    /// Adds a rule of any family (checked before older rules of its family).
    pub fn add(&self, rule: Rule) {
        let mut rules = self.rules();
        match rule {
            Rule::Gateway(r) => rules.gateway.insert(0, r),
            Rule::Notification(r) => rules.notification.insert(0, r),
            Rule::Face(r) => rules.face.insert(0, r),
        }
    }

    /// Adds a gateway rule (checked before older rules).
    pub fn add_gateway_rule(&self, rule: GatewayRule) {
        self.add(Rule::Gateway(rule));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        *self.rules() = Rules::default();
    }

    /// The gateway rules in force.
    pub fn gateway_rules(&self) -> Vec<GatewayRule> {
        self.rules().gateway.clone()
    }

    /// The notification rules in force.
    pub fn notification_rules(&self) -> Vec<NotificationRule> {
        self.rules().notification.clone()
    }

    /// The face rules in force.
    pub fn face_rules(&self) -> Vec<FaceRule> {
        self.rules().face.clone()
    }

    /// The fault for this call, consuming one use of a counted rule that fires.
    pub fn gateway_fault(&self, app_id: &str, method: &str) -> GatewayFault {
        let mut rules = self.rules();
        for i in 0..rules.gateway.len() {
            let r = &rules.gateway[i];
            if !(matches(&r.app_id, app_id) && matches(&r.method, method)) {
                continue;
            }
            if !self.chance(r.probability) {
                continue;
            }
            let fault = r.fault.clone();
            if let Some(n) = rules.gateway[i].count.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    rules.gateway.remove(i);
                }
            }
            return fault;
        }
        GatewayFault::None
    }

    /// The fault of a notification (the same for every attempt of it).
    pub fn notification_fault(&self, app_id: &str, notify_id: &str) -> Option<NotificationFault> {
        let mut rules = self.rules();
        for r in rules.notification.iter_mut() {
            if !matches(&r.app_id, app_id) {
                continue;
            }
            let fires = match r.decided.get(notify_id) {
                Some(d) => *d,
                None => {
                    if r.count == Some(0) {
                        continue;
                    }
                    let d = self.chance(r.probability);
                    r.decided.insert(notify_id.to_owned(), d);
                    if d && let Some(n) = r.count.as_mut() {
                        *n -= 1;
                    }
                    d
                }
            };
            if fires {
                return Some(r.notification);
            }
        }
        None
    }

    /// The face fault for a capture, consuming one use of a counted rule.
    pub fn face_fault(&self, app_id: &str) -> Option<FaceFault> {
        let mut rules = self.rules();
        let i = rules.face.iter().position(|r| matches(&r.app_id, app_id))?;
        let fault = rules.face[i].face;
        if let Some(n) = rules.face[i].count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.face.remove(i);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gateway_rules_read_the_documented_json() {
        let cases = [
            (
                json!({"fault": {"kind": "latency", "ms": 5}}),
                GatewayFault::Latency { ms: 5 },
            ),
            (
                json!({"fault": {"kind": "no_answer", "ms": 100}}),
                GatewayFault::NoAnswer { ms: 100 },
            ),
            (
                json!({"fault": {"kind": "unknown_before"}}),
                GatewayFault::UnknownBefore {
                    answer: UnknownKind::Gateway20000,
                },
            ),
            (
                json!({"fault": {"kind": "unknown_after", "answer": "ACQ.SYSTEM_ERROR"}}),
                GatewayFault::UnknownAfter {
                    answer: UnknownKind::SystemError,
                },
            ),
        ];
        for (json, fault) in cases {
            let Ok(Rule::Gateway(r)) = Rule::from_json(json.clone()) else {
                panic!("not a gateway rule: {json}");
            };
            assert_eq!(r.fault, fault);
            assert_eq!((r.app_id.as_str(), r.method.as_str()), ("*", "*"));
            // And it prints back in the same shape.
            let back = serde_json::to_value(&r).unwrap();
            assert_eq!(back["fault"]["kind"], json["fault"]["kind"]);
        }
    }

    #[test]
    fn a_rule_names_exactly_one_family() {
        assert!(Rule::from_json(json!({"count": 1})).is_err());
        assert!(
            Rule::from_json(
                json!({"fault": {"kind": "latency", "ms": 1}, "face": {"kind": "weak_light"}})
            )
            .is_err()
        );
        assert!(matches!(
            Rule::from_json(json!({"notification": {"kind": "drop", "first": 2}})),
            Ok(Rule::Notification(_))
        ));
        assert!(matches!(
            Rule::from_json(json!({"face": {"kind": "weak_light"}})),
            Ok(Rule::Face(_))
        ));
        assert!(
            Rule::from_json(json!({"fault": {"kind": "latency", "ms": 1}, "probability": 1.5}))
                .is_err()
        );
    }

    #[test]
    fn splitmix64_matches_its_reference_sequence() {
        // Reference values of splitmix64 seeded with 1234567.
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn a_counted_gateway_rule_stops_after_its_count() {
        let f = Faults::with_seed(7);
        f.add_gateway_rule(GatewayRule {
            app_id: "*".into(),
            method: "alipay.trade.query".into(),
            fault: GatewayFault::Latency { ms: 1 },
            count: Some(2),
            probability: None,
        });
        assert_eq!(f.gateway_fault("1", "alipay.trade.pay"), GatewayFault::None);
        assert_ne!(
            f.gateway_fault("1", "alipay.trade.query"),
            GatewayFault::None
        );
        assert_ne!(
            f.gateway_fault("1", "alipay.trade.query"),
            GatewayFault::None
        );
        assert_eq!(
            f.gateway_fault("1", "alipay.trade.query"),
            GatewayFault::None
        );
    }

    #[test]
    fn probabilistic_rules_repeat_with_the_same_seed() {
        let run = |seed| {
            let f = Faults::with_seed(seed);
            f.add_gateway_rule(GatewayRule {
                app_id: "*".into(),
                method: "*".into(),
                fault: GatewayFault::Latency { ms: 1 },
                count: None,
                probability: Some(0.5),
            });
            (0..64)
                .map(|_| f.gateway_fault("1", "m") != GatewayFault::None)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let fired = run(42).iter().filter(|b| **b).count();
        assert!(fired > 0 && fired < 64);
    }

    #[test]
    fn a_notification_keeps_its_fate_across_attempts() {
        let f = Faults::with_seed(3);
        f.add(Rule::Notification(NotificationRule {
            app_id: "1".into(),
            notification: NotificationFault::Drop { first: None },
            count: Some(1),
            probability: None,
            decided: BTreeMap::new(),
        }));
        assert!(f.notification_fault("1", "a").is_some());
        assert!(
            f.notification_fault("1", "a").is_some(),
            "second attempt too"
        );
        assert!(f.notification_fault("1", "b").is_none(), "count used up");
        assert!(f.notification_fault("2", "c").is_none(), "other app");
    }
}
