-- Buyer accounts of the H5 pages (免登), their Alipay identities, browser sessions, OAuth
-- `state` values, SMS codes, and which orders each account placed.
--
-- Phones: `phone_index` is a keyed hash (HMAC-SHA256) of the normalised number, so an account
-- can be found by phone without storing it in clear; `phone_sealed` is the number encrypted
-- (AES-256-GCM) for its owner's own page; `phone_masked` (138****0000) is what others see.
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    phone_index   TEXT   NOT NULL UNIQUE,
    phone_sealed  TEXT   NOT NULL,
    phone_masked  TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

-- One row per Alipay user bound to an account, keyed by whichever id the app is given
-- (user_id, or open_id for apps migrated to open_id; open_ids are per app).
CREATE TABLE alipay_users (
    app_id      TEXT   NOT NULL,
    id_kind     TEXT   NOT NULL CHECK (id_kind IN ('user_id', 'open_id')),
    alipay_id   TEXT   NOT NULL,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    nick_name   TEXT,
    avatar      TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, id_kind, alipay_id)
);
CREATE INDEX alipay_users_account_idx ON alipay_users (account_id);

-- A browser session: the cookie holds a random token, the row only its SHA-256. Without an
-- account it is a pending session (Alipay user known, phone not yet bound).
-- (AUTOINCREMENT: a swept-out session's id is never given to a new one; SMS codes name it.)
CREATE TABLE h5_sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    TEXT   NOT NULL UNIQUE,
    app_id        TEXT   NOT NULL,
    id_kind       TEXT   NOT NULL CHECK (id_kind IN ('user_id', 'open_id')),
    alipay_id     TEXT   NOT NULL,
    account_id    BIGINT REFERENCES accounts (id),
    nick_name     TEXT,
    avatar        TEXT,
    machine_code  TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- OAuth `state`: one use, short-lived, bound to the browser that started the sign-in.
CREATE TABLE oauth_states (
    nonce         TEXT   PRIMARY KEY,
    browser_hash  TEXT   NOT NULL,
    scope         TEXT   NOT NULL CHECK (scope IN ('auth_base', 'auth_user')),
    machine_code  TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);

-- SMS codes, stored as a keyed hash; the rows double as the send log for the rate limits.
CREATE TABLE sms_codes (
    id           INTEGER PRIMARY KEY,
    phone_index  TEXT    NOT NULL,
    session_id   BIGINT  NOT NULL,
    ip           TEXT    NOT NULL,
    code_hash    TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    sent_at      BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    used_at      BIGINT
);
CREATE INDEX sms_codes_phone_idx ON sms_codes (phone_index, sent_at);
CREATE INDEX sms_codes_ip_idx ON sms_codes (ip, sent_at);

-- Orders placed from the H5 pages, and by whom.
CREATE TABLE account_orders (
    order_id    BIGINT PRIMARY KEY REFERENCES orders (id),
    account_id  BIGINT NOT NULL REFERENCES accounts (id)
);
CREATE INDEX account_orders_account_idx ON account_orders (account_id, order_id);
