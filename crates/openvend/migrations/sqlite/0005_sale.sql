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
