//! Properties over generated input: money text, form encoding, the envelope scanner and the
//! string to sign.

use std::collections::BTreeMap;

use alipay::envelope;
use alipay::form;
use alipay::money::MAX_FEN;
use alipay::sign::{SignScope, string_to_sign};
use alipay::{Amount, Charset};
use proptest::prelude::*;

/// The value in fen of `digits[.d[d]]`, computed without the crate.
fn reference_fen(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || frac.len() > 2 || (text.contains('.') && frac.is_empty()) {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    int.checked_mul(100)?.checked_add(frac)
}

proptest! {
    #[test]
    fn every_amount_in_range_prints_and_parses_back_to_itself(fen in 0..=MAX_FEN) {
        let amount = Amount::from_fen(fen).expect("in range");
        let text = amount.to_string();
        prop_assert_eq!(Amount::parse(&text), Ok(amount));
        let (int, frac) = text.split_once('.').expect("a decimal point");
        prop_assert_eq!(frac.len(), 2);
        prop_assert!(int == "0" || !int.starts_with('0'));
    }

    #[test]
    fn any_text_that_parses_prints_back_canonically_with_the_same_value(
        text in prop_oneof![
            "[0-9]{1,10}(\\.[0-9]{0,3})?",
            "[0-9.eE+-]{0,12}",
            any::<String>(),
        ]
    ) {
        if let Ok(amount) = Amount::parse(&text) {
            // Whatever was accepted has the decimal value of its text...
            prop_assert_eq!(Some(amount.fen()), reference_fen(&text), "{:?}", text);
            // ...and prints canonically, which parses back to the same amount.
            let printed = amount.to_string();
            prop_assert_eq!(Amount::parse(&printed), Ok(amount));
            prop_assert_eq!(printed.split_once('.').map(|(_, f)| f.len()), Some(2));
        }
    }

    #[test]
    fn the_amount_parser_never_panics_on_any_text(text in any::<String>()) {
        let _ = Amount::parse(&text);
        let _ = alipay::money::parse_signed_fen(&text);
    }

    #[test]
    fn form_encoding_round_trips_arbitrary_bytes(
        pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..40)),
            0..8,
        )
    ) {
        let body = form::encode(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        prop_assert!(body.is_ascii());
        let decoded = form::decode(body.as_bytes()).expect("what we encode decodes");
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn the_form_decoder_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = form::decode(&body);
        let _ = form::decode_unique(&body);
    }

    #[test]
    fn the_envelope_scanner_never_panics_on_arbitrary_bytes(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            // Mostly JSON syntax, to get past the first bytes.
            proptest::collection::vec(
                prop::sample::select(b"{}[]\":,\\ \nab1\x81\x5c".to_vec()),
                0..200,
            ),
        ]
    ) {
        for charset in [Charset::Utf8, Charset::Gbk] {
            if let Ok(members) = envelope::members(&body, charset) {
                for m in members {
                    // Every raw span is a slice of the body.
                    let start = m.raw.as_ptr() as usize - body.as_ptr() as usize;
                    prop_assert!(start + m.raw.len() <= body.len());
                }
            }
        }
    }

    #[test]
    fn the_envelope_scanner_cuts_out_each_member_exactly_as_serialised(
        values in proptest::collection::btree_map("[a-z_]{1,8}", json_value(), 1..6)
    ) {
        let object = serde_json::Value::Object(values.clone().into_iter().collect());
        let body = serde_json::to_string(&object).expect("JSON");
        let members = envelope::members(body.as_bytes(), Charset::Utf8).expect("valid JSON object");
        prop_assert_eq!(members.len(), values.len());
        for m in members {
            let key = std::str::from_utf8(m.key).expect("ASCII key");
            let parsed: serde_json::Value = serde_json::from_slice(m.raw).expect("raw span is JSON");
            prop_assert_eq!(&parsed, &values[key]);
        }
    }

    #[test]
    fn the_string_to_sign_does_not_depend_on_parameter_order(
        (params, shuffled) in proptest::collection::btree_map("[a-zA-Z_]{1,10}", "\\PC{0,12}", 0..10)
            .prop_flat_map(|m: BTreeMap<String, String>| {
                let v: Vec<(String, String)> = m.into_iter().collect();
                (Just(v.clone()), Just(v).prop_shuffle())
            })
    ) {
        for scope in [SignScope::Request, SignScope::Notification, SignScope::NotificationV2] {
            let a = string_to_sign(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), scope);
            let b = string_to_sign(shuffled.iter().map(|(k, v)| (k.as_str(), v.as_str())), scope);
            prop_assert_eq!(a, b);
        }
    }
}

/// JSON values of bounded depth (proptest has no generator for `serde_json::Value`).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        proptest::bool::ANY.prop_map(serde_json::Value::Bool),
        proptest::num::i64::ANY.prop_map(|n| serde_json::Value::Number(n.into())),
        "\\PC{0,10}".prop_map(serde_json::Value::String),
        Just(serde_json::Value::String(
            "https://qr.alipay.com/x\"}]\\".into()
        )),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let mut body = b"{\"a\":".to_vec();
    body.extend(std::iter::repeat_n(b'[', 100_000));
    body.extend(std::iter::repeat_n(b']', 100_000));
    body.push(b'}');
    let err = envelope::members(&body, Charset::Utf8).expect_err("too deep");
    assert!(err.to_string().contains("nested"), "{err}");
}
