-- When the resolver first sent `alipay.trade.cancel` for an order whose payment was unknown.
-- From then on the trade ends closed or refunded by that cancel, never sold: a payment
-- notified or queried afterwards is not served, as the cancel gives the money back.
ALTER TABLE orders ADD COLUMN cancel_sent_at BIGINT;
