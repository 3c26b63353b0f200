//! Slots (货道): one lane of a machine holding one product at one price, with stock that is
//! reserved while an order waits for payment, taken when it is dispensed, released when the
//! order ends unpaid or the vend fails.

use serde::{Deserialize, Serialize};

use super::fen::Fen;

/// A slot's stock and sale settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The slot's code on the machine (e.g. `A1`).
    pub code: String,
    /// The product in it, if any.
    pub product_id: Option<i64>,
    /// Price per item.
    pub price: Fen,
    /// How many items fit.
    pub capacity: u32,
    /// Items physically in the slot.
    pub stock: u32,
    /// Items held for orders waiting for payment or dispensing.
    pub reserved: u32,
    /// Whether the slot may sell.
    pub enabled: bool,
}

/// Why a slot cannot sell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The slot is switched off (by the operator, or after a jam).
    #[error("slot {0} is disabled")]
    Disabled(String),
    /// The slot holds no product.
    #[error("slot {0} has no product")]
    NoProduct(String),
    /// Not enough unreserved stock.
    #[error("slot {slot} has {available} available, {wanted} wanted")]
    OutOfStock {
        /// The slot.
        slot: String,
        /// Free items.
        available: u32,
        /// Requested items.
        wanted: u32,
    },
    /// A quantity of zero or more than the slot can ever hold.
    #[error("quantity {0} is not valid")]
    BadQuantity(u32),
    /// Stock bookkeeping would go negative: a bug or a replayed event.
    #[error("slot {0}: stock bookkeeping mismatch")]
    Inconsistent(String),
    /// Restock above capacity.
    #[error("slot {slot}: stock {stock} exceeds capacity {capacity}")]
    OverCapacity {
        /// The slot.
        slot: String,
        /// Requested stock.
        stock: u32,
        /// Capacity.
        capacity: u32,
    },
}

impl Slot {
    /// Items that can still be sold.
    pub fn available(&self) -> u32 {
        self.stock.saturating_sub(self.reserved)
    }

    /// Checks a sale of `qty` would be allowed, without changing anything.
    pub fn check_sale(&self, qty: u32) -> Result<(), SlotError> {
        if qty == 0 || qty > self.capacity.max(1) {
            return Err(SlotError::BadQuantity(qty));
        }
        if !self.enabled {
            return Err(SlotError::Disabled(self.code.clone()));
        }
        if self.product_id.is_none() {
            return Err(SlotError::NoProduct(self.code.clone()));
        }
        if self.available() < qty {
            return Err(SlotError::OutOfStock {
                slot: self.code.clone(),
                available: self.available(),
                wanted: qty,
            });
        }
        Ok(())
    }

    /// Holds `qty` items for an order.
    pub fn reserve(&mut self, qty: u32) -> Result<(), SlotError> {
        self.check_sale(qty)?;
        self.reserved += qty;
        Ok(())
    }

    /// Gives back a reservation (order closed unpaid, or vend failed without the item leaving).
    pub fn release(&mut self, qty: u32) -> Result<(), SlotError> {
        self.reserved = self
            .reserved
            .checked_sub(qty)
            .ok_or_else(|| SlotError::Inconsistent(self.code.clone()))?;
        Ok(())
    }

    /// Items left the machine: the reservation becomes a sale.
    pub fn take(&mut self, qty: u32) -> Result<(), SlotError> {
        let reserved = self
            .reserved
            .checked_sub(qty)
            .ok_or_else(|| SlotError::Inconsistent(self.code.clone()))?;
        let stock = self
            .stock
            .checked_sub(qty)
            .ok_or_else(|| SlotError::Inconsistent(self.code.clone()))?;
        self.reserved = reserved;
        self.stock = stock;
        Ok(())
    }

    /// Sets the physical stock after a restock count.
    pub fn restock(&mut self, stock: u32) -> Result<(), SlotError> {
        if stock > self.capacity {
            return Err(SlotError::OverCapacity {
                slot: self.code.clone(),
                stock,
                capacity: self.capacity,
            });
        }
        if stock < self.reserved {
            return Err(SlotError::Inconsistent(self.code.clone()));
        }
        self.stock = stock;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            code: "A1".into(),
            product_id: Some(1),
            price: Fen(350),
            capacity: 10,
            stock: 3,
            reserved: 0,
            enabled: true,
        }
    }

    #[test]
    fn a_reservation_holds_stock_until_taken_or_released() {
        let mut s = slot();
        s.reserve(2).unwrap();
        assert_eq!(s.available(), 1);
        assert!(matches!(
            s.reserve(2),
            Err(SlotError::OutOfStock {
                available: 1,
                wanted: 2,
                ..
            })
        ));
        s.take(1).unwrap();
        assert_eq!((s.stock, s.reserved), (2, 1));
        s.release(1).unwrap();
        assert_eq!((s.stock, s.reserved, s.available()), (2, 0, 2));
    }

    #[test]
    fn disabled_empty_and_productless_slots_refuse_with_a_reason() {
        let mut s = slot();
        s.enabled = false;
        assert_eq!(s.check_sale(1), Err(SlotError::Disabled("A1".into())));
        let mut s = slot();
        s.product_id = None;
        assert_eq!(s.check_sale(1), Err(SlotError::NoProduct("A1".into())));
        let mut s = slot();
        s.stock = 0;
        assert!(matches!(s.check_sale(1), Err(SlotError::OutOfStock { .. })));
        assert_eq!(slot().check_sale(0), Err(SlotError::BadQuantity(0)));
        assert_eq!(slot().check_sale(11), Err(SlotError::BadQuantity(11)));
    }

    #[test]
    fn bookkeeping_never_goes_negative() {
        let mut s = slot();
        assert!(s.release(1).is_err());
        assert!(s.take(1).is_err());
        assert!(s.restock(11).is_err());
        s.reserve(2).unwrap();
        assert!(
            s.restock(1).is_err(),
            "cannot restock below what is reserved"
        );
        s.restock(10).unwrap();
    }
}
