-- The QR sale: the code shown on the machine, and the notifications already acted on.
ALTER TABLE orders ADD COLUMN qr_code TEXT;

-- A notification is acted on once per (notify_id, trade_status); repeats answer `success`.
CREATE TABLE processed_notifications (
    notify_id     TEXT   NOT NULL,
    trade_status  TEXT   NOT NULL,
    out_trade_no  TEXT   NOT NULL,
    received_at   BIGINT NOT NULL,
    PRIMARY KEY (notify_id, trade_status)
);

-- What each unit of each line did at the machine: at most one result per unit, never changed.
CREATE TABLE vend_results (
    order_id  BIGINT  NOT NULL REFERENCES orders (id),
    line_no   INTEGER NOT NULL,
    unit_no   INTEGER NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN ('dispensed', 'failed', 'indeterminate')),
    reason    TEXT,
    at        BIGINT  NOT NULL,
    PRIMARY KEY (order_id, line_no, unit_no)
);
