-- A machine the operator took out of service: set when disabled (server ms), NULL when in
-- service. A disabled machine starts nothing and is handed nothing but cancels (device-protocol.md §8).
ALTER TABLE machines ADD COLUMN disabled_at BIGINT;
