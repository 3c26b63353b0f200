//! Integration tests of the platform. The store story runs on SQLite always, and on
//! PostgreSQL in CI (`.ci/run` sets `OPENVEND_TEST_POSTGRES` and runs the ignored tests).

#![allow(clippy::unwrap_used)] // tests fail loudly on setup errors

mod api;
mod app;
mod device;
mod h5;
mod resolve;
mod sale;
mod store;
mod vend;
