//! Royalty rules (分账/分润): how an order's money is shared with partners (site owner, agent,
//! device maker), by ratio or fixed amount, and the split of one order under those rules.
//!
//! Ratios are basis points and round down to the fen, so the operator keeps any remainder and
//! a split never exceeds the order. Alipay caps what may be shared (30% by default); the cap is
//! a parameter, since contracts differ.

use serde::{Deserialize, Serialize};

use super::fen::Fen;

/// Who a partner is to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerRole {
    /// 场地方: where the machine stands.
    SiteOwner,
    /// 代理商.
    Agent,
    /// 设备商.
    DeviceMaker,
    /// Anyone else.
    Other,
}

/// How much a partner gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Share {
    /// A ratio in basis points (1/100 of a percent): 1500 = 15%.
    RatioBps(u32),
    /// A fixed amount per order.
    Fixed(Fen),
}

/// One partner's rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyRule {
    /// The partner's role.
    pub role: PartnerRole,
    /// The partner's Alipay account (`2088…`).
    pub account: String,
    /// Their share.
    pub share: Share,
}

/// Why rules or a split are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoyaltyError {
    /// An account that is not a `2088…` user id.
    #[error("partner account {0:?} is not a 16-digit 2088… Alipay user id")]
    BadAccount(String),
    /// The operator cannot share with itself.
    #[error("partner account {0} is the operator's own account")]
    SelfShare(String),
    /// The same account twice.
    #[error("partner account {0} appears twice")]
    DuplicateAccount(String),
    /// A ratio of 0 or above 100%.
    #[error("ratio {0} bps is not between 1 and 10000")]
    BadRatio(u32),
    /// A fixed share of zero or less.
    #[error("fixed share must be more than zero")]
    BadFixed,
    /// The shares exceed the cap for this order.
    #[error("shares of {shared} exceed the cap of {cap} for an order of {total}")]
    OverCap {
        /// Sum of shares.
        shared: Fen,
        /// The cap.
        cap: Fen,
        /// The order total.
        total: Fen,
    },
}

/// Alipay's default cap on what a merchant may share: 30% of the order.
pub const DEFAULT_CAP_BPS: u32 = 3000;

/// Checks a rule set on its own (accounts, ratios, duplicates).
pub fn validate_rules(rules: &[RoyaltyRule], operator_account: &str) -> Result<(), RoyaltyError> {
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        let is_user_id = r.account.len() == 16
            && r.account.starts_with("2088")
            && r.account.bytes().all(|b| b.is_ascii_digit());
        if !is_user_id {
            return Err(RoyaltyError::BadAccount(r.account.clone()));
        }
        if r.account == operator_account {
            return Err(RoyaltyError::SelfShare(r.account.clone()));
        }
        if !seen.insert(r.account.as_str()) {
            return Err(RoyaltyError::DuplicateAccount(r.account.clone()));
        }
        match r.share {
            Share::RatioBps(b) if b == 0 || b > 10_000 => return Err(RoyaltyError::BadRatio(b)),
            Share::Fixed(f) if !f.is_positive() => return Err(RoyaltyError::BadFixed),
            _ => {}
        }
    }
    Ok(())
}

/// One transfer of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitLine {
    /// Receiver.
    pub account: String,
    /// Role, for the report.
    pub role: PartnerRole,
    /// Amount.
    pub amount: Fen,
}

/// Splits `total` under `rules` with a cap in basis points. Lines of zero (a ratio of a tiny
/// order) are left out, since Alipay refuses zero transfers.
pub fn split(
    total: Fen,
    rules: &[RoyaltyRule],
    cap_bps: u32,
) -> Result<Vec<SplitLine>, RoyaltyError> {
    let mut lines = Vec::with_capacity(rules.len());
    let mut shared: i64 = 0;
    for r in rules {
        let amount = match r.share {
            Share::RatioBps(bps) => Fen(((i128::from(total.0) * i128::from(bps)) / 10_000) as i64),
            Share::Fixed(f) => f,
        };
        shared = shared.saturating_add(amount.0);
        if amount.is_positive() {
            lines.push(SplitLine {
                account: r.account.clone(),
                role: r.role,
                amount,
            });
        }
    }
    let cap = Fen(((i128::from(total.0) * i128::from(cap_bps.min(10_000))) / 10_000) as i64);
    if shared > cap.0 {
        return Err(RoyaltyError::OverCap {
            shared: Fen(shared),
            cap,
            total,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(account: &str, share: Share) -> RoyaltyRule {
        RoyaltyRule {
            role: PartnerRole::SiteOwner,
            account: account.into(),
            share,
        }
    }

    #[test]
    fn ratios_round_down_and_the_operator_keeps_the_remainder() {
        let rules = [
            rule("2088000000000001", Share::RatioBps(1000)),
            rule("2088000000000002", Share::Fixed(Fen(5))),
        ];
        let lines = split(Fen(333), &rules, DEFAULT_CAP_BPS).unwrap();
        assert_eq!(
            lines.iter().map(|l| l.amount).collect::<Vec<_>>(),
            vec![Fen(33), Fen(5)]
        );
    }

    #[test]
    fn shares_over_the_cap_are_refused() {
        let rules = [
            rule("2088000000000001", Share::RatioBps(2500)),
            rule("2088000000000002", Share::Fixed(Fen(100))),
        ];
        assert!(matches!(
            split(Fen(1000), &rules, DEFAULT_CAP_BPS),
            Err(RoyaltyError::OverCap { .. })
        ));
        assert!(split(Fen(1000), &rules, 10_000).is_ok());
    }

    #[test]
    fn zero_lines_are_left_out() {
        let rules = [rule("2088000000000001", Share::RatioBps(1))];
        assert!(split(Fen(50), &rules, DEFAULT_CAP_BPS).unwrap().is_empty());
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let op = "2088000000000009";
        assert!(matches!(
            validate_rules(&[rule("123", Share::RatioBps(1))], op),
            Err(RoyaltyError::BadAccount(_))
        ));
        assert!(matches!(
            validate_rules(&[rule(op, Share::RatioBps(1))], op),
            Err(RoyaltyError::SelfShare(_))
        ));
        let dup = [
            rule("2088000000000001", Share::RatioBps(1)),
            rule("2088000000000001", Share::RatioBps(2)),
        ];
        assert!(matches!(
            validate_rules(&dup, op),
            Err(RoyaltyError::DuplicateAccount(_))
        ));
        assert!(matches!(
            validate_rules(&[rule("2088000000000001", Share::RatioBps(0))], op),
            Err(RoyaltyError::BadRatio(0))
        ));
        assert!(matches!(
            validate_rules(&[rule("2088000000000001", Share::Fixed(Fen(0)))], op),
            Err(RoyaltyError::BadFixed)
        ));
    }
}
