//! OpenVend: the operator platform for Alipay-paid vending machines.
//!
//! - [`domain`]: business rules without I/O (slots, orders and their state machines, royalty).
//! - [`device`]: the device channel (MQTT and HTTP) to the machines.
//! - [`h5`]: the buyer's mobile pages (免登, phone binding, `trade.create` + JSAPI).
//! - [`cli`]: the `openvend` subcommands.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod app;
pub mod attention;
pub mod cli;
pub mod config;
pub mod demo;
pub mod device;
pub mod domain;
pub mod error_text;
pub mod failpoint;
pub mod h5;
pub mod ids;
pub mod jobs;
pub mod pay;
pub mod services;
pub mod sim;
pub mod store;
pub mod web;
