//! A client for Alipay's open platform (the `gateway.do` protocol), right on the wire.
//!
//! - Keys ([`AppPrivateKey`], [`PublicKey`]) load from PEM or the bare base64 of Alipay's key
//!   tool, PKCS#1 or PKCS#8, and never print their material.
//! - Requests are signed RSA2 over the string-to-sign of [`sign::string_to_sign`], a pure function.
//! - Answers are verified over the exact raw bytes of `<method>_response` and classified into an
//!   [`Outcome`]: success, definite failure, or unknown (query to resolve).
//! - Notifications are verified on their raw bytes ([`notify::parse`]) into typed values.
//! - Amounts are integer fen ([`Amount`]), parsed and printed strictly.
//!
//! ```no_run
//! use alipay::{AppPrivateKey, Client, Config, PublicKey, Verification, Outcome, CallOptions};
//! use alipay::api::trade::{Precreate, Query};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let key = AppPrivateKey::from_text(&std::fs::read_to_string("app_private_key.txt")?)?;
//! let alipay_key = PublicKey::alipay_from_text(&std::fs::read_to_string("alipay_public_key.txt")?)?;
//! let mut config = Config::new("2021000122671080");
//! config.notify_url = Some("https://example.com/alipay/notify".into());
//! let client = Client::new(config, key, Verification::PublicKey(alipay_key))?;
//!
//! let order = Precreate::new("order-42", "3.50".parse()?, "Cola").terminal_id("VM-0001");
//! match client.execute(&order, &CallOptions::default()).await {
//!     Outcome::Success(r) => println!("show this QR: {}", r.qr_code),
//!     Outcome::Failure(f) => println!("refused: {f}"),
//!     Outcome::Unknown(u) => {
//!         // Never guess: ask Alipay what happened to order-42.
//!         let status = client.execute(&Query::by_out_trade_no("order-42"), &CallOptions::default()).await;
//!         println!("unknown ({u}); query says {status:?}");
//!     }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod bill;
pub mod cert;
pub mod client;
pub mod envelope;
pub mod form;
pub mod keys;
pub mod money;
pub mod notify;
pub mod outcome;
pub mod request;
pub mod retry;
pub mod sign;
pub mod time;
pub mod types;

pub use client::{Client, Config, ConfigError, SignedRequest, Verification};
pub use keys::{AppPrivateKey, KeyError, KeyRole, PublicKey};
pub use money::{Amount, AmountError};
pub use outcome::{AlipayError, Failure, Outcome, Unknown};
pub use request::{ApiRequest, CallOptions};
pub use sign::{Charset, SignType};
pub use types::{TradeStatus, UserRef};
