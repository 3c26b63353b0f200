//! Integration tests: the real sandbox on port 0, driven over real HTTP by the `alipay` client.

mod agreement;
mod face;
mod fund_auth;
mod oauth;
mod pay;
mod refund;
mod royalty;
mod support;
mod trade;
