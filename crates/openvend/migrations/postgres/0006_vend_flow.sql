-- The vend flow over the device channel.
--
-- A machine's buy_request carries a request id: the same id from the same machine must give
-- the same order, never a second one.
ALTER TABLE orders ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX orders_machine_request ON orders (machine_id, request_id) WHERE request_id IS NOT NULL;

-- A new command kind, `sale_refused` (the answer to a buy_request that cannot be sold).
ALTER TABLE device_commands DROP CONSTRAINT device_commands_kind_check;
ALTER TABLE device_commands ADD CONSTRAINT device_commands_kind_check
    CHECK (kind IN ('show_qr', 'dispense', 'unlock_door', 'cancel', 'sync_time', 'sale_refused'));
CREATE INDEX device_commands_order ON device_commands (order_id, kind);
