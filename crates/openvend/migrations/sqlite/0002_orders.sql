-- Orders, their lines, refunds, and the timeline that joins Alipay and device events.
CREATE TABLE orders (
    id            INTEGER PRIMARY KEY,
    out_trade_no  TEXT   NOT NULL UNIQUE,
    operator_id   BIGINT NOT NULL REFERENCES operators (id),
    machine_id    BIGINT NOT NULL REFERENCES machines (id),
    channel       TEXT   NOT NULL CHECK (channel IN ('qr', 'jsapi', 'face', 'cabinet')),
    state         TEXT   NOT NULL CHECK (state IN ('awaiting_payment', 'payment_unknown', 'paid', 'dispensing',
                                                   'completed', 'refunded', 'closed', 'dispute')),
    total_fen     BIGINT NOT NULL CHECK (total_fen > 0),
    refunded_fen  BIGINT NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0 AND refunded_fen <= total_fen),
    trade_no      TEXT,
    buyer_id      TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX orders_state_idx ON orders (state, expires_at);

CREATE TABLE order_lines (
    order_id        BIGINT  NOT NULL REFERENCES orders (id),
    line_no         INTEGER NOT NULL,
    slot_code       TEXT    NOT NULL,
    product_id      BIGINT  NOT NULL,
    qty             INTEGER NOT NULL CHECK (qty > 0),
    unit_price_fen  BIGINT  NOT NULL CHECK (unit_price_fen >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE refunds (
    id              INTEGER PRIMARY KEY,
    order_id        BIGINT NOT NULL REFERENCES orders (id),
    out_request_no  TEXT   NOT NULL UNIQUE,
    amount_fen      BIGINT NOT NULL CHECK (amount_fen > 0),
    state           TEXT   NOT NULL CHECK (state IN ('requested', 'unknown', 'succeeded', 'failed')),
    reason          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE order_events (
    id        INTEGER PRIMARY KEY,
    order_id  BIGINT NOT NULL REFERENCES orders (id),
    at        BIGINT NOT NULL,
    source    TEXT   NOT NULL CHECK (source IN ('alipay', 'device', 'system', 'admin')),
    kind      TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
CREATE INDEX order_events_order_idx ON order_events (order_id, at);
