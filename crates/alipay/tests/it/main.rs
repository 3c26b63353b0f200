//! The alipay crate's integration tests, in one binary.

mod api_http;
mod api_more;
mod api_support;
mod api_trade;
mod bill;
