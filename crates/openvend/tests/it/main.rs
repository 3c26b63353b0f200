//! Integration tests of the platform. The store story runs on SQLite always, and on
//! PostgreSQL in CI (`.ci/run` sets `OPENVEND_TEST_POSTGRES` and runs the ignored tests).

#![allow(clippy::unwrap_used)] // tests fail loudly on setup errors

mod alerts;
mod api;
mod app;
mod chaos;
mod clock;
mod crash;
mod dbfault;
mod device;
mod faults;
mod flow;
mod h5;
mod invariants;
mod resolve;
mod sale;
mod store;
mod vend;
mod watches;
