//! The three kinds of result of a gateway call, which the caller cannot confuse.
//!
//! - [`Outcome::Success`]: Alipay answered `10000` with a verified signature; the typed body.
//! - [`Outcome::Failure`]: a definite business failure (or the request never left): nothing
//!   happened at Alipay because of this call.
//! - [`Outcome::Unknown`]: the operation may or may not have happened (timeout, `20000`,
//!   `ACQ.SYSTEM_ERROR`, 5xx, an unverifiable answer). Resolve it by querying.

use std::fmt;

/// The `code`/`msg`/`sub_code`/`sub_msg` of a non-success answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct AlipayError {
    /// Gateway code, e.g. `40004`.
    pub code: String,
    /// Gateway message, e.g. `Business Failed`.
    #[serde(default)]
    pub msg: String,
    /// Business code, e.g. `ACQ.TRADE_NOT_EXIST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    /// Business message (often Chinese).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_msg: Option<String>,
}

impl AlipayError {
    /// The sub_code, or "" when absent.
    pub fn sub_code(&self) -> &str {
        self.sub_code.as_deref().unwrap_or("")
    }

    /// True when this answer leaves the result unknown: `20000`, or a sub_code Alipay
    /// documents as "system error, query or retry".
    pub fn is_unknown_result(&self) -> bool {
        self.code == "20000" || UNKNOWN_SUB_CODES.contains(&self.sub_code())
    }
}

/// Sub_codes after which the operation's result is unknown.
pub const UNKNOWN_SUB_CODES: &[&str] = &[
    "ACQ.SYSTEM_ERROR",
    "isp.unknow-error",
    "aop.unknow-error",
    "SYSTEM_ERROR",
];

impl fmt::Display for AlipayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.msg)?;
        if let Some(sc) = &self.sub_code {
            write!(f, " / {sc}")?;
        }
        if let Some(sm) = &self.sub_msg {
            write!(f, " ({sm})")?;
        }
        Ok(())
    }
}

/// A definite failure: the operation did not take place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Alipay answered with a definite error (e.g. `40004 ACQ.TRADE_NOT_EXIST`).
    #[error("Alipay refused: {0}")]
    Alipay(AlipayError),
    /// The request was refused before anything was sent (invalid field, key problem).
    #[error("request not sent: {0}")]
    NotSent(String),
}

impl Failure {
    /// The sub_code of an Alipay failure, or "".
    pub fn sub_code(&self) -> &str {
        match self {
            Failure::Alipay(e) => e.sub_code(),
            Failure::NotSent(_) => "",
        }
    }
}

/// Why a result is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    /// No answer within the configured time.
    #[error("timed out waiting for Alipay")]
    Timeout,
    /// The connection failed or broke; the request may have been received.
    #[error("connection error: {0}")]
    Connection(String),
    /// An HTTP status other than 200 (e.g. 502 from a proxy).
    #[error("HTTP status {0} from the gateway")]
    HttpStatus(u16),
    /// Alipay said the result is unknown (`20000`, `ACQ.SYSTEM_ERROR`, …).
    #[error("Alipay reported an unknown result: {0}")]
    Gateway(AlipayError),
    /// `trade.pay` answered `10003`: waiting for the buyer to confirm. Poll with query.
    #[error("payment in process, waiting for the buyer")]
    InProcess {
        /// The `trade_no`, when the answer carried one.
        trade_no: Option<String>,
    },
    /// The answer's signature did not verify: it cannot be trusted either way.
    #[error("response signature invalid")]
    BadSignature,
    /// A success answer without a signature: never accepted.
    #[error("unsigned success answer refused")]
    UnsignedSuccess,
    /// The answer could not be read (not JSON, missing the response object, a field of the
    /// wrong type: the message names the JSON path).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Certificate mode: the certificate that signed the answer could not be obtained.
    #[error("signing certificate unavailable: {0}")]
    CertificateUnavailable(String),
}

/// The result of one gateway call.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an Unknown outcome must be resolved by querying"]
pub enum Outcome<T> {
    /// `10000`, verified, decoded.
    Success(T),
    /// The operation did not happen.
    Failure(Failure),
    /// The operation may have happened; query to find out.
    Unknown(Unknown),
}

impl<T> Outcome<T> {
    /// The success body, if any.
    pub fn success(self) -> Option<T> {
        match self {
            Outcome::Success(t) => Some(t),
            _ => None,
        }
    }

    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    /// True for [`Outcome::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(_))
    }

    /// The sub_code of a definite Alipay failure, if that is what this is.
    pub fn failure_sub_code(&self) -> Option<&str> {
        match self {
            Outcome::Failure(f) => Some(f.sub_code()),
            _ => None,
        }
    }

    /// Maps the success body.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Success(t) => Outcome::Success(f(t)),
            Outcome::Failure(e) => Outcome::Failure(e),
            Outcome::Unknown(u) => Outcome::Unknown(u),
        }
    }

    /// Converts into a `Result`, for `?` in code that treats failure and unknown alike
    /// (tests, scripts). Payment code should match on the three arms instead.
    pub fn into_result(self) -> Result<T, OutcomeError> {
        match self {
            Outcome::Success(t) => Ok(t),
            Outcome::Failure(f) => Err(OutcomeError::Failure(f)),
            Outcome::Unknown(u) => Err(OutcomeError::Unknown(u)),
        }
    }
}

/// A non-success outcome as an error value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    /// Definite failure.
    #[error(transparent)]
    Failure(Failure),
    /// Unknown result.
    #[error("result unknown: {0}")]
    Unknown(Unknown),
}
