//! Integration tests: the real sandbox on port 0, driven over real HTTP by the `alipay` client.

mod faults;
mod notifications;
mod pages;
mod persistence;
mod receiver;
mod support;
mod trade;
