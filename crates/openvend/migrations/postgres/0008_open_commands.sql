-- Only commands still waiting for their machine's answer are looked up by machine and
-- expiry (re-delivery, expiry); an answered command leaves the index instead of moving
-- within it at every state change.
DROP INDEX device_commands_open;
CREATE INDEX device_commands_open ON device_commands (machine_id, expires_at)
    WHERE state IN ('pending', 'sent');
