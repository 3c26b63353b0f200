//! Finding the exact raw bytes of `<method>_response` in a gateway answer.
//!
//! The response signature covers the response object byte for byte as sent (key order,
//! whitespace, `\/` escapes), so it must be cut out of the raw body, never re-serialised.
//! This scanner walks the top-level object once and records each member's raw value span.
//! It is charset-aware: in GBK a lead byte ≥ 0x81 is followed by a trail byte that may be
//! `\` (0x5C) or a brace, which must not be read as JSON syntax.

use crate::sign::Charset;

/// A top-level member of the envelope: its (unescaped, ASCII) key and raw value bytes.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The member's key, when it is plain ASCII without escapes (all Alipay keys are).
    pub key: &'a [u8],
    /// The raw value, exactly as in the body.
    pub raw: &'a [u8],
}

/// Why a body is not a JSON object envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed response envelope at byte {offset}: {what}")]
pub struct EnvelopeError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What was expected.
    pub what: &'static str,
}

/// Splits a top-level JSON object into members with raw value spans.
pub fn members(body: &[u8], charset: Charset) -> Result<Vec<Member<'_>>, EnvelopeError> {
    let mut s = Scanner {
        b: body,
        i: 0,
        gbk: charset == Charset::Gbk,
    };
    s.ws();
    s.expect(b'{', "an opening `{`")?;
    let mut out = Vec::new();
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
        return s.finish(out);
    }
    loop {
        s.ws();
        let key_start = s.i;
        s.string()?;
        let key = &body[key_start + 1..s.i - 1];
        s.ws();
        s.expect(b':', "`:` after a key")?;
        s.ws();
        let value_start = s.i;
        s.value(0)?;
        out.push(Member {
            key,
            raw: &body[value_start..s.i],
        });
        s.ws();
        match s.next() {
            Some(b',') => continue,
            Some(b'}') => return s.finish(out),
            _ => return Err(s.err("`,` or `}`")),
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    gbk: bool,
}

/// Nesting deeper than this is refused instead of recursing without bound.
const MAX_DEPTH: usize = 128;

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }
    fn err(&self, what: &'static str) -> EnvelopeError {
        EnvelopeError {
            offset: self.i.min(self.b.len()),
            what,
        }
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), EnvelopeError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }
    fn finish<'m>(mut self, out: Vec<Member<'m>>) -> Result<Vec<Member<'m>>, EnvelopeError> {
        self.ws();
        if self.i < self.b.len() {
            return Err(self.err("end of body after the object"));
        }
        Ok(out)
    }
    fn string(&mut self) -> Result<(), EnvelopeError> {
        self.expect(b'"', "a string")?;
        loop {
            match self.next() {
                None => return Err(self.err("a closing quote")),
                Some(b'"') => return Ok(()),
                Some(b'\\') => {
                    if self.next().is_none() {
                        return Err(self.err("an escape"));
                    }
                }
                Some(c) if self.gbk && c >= 0x81 => {
                    // GBK double byte: skip the trail byte whatever it is.
                    if self.next().is_none() {
                        return Err(self.err("a GBK trail byte"));
                    }
                }
                Some(_) => {}
            }
        }
    }
    fn value(&mut self, depth: usize) -> Result<(), EnvelopeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("less deeply nested JSON"));
        }
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => self.container(b'}', depth, true),
            Some(b'[') => self.container(b']', depth, false),
            Some(_) => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                {
                    self.i += 1;
                }
                if self.i == start {
                    Err(self.err("a value"))
                } else {
                    Ok(())
                }
            }
            None => Err(self.err("a value")),
        }
    }
    fn container(&mut self, close: u8, depth: usize, object: bool) -> Result<(), EnvelopeError> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if object {
                self.string()?;
                self.ws();
                self.expect(b':', "`:` after a key")?;
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(c) if c == close => return Ok(()),
                _ => return Err(self.err("`,` or a closing bracket")),
            }
        }
    }
}

/// Finds the raw value of the member named `key`.
pub fn find<'a>(members: &[Member<'a>], key: &str) -> Option<&'a [u8]> {
    members
        .iter()
        .find(|m| m.key == key.as_bytes())
        .map(|m| m.raw)
}

/// The raw value of a string member with its quotes removed (Alipay's `sign` and cert SN
/// hold no escapes).
pub fn find_str<'a>(members: &[Member<'a>], key: &str) -> Option<&'a str> {
    let raw = find(members, key)?;
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    std::str::from_utf8(inner).ok()
}

/// The envelope key of a method: `alipay.trade.query` → `alipay_trade_query_response`.
pub fn response_key(method: &str) -> String {
    let mut key = method.replace('.', "_");
    key.push_str("_response");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_out_the_exact_raw_object() {
        let body = br#"{"alipay_trade_precreate_response":{"code":"10000","msg":"Success","qr_code":"https:\/\/qr.alipay.com\/x","n":{"a":["}",1]}},"sign":"abc"}"#;
        let m = members(body, Charset::Utf8).unwrap();
        let raw = find(&m, "alipay_trade_precreate_response").unwrap();
        assert_eq!(
            raw,
            br#"{"code":"10000","msg":"Success","qr_code":"https:\/\/qr.alipay.com\/x","n":{"a":["}",1]}}"#
        );
        assert_eq!(find_str(&m, "sign"), Some("abc"));
    }

    #[test]
    fn order_independent_and_whitespace_preserving() {
        let body = b"{ \"sign\" : \"s\" ,\n \"x_response\" : { \"code\" : \"10000\" } }";
        let m = members(body, Charset::Utf8).unwrap();
        assert_eq!(find(&m, "x_response").unwrap(), b"{ \"code\" : \"10000\" }");
    }

    #[test]
    fn gbk_trail_bytes_that_look_like_syntax_are_skipped() {
        // 0x81 0x5C is a GBK character whose trail byte is `\`.
        let mut body = b"{\"r\":{\"name\":\"".to_vec();
        body.extend_from_slice(&[0x81, 0x5c]);
        body.extend_from_slice(b"\"},\"sign\":\"s\"}");
        let m = members(&body, Charset::Gbk).unwrap();
        assert_eq!(find_str(&m, "sign"), Some("s"));
    }

    #[test]
    fn refuses_truncated_and_trailing_garbage() {
        assert!(members(b"{\"a\":{\"b\":1}", Charset::Utf8).is_err());
        assert!(members(b"{\"a\":1} x", Charset::Utf8).is_err());
        assert!(members(b"[1]", Charset::Utf8).is_err());
        assert!(members(b"", Charset::Utf8).is_err());
    }
}
