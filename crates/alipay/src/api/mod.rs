//! Typed requests and responses, one module per API family.
//!
//! Each request is a struct serialised as `biz_content`, with optional fields as `Option`
//! (skipped when `None`), and one `impl ApiRequest` naming its method and response type.

pub mod agreement;
pub mod bill;
pub mod checks;
pub mod face;
pub mod fund_auth;
pub mod oauth;
pub mod royalty;
pub mod trade;
pub mod wire;
