//! HTTP surfaces. One router per feature; handlers extract, parse, call a service, map.

pub mod api;
pub mod attention;
pub mod machines;
pub mod notify;
pub mod products;
pub mod serve;
