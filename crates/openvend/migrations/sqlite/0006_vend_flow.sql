-- The vend flow over the device channel.
--
-- A machine's buy_request carries a request id: the same id from the same machine must give
-- the same order, never a second one.
ALTER TABLE orders ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX orders_machine_request ON orders (machine_id, request_id) WHERE request_id IS NOT NULL;

-- A new command kind, `sale_refused` (the answer to a buy_request that cannot be sold).
-- SQLite cannot alter a CHECK constraint: rebuild the table.
CREATE TABLE device_commands_new (
    id          INTEGER PRIMARY KEY,
    machine_id  BIGINT  NOT NULL REFERENCES machines (id),
    command_id  TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL CHECK (kind IN ('show_qr', 'dispense', 'unlock_door', 'cancel', 'sync_time', 'sale_refused')),
    order_id    TEXT,
    payload     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'acknowledged', 'rejected', 'done', 'expired')),
    created_at  BIGINT  NOT NULL,
    sent_at     BIGINT,
    acked_at    BIGINT,
    expires_at  BIGINT  NOT NULL,
    result      TEXT
);
INSERT INTO device_commands_new SELECT * FROM device_commands;
DROP TABLE device_commands;
ALTER TABLE device_commands_new RENAME TO device_commands;
CREATE INDEX device_commands_open ON device_commands (machine_id, state, expires_at);
CREATE INDEX device_commands_order ON device_commands (order_id, kind);
