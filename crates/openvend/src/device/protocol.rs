//! The device protocol's messages: the signed envelope, commands down, events up, and the
//! checks every incoming message passes before anything else looks at it.
//!
//! [`open_envelope`] is pure: it takes the raw bytes, the identity the transport
//! authenticated (MQTT topic or `X-Machine` header), that machine's secret and the server's
//! clock reading, and returns a [`Verified`] message or a [`Rejection`] naming the reason.
//! Deduplication by `msg_id` needs the store and happens in [`super::ledger`].

use serde::{Deserialize, Serialize};

use super::signing;

/// Largest accepted message, envelope included.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest accepted difference between the envelope's `ts` and the server clock.
pub const MAX_SKEW_MS: i64 = 300_000;
/// Longest machine code, `msg_id`, command id, order id, request id or session id.
pub const MAX_ID_LEN: usize = 64;
/// Most units of one slot in one line.
pub const MAX_QTY: u32 = 100;
/// Most lines in one message.
pub const MAX_LINES: usize = 64;
/// Most entries in a `dispense_result`: one per unit, so at least the units of the largest
/// order a sale accepts (`pay::checkout::MAX_SALE_LINES` × `MAX_SALE_QTY`).
pub const MAX_RESULTS: usize = 100;

/// The signed envelope, as it travels. `body` is the body JSON carried as a string, so the
/// signature covers the exact bytes the sender wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Machine code of the machine the message is from (events) or for (commands).
    pub machine: String,
    /// Unique per sender and machine; for commands it is the command id.
    pub msg_id: String,
    /// Sender's clock, Unix milliseconds.
    pub ts: i64,
    /// What the body is.
    pub kind: String,
    /// The body JSON, as a string.
    pub body: String,
    /// base64 HMAC-SHA256 of [`signing::envelope_string`] with the machine secret.
    pub sig: String,
}

impl Envelope {
    /// Builds and signs an envelope.
    pub fn seal(
        machine: &str,
        secret: &[u8],
        msg_id: &str,
        ts: i64,
        kind: &str,
        body: String,
    ) -> Envelope {
        let sig = signing::sign(
            secret,
            signing::envelope_string(machine, msg_id, ts, kind, &body).as_bytes(),
        );
        Envelope {
            machine: machine.to_owned(),
            msg_id: msg_id.to_owned(),
            ts,
            kind: kind.to_owned(),
            body,
            sig,
        }
    }

    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One slot and a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Slot code, as printed on the machine.
    pub slot: String,
    /// Units, 1..=[`MAX_QTY`].
    pub qty: u32,
}

/// A command from the server to a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Command {
    /// Show a payment QR code.
    ShowQr {
        /// The order.
        order_id: String,
        /// The QR code content (a URL).
        qr_code: String,
        /// Amount to display, in fen.
        amount_fen: i64,
        /// When the QR stops being payable, Unix ms (server clock).
        expires_at: i64,
    },
    /// Dispense the items of a paid order.
    Dispense {
        /// The order.
        order_id: String,
        /// What to dispense.
        items: Vec<Line>,
        /// When the command expires, Unix ms (server clock): the machine discards it after
        /// this, whatever TTL the operator set. Absent from commands recorded before it was
        /// sent; those expire 60 s after the envelope's `ts`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    /// Unlock the door of a cabinet.
    UnlockDoor {
        /// The session the door-close event will name.
        session_id: String,
    },
    /// Stop showing or processing an order.
    Cancel {
        /// The order.
        order_id: String,
    },
    /// Set the machine clock. Sent, unrecorded and unacknowledged, in answer to a correctly
    /// signed event whose `ts` was outside the clock window; the machine then re-sends that
    /// event (same `msg_id`, new `ts`).
    SyncTime {
        /// Server time, Unix ms.
        server_ts: i64,
        /// The `msg_id` of the refused event, so the machine accepts only an answer to a
        /// message it really sent (an old `sync_time` replayed later names nothing pending).
        in_reply_to: String,
    },
    /// The answer to a `buy_request` that cannot be sold (slot empty, machine faulty, …).
    SaleRefused {
        /// The machine's request id.
        request_id: String,
        /// Why, for the screen.
        reason: String,
    },
}

impl Command {
    /// The `kind` string of the command.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ShowQr { .. } => "show_qr",
            Command::Dispense { .. } => "dispense",
            Command::UnlockDoor { .. } => "unlock_door",
            Command::Cancel { .. } => "cancel",
            Command::SyncTime { .. } => "sync_time",
            Command::SaleRefused { .. } => "sale_refused",
        }
    }

    /// The order the command belongs to, if any.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Command::ShowQr { order_id, .. }
            | Command::Dispense { order_id, .. }
            | Command::Cancel { order_id } => Some(order_id),
            Command::UnlockDoor { .. } | Command::SyncTime { .. } | Command::SaleRefused { .. } => {
                None
            }
        }
    }

    /// The body JSON of the command.
    pub fn body_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        value
            .get("body")
            .map(|b| b.to_string())
            .unwrap_or_else(|| "{}".to_owned())
    }
}

/// A slot's state in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotState {
    /// Slot code.
    pub slot: String,
    /// Units the machine counts in the slot.
    pub stock: u32,
}

/// The machine's business answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// The machine will execute the command.
    Accepted,
    /// The machine will not execute it (`reason` says why).
    Rejected,
    /// The machine executed this command id before (a repeat).
    AlreadyDone,
}

impl AckStatus {
    /// The command's ledger state once this answer is taken.
    pub fn ledger_state(self) -> &'static str {
        match self {
            AckStatus::Accepted | AckStatus::AlreadyDone => "acknowledged",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// The outcome of one slot in a dispense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendOutcome {
    /// The drop sensor saw the item(s) leave.
    Dispensed,
    /// Nothing left the slot (jam, empty).
    Failed,
    /// The machine cannot tell (power loss mid-vend); never re-vended automatically.
    Indeterminate,
}

/// One slot's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemResult {
    /// Slot code.
    pub slot: String,
    /// What happened.
    pub result: VendOutcome,
    /// Why, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event from a machine, parsed and checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Event {
    /// The machine is alive.
    Heartbeat {
        /// Slot stock as the machine counts it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<Vec<SlotState>>,
        /// Firmware version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fw: Option<String>,
    },
    /// The business acknowledgement of a command.
    Ack {
        /// The command's id (its envelope `msg_id`).
        command_id: String,
        /// Accepted, rejected or already done.
        status: AckStatus,
        /// Why, for rejections.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The outcome of a `dispense` command.
    DispenseResult {
        /// The dispense command's id.
        command_id: String,
        /// Its order.
        order_id: String,
        /// One result per slot.
        items: Vec<ItemResult>,
    },
    /// A cabinet door closed; what the buyer took.
    DoorClosed {
        /// The session from `unlock_door`.
        session_id: String,
        /// Items taken.
        taken: Vec<Line>,
    },
    /// A face-payment token from the machine's face SDK.
    FaceToken {
        /// The machine's request id (idempotency key of the purchase attempt).
        request_id: String,
        /// The ftoken.
        ftoken: String,
        /// What the buyer chose.
        items: Vec<Line>,
    },
    /// A hardware or software fault.
    Fault {
        /// Machine maker's fault code.
        code: String,
        /// Free text.
        detail: String,
    },
    /// The machine asks to sell these items (the buyer chose on the screen).
    BuyRequest {
        /// The machine's request id (idempotency key).
        request_id: String,
        /// What the buyer chose.
        items: Vec<Line>,
    },
}

impl Event {
    /// Parses an event body of the given kind, refusing unknown kinds, unknown fields and
    /// values out of range.
    pub fn parse(kind: &str, body: &str) -> Result<Event, Rejection> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| Rejection::BadBody(e.to_string()))?;
        if !value.is_object() {
            return Err(Rejection::BadBody("body is not a JSON object".into()));
        }
        if !KNOWN_EVENTS.contains(&kind) {
            return Err(Rejection::UnknownKind(truncate(kind)));
        }
        let tagged = serde_json::json!({ "kind": kind, "body": value });
        let event: Event =
            serde_json::from_value(tagged).map_err(|e| Rejection::BadBody(e.to_string()))?;
        event.check()?;
        Ok(event)
    }

    /// True when the event changes orders, stock or the machine's state beyond its liveness
    /// (the heartbeat's effect is applied by the ledger itself).
    pub fn needs_business_handling(&self) -> bool {
        !matches!(self, Event::Heartbeat { .. })
    }

    /// The `kind` string of the event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Heartbeat { .. } => "heartbeat",
            Event::Ack { .. } => "ack",
            Event::DispenseResult { .. } => "dispense_result",
            Event::DoorClosed { .. } => "door_closed",
            Event::FaceToken { .. } => "face_token",
            Event::Fault { .. } => "fault",
            Event::BuyRequest { .. } => "buy_request",
        }
    }

    fn check(&self) -> Result<(), Rejection> {
        match self {
            Event::Heartbeat { slots, fw } => {
                if let Some(slots) = slots {
                    if slots.len() > MAX_LINES * 4 {
                        return Err(Rejection::BadBody("too many slots".into()));
                    }
                    for s in slots {
                        check_id("slot", &s.slot)?;
                    }
                }
                if let Some(fw) = fw {
                    check_text("fw", fw)?;
                }
            }
            Event::Ack {
                command_id, reason, ..
            } => {
                check_id("command_id", command_id)?;
                if let Some(r) = reason {
                    check_text("reason", r)?;
                }
            }
            Event::DispenseResult {
                command_id,
                order_id,
                items,
            } => {
                check_id("command_id", command_id)?;
                check_id("order_id", order_id)?;
                if items.is_empty() || items.len() > MAX_RESULTS {
                    return Err(Rejection::BadBody(format!(
                        "items: 1 to {MAX_RESULTS} results"
                    )));
                }
                for i in items {
                    check_id("slot", &i.slot)?;
                    if let Some(r) = &i.reason {
                        check_text("reason", r)?;
                    }
                }
            }
            Event::DoorClosed { session_id, taken } => {
                check_id("session_id", session_id)?;
                check_lines(taken, true)?;
            }
            Event::FaceToken {
                request_id,
                ftoken,
                items,
            } => {
                check_id("request_id", request_id)?;
                check_text("ftoken", ftoken)?;
                check_lines(items, false)?;
            }
            Event::Fault { code, detail } => {
                check_id("code", code)?;
                check_text("detail", detail)?;
            }
            Event::BuyRequest { request_id, items } => {
                check_id("request_id", request_id)?;
                check_lines(items, false)?;
            }
        }
        Ok(())
    }
}

const KNOWN_EVENTS: &[&str] = &[
    "heartbeat",
    "ack",
    "dispense_result",
    "door_closed",
    "face_token",
    "fault",
    "buy_request",
];

/// Why an incoming message was ignored. Every variant is logged and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the 16 KiB limit")]
    TooLarge(usize),
    /// Not an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The transport identity names no known machine.
    #[error("unknown machine")]
    UnknownMachine,
    /// The operator took the machine out of service.
    #[error("machine disabled by its operator")]
    Disabled,
    /// The envelope's `machine` is not the authenticated machine.
    #[error("envelope names machine {claimed:?}, but the sender is {authenticated:?}")]
    WrongMachine {
        /// What the envelope says.
        claimed: String,
        /// What the transport authenticated.
        authenticated: String,
    },
    /// `ts` too far from the server clock.
    #[error("timestamp {skew_ms} ms from the server clock (limit ±300 s)")]
    Stale {
        /// Envelope ts − server now.
        skew_ms: i64,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A kind the server does not know.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The body does not fit its kind.
    #[error("bad body: {0}")]
    BadBody(String),
    /// The `msg_id` was seen before from this machine.
    #[error("duplicate msg_id (already processed)")]
    Duplicate,
    /// A result or ack that no command of this machine can take.
    #[error("refused: {0}")]
    Refused(String),
    /// The server could not store the message; nothing was recorded, retry with the same
    /// `msg_id`.
    #[error("server unavailable; retry later")]
    Unavailable,
}

/// A message that passed size, shape, identity, clock and signature checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The envelope as received.
    pub envelope: Envelope,
    /// Its parsed body.
    pub event: Event,
}

/// Checks a raw incoming message, in this order: size, envelope shape, identity, clock,
/// signature, body. The body is only parsed once the signature holds. A message outside the
/// clock window is `Stale` only if its signature holds (the server answers that with
/// `sync_time`); otherwise it is `BadSignature`.
pub fn open_envelope(
    raw: &[u8],
    authenticated: &str,
    secret: &[u8],
    now_ms: i64,
) -> Result<Verified, Rejection> {
    let envelope = parse_envelope(raw)?;
    if envelope.machine != authenticated {
        return Err(Rejection::WrongMachine {
            claimed: truncate(&envelope.machine),
            authenticated: truncate(authenticated),
        });
    }
    let clock = check_clock(envelope.ts, now_ms);
    let signed = signing::envelope_string(
        &envelope.machine,
        &envelope.msg_id,
        envelope.ts,
        &envelope.kind,
        &envelope.body,
    );
    if !signing::verify(secret, signed.as_bytes(), &envelope.sig) {
        return Err(Rejection::BadSignature);
    }
    clock?;
    let event = Event::parse(&envelope.kind, &envelope.body)?;
    Ok(Verified { envelope, event })
}

/// Parses the envelope and checks its ids, without identity, clock or signature.
pub fn parse_envelope(raw: &[u8]) -> Result<Envelope, Rejection> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::TooLarge(raw.len()));
    }
    let envelope: Envelope =
        serde_json::from_slice(raw).map_err(|e| Rejection::Malformed(e.to_string()))?;
    check_id("machine", &envelope.machine).map_err(to_malformed)?;
    check_id("msg_id", &envelope.msg_id).map_err(to_malformed)?;
    check_id("kind", &envelope.kind).map_err(to_malformed)?;
    Ok(envelope)
}

/// Refuses a timestamp more than ±300 s from `now_ms`.
pub fn check_clock(ts: i64, now_ms: i64) -> Result<(), Rejection> {
    let skew_ms = ts.saturating_sub(now_ms);
    // The distance, not `skew_ms.abs()`: a saturated `i64::MIN` has no absolute value.
    if ts.abs_diff(now_ms) > MAX_SKEW_MS.unsigned_abs() {
        return Err(Rejection::Stale { skew_ms });
    }
    Ok(())
}

fn to_malformed(r: Rejection) -> Rejection {
    match r {
        Rejection::BadBody(s) => Rejection::Malformed(s),
        other => other,
    }
}

/// Ids are 1..=64 characters of `A-Z a-z 0-9 _ - . :`, so they never break the canonical
/// string (no newline) nor an MQTT topic (no `/`, `+`, `#`).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn check_id(field: &str, s: &str) -> Result<(), Rejection> {
    if is_valid_id(s) {
        Ok(())
    } else {
        Err(Rejection::BadBody(format!(
            "{field}: 1 to 64 characters of A-Z a-z 0-9 _ - . :"
        )))
    }
}

fn check_text(field: &str, s: &str) -> Result<(), Rejection> {
    if s.len() > 4096 || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Rejection::BadBody(format!(
            "{field}: at most 4096 bytes, no control characters"
        )));
    }
    Ok(())
}

fn check_lines(lines: &[Line], allow_empty: bool) -> Result<(), Rejection> {
    if (!allow_empty && lines.is_empty()) || lines.len() > MAX_LINES {
        return Err(Rejection::BadBody("items: 1 to 64 lines".into()));
    }
    for l in lines {
        check_id("slot", &l.slot)?;
        if l.qty == 0 || l.qty > MAX_QTY {
            return Err(Rejection::BadBody(format!("qty {}: 1 to {MAX_QTY}", l.qty)));
        }
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ID_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn sealed(kind: &str, body: &str, ts: i64) -> Vec<u8> {
        Envelope::seal("VM001", b"s3cret", "m-1", ts, kind, body.into()).to_bytes()
    }

    #[test]
    fn a_signed_ack_opens() {
        let raw = sealed("ack", r#"{"command_id":"c1","status":"accepted"}"#, NOW);
        let v = open_envelope(&raw, "VM001", b"s3cret", NOW).unwrap();
        assert_eq!(
            v.event,
            Event::Ack {
                command_id: "c1".into(),
                status: AckStatus::Accepted,
                reason: None
            }
        );
    }

    #[test]
    fn every_bad_input_is_refused_with_its_reason() {
        let ok_body = r#"{"command_id":"c1","status":"accepted"}"#;
        let raw = sealed("ack", ok_body, NOW);
        assert_eq!(
            open_envelope(&raw, "VM001", b"wrong", NOW),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            open_envelope(&raw, "VM002", b"s3cret", NOW),
            Err(Rejection::WrongMachine { .. })
        ));
        let stale = sealed("ack", ok_body, NOW - 301_000);
        assert_eq!(
            open_envelope(&stale, "VM001", b"s3cret", NOW),
            Err(Rejection::Stale { skew_ms: -301_000 })
        );
        let forged_stale = {
            let mut v: serde_json::Value = serde_json::from_slice(&stale).unwrap();
            v["sig"] = "AAAA".into();
            serde_json::to_vec(&v).unwrap()
        };
        assert_eq!(
            open_envelope(&forged_stale, "VM001", b"s3cret", NOW),
            Err(Rejection::BadSignature),
            "only a signed message is answered with the time"
        );
        let future = sealed("ack", ok_body, NOW + 301_000);
        assert!(matches!(
            open_envelope(&future, "VM001", b"s3cret", NOW),
            Err(Rejection::Stale { .. })
        ));
        let edge = sealed("ack", ok_body, NOW - 300_000);
        assert!(open_envelope(&edge, "VM001", b"s3cret", NOW).is_ok());
        // The farthest times there are: refused as stale, never passed or overflowed.
        for ts in [i64::MIN, i64::MIN + NOW, i64::MAX] {
            assert!(
                matches!(check_clock(ts, NOW), Err(Rejection::Stale { .. })),
                "{ts}"
            );
            assert!(matches!(
                open_envelope(&sealed("ack", ok_body, ts), "VM001", b"s3cret", NOW),
                Err(Rejection::Stale { .. })
            ));
        }
        assert!(matches!(
            open_envelope(b"{not json", "VM001", b"s3cret", NOW),
            Err(Rejection::Malformed(_))
        ));
        let unknown_field = sealed(
            "ack",
            r#"{"command_id":"c1","status":"accepted","price":1}"#,
            NOW,
        );
        assert!(matches!(
            open_envelope(&unknown_field, "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(_))
        ));
        let unknown_kind = sealed("launch", "{}", NOW);
        assert!(matches!(
            open_envelope(&unknown_kind, "VM001", b"s3cret", NOW),
            Err(Rejection::UnknownKind(_))
        ));
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            open_envelope(&big, "VM001", b"s3cret", NOW),
            Err(Rejection::TooLarge(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["extra"] = 1.into();
        let extra = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            open_envelope(&extra, "VM001", b"s3cret", NOW),
            Err(Rejection::Malformed(_))
        ));
        let zero_qty = sealed(
            "buy_request",
            r#"{"request_id":"r1","items":[{"slot":"A1","qty":0}]}"#,
            NOW,
        );
        assert!(matches!(
            open_envelope(&zero_qty, "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(_))
        ));
        let neg_qty = sealed(
            "buy_request",
            r#"{"request_id":"r1","items":[{"slot":"A1","qty":-1}]}"#,
            NOW,
        );
        assert!(matches!(
            open_envelope(&neg_qty, "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(_))
        ));
        let wrong_type = sealed("fault", r#"{"code":1,"detail":"x"}"#, NOW);
        assert!(matches!(
            open_envelope(&wrong_type, "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(_))
        ));
    }

    #[test]
    fn a_result_for_every_unit_of_the_largest_sale_fits_and_more_is_refused() {
        let result = |n: usize| {
            let items = vec![r#"{"slot":"A1","result":"dispensed"}"#; n].join(",");
            sealed(
                "dispense_result",
                &format!(r#"{{"command_id":"c1","order_id":"o1","items":[{items}]}}"#),
                NOW,
            )
        };
        let largest =
            crate::pay::checkout::MAX_SALE_LINES * crate::pay::checkout::MAX_SALE_QTY as usize;
        assert!(open_envelope(&result(largest), "VM001", b"s3cret", NOW).is_ok());
        assert!(matches!(
            open_envelope(&result(MAX_RESULTS + 1), "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(why)) if why.contains("1 to 100 results")
        ));
        let over_qty = sealed(
            "buy_request",
            r#"{"request_id":"r1","items":[{"slot":"A1","qty":101}]}"#,
            NOW,
        );
        assert!(matches!(
            open_envelope(&over_qty, "VM001", b"s3cret", NOW),
            Err(Rejection::BadBody(why)) if why.contains("qty 101")
        ));
    }

    #[test]
    fn command_bodies_carry_only_the_fields_of_their_kind() {
        let c = Command::Dispense {
            order_id: "o1".into(),
            items: vec![Line {
                slot: "A1".into(),
                qty: 2,
            }],
            expires_at: Some(7),
        };
        assert_eq!(c.kind(), "dispense");
        assert_eq!(
            c.body_json(),
            r#"{"order_id":"o1","items":[{"slot":"A1","qty":2}],"expires_at":7}"#
        );
        assert_eq!(
            Command::SyncTime {
                server_ts: 5,
                in_reply_to: "e-1".into()
            }
            .body_json(),
            r#"{"server_ts":5,"in_reply_to":"e-1"}"#
        );
    }
}
