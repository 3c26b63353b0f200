-- When an order's wait (the buyer's payment, the machine's dispense) is next looked at: the
-- job dispatcher queues the order's job (`resolve_payment` or `dispense`) once this time has
-- come, and clears it. An order paid and dispensed in time never needs a job row, so a sale
-- writes none for its waits. Read only in the waiting states (awaiting_payment, payment_unknown,
-- paid, dispensing). Orders written before keep the jobs queued for them.
ALTER TABLE orders ADD COLUMN watch_at BIGINT;
-- The open states by name (attention lists) and, within each, the watches by time.
DROP INDEX orders_state_idx;
CREATE INDEX orders_state_idx ON orders (state, watch_at);
