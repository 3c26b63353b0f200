-- The device channel's ledger.
--
-- device_commands: one row per command, written BEFORE it is published (the intent), so a
-- crash between publish and record cannot lose track of a dispense. A command is settled only
-- by the machine's own ack/result, never by the broker's PUBACK. Commands past expires_at
-- (server clock) are never sent again.
CREATE TABLE device_commands (
    id          INTEGER PRIMARY KEY,
    machine_id  BIGINT  NOT NULL REFERENCES machines (id),
    command_id  TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL CHECK (kind IN ('show_qr', 'dispense', 'unlock_door', 'cancel', 'sync_time')),
    order_id    TEXT,
    payload     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'acknowledged', 'rejected', 'done', 'expired')),
    created_at  BIGINT  NOT NULL,
    sent_at     BIGINT,
    acked_at    BIGINT,
    expires_at  BIGINT  NOT NULL,
    result      TEXT
);

CREATE INDEX device_commands_open ON device_commands (machine_id, state, expires_at);

-- device_events: every accepted event, once. The primary key is the msg_id dedup: a repeated
-- msg_id from the same machine changes nothing.
CREATE TABLE device_events (
    machine_id   BIGINT NOT NULL REFERENCES machines (id),
    msg_id       TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    PRIMARY KEY (machine_id, msg_id)
);

-- HTTP fallback nonces, kept for the ±300 s window (plus margin) and then purged.
CREATE TABLE device_nonces (
    machine_id  BIGINT NOT NULL REFERENCES machines (id),
    nonce       TEXT   NOT NULL,
    seen_at     BIGINT NOT NULL,
    PRIMARY KEY (machine_id, nonce)
);
