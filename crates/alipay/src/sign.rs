//! The string-to-sign of Alipay's gateway protocol, as pure functions.
//!
//! Requests: every parameter sent except `sign`, empty values dropped, sorted by name in
//! byte order, joined `k=v&k=v` with raw (not URL-encoded) values; `sign_type` is kept.
//! Notifications (`rsaCheckV1`): the same, but `sign_type` is dropped too.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The signature algorithm named by `sign_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignType {
    /// `RSA2`: SHA256withRSA, PKCS#1 v1.5. Required for new apps.
    #[default]
    Rsa2,
    /// `RSA`: SHA1withRSA, legacy; only verified, for old notifications.
    Rsa,
}

impl SignType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Rsa2 => "RSA2",
            SignType::Rsa => "RSA",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RSA2" => Ok(SignType::Rsa2),
            "RSA" => Ok(SignType::Rsa),
            other => Err(format!(
                "unsupported sign_type {other:?} (expected RSA2 or RSA)"
            )),
        }
    }
}

/// Which rule set builds the string to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScope {
    /// Gateway requests: drop `sign`, keep `sign_type`.
    Request,
    /// Notifications (`rsaCheckV1`): drop `sign` and `sign_type`.
    Notification,
    /// App-gateway messages (`rsaCheckV2`): drop `sign`, keep `sign_type`.
    NotificationV2,
}

impl SignScope {
    fn excludes(self, key: &[u8]) -> bool {
        match self {
            SignScope::Request | SignScope::NotificationV2 => key == b"sign",
            SignScope::Notification => key == b"sign" || key == b"sign_type",
        }
    }
}

/// The string to sign over UTF-8 parameters.
///
/// ```
/// use alipay::sign::{string_to_sign, SignScope};
/// let s = string_to_sign(
///     [("method", "alipay.trade.query"), ("app_id", "2021"), ("sign", "x"), ("empty", ""), ("sign_type", "RSA2")],
///     SignScope::Request,
/// );
/// assert_eq!(s, "app_id=2021&method=alipay.trade.query&sign_type=RSA2");
/// ```
pub fn string_to_sign<'a, I>(params: I, scope: SignScope) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let bytes = string_to_sign_bytes(
        params
            .into_iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        scope,
    );
    // Built only from UTF-8 pieces joined by ASCII, so it is UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// The string to sign over raw byte values (for GBK notifications, which are verified on
/// their raw bytes before any decoding).
pub fn string_to_sign_bytes<'a, I>(params: I, scope: SignScope) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut kept: Vec<(&[u8], &[u8])> = params
        .into_iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !scope.excludes(k))
        .collect();
    kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let len = kept.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

/// The two charsets Alipay speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// `utf-8` (the default).
    #[default]
    Utf8,
    /// `gbk`: requests, responses and notifications are signed over GBK bytes.
    Gbk,
}

impl Charset {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::Gbk => "gbk",
        }
    }

    /// Parses a wire name, case-insensitively (`UTF-8`, `utf8`, `GBK`).
    pub fn parse(name: &str) -> Option<Charset> {
        match name.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Charset::Utf8),
            "gbk" | "gb2312" | "gb18030" => Some(Charset::Gbk),
            _ => None,
        }
    }

    /// Encodes text into this charset's bytes; characters GBK cannot hold are an error.
    pub fn encode<'a>(self, text: &'a str) -> Result<Cow<'a, [u8]>, CharsetError> {
        match self {
            Charset::Utf8 => Ok(Cow::Borrowed(text.as_bytes())),
            Charset::Gbk => {
                let (bytes, _, had_errors) = encoding_rs::GBK.encode(text);
                if had_errors {
                    return Err(CharsetError::Unencodable);
                }
                Ok(bytes)
            }
        }
    }

    /// Decodes bytes of this charset into text; malformed bytes are an error, not replaced.
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Result<Cow<'a, str>, CharsetError> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| CharsetError::Malformed),
            Charset::Gbk => encoding_rs::GBK
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or(CharsetError::Malformed),
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that does not fit a charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// A character has no encoding in the charset (GBK cannot hold every Unicode character).
    #[error("text contains characters the charset cannot encode")]
    Unencodable,
    /// The bytes are not valid in the charset.
    #[error("bytes are not valid in the declared charset")]
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_scope_keeps_sign_type_and_drops_sign_and_empties() {
        let s = string_to_sign(
            [
                ("timestamp", "2014-07-24 03:07:50"),
                ("sign_type", "RSA2"),
                ("sign", "abc"),
                ("app_id", "2014072300007148"),
                ("notify_url", ""),
                ("biz_content", r#"{"a":"b c","d":"/x"}"#),
            ],
            SignScope::Request,
        );
        assert_eq!(
            s,
            r#"app_id=2014072300007148&biz_content={"a":"b c","d":"/x"}&sign_type=RSA2&timestamp=2014-07-24 03:07:50"#
        );
    }

    #[test]
    fn notification_scope_drops_sign_type() {
        let s = string_to_sign(
            [("b", "2"), ("sign_type", "RSA2"), ("a", "1"), ("sign", "x")],
            SignScope::Notification,
        );
        assert_eq!(s, "a=1&b=2");
    }

    #[test]
    fn sorts_by_bytes_not_by_locale() {
        // Uppercase sorts before lowercase and '_' (0x5F) between them.
        let s = string_to_sign(
            [("a_b", "1"), ("aB", "2"), ("ab", "3"), ("A", "4")],
            SignScope::Request,
        );
        assert_eq!(s, "A=4&aB=2&a_b=1&ab=3");
    }

    #[test]
    fn gbk_round_trip() {
        let bytes = Charset::Gbk.encode("中文").unwrap();
        assert_eq!(bytes.as_ref(), &[0xd6, 0xd0, 0xce, 0xc4]);
        assert_eq!(Charset::Gbk.decode(&bytes).unwrap(), "中文");
        assert!(Charset::Utf8.decode(&[0xff]).is_err());
        assert!(Charset::Gbk.encode("😀").is_err());
    }
}
