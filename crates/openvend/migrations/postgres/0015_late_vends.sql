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
    -- Units taken off their slot's stock, and the slot of each unit not yet taken off (a JSON
    -- list): a slot's stock held wholly by reservations, this order's own included while the
    -- server had not settled it, cannot go lower. The order's settlement takes off the rest
    -- once its reservation is released; what is left after that, a person counts.
    stock_corrected INTEGER NOT NULL CHECK (stock_corrected >= 0),
    uncorrected     TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX late_vends_reported ON late_vends (reported_at);
CREATE INDEX late_vends_order ON late_vends (order_id);
