//! Agreement payment (商户代扣, §7.2): the signing page URL and the agreement query. Charging
//! under an agreement is [`super::trade::Pay::agreement`].

use serde::{Deserialize, Serialize};

use super::checks::{validate_max_chars, validate_user_id};
use crate::money::Amount;
use crate::request::ApiRequest;

/// `access_params` of the signing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessParams {
    /// `ALIPAYAPP`, `QRCODE` or `QRCODEORSMS`.
    pub channel: String,
}

/// `period_rule_params` (periodic deduction only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodRuleParams {
    /// `DAY` or `MONTH`.
    pub period_type: String,
    /// Period length in `period_type` units.
    pub period: u32,
    /// First execution date `yyyy-MM-dd`.
    pub execute_time: String,
    /// Maximum per deduction.
    pub single_amount: Amount,
    /// Maximum in total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<Amount>,
    /// Maximum number of deductions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_payments: Option<u32>,
}

/// `alipay.user.agreement.page.sign`: a page API. Build the signed URL with
/// [`crate::Client::page_url`] and send the user there (or render it as a QR code).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageSign {
    /// `GENERAL_WITHHOLDING` (default) or `CYCLE_PAY_AUTH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// `GENERAL_WITHHOLDING_P` or `CYCLE_PAY_AUTH_P`.
    pub personal_product_code: String,
    /// E.g. `INDUSTRY|ALIPAYGO`; default `DEFAULT|DEFAULT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_scene: Option<String>,
    /// Signing channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_params: Option<AccessParams>,
    /// Our agreement number (≤32, letters and digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_agreement_no: Option<String>,
    /// The user's login at our side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_logon_id: Option<String>,
    /// Validity (`<n>d` or `<n>m`); default long-term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_validity_period: Option<String>,
    /// Periodic rule (`CYCLE_PAY_AUTH` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_rule_params: Option<PeriodRuleParams>,
    /// Page shown while signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_process_url: Option<String>,
    /// Credit (芝麻) parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zm_auth_params: Option<serde_json::Value>,
    /// Sub-merchant shown on the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant: Option<serde_json::Value>,
    /// `PARTNER` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub third_party_type: Option<String>,
}

impl PageSign {
    /// A withholding agreement for open-door cabinets (`INDUSTRY|ALIPAYGO`).
    pub fn withholding(external_agreement_no: impl Into<String>) -> Self {
        PageSign {
            product_code: Some("GENERAL_WITHHOLDING".into()),
            personal_product_code: "GENERAL_WITHHOLDING_P".into(),
            sign_scene: Some("INDUSTRY|ALIPAYGO".into()),
            access_params: Some(AccessParams {
                channel: "ALIPAYAPP".into(),
            }),
            external_agreement_no: Some(external_agreement_no.into()),
            ..Default::default()
        }
    }
}

fn is_validity_period(s: &str) -> bool {
    let Some(n) = s.strip_suffix('d').or_else(|| s.strip_suffix('m')) else {
        return false;
    };
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0')
}

impl ApiRequest for PageSign {
    const METHOD: &'static str = "alipay.user.agreement.page.sign";
    type Response = PageSignResponse;
    fn validate(&self) -> Result<(), String> {
        if self.personal_product_code.is_empty() {
            return Err("personal_product_code is required".into());
        }
        if let Some(ext) = &self.external_agreement_no {
            if ext.is_empty() || ext.len() > 32 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("external_agreement_no must be 1 to 32 letters or digits".into());
            }
            let scene = self.sign_scene.as_deref().unwrap_or("DEFAULT|DEFAULT");
            if scene == "DEFAULT|DEFAULT" {
                return Err(
                    "sign_scene must be set (not DEFAULT|DEFAULT) when external_agreement_no is used"
                        .into(),
                );
            }
        }
        if let Some(p) = &self.sign_validity_period
            && !is_validity_period(p)
        {
            return Err("sign_validity_period must look like `12m` or `30d`".into());
        }
        let periodic = self.product_code.as_deref() == Some("CYCLE_PAY_AUTH");
        match (&self.period_rule_params, periodic) {
            (None, true) => return Err("CYCLE_PAY_AUTH needs period_rule_params".into()),
            (Some(_), false) => {
                return Err("period_rule_params is only used with CYCLE_PAY_AUTH".into());
            }
            (Some(rule), true) => {
                if !matches!(rule.period_type.as_str(), "DAY" | "MONTH") {
                    return Err("period_rule_params.period_type must be DAY or MONTH".into());
                }
                if rule.period == 0 {
                    return Err("period_rule_params.period must be at least 1".into());
                }
            }
            (None, false) => {}
        }
        if let Some(l) = &self.external_logon_id {
            validate_max_chars("external_logon_id", l, 100)?;
        }
        Ok(())
    }
}

/// Page APIs have no gateway answer; this type only satisfies [`ApiRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PageSignResponse {}

/// `alipay.user.agreement.query`: by `agreement_no`, or by the user + `personal_product_code`
/// + `sign_scene`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgreementQuery {
    /// Personal product code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_product_code: Option<String>,
    /// User `2088…` id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay_user_id: Option<String>,
    /// User open id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay_open_id: Option<String>,
    /// User login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay_logon_id: Option<String>,
    /// Sign scene.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_scene: Option<String>,
    /// Our agreement number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_agreement_no: Option<String>,
    /// `PARTNER` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub third_party_type: Option<String>,
    /// Alipay's agreement number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_no: Option<String>,
}

impl AgreementQuery {
    /// Query by agreement number.
    pub fn by_agreement_no(agreement_no: impl Into<String>) -> Self {
        AgreementQuery {
            agreement_no: Some(agreement_no.into()),
            ..Default::default()
        }
    }
}

impl ApiRequest for AgreementQuery {
    const METHOD: &'static str = "alipay.user.agreement.query";
    type Response = AgreementQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        if self.agreement_no.as_deref().is_some_and(|a| !a.is_empty()) {
            return Ok(());
        }
        if self.alipay_user_id.is_none()
            && self.alipay_open_id.is_none()
            && self.alipay_logon_id.is_none()
        {
            return Err(
                "give agreement_no, or the user (alipay_user_id / alipay_open_id / alipay_logon_id)"
                    .into(),
            );
        }
        if let Some(id) = &self.alipay_user_id {
            validate_user_id("alipay_user_id", id)?;
        }
        if self.personal_product_code.is_none() || self.sign_scene.is_none() {
            return Err("querying by user needs personal_product_code and sign_scene".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.user.agreement.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgreementQueryResponse {
    /// Alipay's agreement number.
    pub agreement_no: Option<String>,
    /// `NORMAL`, `TEMP`, `STOP`, `UNSIGN`.
    pub status: Option<String>,
    /// Start of validity.
    pub valid_time: Option<String>,
    /// End of validity.
    pub invalid_time: Option<String>,
    /// Signing time.
    pub sign_time: Option<String>,
    /// The user's masked login.
    pub alipay_logon_id: Option<String>,
    /// The signer (user id).
    pub principal_id: Option<String>,
    /// The signer (open id).
    pub principal_open_id: Option<String>,
    /// Sign scene.
    pub sign_scene: Option<String>,
    /// Personal product code.
    pub personal_product_code: Option<String>,
    /// Our agreement number.
    pub external_agreement_no: Option<String>,
    /// Our login for the user.
    pub external_logon_id: Option<String>,
    /// Third-party type.
    pub third_party_type: Option<String>,
    /// Credit mode.
    pub credit_auth_mode: Option<String>,
    /// Per-deduction limit.
    pub single_quota: Option<Amount>,
    /// Last deduction.
    pub last_deduct_time: Option<String>,
    /// Next deduction.
    pub next_deduct_time: Option<String>,
    /// Device id.
    pub device_id: Option<String>,
    /// Zhima open id.
    pub zm_open_id: Option<String>,
}

impl AgreementQueryResponse {
    /// True for `NORMAL` (active) agreements.
    pub fn is_active(&self) -> bool {
        self.status.as_deref() == Some("NORMAL")
    }
}
