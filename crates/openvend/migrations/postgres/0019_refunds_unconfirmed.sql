-- When Alipay first left a refund unconfirmed (sent, but its query did not say
-- REFUND_SUCCESS): the pause before each re-send grows from then, not from when the refund
-- was written, so a refund held up by an outage is not kept waiting once Alipay is back.
ALTER TABLE refunds ADD COLUMN unconfirmed_since BIGINT;
-- Refunds still open, oldest first: the attention list of those not confirmed after a day
-- reads these alone.
CREATE INDEX refunds_open ON refunds (created_at) WHERE state IN ('requested', 'unknown');
