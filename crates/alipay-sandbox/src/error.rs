//! Gateway answers that are not success, with Alipay's codes and envelope.

use serde_json::{Map, Value};

/// A non-success answer of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `code`: 20000, 40001 … 40006.
    pub code: &'static str,
    /// `msg` for that code.
    pub msg: &'static str,
    /// `sub_code`.
    pub sub_code: String,
    /// `sub_msg`.
    pub sub_msg: String,
}

impl ApiError {
    fn new(
        code: &'static str,
        msg: &'static str,
        sub_code: &str,
        sub_msg: impl Into<String>,
    ) -> Self {
        ApiError {
            code,
            msg,
            sub_code: sub_code.to_owned(),
            sub_msg: sub_msg.into(),
        }
    }

    /// `40001 Missing Required Arguments`.
    pub fn missing(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("40001", "Missing Required Arguments", sub_code, sub_msg)
    }

    /// `40002 Invalid Arguments`.
    pub fn invalid(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("40002", "Invalid Arguments", sub_code, sub_msg)
    }

    /// `40003 Insufficient Conditions`.
    pub fn conditions(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("40003", "Insufficient Conditions", sub_code, sub_msg)
    }

    /// `40004 Business Failed` with a business sub_code (`ACQ.*` …).
    pub fn business(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("40004", "Business Failed", sub_code, sub_msg)
    }

    /// `40004 ACQ.INVALID_PARAMETER`.
    pub fn bad_param(sub_msg: impl Into<String>) -> Self {
        Self::business("ACQ.INVALID_PARAMETER", sub_msg)
    }

    /// `20000 Service Currently Unavailable` (unknown result).
    pub fn unknown() -> Self {
        Self::new(
            "20000",
            "Service Currently Unavailable",
            "isp.unknow-error",
            "系统繁忙",
        )
    }

    /// `40004 ACQ.SYSTEM_ERROR` (unknown result).
    pub fn system_error() -> Self {
        Self::business("ACQ.SYSTEM_ERROR", "系统错误")
    }

    /// `20001 Insufficient Token Permissions`.
    pub fn token(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("20001", "Insufficient Token Permissions", sub_code, sub_msg)
    }

    /// `40006 Insufficient Permissions`.
    pub fn permission(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Self::new("40006", "Insufficient Permissions", sub_code, sub_msg)
    }

    /// The response object.
    pub fn to_object(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.into());
        m.insert("sub_code".into(), self.sub_code.clone().into());
        m.insert("sub_msg".into(), self.sub_msg.clone().into());
        m
    }
}

/// The result of one API handler: the success fields (without code/msg), or an error.
pub type ApiResult = Result<Map<String, Value>, ApiError>;
