-- Tables whose rows are found only by their primary key are stored in that key's B-tree
-- (WITHOUT ROWID) instead of a rowid table plus a separate index: each insert writes one
-- page instead of two, and each sale writes about seven pages fewer to the WAL.
CREATE TABLE device_events_keyed (
    machine_id   BIGINT NOT NULL REFERENCES machines (id),
    msg_id       TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    PRIMARY KEY (machine_id, msg_id)
) WITHOUT ROWID;
INSERT INTO device_events_keyed SELECT machine_id, msg_id, kind, received_at, body FROM device_events;
DROP TABLE device_events;
ALTER TABLE device_events_keyed RENAME TO device_events;

CREATE TABLE processed_notifications_keyed (
    notify_id     TEXT   NOT NULL,
    trade_status  TEXT   NOT NULL,
    out_trade_no  TEXT   NOT NULL,
    received_at   BIGINT NOT NULL,
    PRIMARY KEY (notify_id, trade_status)
) WITHOUT ROWID;
INSERT INTO processed_notifications_keyed
    SELECT notify_id, trade_status, out_trade_no, received_at FROM processed_notifications;
DROP TABLE processed_notifications;
ALTER TABLE processed_notifications_keyed RENAME TO processed_notifications;

CREATE TABLE order_lines_keyed (
    order_id        BIGINT  NOT NULL REFERENCES orders (id),
    line_no         INTEGER NOT NULL,
    slot_code       TEXT    NOT NULL,
    product_id      BIGINT  NOT NULL,
    qty             INTEGER NOT NULL CHECK (qty > 0),
    unit_price_fen  BIGINT  NOT NULL CHECK (unit_price_fen >= 0),
    PRIMARY KEY (order_id, line_no)
) WITHOUT ROWID;
INSERT INTO order_lines_keyed
    SELECT order_id, line_no, slot_code, product_id, qty, unit_price_fen FROM order_lines;
DROP TABLE order_lines;
ALTER TABLE order_lines_keyed RENAME TO order_lines;

CREATE TABLE vend_results_keyed (
    order_id  BIGINT  NOT NULL REFERENCES orders (id),
    line_no   INTEGER NOT NULL,
    unit_no   INTEGER NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN ('dispensed', 'failed', 'indeterminate')),
    reason    TEXT,
    at        BIGINT  NOT NULL,
    PRIMARY KEY (order_id, line_no, unit_no)
) WITHOUT ROWID;
INSERT INTO vend_results_keyed SELECT order_id, line_no, unit_no, state, reason, at FROM vend_results;
DROP TABLE vend_results;
ALTER TABLE vend_results_keyed RENAME TO vend_results;
