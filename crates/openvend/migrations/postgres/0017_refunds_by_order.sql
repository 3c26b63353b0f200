-- An order's refunds, read by order: what is left to refund before every automatic or manual
-- refund, the order's page, and the foreign-key check of anything that removes an order.
-- Without it each of these reads every refund ever made.
CREATE INDEX refunds_order_idx ON refunds (order_id);
