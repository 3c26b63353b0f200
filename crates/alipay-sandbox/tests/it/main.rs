//! Integration tests: the real sandbox on port 0, driven over real HTTP by the `alipay` client.

#![allow(clippy::unwrap_used)] // tests fail loudly on setup errors

mod receiver;
mod support;

mod agreement;
mod bill;
mod cert_mode;
mod face;
mod faults;
mod fund_auth;
mod gateway;
mod notifications;
mod oauth;
mod pages;
mod pay;
mod persistence;
mod refund;
mod royalty;
mod trade;
mod typed_client;
