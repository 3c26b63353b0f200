//! The device channel: how the server talks to vending machines.
//!
//! - [`protocol`]: the signed envelope, commands, events, and the checks on every message.
//! - [`signing`]: HMAC-SHA256 signing and constant-time verification (pure).
//! - [`ledger`]: [`DeviceChannel`], the handle the order flow uses: `send` a command (intent
//!   recorded before publishing), the stream of verified, deduplicated events,
//!   `pending_for` / re-delivery within the TTL.
//! - [`mqtt`]: the server's supervised MQTT link, and the start of the embedded broker.
//! - [`broker`]: the embedded MQTT 3.1.1 broker, with per-machine topic access control.
//! - [`http`]: the HTTP fallback for machines without MQTT.
//! - [`sent_marks`]: when each command was handed over, until the ledger row is next written.
//! - [`held_acks`]: acks that settle nothing but their command's row, written together.
//!
//! The protocol, for device makers, is in `docs/device-protocol.md`.

pub mod broker;
pub mod held_acks;
pub mod http;
pub mod ledger;
pub mod mqtt;
pub mod protocol;
pub mod sent_marks;
pub mod signing;

pub use ledger::{
    Clock, CommandRecord, DeviceChannel, DeviceError, DeviceEvent, ManualClock, PendingCommand,
    SystemClock,
};
pub use protocol::{Command, Event, Rejection};
