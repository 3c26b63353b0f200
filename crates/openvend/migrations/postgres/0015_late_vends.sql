-- What a machine reported about a dispense the server had already given up on: it did not
-- acknowledge it in time (its network was down, or the server was), so the buyer was refunded
-- (or is about to be), yet the machine says units came out. The report is still refused, and
-- changes nothing about the order; it is kept here, one per command, for a person to see.
CREATE TABLE late_vends (
    command_id     TEXT    NOT NULL PRIMARY KEY,
    order_id       BIGINT  NOT NULL REFERENCES orders (id),
    machine_id     BIGINT  NOT NULL REFERENCES machines (id),
    msg_id         TEXT    NOT NULL,
    reported_at    BIGINT  NOT NULL,
    dispensed      INTEGER NOT NULL CHECK (dispensed >= 0),
    indeterminate  INTEGER NOT NULL CHECK (indeterminate >= 0),
    -- Units whose slot stock was lowered: fewer than dispensed + indeterminate when the
    -- slot's stock was all reserved by other orders, and a person must count it.
    stock_corrected INTEGER NOT NULL CHECK (stock_corrected >= 0)
);
CREATE INDEX late_vends_reported ON late_vends (reported_at);
