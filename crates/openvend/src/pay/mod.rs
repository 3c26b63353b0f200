//! Payment flows over the `alipay` crate. Each flow writes its intent to the store first,
//! calls Alipay after the transaction commits, and records the verified answer.

pub mod checkout;
pub mod late_vend;
pub mod refund;
pub mod sale;
pub mod vend;
