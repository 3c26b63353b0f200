//! `application/x-www-form-urlencoded` on raw bytes, charset-agnostic.
//!
//! Decoding stays on bytes so that a GBK body can be verified on its raw bytes before it is
//! turned into text. Encoding takes bytes already in the target charset.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// One decoded `name=value` pair, as bytes.
pub type RawPair = (Vec<u8>, Vec<u8>);

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-escape at byte {0}")]
    BadEscape(usize),
    /// The same parameter appears twice (parameter pollution).
    #[error("parameter {0:?} appears more than once")]
    Duplicate(String),
}

/// Decodes a form body into pairs in order; `+` means space, `%XX` a byte.
pub fn decode(body: &[u8]) -> Result<Vec<RawPair>, FormError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for part in body.split(|b| *b == b'&') {
        if !part.is_empty() {
            let (k, v) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &part[part.len()..]),
            };
            let key = unescape(k, offset)?;
            let value = unescape(v, offset + k.len() + 1)?;
            out.push((key, value));
        }
        offset += part.len() + 1;
    }
    Ok(out)
}

/// Like [`decode`], but refuses a repeated parameter name: a signed value and a used value
/// must never be able to differ.
pub fn decode_unique(body: &[u8]) -> Result<Vec<RawPair>, FormError> {
    let pairs = decode(body)?;
    let mut names: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(FormError::Duplicate(
            String::from_utf8_lossy(w[0]).into_owned(),
        ));
    }
    Ok(pairs)
}

fn unescape(input: &[u8], base: usize) -> Result<Vec<u8>, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        // Copy the run of plain bytes before the next `+` or `%` in one go.
        let run = input[i..]
            .iter()
            .position(|b| matches!(b, b'+' | b'%'))
            .unwrap_or(input.len() - i);
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        match input.get(i) {
            None => break,
            Some(b'+') => out.push(b' '),
            Some(_) => {
                let hi = input.get(i + 1).and_then(|b| hex(*b));
                let lo = input.get(i + 2).and_then(|b| hex(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(FormError::BadEscape(base + i)),
                }
                i += 2;
            }
        }
        i += 1;
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters left as they are: the unreserved set of RFC 3986 (what `URLEncoder` keeps, less `*`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one name or value (bytes already in the target charset).
pub fn encode_component(bytes: &[u8]) -> String {
    percent_encode(bytes, FORM).to_string()
}

/// Encodes pairs (bytes already in the target charset) as a form body.
pub fn encode<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode_component(k));
        out.push('=');
        out.push_str(&encode_component(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_escapes() {
        let pairs = decode(b"a=1+2&b=%2B%e4%b8%ad&c&=x").unwrap();
        assert_eq!(pairs[0], (b"a".to_vec(), b"1 2".to_vec()));
        assert_eq!(pairs[1], (b"b".to_vec(), "+中".as_bytes().to_vec()));
        assert_eq!(pairs[2], (b"c".to_vec(), Vec::new()));
        assert_eq!(pairs[3], (Vec::new(), b"x".to_vec()));
    }

    #[test]
    fn refuses_bad_escapes_and_duplicates() {
        assert_eq!(decode(b"a=%zz"), Err(FormError::BadEscape(2)));
        assert_eq!(decode(b"a=%4"), Err(FormError::BadEscape(2)));
        assert!(matches!(
            decode_unique(b"total_amount=1.00&total_amount=0.01"),
            Err(FormError::Duplicate(_))
        ));
    }

    #[test]
    fn encode_round_trips() {
        let body = encode([(b"k".as_slice(), "a b+/中&=".as_bytes())]);
        assert_eq!(body, "k=a%20b%2B%2F%E4%B8%AD%26%3D");
        let back = decode(body.as_bytes()).unwrap();
        assert_eq!(back[0].1, "a b+/中&=".as_bytes());
    }
}
