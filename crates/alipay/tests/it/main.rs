//! The alipay crate's integration tests: one binary, one module per area.

mod support;

mod envelope;
mod interop;
mod keys;
mod notify;
mod properties;
