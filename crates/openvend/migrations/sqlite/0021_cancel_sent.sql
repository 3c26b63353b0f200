-- When the resolver first sent `alipay.trade.cancel` for an order whose payment was unknown.
-- From then on the trade is never sold: it ends closed, or its payment goes back (by that
-- cancel, or by a refund when Alipay will not cancel it), and a payment notified or queried
-- afterwards is not served.
ALTER TABLE orders ADD COLUMN cancel_sent_at BIGINT;
