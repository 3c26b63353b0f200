-- Operators, machines, products and slots: the fleet and its stock.
CREATE TABLE operators (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    seller_pid  TEXT    NOT NULL,
    fund_mode   TEXT    NOT NULL CHECK (fund_mode IN ('collection', 'royalty')),
    created_at  BIGINT  NOT NULL
);

CREATE TABLE machines (
    id                 INTEGER PRIMARY KEY,
    operator_id        BIGINT  NOT NULL REFERENCES operators (id),
    code               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('vending', 'face', 'cabinet')),
    terminal_id        TEXT    NOT NULL UNIQUE,
    site               TEXT,
    secret             TEXT    NOT NULL,
    online             BOOLEAN NOT NULL DEFAULT FALSE,
    last_heartbeat_at  BIGINT,
    fault              TEXT,
    created_at         BIGINT  NOT NULL
);

CREATE TABLE products (
    id           INTEGER PRIMARY KEY,
    operator_id  BIGINT NOT NULL REFERENCES operators (id),
    name         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);

-- A slot's stock can never go below what is reserved, nor above capacity.
CREATE TABLE slots (
    machine_id  BIGINT  NOT NULL REFERENCES machines (id),
    code        TEXT    NOT NULL,
    product_id  BIGINT  REFERENCES products (id),
    price_fen   BIGINT  NOT NULL CHECK (price_fen >= 0),
    capacity    INTEGER NOT NULL CHECK (capacity >= 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    reserved    INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (machine_id, code),
    CHECK (reserved <= stock AND stock <= capacity)
);
