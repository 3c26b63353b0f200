//! The alipay crate's integration tests: one binary, one module per area.

mod api_support;
mod support;

mod api_http;
mod api_more;
mod api_trade;
mod bill;
mod envelope;
mod interop;
mod keys;
mod notify;
mod properties;
