-- What the alert webhook has delivered: one row per entry of the attention list, by the list
-- and the entry's key, so each thing that needs a person is pushed once. A row whose entry has
-- left the list (the fault was cleared, the refund retried) is deleted, so the same thing
-- happening again is pushed again.
CREATE TABLE alerts_sent (
    list      TEXT  NOT NULL,
    entry_key TEXT  NOT NULL,
    sent_at   BIGINT NOT NULL,
    PRIMARY KEY (list, entry_key)
);

-- The refused refunds of the attention list, found without reading every refund (a refund
-- rarely fails, so the index is small and most writes never touch it).
CREATE INDEX refunds_failed ON refunds (updated_at) WHERE state = 'failed';
