//! OpenVend: the operator platform for Alipay-paid vending machines.
//!
//! - [`domain`]: business rules without I/O (slots, orders and their state machines, royalty).
//! - [`device`]: the device channel (MQTT and HTTP) to the machines.
//! - [`cli`]: the `openvend` subcommands.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod device;
pub mod domain;
pub mod store;
