-- A machine the operator took out of service: set when disabled (server ms), NULL when in
-- service. A disabled machine's messages are refused and no command is handed to it.
ALTER TABLE machines ADD COLUMN disabled_at BIGINT;
