//! Business rules with no I/O: money, machines and slots, orders and their state machines,
//! royalty splits. Everything here is plain data and pure functions, tested without a
//! database, a broker or Alipay.

pub mod fen;
pub mod order;
pub mod royalty;
pub mod slot;
