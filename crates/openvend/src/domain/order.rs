//! Orders and their state machines.
//!
//! An order moves only through [`OrderState::apply`]: every (state, event) pair not listed is
//! an [`IllegalTransition`], never a silent overwrite. Paid never goes back to unpaid; a
//! terminal state never changes again. Per-item vend results and refunds have their own
//! small machines ([`VendState`], [`RefundState`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::fen::{Fen, sum};

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// The trade exists at Alipay (or is being created); the buyer has not paid.
    AwaitingPayment,
    /// A call's result is unknown (timeout, system error): being resolved by query.
    PaymentUnknown,
    /// Paid; the dispense command is not yet acknowledged.
    Paid,
    /// The machine acknowledged the dispense command; waiting for per-item results.
    Dispensing,
    /// Every item either left the machine or was refunded. Terminal.
    Completed,
    /// Paid, nothing dispensed, everything refunded. Terminal.
    Refunded,
    /// Unpaid and closed (timeout, close or cancel). Terminal.
    Closed,
    /// Needs a person: conflicting evidence about what left the machine.
    Dispute,
}

impl OrderState {
    /// True when the state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Completed | OrderState::Refunded | OrderState::Closed
        )
    }

    /// True once money was taken.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderState::Paid
                | OrderState::Dispensing
                | OrderState::Completed
                | OrderState::Refunded
                | OrderState::Dispute
        )
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::AwaitingPayment => "awaiting_payment",
            OrderState::PaymentUnknown => "payment_unknown",
            OrderState::Paid => "paid",
            OrderState::Dispensing => "dispensing",
            OrderState::Completed => "completed",
            OrderState::Refunded => "refunded",
            OrderState::Closed => "closed",
            OrderState::Dispute => "dispute",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "awaiting_payment" => OrderState::AwaitingPayment,
            "payment_unknown" => OrderState::PaymentUnknown,
            "paid" => OrderState::Paid,
            "dispensing" => OrderState::Dispensing,
            "completed" => OrderState::Completed,
            "refunded" => OrderState::Refunded,
            "closed" => OrderState::Closed,
            "dispute" => OrderState::Dispute,
            _ => return None,
        })
    }

    /// The state after `event`, or why that is not allowed.
    pub fn apply(self, event: OrderEvent) -> Result<OrderState, IllegalTransition> {
        use OrderEvent as E;
        use OrderState as S;
        let next = match (self, event) {
            (S::AwaitingPayment, E::ResultUnknown) => S::PaymentUnknown,
            (S::AwaitingPayment | S::PaymentUnknown, E::PaymentConfirmed) => S::Paid,
            (S::AwaitingPayment | S::PaymentUnknown, E::ClosedUnpaid) => S::Closed,
            (S::PaymentUnknown, E::ResultUnknown) => S::PaymentUnknown,
            // A cancel that found the trade paid refunds it in full at Alipay.
            (S::AwaitingPayment | S::PaymentUnknown, E::CancelledWithRefund) => S::Refunded,
            // Duplicate confirmations are idempotent, not errors.
            (
                S::Paid | S::Dispensing | S::Completed | S::Refunded | S::Dispute,
                E::PaymentConfirmed,
            ) => self,
            (S::Paid, E::DispenseAcknowledged) => S::Dispensing,
            (
                S::Paid | S::Dispensing,
                E::VendFinished {
                    dispensed_any: true,
                },
            ) => S::Completed,
            (
                S::Paid | S::Dispensing,
                E::VendFinished {
                    dispensed_any: false,
                },
            ) => S::Refunded,
            (S::Paid | S::Dispensing, E::EvidenceConflict) => S::Dispute,
            (
                S::Dispute,
                E::VendFinished {
                    dispensed_any: true,
                },
            ) => S::Completed,
            (
                S::Dispute,
                E::VendFinished {
                    dispensed_any: false,
                },
            ) => S::Refunded,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum OrderEvent {
    /// A verified notification or query says paid.
    PaymentConfirmed,
    /// A call with effects returned an unknown result.
    ResultUnknown,
    /// Alipay closed the unpaid trade (timeout, close, or cancel with action `close`).
    ClosedUnpaid,
    /// A cancel found the trade paid and refunded it (action `refund`).
    CancelledWithRefund,
    /// The machine acknowledged the dispense command.
    DispenseAcknowledged,
    /// Every item has a final vend result; failed ones are (being) refunded.
    VendFinished {
        /// At least one item left the machine.
        dispensed_any: bool,
    },
    /// Reports disagree about what left the machine.
    EvidenceConflict,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("order cannot go from {from} on {event:?}")]
pub struct IllegalTransition {
    /// The current state.
    pub from: OrderState,
    /// The refused event.
    pub event: OrderEvent,
}

/// One line of an order: a slot and a quantity at the price of the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The slot code.
    pub slot: String,
    /// The product.
    pub product_id: i64,
    /// Quantity.
    pub qty: u32,
    /// Unit price when ordered (from the server's catalogue, never from the machine).
    pub unit_price: Fen,
}

impl OrderLine {
    /// Quantity × unit price.
    pub fn amount(&self) -> Option<Fen> {
        self.unit_price.checked_mul(i64::from(self.qty))
    }
}

/// The total of an order, `None` on overflow.
pub fn order_total(lines: &[OrderLine]) -> Option<Fen> {
    sum(lines
        .iter()
        .map(OrderLine::amount)
        .collect::<Option<Vec<_>>>()?)
}

/// The vend result of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendState {
    /// Not yet reported.
    Pending,
    /// Left the machine.
    Dispensed,
    /// Did not leave (jam, empty, sensor saw nothing).
    Failed,
    /// Unknown (power loss mid-vend): refunded by default, never re-vended automatically.
    Indeterminate,
}

impl VendState {
    /// The state after a machine report; a final result never changes (duplicates are no-ops,
    /// contradictions are refused).
    pub fn report(self, result: VendState) -> Result<VendState, VendConflict> {
        match (self, result) {
            (VendState::Pending, r) => Ok(r),
            (s, r) if s == r => Ok(s),
            (s, r) => Err(VendConflict {
                recorded: s,
                reported: r,
            }),
        }
    }

    /// True when the buyer must get this item's money back.
    pub fn needs_refund(self) -> bool {
        matches!(self, VendState::Failed | VendState::Indeterminate)
    }
}

/// A machine report contradicting a recorded vend result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("vend result {reported:?} contradicts recorded {recorded:?}")]
pub struct VendConflict {
    /// What was recorded.
    pub recorded: VendState,
    /// What was reported now.
    pub reported: VendState,
}

/// The lifecycle of one refund (`out_request_no`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Written down, not yet sent.
    Requested,
    /// Sent; the result is unknown: retry with the same number, then query.
    Unknown,
    /// Money moved (`fund_change=Y` or `REFUND_SUCCESS`).
    Succeeded,
    /// Refused definitively; needs a person.
    Failed,
}

impl RefundState {
    /// Moves on a result; a success is final.
    pub fn on(self, result: RefundState) -> Result<RefundState, &'static str> {
        use RefundState as R;
        match (self, result) {
            (R::Succeeded, R::Succeeded) => Ok(R::Succeeded),
            (R::Succeeded, _) => Err("a succeeded refund never changes"),
            (R::Failed, R::Failed) => Ok(R::Failed),
            (R::Requested | R::Unknown | R::Failed, r) => Ok(r),
        }
    }
}

/// The money to refund after vend results: the value of every item that needs a refund,
/// less what is already refunded (so a repeat computes zero).
pub fn refund_due(lines: &[(OrderLine, Vec<VendState>)], already_refunded: Fen) -> Option<Fen> {
    let mut due = Fen::ZERO;
    for (line, items) in lines {
        let n = items.iter().filter(|s| s.needs_refund()).count() as i64;
        due = due.checked_add(line.unit_price.checked_mul(n)?)?;
    }
    Some(Fen(due.0.saturating_sub(already_refunded.0).max(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [OrderState; 8] = [
        OrderState::AwaitingPayment,
        OrderState::PaymentUnknown,
        OrderState::Paid,
        OrderState::Dispensing,
        OrderState::Completed,
        OrderState::Refunded,
        OrderState::Closed,
        OrderState::Dispute,
    ];
    const ALL_EVENTS: [OrderEvent; 8] = [
        OrderEvent::PaymentConfirmed,
        OrderEvent::ResultUnknown,
        OrderEvent::ClosedUnpaid,
        OrderEvent::CancelledWithRefund,
        OrderEvent::DispenseAcknowledged,
        OrderEvent::VendFinished {
            dispensed_any: true,
        },
        OrderEvent::VendFinished {
            dispensed_any: false,
        },
        OrderEvent::EvidenceConflict,
    ];

    #[test]
    fn the_happy_sale_goes_from_awaiting_payment_to_completed() {
        let s = OrderState::AwaitingPayment
            .apply(OrderEvent::PaymentConfirmed)
            .and_then(|s| s.apply(OrderEvent::DispenseAcknowledged))
            .and_then(|s| {
                s.apply(OrderEvent::VendFinished {
                    dispensed_any: true,
                })
            });
        assert_eq!(s, Ok(OrderState::Completed));
    }

    #[test]
    fn paid_never_goes_back_to_unpaid_and_terminal_states_never_move() {
        for from in ALL_STATES {
            for event in ALL_EVENTS {
                if let Ok(to) = from.apply(event) {
                    assert!(
                        !from.is_paid() || to.is_paid(),
                        "{from} -> {to} on {event:?} loses the payment"
                    );
                    if from.is_terminal() {
                        assert_eq!(to, from, "terminal {from} moved on {event:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_unpaid_order_cannot_be_dispensed() {
        for from in [
            OrderState::AwaitingPayment,
            OrderState::PaymentUnknown,
            OrderState::Closed,
        ] {
            assert!(from.apply(OrderEvent::DispenseAcknowledged).is_err());
            assert!(
                from.apply(OrderEvent::VendFinished {
                    dispensed_any: true
                })
                .is_err()
            );
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(OrderState::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderState::parse("PAID"), None);
    }

    #[test]
    fn vend_results_are_final_and_duplicates_are_no_ops() {
        assert_eq!(
            VendState::Pending.report(VendState::Dispensed),
            Ok(VendState::Dispensed)
        );
        assert_eq!(
            VendState::Dispensed.report(VendState::Dispensed),
            Ok(VendState::Dispensed)
        );
        assert!(VendState::Dispensed.report(VendState::Failed).is_err());
    }

    #[test]
    fn refund_due_counts_failed_and_indeterminate_items_once() {
        let line = OrderLine {
            slot: "A1".into(),
            product_id: 1,
            qty: 3,
            unit_price: Fen(250),
        };
        let lines = vec![(
            line,
            vec![
                VendState::Dispensed,
                VendState::Failed,
                VendState::Indeterminate,
            ],
        )];
        assert_eq!(refund_due(&lines, Fen::ZERO), Some(Fen(500)));
        assert_eq!(
            refund_due(&lines, Fen(500)),
            Some(Fen::ZERO),
            "a repeat refunds nothing more"
        );
    }

    #[test]
    fn a_succeeded_refund_is_final() {
        assert_eq!(
            RefundState::Unknown.on(RefundState::Succeeded),
            Ok(RefundState::Succeeded)
        );
        assert!(RefundState::Succeeded.on(RefundState::Failed).is_err());
        assert_eq!(
            RefundState::Requested.on(RefundState::Unknown),
            Ok(RefundState::Unknown)
        );
    }

    #[test]
    fn totals_are_checked() {
        let l = |q, p| OrderLine {
            slot: "A".into(),
            product_id: 1,
            qty: q,
            unit_price: Fen(p),
        };
        assert_eq!(order_total(&[l(2, 150), l(1, 300)]), Some(Fen(600)));
        assert_eq!(order_total(&[l(u32::MAX, i64::MAX)]), None);
    }
}
